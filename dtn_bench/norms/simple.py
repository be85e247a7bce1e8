"""The other token normalisers of the DTN paper's comparison, for ``[B, T, C]`` tokens.

Each takes an optional boolean ``mask [B, T]`` (True = real token): normalisers whose statistics span tokens
(batch, instance and group norm) take them over real tokens only; per-token ones ignore it. Semantics follow the
authors' ``normkit`` (BatchNorm over batch and tokens per channel; InstanceNorm over tokens per sample and channel
with the unbiased variance; GroupNorm over a group's channels and all tokens of a sample; ScaleNorm with a
per-channel scale initialised to sqrt(C)). Each is registered at the end of this module with its facts
(:class:`~dtn_bench.norms.base.NormInfo`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dtn_bench.norms.base import NormInfo, register_norm


def _mask_weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.shape != x.shape[:2]:
        from dtn_bench.errors import DTNBenchError

        raise DTNBenchError(f"mask shape {list(mask.shape)} does not match tokens {list(x.shape[:2])}")
    return mask.to(x.dtype).unsqueeze(-1)


class LayerNorm(nn.LayerNorm):
    """``y = (x - mean_c x) / sqrt(var_c x + eps) * w + b`` per token (biased variance)."""

    def __init__(self, dim: int, eps: float = 1e-5, *, device=None, dtype=None):
        super().__init__(dim, eps=eps, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]`` per token; ``mask`` is ignored."""
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean_c x^2 + eps) * w`` per token."""

    def __init__(self, dim: int, eps: float = 1e-6, *, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]`` per token; ``mask`` is ignored."""
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class ScaleNorm(nn.Module):
    """``y = x * g / max(||x||_2, eps)`` per token, ``g`` per channel, initialised to ``sqrt(C)`` (authors')."""

    def __init__(self, dim: int, eps: float = 1e-5, *, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.full((dim,), dim**0.5, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]`` per token; ``mask`` is ignored."""
        return x * (self.scale / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(self.eps))


class BatchNorm(nn.BatchNorm1d):
    """``y = (x - E_{b,t} x) / sqrt(Var_{b,t} x + eps) * w + b`` per channel; running statistics in eval."""

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1, *, device=None, dtype=None):
        super().__init__(dim, eps=eps, momentum=momentum, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]``; with ``mask [B, T]`` (True = real token), over real tokens only (padding -> 0)."""
        B, T, C = x.shape
        use_batch = self.training or not self.track_running_stats
        if mask is None or not use_batch:  # running statistics: per token, so the mask only zeroes padding
            flat = x.reshape(B * T, C)
            y = F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                             self.momentum, self.eps).view(B, T, C)
            return y if mask is None else torch.where(_mask_weights(x, mask) > 0, y, 0.0)
        _mask_weights(x, mask)
        m = mask.reshape(-1)
        flat = x.reshape(B * T, C)
        y = torch.zeros_like(flat)
        y[m] = F.batch_norm(flat[m], self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                            self.momentum, self.eps)
        return y.view(B, T, C)


