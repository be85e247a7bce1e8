"""The Long-Range Arena ListOps classifier: a pre-norm encoder with a pluggable attention and normaliser."""

from __future__ import annotations

import math

import torch
from torch import nn

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import build_norm
from dtn_bench.registry import Registry
from dtn_bench.sequence.attention import BigBirdAttention, FullAttention, LSHAttention

__all__ = ["ATTENTIONS", "LRAEncoder", "EncoderBlock", "build_attention", "count_parameters", "sinusoidal_positions"]

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


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` unless ``trainable_only`` is False)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x = x + Drop(Attn(Norm1(x, m), m))``, ``x = x + MLP(Norm2(x, m))``.

    ``MLP = Linear(dim, mlp_dim) -> GELU -> Drop -> Linear(mlp_dim, dim) -> Drop``; both norms get the padding mask.

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
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, attention: str = "transformer", norm: str = "layernorm",
                 layer_index: int = 0, dropout: float = 0.1, attn_dropout: float = 0.1,
                 attention_kwargs: dict | None = None):
        super().__init__()
        self.norm1 = build_norm(norm, dim, num_heads=heads, grid_size=None)
        self.attn = build_attention(attention, dim, heads, layer_index=layer_index, dropout=attn_dropout,
                                    **(attention_kwargs or {}))
        self.drop = nn.Dropout(dropout)
        self.norm2 = build_norm(norm, dim, num_heads=heads, grid_size=None)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x, mask), mask))
        return x + self.mlp(self.norm2(x, mask))


class LRAEncoder(nn.Module):
    """LRA ListOps classifier (the official JAX encoder, with the attention and normaliser as options).

    ``h_0 = Drop(E[tokens] (+ CLS prepended) + P)``, ``h_l = Block_l(h_{l-1}, m)`` (pre-norm, see
    :class:`EncoderBlock`), ``z = Norm_f(h_L, m)``, ``logits = W_2 ReLU(W_1 pool(z) + b_1) + b_2`` with ``pool`` the
    CLS token or the mean over real tokens, ``E`` a token embedding (id 0 = padding, a zero vector), ``P`` fixed
    sinusoidal or learned positions (the CLS token takes position 0) and ``m [B, T]`` the padding mask (True = real
    token, True for CLS).

    Norm slots: ``norm1``, ``norm2`` of every block and the final norm, all the registered ``norm`` built with
    ``build_norm(norm, dim, num_heads=heads, grid_size=None)`` (1-D DTN for ``dtn``) and called with the mask.

    Initialisation follows LRA: embeddings ``N(0, 1)``, the CLS vector zeros, learned positions ``N(0, 0.02)``;
    linear layers keep PyTorch's defaults. Defaults are the official JAX ListOps config (dim 512, 8 heads, 4 layers,
    MLP 1024, dropout 0.1, max length 2000); the PyTorch de-facto config is ``dim=64, heads=2, depth=2, mlp_dim=128,
    pooling="mean", positions="learned"``.

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
    """

    def __init__(self, vocab_size: int, num_classes: int = 10, *, dim: int = 512, heads: int = 8, depth: int = 4,
                 mlp_dim: int = 1024, max_len: int = 2000, attention: str = "transformer", norm: str = "layernorm",
                 pooling: str = "cls", positions: str = "sinusoidal", dropout: float = 0.1, attn_dropout: float = 0.1,
                 attention_kwargs: dict | None = None):
        super().__init__()
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
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
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
                         attn_dropout=attn_dropout, attention_kwargs=attention_kwargs)
            for i in range(depth)
        )
        self.norm_f = build_norm(norm, dim, num_heads=heads, grid_size=None)
        self.head = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, num_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """LRA's initialisation of the embeddings (see the class docstring)."""
        nn.init.normal_(self.embed.weight, std=1.0)
        self.embed.weight[0].zero_()
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=0.02)

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
