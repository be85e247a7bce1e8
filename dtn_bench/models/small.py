"""Small-input ViTs for CIFAR-10/100(-C) at 32 px and Tiny-ImageNet(-C) at 64 px, registered with timm.

The same layout as the DTN paper's zoo (:class:`~dtn_bench.models.vit.LocalViT`: position embedding on the patch
tokens, the chosen normaliser in blocks 0-9, the class token joining before block 10, LayerNorm after), at ViT-T
size (dim 192, depth 12, 3 heads, MLP ratio 4), with a smaller patch so that the token grid stays 8 x 8:

=====================  ======  =====  =======  ==========================
name                   input   patch  classes  normaliser in blocks 0-9
=====================  ======  =====  =======  ==========================
``vit_cifar_t_<sfx>``   32 px    4      10     the normaliser of ``<sfx>``
``vit_tiny_t_<sfx>``    64 px    8     200     the normaliser of ``<sfx>``
=====================  ======  =====  =======  ==========================

with ``<sfx>`` each registered normaliser's zoo suffix where it declares ``small_zoo``
(:class:`dtn_bench.norms.NormInfo`: ``ln`` LayerNorm, ``dtn``, ``dyt``, ``derf``, ``identity``). ``placement`` and
``norm_kwargs`` as the zoo's (:class:`~dtn_bench.models.vit.LocalViT`).

CIFAR-100 takes ``num_classes=100``. The models are in :data:`SMALL_MODELS` (``arch``, ``label``, ``norm``, ``heads``,
``dim``, ``img_size``, ``patch_size`` as the zoo's metadata) and in timm (``timm.create_model("vit_cifar_t_dtn")``
after ``import dtn_bench``). They are kept out of :data:`~dtn_bench.models.vit.MODELS`, the paper's zoo of 24, which
its tests pin; :func:`create` builds either. No pretrained weights are shipped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from timm.models import register_model

from dtn_bench.errors import DTNBenchError
from dtn_bench.models.vit import LocalViT
from dtn_bench.norms import zoo_suffixes
from dtn_bench.registry import Registry

SMALL_MODELS = Registry("small model")


@dataclass(frozen=True)
class SmallSpec:
    """One small-input architecture."""

    label: str
    img_size: int
    patch_size: int
    num_classes: int
    embed_dim: int = 192
    num_heads: int = 3
    depth: int = 12


SMALL_SPECS = {
    "vit_cifar_t": SmallSpec("ViT-T/4 (32 px)", 32, 4, 10),
    "vit_tiny_t": SmallSpec("ViT-T/8 (64 px)", 64, 8, 200),
}
SMALL_SUFFIX = zoo_suffixes(small=True)
"""Name suffix -> registered normaliser of blocks 0-9."""
DATA_MEAN = (0.485, 0.456, 0.406)
DATA_STD = (0.229, 0.224, 0.225)
"""The input normalisation the models declare (timm's ImageNet default, as the zoo's); a checkpoint trained with
other statistics should be evaluated with them (they are read from ``model.pretrained_cfg``)."""


def _make_entrypoint(arch: str, suffix: str):
    spec = SMALL_SPECS[arch]
    norm = SMALL_SUFFIX[suffix]
    name = f"{arch}_{suffix}"

    def entrypoint(pretrained: bool = False, **kwargs) -> LocalViT:
        if pretrained:
            raise DTNBenchError(f"{name}: no pretrained weights are shipped; use --checkpoint PATH")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        args = dict(img_size=spec.img_size, patch_size=spec.patch_size, num_classes=spec.num_classes,
                    embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads, mlp_ratio=4.0,
                    qkv_bias=True)
        args.update(kwargs)
        args.setdefault("norm", norm)
        model = LocalViT(**args)
        size = tuple(model.patch_embed.img_size)
        model.pretrained_cfg = dict(input_size=(3, *size), mean=DATA_MEAN, std=DATA_STD, num_classes=model.num_classes,
                                    interpolation="bilinear", crop_pct=1.0)
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (f"{spec.label}: {spec.num_heads} heads, dim {spec.embed_dim}, {spec.num_classes} classes, "
                          f"{norm} in blocks 0-9.")
    setattr(sys.modules[__name__], name, entrypoint)
    register_model(entrypoint)
    SMALL_MODELS.register(name, entrypoint.__doc__, arch=arch, label=spec.label, norm=norm, heads=spec.num_heads,
                          dim=spec.embed_dim, img_size=spec.img_size, patch_size=spec.patch_size,
                          num_classes=spec.num_classes)(entrypoint)
    return entrypoint


for _arch in SMALL_SPECS:
    for _suffix in SMALL_SUFFIX:
        _make_entrypoint(_arch, _suffix)


def create(name: str, *, norm: str | None = None, **kwargs) -> torch.nn.Module:
    """:func:`dtn_bench.models.vit.create`, which builds small, zoo and timm models alike."""
    from dtn_bench.models.vit import create as create_any

    return create_any(name, norm=norm, **kwargs)


def own_norm(name: str) -> str:
    """The normaliser a small or zoo model is named for (``default`` for other timm models)."""
    from dtn_bench.models.vit import MODELS

    for registry in (SMALL_MODELS, MODELS):
        if name in registry:
            return registry.get(name).meta["norm"]
    return "default"
