"""Dynamic Tanh (DyT), Zhu et al., "Transformers without Normalization", CVPR 2025.

``y = w * tanh(alpha * x) + b``, element-wise, for ``[B, T, C]`` tokens: ``alpha`` is one learnable scalar per layer
(initialised to ``alpha_init``, 0.5 by default, the paper's value for ViTs), ``w`` and ``b`` are per-channel (ones and
zeros, as LayerNorm's affine). DyT computes no statistics, so the padding mask changes nothing.

Layout follows the authors' module (github jiachenzhu/DyT): ``alpha`` has shape ``[1]``, ``weight`` and ``bias``
shape ``[C]``, so their state dicts load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class DyT(nn.Module):
    """``y = w * tanh(alpha * x) + b``; ``alpha`` a learnable scalar (init ``alpha_init``), ``w``/``b`` per channel.

    Args:
        dim: channels.
        alpha_init: initial ``alpha`` (the paper: 0.5 for ViTs; smaller for wide LLMs).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(self, dim: int, alpha_init: float = 0.5, *, device=None, dtype=None):
        super().__init__()
        self.dim = dim
        self.alpha_init = float(alpha_init)
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init, device=device, dtype=dtype))
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        """The dimension and ``alpha_init``, for ``repr``."""
        return f"{self.dim}, alpha_init={self.alpha_init}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``w * tanh(alpha * x) + b`` element-wise on ``x [B, T, C]``; ``mask`` is ignored."""
        return torch.addcmul(self.bias, torch.tanh(self.alpha * x), self.weight)
