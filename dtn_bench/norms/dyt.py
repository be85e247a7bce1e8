"""Dynamic Tanh (DyT), Zhu et al., "Transformers without Normalization", CVPR 2025.

``y = w * tanh(alpha * x) + b``, element-wise, for ``[B, T, C]`` tokens: ``alpha`` is one learnable scalar per layer
(initialised to ``alpha_init``, 0.5 by default, the paper's value for ViTs), ``w`` and ``b`` are per-channel (ones and
zeros, as LayerNorm's affine). DyT computes no statistics, so the padding mask changes nothing.

Layout follows the authors' module (github jiachenzhu/DyT): ``alpha`` has shape ``[1]``, ``weight`` and ``bias``
shape ``[C]``, so their state dicts load unchanged.

``alpha_init`` per slot (the registered factory's option): one number for every layer (0.5, the ViT recipe, is the
default), or a mapping over the slots ``attn`` (the norm of the attention sublayer), ``ffn`` (of the MLP) and
``final`` (the final norm), as the authors' LLaMA recipe sets it (:data:`LLAMA_ALPHA_INIT`), e.g.
``build_norm("dyt", C, slot="attn", alpha_init=LLAMA_ALPHA_INIT["7b"])`` or
``models.create("vit_s_dyt", norm_kwargs={"alpha_init": {"attn": 0.8, "ffn": 0.2, "final": 0.2}})``.
"""

from __future__ import annotations

import torch
from torch import nn

from dtn_bench.norms.base import NormInfo, alpha_for_slot, register_norm

LLAMA_ALPHA_INIT: dict[str, dict[str, float]] = {
    "7b": {"attn": 0.8, "ffn": 0.2, "final": 0.2},
    "13b": {"attn": 0.6, "ffn": 0.15, "final": 0.15},
    "34b": {"attn": 0.2, "ffn": 0.05, "final": 0.05},
    "70b": {"attn": 0.2, "ffn": 0.05, "final": 0.05},
}
"""The DyT authors' per-slot ``alpha`` init for LLaMA (attention-side; FFN and final norm), by model size: github
jiachenzhu/DyT, ``other_tasks/LLaMA/README.md``."""


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


@register_norm("dyt", NormInfo(
    label="DyT", formula="w * tanh(alpha * x) + b, element-wise, alpha one learnable scalar per layer (init 0.5), no "
    "statistics", macs_per_element=3, macs_passes="alpha * x, tanh (one op), affine (one multiply-add)",
    paper="Zhu et al., CVPR 2025 (Transformers without Normalization)", zoo_suffix="dyt", small_zoo=True,
    published=("dyt_imagenet_top1", "derf_imagenet_top1")), cls=DyT)
def _dyt(dim, *, slot=None, alpha_init=0.5, device=None, dtype=None):
    return DyT(dim, alpha_init=alpha_for_slot("dyt", alpha_init, slot), device=device, dtype=dtype)
