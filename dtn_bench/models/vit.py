"""The DTN paper's ViT zoo, registered with timm, and a converter for stock timm vision transformers.

Layout (the authors' working recipe, ConViT-style, ``local_up_to_layer = 10``): the positional embedding is added
to the 196 patch tokens only; blocks 0-9 see patch tokens only and use the chosen normaliser in both norms; the
class token is concatenated before block 10; blocks 10-11 and the final norm are LayerNorm. The LN baselines use
the same layout with LayerNorm everywhere. Names: ``vit_{t,t_star,s,s_star,b,b_star}_<suffix>``, one per registered
normaliser that declares a zoo suffix (:attr:`dtn_bench.norms.NormInfo.zoo_suffix`: ``ln``, ``dtn``, ``dyt``,
``powernorm``, ``derf``, ``identity``); the ``dyt`` (Dynamic Tanh), ``powernorm``, ``derf`` (Dynamic erf) and
``identity`` (no normaliser) models are the same layout with that normaliser in blocks 0-9, as in the DTN paper's
normaliser comparison (the DyT and Derf papers replace every LayerNorm of a standard ViT, final norm included, so their
published numbers are for another layout).

Placement (``placement``, :mod:`dtn_bench.placement`): ``pre`` (timm's block) by default; ``post`` and ``peri`` put the
normalisers of every block after the residual add or around each sublayer (peri's output norms are the block's
normaliser too: the chosen one in blocks 0-9, LayerNorm after).

Differences from the authors' code, stated: qkv projections carry a bias (timm's default, as in DeiT; the
authors' ViT had none). Their checkpoints still load: :func:`dtn_bench.checkpoint.load_checkpoint` fills the
absent qkv biases with zeros, which computes exactly what their model computed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial

import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from dtn_bench.errors import DTNBenchError
from dtn_bench.models.blocks import place_blocks
from dtn_bench.norms import NORMS, LayerNorm, build_norm, zoo_suffixes
from dtn_bench.placement import DEFAULT as DEFAULT_PLACEMENT
from dtn_bench.placement import check_placement
from dtn_bench.registry import Registry

MODELS = Registry("model")


@dataclass(frozen=True)
class ViTSpec:
    """One column of the paper's model table."""

    label: str
    embed_dim: int
    num_heads: int


VIT_SPECS = {
    "vit_t": ViTSpec("ViT-T", 192, 3),
    "vit_t_star": ViTSpec("ViT-T*", 192, 4),
    "vit_s": ViTSpec("ViT-S", 384, 6),
    "vit_s_star": ViTSpec("ViT-S*", 432, 9),
    "vit_b": ViTSpec("ViT-B", 768, 12),
    "vit_b_star": ViTSpec("ViT-B*", 768, 16),
}
NORM_SUFFIX = zoo_suffixes()
"""Zoo name suffix -> registered normaliser of blocks 0-9 (from each normaliser's ``NormInfo.zoo_suffix``)."""
SLOT_OF = {"norm1": "attn", "norm2": "ffn"}
"""A timm block's norm attribute -> its slot (:data:`dtn_bench.norms.SLOTS`)."""