class InstanceNorm(nn.Module):
    """``y = (x - E_t x) / sqrt(Var_t x + eps) * w + b`` per sample and channel (unbiased variance, authors')."""

    def __init__(self, dim: int, eps: float = 1e-5, *, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]``; with ``mask [B, T]`` (True = real token), statistics over real tokens only."""
        m = _mask_weights(x, mask)
        if m is None:  # two passes (mean, then the centred sum of squares): var_mean's Welford loop over the token
            # axis is several times slower on the CPU
            xc = x - x.mean(1, keepdim=True)
            var = torch.linalg.vector_norm(xc, dim=1, keepdim=True).square() / max(x.shape[1] - 1, 1)
            return torch.addcmul(self.bias, xc, torch.rsqrt(var + self.eps) * self.weight)
        n = m.sum(1, keepdim=True)
        mean = (x * m).sum(1, keepdim=True) / n.clamp_min(1)
        var = (((x - mean) ** 2) * m).sum(1, keepdim=True) / (n - 1).clamp_min(1)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class GroupNorm(nn.Module):
    """``y = (x - E_{t,c in g} x) / sqrt(Var_{t,c in g} x + eps) * w + b``; groups = heads (authors')."""

    def __init__(self, dim: int, num_groups: int, eps: float = 1e-5, *, device=None, dtype=None):
        super().__init__()
        if dim % num_groups:
            from dtn_bench.errors import DTNBenchError

            raise DTNBenchError(f"groupnorm: dim {dim} is not divisible by {num_groups} groups")
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]``; with ``mask [B, T]`` (True = real token), statistics over real tokens only."""
        B, T, C = x.shape
        G = self.num_groups
        m = _mask_weights(x, mask)
        if m is None:  # token-major, two passes (no transposed copy for F.group_norm)
            xg = x.view(B, T, G, C // G)
            xc = xg - xg.mean(dim=(1, 3), keepdim=True)
            var = torch.linalg.vector_norm(xc, dim=(1, 3), keepdim=True).square() / (T * (C // G))
            scale = (torch.rsqrt(var + self.eps) * self.weight.view(1, 1, G, C // G)).view(B, 1, C)
            return torch.addcmul(self.bias, xc.view(B, T, C), scale)
        else:
            xg = x.view(B, T, G, C // G)
            mg = m.view(B, T, 1, 1)
            n = mg.sum(dim=(1, 3), keepdim=True) * (C // G)
            mean = (xg * mg).sum(dim=(1, 3), keepdim=True) / n.clamp_min(1)
            var = (((xg - mean) ** 2) * mg).sum(dim=(1, 3), keepdim=True) / n.clamp_min(1)
            y = ((xg - mean) * torch.rsqrt(var + self.eps)).view(B, T, C)
        return y * self.weight + self.bias


# ------------------------------------------------------------------------------------------------------------ registry
_SUM_SQ_SCALE_GAIN = "sum of squares, scale, gain"
_STANDARDISE = "sum (mean), sum of squares (variance), (x - mu) * r, affine"


@register_norm("layernorm", NormInfo(
    label="LN", formula="(x - E_c x) / sqrt(Var_c x + eps) * w + b, per token", macs_per_element=4,
    macs_passes=_STANDARDISE, paper="Ba et al., 2016 (Layer Normalization)", zoo_suffix="ln", small_zoo=True,
    published=("imagenet_top1", "paper_flops_g", "paper_params_m", "norm_comparison_top1", "dyt_imagenet_top1",
               "derf_imagenet_top1", "lra_listops")), cls=LayerNorm, also=(nn.LayerNorm,))
def _layernorm(dim, *, eps=1e-5, device=None, dtype=None):
    return LayerNorm(dim, eps=eps, device=device, dtype=dtype)


@register_norm("batchnorm", NormInfo(
    label="BN", formula="(x - E_{b,t} x) / sqrt(Var_{b,t} x + eps) * w + b, per channel", macs_per_element=2,
    macs_passes="(x - running_mean) * r, affine (inference: running statistics)", mask="real-tokens",
    paper="Ioffe & Szegedy, ICML 2015 (Batch Normalization)", published=("norm_comparison_top1",)),
    cls=BatchNorm, also=(nn.modules.batchnorm._BatchNorm,))
def _batchnorm(dim, *, eps=1e-5, momentum=0.1, device=None, dtype=None):
    return BatchNorm(dim, eps=eps, momentum=momentum, device=device, dtype=dtype)


@register_norm("instancenorm", NormInfo(
    label="IN", formula="(x - E_t x) / sqrt(Var_t x + eps) * w + b, per sample and channel", macs_per_element=4,
    macs_passes=_STANDARDISE, mask="real-tokens", paper="Ulyanov et al., 2016 (Instance Normalization)",
    published=("norm_comparison_top1",)), cls=InstanceNorm, also=(nn.modules.instancenorm._InstanceNorm,))
def _instancenorm(dim, *, eps=1e-5, device=None, dtype=None):
    return InstanceNorm(dim, eps=eps, device=device, dtype=dtype)


@register_norm("groupnorm", NormInfo(
    label="GN", formula="(x - E_{t,g} x) / sqrt(Var_{t,g} x + eps) * w + b, groups = heads", macs_per_element=4,
    macs_passes=_STANDARDISE, mask="real-tokens", paper="Wu & He, ECCV 2018 (Group Normalization)",
    published=("norm_comparison_top1",)), cls=GroupNorm, also=(nn.GroupNorm,))
def _groupnorm(dim, *, num_heads=1, eps=1e-5, device=None, dtype=None):
    return GroupNorm(dim, num_heads, eps=eps, device=device, dtype=dtype)


@register_norm("scalenorm", NormInfo(
    label="ScN", formula="x * g / max(||x||_2, eps), per token, g per channel (init sqrt C)", macs_per_element=3,
    macs_passes=_SUM_SQ_SCALE_GAIN, paper="Nguyen & Salazar, 2019 (Transformers without Tears)",
    published=("norm_comparison_top1",)), cls=ScaleNorm)
def _scalenorm(dim, *, eps=1e-5, device=None, dtype=None):
    return ScaleNorm(dim, eps=eps, device=device, dtype=dtype)


@register_norm("rmsnorm", NormInfo(
    label="RMSNorm", formula="x / sqrt(E_c x^2 + eps) * w, per token", macs_per_element=3,
    macs_passes=_SUM_SQ_SCALE_GAIN, paper="Zhang & Sennrich, NeurIPS 2019 (Root Mean Square Layer Normalization)"),
    cls=RMSNorm, also=(getattr(nn, "RMSNorm", RMSNorm),))
def _rmsnorm(dim, *, eps=1e-6, device=None, dtype=None):
    return RMSNorm(dim, eps=eps, device=device, dtype=dtype)
