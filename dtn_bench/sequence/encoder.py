"""The Long-Range Arena ListOps classifier: an encoder with a pluggable attention, normaliser and placement."""

from __future__ import annotations

import math

import torch
from torch import nn

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import build_norm
from dtn_bench.placement import DEFAULT as DEFAULT_PLACEMENT
from dtn_bench.placement import check_placement, residual
from dtn_bench.registry import Registry
from dtn_bench.sequence.attention import BigBirdAttention, FullAttention, LSHAttention

__all__ = ["ATTENTIONS", "LRAEncoder", "EncoderBlock", "build_attention", "count_parameters", "lecun_normal_",
           "sinusoidal_positions"]

ATTENTIONS = Registry("attention")


@ATTENTIONS.register("transformer", formula="softmax(q k^T / sqrt(d)) v over every key")
def _transformer(dim, heads, *, layer_index=0, dropout=0.0, **kw):
    """Full softmax attention (the LRA Transformer)."""
    return FullAttention(dim, heads, dropout=dropout, **kw)


@ATTENTIONS.register("bigbird", formula="block-sparse: window + global + random blocks (LRA: 64 / 3 / 2 / 3)")
def _bigbird(dim, heads, *, layer_index=0, dropout=0.0, **kw):
    """BigBird block-sparse attention as configured in LRA."""
    return BigBirdAttention(dim, heads, layer_index=layer_index, dropout=dropout, **kw)


@ATTENTIONS.register("reformer", formula="LSH: shared QK, sort by hash bucket, chunk attends to itself + previous")
def _reformer(dim, heads, *, layer_index=0, dropout=0.0, **kw):
    """Reformer LSH attention as configured in LRA (1 round, 10 buckets)."""
    return LSHAttention(dim, heads, layer_index=layer_index, dropout=dropout, **kw)


