"""The other token normalisers of the DTN paper's comparison, for ``[B, T, C]`` tokens.

Each takes an optional boolean ``mask [B, T]`` (True = real token): normalisers whose statistics span tokens
(batch, instance and group norm) take them over real tokens only; per-token ones ignore it. Semantics follow the
authors' ``normkit`` (BatchNorm over batch and tokens per channel; InstanceNorm over tokens per sample and channel
with the unbiased variance; GroupNorm over a group's channels and all tokens of a sample; ScaleNorm with a
per-channel scale initialised to sqrt(C)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        if mask is None:
            flat = x.reshape(B * T, C)
            return F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                                self.momentum, self.eps).view(B, T, C)
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
