"""Token normalisers, registered by name with one constructor signature, each with its facts (:class:`NormInfo`).

``build_norm(name, dim, *, num_heads=1, grid_size=None, num_prefix_tokens=0, slot=None, masked=False, device=None,
dtype=None, **options)`` builds any of them; :func:`norm_layer` returns a timm-compatible
``norm_layer(dim, *, device=None, dtype=None)``. Every normaliser's ``forward(x, mask=None)`` takes ``[B, T, C]``
tokens and an optional boolean padding mask. An option a normaliser does not take is a one-line error.

One module per normaliser (or family), each registering itself where its class is defined
(:func:`~dtn_bench.norms.base.register_norm`): :mod:`~dtn_bench.norms.simple` (the DTN paper's comparison: LN, BN, IN,
GN, ScaleNorm; and RMSNorm), :mod:`~dtn_bench.norms.dtn` (DTN), :mod:`~dtn_bench.norms.dyt` (Dynamic Tanh, Zhu et al.,
CVPR 2025), :mod:`~dtn_bench.norms.powernorm` (PowerNorm, Shen et al., ICML 2020, with the authors' running
statistics, warm-up and approximate backward), :mod:`~dtn_bench.norms.derf` (Dynamic erf, Chen et al., CVPR 2026)
and :mod:`~dtn_bench.norms.identity` (``y = x``, the control); :data:`MODULES` is the registry's order.
"""

from __future__ import annotations

from importlib import import_module

from dtn_bench.norms.base import (
    CONTEXT,
    NORMS,
    SLOTS,
    NormInfo,
    build_norm,
    info,
    info_of,
    label,
    norm_layer,
    norm_options,
    register_norm,
    zoo_suffixes,
)

MODULES = ("simple", "dtn", "dyt", "powernorm", "derf", "identity")
"""The normaliser modules, in the registry's order: each registers its normalisers where it defines them."""
for _module in MODULES:
    import_module(f"{__name__}.{_module}")

from dtn_bench.norms.derf import Derf  # noqa: E402
from dtn_bench.norms.dtn import DTN  # noqa: E402
from dtn_bench.norms.dyt import DyT  # noqa: E402
from dtn_bench.norms.identity import Identity  # noqa: E402
from dtn_bench.norms.powernorm import PowerNorm  # noqa: E402
from dtn_bench.norms.simple import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm, ScaleNorm  # noqa: E402

__all__ = ["CONTEXT", "DTN", "NORMS", "SLOTS", "NormInfo", "build_norm", "info", "info_of", "label", "norm_layer",
           "norm_options", "register_norm", "zoo_suffixes", "LayerNorm", "RMSNorm", "ScaleNorm", "BatchNorm",
           "InstanceNorm", "GroupNorm", "DyT", "PowerNorm", "Derf", "Identity"]
