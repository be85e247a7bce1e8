"""Token normalisers, registered by name with one constructor signature.

``build_norm(name, dim, *, num_heads=1, grid_size=None, num_prefix_tokens=0, device=None, dtype=None, **kw)``
builds any of them; :func:`norm_layer` returns a timm-compatible ``norm_layer(dim, *, device=None, dtype=None)``.
Every normaliser's ``forward(x, mask=None)`` takes ``[B, T, C]`` tokens and an optional boolean padding mask.

Besides the DTN paper's comparison (LN, BN, IN, GN, ScaleNorm, PowerNorm, DTN) and RMSNorm: ``dyt``, Dynamic Tanh
(Zhu et al., CVPR 2025), and ``powernorm``, PowerNorm (Shen et al., ICML 2020) with the authors' running statistics,
warm-up and approximate backward (:mod:`dtn_bench.norms.powernorm` lists its formulas and every deviation).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from dtn_bench.norms.dtn import DTN
from dtn_bench.norms.dyt import DyT
from dtn_bench.norms.powernorm import PowerNorm
from dtn_bench.norms.simple import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm, ScaleNorm
from dtn_bench.registry import Registry

NORMS = Registry("norm")

__all__ = ["DTN", "NORMS", "build_norm", "norm_layer", "LayerNorm", "RMSNorm", "ScaleNorm", "BatchNorm",
           "InstanceNorm", "GroupNorm", "DyT", "PowerNorm"]


@NORMS.register("layernorm", formula="(x - E_c x) / sqrt(Var_c x + eps) * w + b, per token")
def _layernorm(dim, *, eps=1e-5, device=None, dtype=None, **_):
    return LayerNorm(dim, eps=eps, device=device, dtype=dtype)


@NORMS.register("dtn", formula="(x - mu) / sqrt(var + eps) * w + b, mu/var = gated mix of LN and P^h-weighted "
                "inter-token statistics per head")
def _dtn(dim, *, num_heads=1, grid_size=None, num_prefix_tokens=0, device=None, dtype=None, **kw):
    return DTN(dim, num_heads, grid_size=grid_size, num_prefix_tokens=num_prefix_tokens, device=device,
               dtype=dtype, **kw)


@NORMS.register("dtn_var", formula="(x - E_c x) / sqrt(var + eps) * w + b, LN mean, DTN's mixed variance")
def _dtn_var(dim, *, num_heads=1, grid_size=None, num_prefix_tokens=0, device=None, dtype=None, **kw):
    return DTN(dim, num_heads, grid_size=grid_size, num_prefix_tokens=num_prefix_tokens, only_var=True,
               device=device, dtype=dtype, **kw)


@NORMS.register("batchnorm", formula="(x - E_{b,t} x) / sqrt(Var_{b,t} x + eps) * w + b, per channel")
def _batchnorm(dim, *, device=None, dtype=None, **_):
    return BatchNorm(dim, device=device, dtype=dtype)


@NORMS.register("instancenorm", formula="(x - E_t x) / sqrt(Var_t x + eps) * w + b, per sample and channel")
def _instancenorm(dim, *, device=None, dtype=None, **_):
    return InstanceNorm(dim, device=device, dtype=dtype)


@NORMS.register("groupnorm", formula="(x - E_{t,g} x) / sqrt(Var_{t,g} x + eps) * w + b, groups = heads")
def _groupnorm(dim, *, num_heads=1, device=None, dtype=None, **_):
    return GroupNorm(dim, num_heads, device=device, dtype=dtype)


@NORMS.register("scalenorm", formula="x * g / max(||x||_2, eps), per token, g per channel (init sqrt C)")
def _scalenorm(dim, *, device=None, dtype=None, **_):
    return ScaleNorm(dim, device=device, dtype=dtype)


@NORMS.register("rmsnorm", formula="x / sqrt(E_c x^2 + eps) * w, per token")
def _rmsnorm(dim, *, eps=1e-6, device=None, dtype=None, **_):
    return RMSNorm(dim, eps=eps, device=device, dtype=dtype)


@NORMS.register("dyt", formula="w * tanh(alpha * x) + b, element-wise, alpha one learnable scalar per layer "
                "(init 0.5), no statistics")
def _dyt(dim, *, alpha_init=0.5, device=None, dtype=None, **_):
    return DyT(dim, alpha_init=alpha_init, device=device, dtype=dtype)


@NORMS.register("powernorm", formula="w * x' / sqrt(psi^2 + eps) + b, x' = x / sqrt(E_{c in head} x^2 + eps) per "
                "token; psi^2 = E_{b,t} x'^2 of the batch in warm-up, then its running mean; approximate backward")
def _powernorm(dim, *, num_heads=1, eps=1e-5, alpha_fwd=0.9, alpha_bkw=0.9, warmup_iters=10000, num_groups=None,
               group_eps=1e-5, device=None, dtype=None, **_):
    return PowerNorm(dim, num_heads if num_groups is None else num_groups, eps=eps, alpha_fwd=alpha_fwd,
                     alpha_bkw=alpha_bkw, warmup_iters=warmup_iters, group_eps=group_eps, device=device, dtype=dtype)


def build_norm(name: str, dim: int, *, num_heads: int = 1, grid_size=None, num_prefix_tokens: int = 0,
               device=None, dtype=None, **kw) -> nn.Module:
    """Build the normaliser ``name`` for ``dim`` channels.

    Args:
        name: a registered name (``dtn-bench list norms``).
        dim: channels.
        num_heads: attention heads (DTN's groups, GroupNorm's groups, PowerNorm's group-scaling groups).
        grid_size: patch grid for DTN; ``None`` for 1-D sequences.
        num_prefix_tokens: leading class/distillation tokens (DTN normalises them with LN statistics).
        device: parameter device.
        dtype: parameter dtype.
        **kw: extra keyword arguments of that normaliser (``eps``, DTN's ``window``, ``pool_to``, DyT's
            ``alpha_init``, PowerNorm's ``warmup_iters``, ``alpha_fwd``, ``alpha_bkw`` ...).
    """
    return NORMS.get(name).factory(dim, num_heads=num_heads, grid_size=grid_size,
                                   num_prefix_tokens=num_prefix_tokens, device=device, dtype=dtype, **kw)


def norm_layer(name: str, **context):
    """A timm-style ``norm_layer(dim, *, device=None, dtype=None, **kw)`` for ``name`` with fixed context."""
    NORMS.get(name)  # fail early on an unknown name
    return partial(build_norm, name, **context)
