"""The models `dtn-bench profile` measures, each buildable with any registered normaliser (no weights downloaded).

Every entry is an architecture; the normaliser and its placement are chosen when it is built
(``get("vit_s").build("dtn", "pre")``), so a ``(model, norm)`` pair is one profiled configuration at the run's
placement, and the rows key on it like the published tables do. ``pre`` / ``post`` / ``peri``
(:mod:`dtn_bench.placement`) apply to the ViT zoo, DeiT-S and the LRA encoders; PVT-v2 and Swin-T take ``pre`` only.

* ViT zoo (``vit_t``, ``vit_t_star``, ``vit_s``, ``vit_s_star``, ``vit_b``, ``vit_b_star``): the DTN paper's models
  (:mod:`dtn_bench.models.vit`), the normaliser in blocks 0-9, LayerNorm in blocks 10-11 and the final norm.
* ``deit_s``: timm's ``deit_small_patch16_224`` through :func:`~dtn_bench.models.vit.convert_norms` (all 12 blocks,
  the class token kept out of DTN's inter-token statistics). ``layernorm`` is the stock model, unconverted.
* ``pvt_v2_b0``, ``pvt_v2_b2``: timm's PVT-v2 with the normaliser in both norms of every block of stages 1-3 and
  LayerNorm in stage 4, as the authors' ``pvt_norm``. DTN uses their ``dtn_pool``: a stage grid larger than 14 x 14
  is average-pooled to 14 x 14 for the inter-token statistics (56 -> /4, 28 -> /2, 14 -> none). The attention keeps
  timm's heads (1, 2, 5); DTN's groups are the authors' PVT head counts (4, 4, 5), so the LN model stays stock
  PVT-v2 and only the normaliser changes. Patch-embedding, stage-final and the attention's
  spatial-reduction norms stay LayerNorm.
* ``swin_t``: timm's ``swin_tiny_patch4_window7_224`` with the normaliser in both norms of every block of all four
  stages, applied per window (:class:`WindowNorm`). Choice, stated: the statistics are taken over the regular,
  unshifted 7 x 7 window partition in every block, so a window always holds spatially adjacent tokens (a cyclically
  shifted window would mix tokens from opposite image edges); DTN's groups are the block's attention heads
  (3, 6, 12, 24). Patch-merging and final norms stay LayerNorm.
* ``lra_transformer``, ``lra_bigbird``, ``lra_reformer``: :class:`~dtn_bench.sequence.LRAEncoder` in the LRA
  ListOps JAX config (dim 512, 8 heads, 4 layers, MLP 1024, vocabulary 18) at length 2000, 1-D DTN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dtn_bench.errors import DTNBenchError
from dtn_bench.placement import PLACEMENTS
from dtn_bench.registry import Registry, matches, unknown_name_message

PROFILE_MODELS = Registry("profile model")

IMG_SIZE = 224
LRA_LENGTH = 2000
LRA_VOCAB = 18
LRA_CLASSES = 10
PVT_DTN_GROUPS = (4, 4, 5)  # the authors' PVT head counts, stages 1-3 (stage 4 keeps LayerNorm)
PVT_POOL_TO = 14


@dataclass(frozen=True)
class ProfiledModel:
    """One architecture of the profile suite.

    Attributes:
        name: the name used by ``--models`` and in the rows' ``model`` column.
        label: the paper-style name (``ViT-S*``).
        family: ``vit``, ``deit``, ``pvt_v2``, ``swin`` or ``lra``.
        heads: attention heads (per stage, ``/``-separated, for hierarchical models).
        dim: channels (per stage likewise).
        input: ``image`` (``3 x 224 x 224``) or ``tokens`` (``LRA_LENGTH`` ids).
        where: where the profiled normaliser goes.
        build: ``build(norm, placement="pre") -> nn.Module`` on the CPU in fp32, randomly initialised.
        placements: the placements its blocks take.
    """

    name: str
    label: str
    family: str
    heads: str
    dim: str
    input: str
    where: str
    build: Callable[..., nn.Module]
    placements: tuple[str, ...] = PLACEMENTS

    @property
    def input_desc(self) -> str:
        """The input of one sample, for the rows (``3x224x224``, ``2000 tokens``)."""
        return f"3x{IMG_SIZE}x{IMG_SIZE}" if self.input == "image" else f"{LRA_LENGTH} tokens"

    def example(self, batch: int, device="cpu", seed: int = 0) -> torch.Tensor:
        """A deterministic input batch: images ``N(0, 1)`` or token ids ``1 .. LRA_VOCAB - 1`` (no padding)."""
        gen = torch.Generator().manual_seed(seed)
        if self.input == "image":
            x = torch.randn(batch, 3, IMG_SIZE, IMG_SIZE, generator=gen)
        else:
            x = torch.randint(1, LRA_VOCAB, (batch, LRA_LENGTH), generator=gen)
        return x.to(device)


def _register(name: str, label: str, family: str, heads: str, dim: str, input: str, where: str,
              placements: tuple[str, ...] = PLACEMENTS):
    def deco(build: Callable[..., nn.Module]):
        entry = ProfiledModel(name, label, family, heads, dim, input, where, build, placements)
        PROFILE_MODELS.register(name, f"{label}: {where}", entry=entry)(build)
        return build

    return deco


def get(name: str) -> ProfiledModel:
    """The profiled model ``name`` (one-line error with the closest names on a miss)."""
    return PROFILE_MODELS.get(name).meta["entry"]


def zoo_pair(name: str) -> tuple[str, str] | None:
    """``(profiled model, norm)`` for a zoo model name (``vit_s_ln`` -> ``("vit_s", "layernorm")``), else ``None``.

    The zoo names are the ones ``imagenet-c --model`` and ``dtn-bench list models`` use: one model vocabulary.
    """
    from dtn_bench.models import MODELS

    if name in PROFILE_MODELS or name not in MODELS:
        return None
    meta = MODELS.get(name).meta
    return (meta["arch"], meta["norm"]) if meta.get("arch") in PROFILE_MODELS else None


def expand(patterns) -> list[str]:
    """``--models`` entries matched against the registry, in registry order, each once.

    An entry is an exact profiled name, a zoo name with its normaliser (``vit_s_dtn``, kept as given), a shell pattern
    (``vit_*``) or a substring. A pattern that matches nothing is an error naming the closest models.
    """
    from dtn_bench.models import MODELS

    names = PROFILE_MODELS.names()
    order = {n: i for i, n in enumerate(names)}
    chosen: dict[str, tuple[int, int]] = {}
    for pattern in patterns:
        pair = zoo_pair(pattern)
        if pattern in PROFILE_MODELS:
            chosen.setdefault(pattern, (order[pattern], 0))
            continue
        if pair is not None:
            chosen.setdefault(pattern, (order[pair[0]], 1 + MODELS.names().index(pattern)))
            continue
        hits = [n for n in names if matches(n, pattern)]
        if not hits:
            known = names + [n for n in MODELS.names() if zoo_pair(n)]
            raise DTNBenchError(unknown_name_message("profile model pattern", pattern, known))
        for n in hits:
            chosen.setdefault(n, (order[n], 0))
    if not chosen:
        raise DTNBenchError("profile: no models given")
    return sorted(chosen, key=chosen.__getitem__)


def select(patterns) -> list[str]:
    """The profiled models that ``patterns`` name (see :func:`expand`; ``vit_s_ln`` names ``vit_s``), registry order."""
    return list(dict.fromkeys(zoo_pair(n)[0] if zoo_pair(n) else n for n in expand(patterns)))


def pairs(patterns, norms) -> list[tuple[str, str]]:
    """The ``(model, norm)`` configurations of a run: every pattern's models x ``norms``, each once.

    Zoo names are the exception: they bring their own normaliser (``--models vit_s_ln,vit_s_dtn``). The order is model
    by model, then ``norms`` order (a zoo name's normaliser after those).
    """
    norm_order = list(dict.fromkeys(norms))
    found: list[tuple[str, str]] = []
    for name in expand(patterns):
        pair = zoo_pair(name)
        found += [pair] if pair else [(name, n) for n in norm_order]
    for _, n in found:
        if n not in norm_order:
            norm_order.append(n)
    order = {n: i for i, n in enumerate(PROFILE_MODELS.names())}
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda mn: (order[mn[0]], norm_order.index(mn[1])))


def check_norm(norm: str) -> None:
    """Fail with the closest names when ``norm`` is not a registered normaliser."""
    from dtn_bench.norms import NORMS

    NORMS.get(norm)


def check_placement(name: str, placement: str) -> None:
    """One-line error when the profiled model ``name`` cannot take ``placement``."""
    from dtn_bench.placement import check_placement as check

    check(placement, "profile: --placement")
    entry = get(name)
    if placement not in entry.placements:
        raise DTNBenchError(f"profile: --placement {placement}: {name} takes {', '.join(entry.placements)} only (its "
                            "blocks are not timm's pre-norm ViT block)")


# ----------------------------------------------------------------------------------------------------------------------
# ViT zoo and DeiT-S
def _zoo_builder(arch: str) -> Callable[[str], nn.Module]:
    def build(norm: str, placement: str = "pre") -> nn.Module:
        from dtn_bench.models import create

        check_norm(norm)
        return create(f"{arch}_ln", norm=None if norm == "layernorm" else norm, placement=placement)

    return build


def _register_zoo() -> None:
    from dtn_bench.models.vit import VIT_SPECS

    where = "both norms of blocks 0-9 (class token joins at block 10; blocks 10-11 LayerNorm)"
    for arch, spec in VIT_SPECS.items():
        _register(arch, spec.label, "vit", str(spec.num_heads), str(spec.embed_dim), "image", where)(_zoo_builder(arch))


_register_zoo()


@_register("deit_s", "DeiT-S", "deit", "6", "384", "image",
           "both norms of all 12 blocks via convert_norms (class token: LN statistics only)")
def _deit_s(norm: str, placement: str = "pre") -> nn.Module:
    import timm

    from dtn_bench.models import convert_norms

    check_norm(norm)
    model = timm.create_model("deit_small_patch16_224", pretrained=False)
    if norm == "layernorm" and placement == "pre":
        return model
    return convert_norms(model, norm, placement=placement)


# ----------------------------------------------------------------------------------------------------------------------
# PVT-v2
def _conv_out(n: int, conv: nn.Conv2d) -> int:
    return (n + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1


def _is_dtn(norm: str) -> bool:
    return norm in ("dtn", "dtn_var")


def pvt_v2_with(variant: str, norm: str, *, groups=PVT_DTN_GROUPS, pool_to: int = PVT_POOL_TO) -> nn.Module:
    """Timm's ``pvt_v2_<variant>`` (random weights) with ``norm`` in every block of stages 1-3.

    Args:
        variant: ``b0`` .. ``b5``.
        norm: a registered normaliser; ``layernorm`` returns the stock model.
        groups: DTN groups of stages 1-3 (other normalisers that take groups use them too).
        pool_to: DTN's ``dtn_pool`` target grid.

    Returns:
        The model, on the CPU.
    """
    import timm

    from dtn_bench.norms import build_norm

    check_norm(norm)
    model = timm.create_model(f"pvt_v2_{variant}", pretrained=False)
    if norm == "layernorm":
        return model
    side = _conv_out(IMG_SIZE, model.patch_embed.proj)
    extra = {"pool_to": pool_to} if _is_dtn(norm) else {}
    for i, stage in enumerate(model.stages):
        if stage.downsample is not None:
            side = _conv_out(side, stage.downsample.proj)
        if i >= len(groups):
            continue
        for blk in stage.blocks:
            for slot in ("norm1", "norm2"):
                dim = getattr(blk, slot).weight.shape[0]
                setattr(blk, slot, build_norm(norm, dim, num_heads=groups[i], grid_size=(side, side), **extra))
    return model


@_register("pvt_v2_b0", "PVT-v2-b0", "pvt_v2", "1/2/5/8 (DTN groups 4/4/5/-)", "32/64/160/256", "image",
           "both norms of every block of stages 1-3 (DTN: dtn_pool to 14x14, groups 4/4/5); stage 4 LayerNorm",
           placements=("pre",))
def _pvt_b0(norm: str, placement: str = "pre") -> nn.Module:
    check_placement("pvt_v2_b0", placement)
    return pvt_v2_with("b0", norm)


@_register("pvt_v2_b2", "PVT-v2-b2", "pvt_v2", "1/2/5/8 (DTN groups 4/4/5/-)", "64/128/320/512", "image",
           "both norms of every block of stages 1-3 (DTN: dtn_pool to 14x14, groups 4/4/5); stage 4 LayerNorm",
           placements=("pre",))
def _pvt_b2(norm: str, placement: str = "pre") -> nn.Module:
    check_placement("pvt_v2_b2", placement)
    return pvt_v2_with("b2", norm)


# ----------------------------------------------------------------------------------------------------------------------
# Swin-T
class WindowNorm(nn.Module):
    """A token normaliser applied to each ``w x w`` window of a feature map on its own.

    ``y = merge(norm(partition(x)))``: the map is cut into non-overlapping windows (the regular, unshifted
    partition), each window's ``w * w`` tokens go through ``norm`` as one sample with grid ``w x w``, and the
    windows are put back. Token-wise normalisers (LayerNorm, RMSNorm) give the same result as without windows.

    Args:
        norm: the inner normaliser, built for ``w * w`` tokens.
        resolution: ``(rows, cols)`` of the map; both must be multiples of ``window``.
        window: window side.
    """

    def __init__(self, norm: nn.Module, resolution: tuple[int, int], window: int):
        super().__init__()
        rows, cols = resolution
        if rows % window or cols % window:
            raise DTNBenchError(f"WindowNorm: map {rows}x{cols} is not a whole number of {window}x{window} windows")
        self.norm = norm
        self.resolution = (rows, cols)
        self.window = window

    @property
    def weight(self) -> torch.Tensor:
        """The inner normaliser's ``weight``."""
        return self.norm.weight

    def extra_repr(self) -> str:
        """The map size and the window side, for ``repr``."""
        return f"map={self.resolution[0]}x{self.resolution[1]}, window={self.window}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, rows, cols, C]`` (Swin's ``norm1``) or ``[B, rows * cols, C]`` (``norm2``); same shape out."""
        shape = x.shape
        rows, cols = self.resolution
        w = self.window
        B, C = shape[0], shape[-1]
        if x.numel() != B * rows * cols * C:
            raise DTNBenchError(f"WindowNorm: input {list(shape)} does not hold a {rows}x{cols} map")
        win = x.reshape(B, rows // w, w, cols // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        y = self.norm(win)
        y = y.reshape(B, rows // w, cols // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(shape)
        return y


def swin_with(norm: str, *, name: str = "swin_tiny_patch4_window7_224") -> nn.Module:
    """Timm's Swin (random weights) with ``norm`` applied per window in both norms of every block.

    Args:
        norm: a registered normaliser; ``layernorm`` returns the stock model.
        name: the timm Swin model.

    Returns:
        The model, on the CPU.
    """
    import timm

    from dtn_bench.norms import build_norm

    check_norm(norm)
    model = timm.create_model(name, pretrained=False)
    if norm == "layernorm":
        return model
    for stage in model.layers:
        for blk in stage.blocks:
            w = blk.window_size[0]
            if blk.window_size[0] != blk.window_size[1]:
                raise DTNBenchError(f"{name}: non-square windows are not supported")
            res = tuple(blk.input_resolution)
            for slot in ("norm1", "norm2"):
                dim = getattr(blk, slot).weight.shape[0]
                inner = build_norm(norm, dim, num_heads=blk.attn.num_heads, grid_size=(w, w))
                setattr(blk, slot, WindowNorm(inner, res, w))
    return model


@_register("swin_t", "Swin-T", "swin", "3/6/12/24", "96/192/384/768", "image",
           "both norms of every block, per regular 7x7 window (groups = attention heads)", placements=("pre",))
def _swin_t(norm: str, placement: str = "pre") -> nn.Module:
    check_placement("swin_t", placement)
    return swin_with(norm)


# ----------------------------------------------------------------------------------------------------------------------
# LRA encoders
def _lra_builder(attention: str) -> Callable[[str], nn.Module]:
    def build(norm: str, placement: str = "pre") -> nn.Module:
        from dtn_bench.sequence import LRAEncoder

        check_norm(norm)
        return LRAEncoder(LRA_VOCAB, LRA_CLASSES, dim=512, heads=8, depth=4, mlp_dim=1024, max_len=LRA_LENGTH,
                          attention=attention, norm=norm, placement=placement)

    return build


for _att, _label in (("transformer", "Transformer"), ("bigbird", "BigBird"), ("reformer", "Reformer")):
    _register(f"lra_{_att}", f"LRA {_label}", "lra", "8", "512", "tokens",
              "both norms of the 4 blocks and the final norm (1-D DTN), ListOps JAX config")(_lra_builder(_att))


def paper_key(model: str) -> str:
    """The model's name in the published tables (``lra_bigbird`` -> ``bigbird``; ViT zoo names unchanged)."""
    return model[4:] if model.startswith("lra_") else model
