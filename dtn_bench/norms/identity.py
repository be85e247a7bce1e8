"""The identity, ``y = x``: the "no normaliser" control.

Every normaliser's cost is read against it (DyT's efficiency benchmark times it, github jiachenzhu/DyT,
``other_tasks/Efficiency/benchmark.py``) and, where training is stable, its accuracy. No parameters, no work:
``profile`` counts it as a normaliser layer with 0 MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from dtn_bench.norms.base import NormInfo, register_norm


class Identity(nn.Module):
    """``y = x``: a norm slot left empty (the tokens pass unchanged, the mask is ignored)."""

    def __init__(self, dim: int, *, device=None, dtype=None):
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        """The dimension, for ``repr``."""
        return str(self.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` unchanged."""
        return x


@register_norm("identity", NormInfo(
    label="Identity", formula="x (no normalisation: the control)", macs_per_element=0, macs_passes="none",
    paper="the control (DyT's efficiency benchmark times it)", zoo_suffix="identity", small_zoo=True), cls=Identity)
def _identity(dim, *, device=None, dtype=None):
    return Identity(dim, device=device, dtype=dtype)
