"""Dynamic erf (Derf), Chen, Lu, Zhu, Sun & Liu, "Stronger Normalization-Free Transformers", CVPR 2026.

``y = w * erf(alpha * x + s) + b``, element-wise, for ``[B, T, C]`` tokens: ``alpha`` and the shift ``s`` are one
learnable scalar each per layer (initialised to ``alpha_init``, 0.5, and ``shift_init``, 0, the authors' ViT values),
``w`` and ``b`` per channel (ones and zeros). No statistics, so the padding mask changes nothing.

Layout follows the authors' ``Dynamic_erf`` (github zlab-princeton/Derf, ``ViT/dynamic_erf.py``, channels-last
case): parameters ``alpha`` ``[1]``, ``shift`` ``[1]``, ``weight`` and ``bias`` ``[C]``, so their state dicts load
unchanged. The authors' ``convert_ln_to_derf`` replaces every ``nn.LayerNorm`` of a stock timm ViT, final norm
included; the published ImageNet numbers (:data:`dtn_bench.results.published.DERF_IMAGENET_TOP1`) are for that
layout, not for this package's DTN-layout zoo (``vit_s_derf``: Derf in blocks 0-9).

``alpha_init`` per slot (the registered factory's option): one number for every layer, or a mapping over the slots
``attn``, ``ffn`` and ``final``, as the authors' GPT-2 recipe sets it (``attn_alpha_init_value``,
``ffn_alpha_init_value``, ``dec_alpha_init_value``: github zlab-princeton/Derf, ``language model/model_derf.patch``).
"""

from __future__ import annotations

import torch
from torch import nn

from dtn_bench.norms.base import NormInfo, alpha_for_slot, register_norm


class Derf(nn.Module):
    """``y = w * erf(alpha * x + shift) + b``; ``alpha``, ``shift`` learnable scalars, ``w``/``b`` per channel.

    Args:
        dim: channels.
        alpha_init: initial ``alpha`` (the authors': 0.5).
        shift_init: initial ``shift`` (the authors': 0).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(self, dim: int, alpha_init: float = 0.5, shift_init: float = 0.0, *, device=None, dtype=None):
        super().__init__()
        self.dim = dim
        self.alpha_init = float(alpha_init)
        self.shift_init = float(shift_init)
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init, device=device, dtype=dtype))
        self.shift = nn.Parameter(torch.full((1,), self.shift_init, device=device, dtype=dtype))
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        """The dimension and the inits, for ``repr``."""
        return f"{self.dim}, alpha_init={self.alpha_init}, shift_init={self.shift_init}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``w * erf(alpha * x + shift) + b`` element-wise on ``x [B, T, C]``; ``mask`` is ignored."""
        return torch.addcmul(self.bias, torch.erf(torch.addcmul(self.shift, self.alpha, x)), self.weight)


@register_norm("derf", NormInfo(
    label="Derf", formula="w * erf(alpha * x + s) + b, element-wise, alpha and s one learnable scalar each per layer "
    "(init 0.5 and 0), no statistics", macs_per_element=3,
    macs_passes="alpha * x + s (one multiply-add), erf (one op), affine (one multiply-add)",
    paper="Chen et al., CVPR 2026 (Stronger Normalization-Free Transformers, arXiv 2512.10938)", zoo_suffix="derf",
    small_zoo=True, published=("derf_imagenet_top1",)), cls=Derf)
def _derf(dim, *, slot=None, alpha_init=0.5, shift_init=0.0, device=None, dtype=None):
    return Derf(dim, alpha_init=alpha_for_slot("derf", alpha_init, slot), shift_init=shift_init, device=device,
                dtype=dtype)