def build_attention(name: str, dim: int, heads: int, *, layer_index: int = 0, dropout: float = 0.0,
                    **kw) -> nn.Module:
    """Build the attention ``name`` (``transformer``, ``bigbird``, ``reformer``).

    Args:
        name: a registered attention name.
        dim: channels.
        heads: attention heads.
        layer_index: depth of the layer (seeds BigBird's random blocks and Reformer's rotations).
        dropout: attention-probability dropout.
        **kw: extra constructor arguments of that attention (``block``, ``n_buckets``, ``lra_quirks`` ...).
    """
    factory = ATTENTIONS.get(name).factory
    try:
        return factory(dim, heads, layer_index=layer_index, dropout=dropout, **kw)
    except TypeError as e:  # an argument that attention does not take
        raise DTNBenchError(f"attention {name!r}: {e}") from None


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed ``[length, dim]`` table: ``pe[p, 2i] = sin(p / 10000^(2i / dim))``, ``pe[p, 2i + 1] = cos(...)``."""
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : dim // 2]
    return pe.float()


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """LeCun normal in place on a ``[out, in]`` weight, as JAX/Flax define it.

    A normal truncated at two standard deviations, scaled so that the variance is ``1 / fan_in`` (std
    ``sqrt(1 / fan_in) / 0.8796``).
    """
    std = math.sqrt(1.0 / weight.shape[1]) / 0.87962566103423978
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` unless ``trainable_only`` is False)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


GELUS = {"exact": "none", "tanh": "tanh"}
"""``gelu`` option -> ``nn.GELU(approximate=...)``: the erf form, or the tanh approximation (``jax.nn.gelu``, LRA)."""
INITS = ("torch", "lra")


def norm_slot(norm: str, dim: int, heads: int, ln_eps: float | None, slot: str | None = None,
              norm_kwargs: dict | None = None) -> nn.Module:
    """A norm slot of the encoder, called with the padding mask.

    ``ln_eps`` (when given) is the epsilon of a LayerNorm; other normalisers keep their own. ``slot`` (``attn``,
    ``ffn``, ``final``) and ``norm_kwargs`` (the normaliser's options) go to :func:`~dtn_bench.norms.build_norm`; a
    normaliser that cannot take a padding mask is a one-line error.
    """
    extra = {"eps": ln_eps} if norm == "layernorm" and ln_eps is not None else {}
    extra.update(norm_kwargs or {})
    return build_norm(norm, dim, num_heads=heads, grid_size=None, slot=slot, masked=True, **extra)


def _check_choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise DTNBenchError(f"LRAEncoder: {name} must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")


class EncoderBlock(nn.Module):
    """Encoder block, its normalisers at ``placement`` (:func:`dtn_bench.placement.residual`), ``m`` the mask.

    ``pre``: ``x = x + Drop(Attn(Norm1(x, m), m))``, ``x = x + MLP(Norm2(x, m))``; ``post``: ``x = Norm1(x +
    Drop(Attn(x, m)), m)``, ``x = Norm2(x + MLP(x), m)``; ``peri``: ``x = x + Drop(Norm1_out(Attn(Norm1(x, m), m),
    m))``, ``x = x + Drop(Norm2_out(MLP'(Norm2(x, m)), m))``.

    ``MLP = Linear(dim, mlp_dim) -> GELU -> Drop -> Linear(mlp_dim, dim) -> Drop``, ``MLP'`` the same without its last
    dropout (peri's output norm sits before it); every norm gets the padding mask.

    Args:
        dim: channels.
        heads: attention heads (also the normaliser's ``num_heads``).
        mlp_dim: hidden width of the MLP.
        attention: registered attention name.
        norm: registered normaliser name.
        layer_index: depth of this block.
        dropout: residual / MLP dropout.
        attn_dropout: attention-probability dropout.
        attention_kwargs: extra constructor arguments of the attention.
        gelu: ``exact`` (erf) or ``tanh`` (the approximation LRA's ``jax.nn.gelu`` computes).
        ln_eps: epsilon of the norms when ``norm`` is ``layernorm`` (``None``: its default, 1e-5).
        placement: ``pre``, ``post`` or ``peri``.
        norm_kwargs: options of ``norm``.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, attention: str = "transformer", norm: str = "layernorm",
                 layer_index: int = 0, dropout: float = 0.1, attn_dropout: float = 0.1,
                 attention_kwargs: dict | None = None, gelu: str = "exact", ln_eps: float | None = None,
                 placement: str = DEFAULT_PLACEMENT, norm_kwargs: dict | None = None):
        super().__init__()
        _check_choice("gelu", gelu, GELUS)
        self.placement = check_placement(placement, "LRAEncoder: placement")
        self.norm1 = norm_slot(norm, dim, heads, ln_eps, "attn", norm_kwargs)
        self.attn = build_attention(attention, dim, heads, layer_index=layer_index, dropout=attn_dropout,
                                    **(attention_kwargs or {}))
        self.drop = nn.Dropout(dropout)
        self.norm2 = norm_slot(norm, dim, heads, ln_eps, "ffn", norm_kwargs)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(approximate=GELUS[gelu]), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))
        if placement == "peri":
            self.norm1_out = norm_slot(norm, dim, heads, ln_eps, "attn", norm_kwargs)
            self.norm2_out = norm_slot(norm, dim, heads, ln_eps, "ffn", norm_kwargs)

    def _mlp_body(self, x: torch.Tensor) -> torch.Tensor:
        for layer in list(self.mlp)[:-1]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x [B, T, C]``; ``mask [B, T]`` (True = real token) goes to attention and every norm."""
        out1, out2 = getattr(self, "norm1_out", None), getattr(self, "norm2_out", None)
        x = residual(x, lambda h: self.attn(h, mask), self.norm1, self.placement, outer=self.drop, norm_out=out1,
                     mask=mask)
        return residual(x, self._mlp_body, self.norm2, self.placement, outer=self.mlp[-1], norm_out=out2, mask=mask)


class LRAEncoder(nn.Module):
    """LRA ListOps classifier (the official JAX encoder, with the attention and normaliser as options).

    ``h_0 = Drop(E[tokens] (+ CLS prepended) + P)``, ``h_l = Block_l(h_{l-1}, m)`` (pre-norm, see
    :class:`EncoderBlock`), ``z = Norm_f(h_L, m)``, ``logits = W_2 ReLU(W_1 pool(z) + b_1) + b_2`` with ``pool`` the
    CLS token or the mean over real tokens, ``E`` a token embedding (id 0 = padding: a frozen zero vector, or a trained
    row with ``init="lra"``), ``P`` fixed sinusoidal or learned positions (the CLS token takes position 0) and
    ``m [B, T]`` the padding mask (True = real token, True for CLS).

    Norm slots: ``norm1``, ``norm2`` of every block (and ``norm1_out``, ``norm2_out`` with ``placement="peri"``) and
    the final norm, all the registered ``norm`` built with ``build_norm(norm, dim, num_heads=heads, grid_size=None,
    slot=...)`` (1-D DTN for ``dtn``; ``eps=ln_eps`` for ``layernorm`` only; ``norm_kwargs`` its options) and called
    with the mask. ``placement`` (``pre``, ``post``, ``peri``) places them in every block (:class:`EncoderBlock`); the
    final norm is kept in every placement.

    Initialisation (``init``): embeddings ``N(0, 1)``, the CLS vector zeros and learned positions ``N(0, 0.02)``
    always (as in LRA); then ``torch`` keeps PyTorch's defaults for the linear layers and a frozen zero padding row
    (``padding_idx=0``), while ``lra`` is the official code's: attention projections and MLP weights xavier-uniform,
    MLP biases ``N(0, 1e-6)``, the classifier head lecun-normal (truncated normal, variance ``1 / fan_in``) with zero
    biases, and the padding row an ordinary trained embedding row. Normalisers keep their own initialisation.
    Defaults are the official JAX ListOps config's sizes (dim 512, 8 heads, 4 layers, MLP 1024, dropout 0.1, max
    length 2000); the PyTorch de-facto config is ``dim=64, heads=2, depth=2, mlp_dim=128, pooling="mean",
    positions="learned"``.

    Args:
        vocab_size: token ids ``0 .. vocab_size - 1`` (0 = padding).
        num_classes: output classes (ListOps: 10).
        dim: channels.
        heads: attention heads.
        depth: blocks.
        mlp_dim: MLP hidden width, also the width of the classifier head.
        max_len: longest input sequence (CLS excluded).
        attention: ``transformer``, ``bigbird`` or ``reformer`` (:data:`ATTENTIONS`).
        norm: a registered normaliser (``dtn-bench list norms``).
        pooling: ``cls`` (prepended learned token) or ``mean`` (masked mean over real tokens).
        positions: ``sinusoidal`` (fixed) or ``learned``.
        dropout: embedding, residual and MLP dropout.
        attn_dropout: attention-probability dropout.
        attention_kwargs: extra constructor arguments of the attention (``block``, ``n_buckets``, ``lra_quirks``...).
        gelu: the MLPs' GELU, ``exact`` or ``tanh`` (LRA).
        ln_eps: epsilon of the norm slots when ``norm`` is ``layernorm`` (``None``: 1e-5; LRA: 1e-6).
        init: ``torch`` or ``lra`` (see above).
        placement: where the norms sit in the blocks, ``pre``, ``post`` or ``peri`` (:mod:`dtn_bench.placement`).
        norm_kwargs: options of ``norm`` (``dtn-bench list norms``).
    """

    def __init__(self, vocab_size: int, num_classes: int = 10, *, dim: int = 512, heads: int = 8, depth: int = 4,
                 mlp_dim: int = 1024, max_len: int = 2000, attention: str = "transformer", norm: str = "layernorm",
                 pooling: str = "cls", positions: str = "sinusoidal", dropout: float = 0.1, attn_dropout: float = 0.1,
                 attention_kwargs: dict | None = None, gelu: str = "exact", ln_eps: float | None = None,
                 init: str = "torch", placement: str = DEFAULT_PLACEMENT, norm_kwargs: dict | None = None):
        super().__init__()
        _check_choice("gelu", gelu, GELUS)
        _check_choice("init", init, INITS)
        check_placement(placement, "LRAEncoder: placement")
        if pooling not in ("cls", "mean"):
            raise DTNBenchError(f"LRAEncoder: pooling must be 'cls' or 'mean', got {pooling!r}")
        if positions not in ("sinusoidal", "learned"):
            raise DTNBenchError(f"LRAEncoder: positions must be 'sinusoidal' or 'learned', got {positions!r}")
        if vocab_size < 2 or num_classes < 1 or depth < 0 or max_len < 1:
            raise DTNBenchError(f"LRAEncoder: bad sizes vocab_size={vocab_size} num_classes={num_classes} "
                                f"depth={depth} max_len={max_len}")
        ATTENTIONS.get(attention)  # one-line error with near matches before anything is built
        self.vocab_size, self.num_classes, self.dim, self.max_len = vocab_size, num_classes, dim, max_len
        self.attention, self.norm, self.pooling, self.positions = attention, norm, pooling, positions
        self.init, self.placement = init, placement
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0 if init == "torch" else None)
        n_pos = max_len + (1 if pooling == "cls" else 0)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pooling == "cls" else None
        if positions == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, dim))
        else:
            self.pos_embed = None
            self.register_buffer("pos_table", sinusoidal_positions(n_pos, dim).unsqueeze(0), persistent=False)
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, mlp_dim, attention, norm, layer_index=i, dropout=dropout,
                         attn_dropout=attn_dropout, attention_kwargs=attention_kwargs, gelu=gelu, ln_eps=ln_eps,
                         placement=placement, norm_kwargs=norm_kwargs)
            for i in range(depth)
        )
        self.norm_f = norm_slot(norm, dim, heads, ln_eps, "final", norm_kwargs)
        self.head = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, num_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The initialisation of ``init`` (see the class docstring)."""
        nn.init.normal_(self.embed.weight, std=1.0)
        if self.init == "torch":
            self.embed.weight[0].zero_()
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=0.02)
        if self.init == "lra":
            for blk in self.blocks:
                for layer in [m for m in blk.attn.modules() if isinstance(m, nn.Linear)]:
                    nn.init.xavier_uniform_(layer.weight)
                    if layer.bias is not None:
                        nn.init.normal_(layer.bias, std=1e-6)
                for layer in [m for m in blk.mlp if isinstance(m, nn.Linear)]:
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.normal_(layer.bias, std=1e-6)
            for layer in [m for m in self.head if isinstance(m, nn.Linear)]:
                lecun_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward_features(self, tokens: torch.Tensor, mask: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-norm features ``[B, T (+1), dim]`` and their mask (CLS first when ``pooling="cls"``)."""
        if tokens.dim() != 2:
            raise DTNBenchError(f"LRAEncoder: expected tokens [B, T], got {list(tokens.shape)}")
        B, T = tokens.shape
        if T > self.max_len:
            raise DTNBenchError(f"LRAEncoder: sequence of {T} tokens is longer than max_len={self.max_len}")
        # the id range is checked on the CPU only: on a GPU it would cost two blocking device-to-host copies per forward
        # (and a graph break under torch.compile); there nn.Embedding's own device-side check fires instead
        bad_ids = (tokens.device.type == "cpu" and T > 0 and B > 0 and not torch.compiler.is_compiling()
                   and bool(tokens.min() < 0 or tokens.max() >= self.vocab_size))
        if tokens.dtype not in (torch.int64, torch.int32) or bad_ids:
            raise DTNBenchError(f"LRAEncoder: tokens must be integer ids in 0..{self.vocab_size - 1}")
        mask = tokens != 0 if mask is None else mask.to(device=tokens.device, dtype=torch.bool)
        if tuple(mask.shape) != (B, T):
            raise DTNBenchError(f"LRAEncoder: mask shape {list(mask.shape)} does not match tokens [{B}, {T}]")
        x = self.embed(tokens)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x], dim=1)
            mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)
        pos = self.pos_embed if self.pos_embed is not None else self.pos_table
        x = self.pos_drop(x + pos[:, : x.shape[1]].to(x.dtype))
        for blk in self.blocks:
            x = blk(x, mask)
        return self.norm_f(x, mask), mask

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """CLS token, or the mean over real tokens: ``sum_t m_t x_t / max(sum_t m_t, 1)``."""
        if self.pooling == "cls":
            return x[:, 0]
        m = mask.to(x.dtype).unsqueeze(-1)
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of ``tokens [B, T]``; ``mask`` defaults to ``tokens != 0``."""
        x, mask = self.forward_features(tokens, mask)
        return self.head(self.pool(x, mask))