class LocalViT(VisionTransformer):
    """timm's VisionTransformer with the class token joining before block ``local_up_to_layer``.

    Args:
        norm: registered normaliser used in both norms of blocks ``0 .. local_up_to_layer - 1``.
        local_up_to_layer: first block that sees the class token (and uses LayerNorm).
        placement: ``pre``, ``post`` or ``peri`` (:mod:`dtn_bench.placement`), for every block.
        norm_kwargs: options of ``norm`` (``dtn-bench list norms``; DyT's and Derf's ``alpha_init`` per slot).
        **kwargs: timm ``VisionTransformer`` arguments.
    """

    def __init__(self, norm: str = "layernorm", local_up_to_layer: int = 10, placement: str = DEFAULT_PLACEMENT,
                 norm_kwargs: dict | None = None, **kwargs):
        check_placement(placement)
        kwargs.setdefault("class_token", True)
        kwargs["no_embed_class"] = True  # position embedding on the patch tokens only
        kwargs.setdefault("global_pool", "token")
        kwargs.setdefault("norm_layer", partial(LayerNorm, eps=1e-5))  # the authors' nn.LayerNorm default
        super().__init__(**kwargs)
        self.local_up_to_layer = local_up_to_layer
        self.norm_name = norm
        grid = tuple(self.patch_embed.grid_size)
        w = self.patch_embed.proj.weight
        opts = dict(norm_kwargs or {})

        def make(i: int, slot: str, like: torch.nn.Module) -> torch.nn.Module:
            if i >= local_up_to_layer:  # the class token's blocks keep LayerNorm
                return LayerNorm(self.embed_dim, eps=like.eps, device=w.device, dtype=w.dtype)
            return build_norm(norm, self.embed_dim, num_heads=self.blocks[i].attn.num_heads, grid_size=grid,
                              num_prefix_tokens=0, slot=slot, device=w.device, dtype=w.dtype, **opts)

        for i, blk in enumerate(list(self.blocks)[:local_up_to_layer]):
            for attr, slot in SLOT_OF.items():
                setattr(blk, attr, make(i, slot, getattr(blk, attr)))
        place_blocks(self, placement, make)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_img_size:
            raise DTNBenchError("LocalViT does not support dynamic image sizes")
        # timm's patch embedding returns a transposed view ([B, T, C] stored channels-first) and every residual
        # add keeps that layout; one copy here makes the whole stream token-major for every block (LN or DTN).
        return self.pos_drop(x.contiguous() + self.pos_embed)

    def forward_features(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        """Final-norm tokens of images ``x``, the class token joining before block ``local_up_to_layer``."""
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        for i, blk in enumerate(self.blocks):
            if i == self.local_up_to_layer and self.cls_token is not None:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = blk(x)
        return self.norm(x)

    def forward_intermediates(self, *args, **kwargs):
        """Not supported: raises ``NotImplementedError``."""
        raise NotImplementedError("forward_intermediates is not supported by LocalViT")


def _make_entrypoint(arch: str, suffix: str):
    spec = VIT_SPECS[arch]
    norm = NORM_SUFFIX[suffix]
    name = f"{arch}_{suffix}"

    def entrypoint(pretrained: bool = False, **kwargs) -> LocalViT:
        if pretrained:
            raise DTNBenchError(f"{name}: no pretrained weights are shipped; use --checkpoint PATH")
        kwargs.pop("pretrained_cfg", None)
        kwargs.pop("pretrained_cfg_overlay", None)
        kwargs.pop("cache_dir", None)
        args = dict(img_size=224, patch_size=16, num_classes=1000, embed_dim=spec.embed_dim, depth=12,
                    num_heads=spec.num_heads, mlp_ratio=4.0, qkv_bias=True)
        args.update(kwargs)
        args.setdefault("norm", norm)
        return LocalViT(**args)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{spec.label} ({spec.num_heads} heads, dim {spec.embed_dim}), {norm} in blocks 0-9."
    setattr(sys.modules[__name__], name, entrypoint)
    register_model(entrypoint)
    MODELS.register(name, entrypoint.__doc__, arch=arch, label=spec.label, norm=norm, heads=spec.num_heads,
                    dim=spec.embed_dim)(entrypoint)
    return entrypoint


for _arch in VIT_SPECS:
    for _suffix in NORM_SUFFIX:
        _make_entrypoint(_arch, _suffix)


# ------------------------------------------------------------------------------------------------------------------
def norm_slots(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The token-norm slots of a timm vision transformer's blocks: ``[(qualified name, module), ...]``."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise DTNBenchError(f"{type(model).__name__} has no .blocks: the converter handles timm vision transformers")
    out = []
    for i, blk in enumerate(blocks):
        for slot in ("norm1", "norm2"):
            if hasattr(blk, slot):
                out.append((f"blocks.{i}.{slot}", getattr(blk, slot)))
    return out


def convert_norms(model: torch.nn.Module, norm: str, *, keep_affine: bool = True, placement: str = DEFAULT_PLACEMENT,
                  norm_kwargs: dict | None = None) -> torch.nn.Module:
    """Put the registered normaliser ``norm`` into both norms of every block of a stock timm vision transformer.

    Prefix tokens (class, distillation, register tokens: ``model.num_prefix_tokens``) are passed on, so DTN
    normalises them with LN statistics and keeps them out of the patch statistics, in every slot. The final ``norm``
    and any ``fc_norm`` keep the model's own LayerNorm. With ``keep_affine`` the old weight/bias are copied over when
    the shapes agree (a pretrained model keeps its affine parameters); every other parameter of the new norms stays at
    that normaliser's documented init (DTN: gates 0, local ``pos_proj``). ``placement`` ``post`` or ``peri`` then
    moves the norms of every block (:func:`dtn_bench.placement.place_blocks`; peri's output norms are new layers of
    ``norm``). What was carried and what is new is recorded in ``model.norm_conversion`` (:func:`conversion_note`
    says it in one line).

    Args:
        model: a timm ``VisionTransformer`` (``vit_small_patch16_224``, ``deit_small_patch16_224``, ...).
        norm: a registered normaliser name.
        keep_affine: copy the replaced norms' ``weight``/``bias`` into the new ones.
        placement: ``pre`` (timm's block), ``post`` or ``peri``.
        norm_kwargs: options of ``norm`` (``dtn-bench list norms``).

    Returns:
        The same model, changed in place.
    """
    NORMS.get(norm)
    check_placement(placement)
    if getattr(model, "dynamic_img_size", False):
        raise DTNBenchError("convert_norms: models with dynamic image sizes are not supported")
    pe = getattr(model, "patch_embed", None)
    grid = tuple(pe.grid_size) if pe is not None and getattr(pe, "grid_size", None) else None
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    slots = norm_slots(model)
    carried: dict[str, int] = {}
    not_carried: dict[str, int] = {}
    new_params: dict[str, int] = {}
    sizes: dict[int, torch.Tensor] = {}  # block -> a replaced norm's weight: its size, device and dtype

    def make(i: int, slot: str, like: torch.nn.Module) -> torch.nn.Module:
        ref = sizes[i]
        heads = getattr(getattr(model.blocks[i], "attn", None), "num_heads", 1)
        return build_norm(norm, ref.shape[0], num_heads=heads, grid_size=grid, num_prefix_tokens=prefix, slot=slot,
                          device=ref.device, dtype=ref.dtype, **(norm_kwargs or {}))

    for name, old in slots:
        index, attr = int(name.split(".")[1]), name.rsplit(".", 1)[1]
        weight = getattr(old, "weight", None)
        if weight is None:
            raise DTNBenchError(f"convert_norms: {name} has no weight to size the new norm from")
        sizes[index] = weight
        new = make(index, SLOT_OF[attr], old)
        took = _carry_affine(old, new) if keep_affine else set()
        for p in ("weight", "bias"):
            if isinstance(getattr(old, p, None), torch.Tensor):
                bucket = carried if p in took else not_carried
                bucket[p] = bucket.get(p, 0) + 1
        _count(new_params, new, took)
        setattr(model.blocks[index], attr, new)
    added = place_blocks(model, placement, make)
    for name in added:
        _count(new_params, model.get_submodule(name), set())
    model.norm_name = norm
    replaced = sorted({type(m).__name__ for _, m in slots})
    model.norm_conversion = {"norm": norm, "slots": len(slots), "replaced": replaced, "carried": carried,
                             "not_carried": not_carried, "new": new_params, "placement": placement,
                             "added": len(added)}
    return model


def _count(counts: dict[str, int], module: torch.nn.Module, skip: set[str]) -> None:
    for p, _ in module.named_parameters():
        if p not in skip:
            counts[p] = counts.get(p, 0) + 1


def _carry_affine(old: torch.nn.Module, new: torch.nn.Module) -> set[str]:
    """Copy ``old``'s weight/bias into ``new``'s where both have them with one shape; the names copied."""
    took = set()
    with torch.no_grad():
        for p in ("weight", "bias"):
            src, dst = getattr(old, p, None), getattr(new, p, None)
            if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and src.shape == dst.shape:
                dst.copy_(src)
                took.add(p)
    return took


def conversion_note(model: torch.nn.Module, *, pretrained: bool = True) -> str | None:
    """One line on what :func:`convert_norms` did to ``model`` (``None`` when it was not converted).

    With ``pretrained`` it says that the new parameters are untrained.
    """
    c = getattr(model, "norm_conversion", None)
    if not c:
        return None
    carried = ", ".join(sorted(c["carried"])) or "nothing"
    text = (f"--norm {c['norm']}: replaced {c['slots']} block norms ({', '.join(c['replaced'])}); their affine "
            f"({carried}) carried into the new norms")
    if c["not_carried"]:
        text += f"; not carried (the new norm has no such parameter): {', '.join(sorted(c['not_carried']))}"
    if c.get("placement", DEFAULT_PLACEMENT) != DEFAULT_PLACEMENT:
        text += f"; placement {c['placement']}"
        if c.get("added"):
            text += f" ({c['added']} output norms added)"
    new = sorted(set(c["new"]))
    if new:
        text += f"; new parameters at {c['norm']}'s documented init: {', '.join(new)}"
        if pretrained:
            text += " - untrained, so these are not the pretrained model's numbers"
    return text


def zoo_entry(name: str):
    """The registry entry of a zoo or 32 / 64 px model ``name`` (``None`` for other names)."""
    from dtn_bench.models.small import SMALL_MODELS

    for registry in (MODELS, SMALL_MODELS):
        if name in registry:
            return registry.get(name)
    return None


def check_zoo_norm(name: str, own: str, norm: str, arch: str) -> None:
    """One-line error when ``--norm norm`` contradicts the zoo model ``name``, named for the normaliser ``own``.

    A LayerNorm model (``*_ln``) is the base any ``--norm`` converts; a model named for another normaliser takes
    only that one.
    """
    NORMS.get(norm)
    if own in ("layernorm", norm):
        return
    suffix = {v: k for k, v in zoo_suffixes().items()}.get(norm)
    hint = f"--model {arch}_{suffix}, or " if suffix and zoo_entry(f"{arch}_{suffix}") is not None else ""
    raise DTNBenchError(f"--norm {norm} contradicts --model {name}, a model named for {own}: use {hint}"
                        f"--model {arch}_ln --norm {norm}")


def create(name: str, *, norm: str | None = None, placement: str = DEFAULT_PLACEMENT, norm_kwargs: dict | None = None,
           pretrained: bool = False, pretrained_file: str | None = None, debug: bool = False,
           **kwargs) -> torch.nn.Module:
    """Create a zoo model, a 32 / 64 px model or any timm model by name: the one entry point that builds models.

    Zoo and 32 / 64 px models: ``norm`` replaces the normaliser of blocks 0-9 of a LayerNorm model (``vit_s_ln`` +
    ``norm='rmsnorm'``); a model named for another normaliser takes only its own (``vit_s_dtn`` + ``norm='dyt'`` is a
    one-line error). Stock timm ViTs: ``norm`` converts every block (:func:`convert_norms`). ``placement`` (``pre``,
    ``post``, ``peri``: :mod:`dtn_bench.placement`) applies to every block; a stock timm model takes ``post`` or
    ``peri`` only with ``norm`` (the normaliser of its new slots). ``norm_kwargs`` are the normaliser's options (DyT's
    and Derf's per-slot ``alpha_init``, ...). ``pretrained`` / ``pretrained_file`` load timm's pretrained weights (a
    stock timm model only; :func:`dtn_bench.models.pretrained.create_pretrained`) before any conversion, so the
    converted norms get the pretrained affine; ``model.pretrained_weights`` then says where they came from
    (:class:`~dtn_bench.models.pretrained.PretrainedWeights`). ``model.placement`` records the placement.
    """
    import timm

    from dtn_bench.models.pretrained import check_request, create_pretrained

    check_placement(placement)
    pretrained = pretrained or pretrained_file is not None
    check_request(name, pretrained=pretrained, pretrained_file=pretrained_file)
    entry = zoo_entry(name)
    if entry is not None:
        if norm is not None:
            check_zoo_norm(name, entry.meta["norm"], norm, entry.meta["arch"])
            kwargs["norm"] = norm
        return entry.factory(placement=placement, norm_kwargs=norm_kwargs, **kwargs)
    if not timm.is_model(name):
        from dtn_bench.registry import unknown_name_message

        known = list(dict.fromkeys(MODELS.names() + timm.list_models()))  # the zoo is in timm's list too
        raise DTNBenchError(unknown_name_message("model", name, known))
    if norm is None and (placement != DEFAULT_PLACEMENT or norm_kwargs):
        what = f"--placement {placement}" if placement != DEFAULT_PLACEMENT else "normaliser options"
        raise DTNBenchError(f"{what} on the stock timm model {name} needs --norm NAME (the normaliser of its slots)")
    if norm is not None:
        NORMS.get(norm)  # an unknown norm fails before any weights are read
    weights = None
    if pretrained:
        model, weights = create_pretrained(name, pretrained_file=pretrained_file, debug=debug, **kwargs)
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    if norm is not None:
        convert_norms(model, norm, placement=placement, norm_kwargs=norm_kwargs)
    else:
        model.placement = DEFAULT_PLACEMENT
    if weights is not None:
        model.pretrained_weights = weights
    return model
