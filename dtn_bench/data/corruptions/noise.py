"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise.

Each function reads its severity parameters from the table of its ``recipe`` (a
:class:`~dtn_bench.data.corruptions.filters.Recipe`; ImageNet-C's, in :mod:`dtn_bench.data.corruptions`, by default).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from dtn_bench.data.corruptions.filters import IMAGENET_C, Gens, Recipe, _draw, severity_params


def gaussian_noise(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """``clip(x + N(0, c^2), 0, 1) * 255``, noise i.i.d. per pixel and channel."""
    c = severity_params("gaussian_noise", severity, recipe)
    return (x + c * _draw(gens, "randn", tuple(x.shape[1:]), x.device)).clamp_(0, 1) * 255


@lru_cache(maxsize=8)
def _poisson_table(c: int) -> torch.Tensor:
    """``[256 * c]`` float64: for grey level ``l`` the entries ``l + P(Poisson(c l / 255) <= k)``, ``k < c``.

    Sorted (each level's CDF lies in ``[l, l + 1]``), so one :func:`torch.searchsorted` of ``l + u`` samples every
    level at once by inversion; counts at or above ``c`` all give the clipped value 1 and are not told apart.
    """
    lam = np.arange(256)[:, None] * c / 255.0
    k = np.arange(c)[None, :]
    log_pmf = k * np.log(np.maximum(lam, 1e-300)) - lam - np.array([math.lgamma(v + 1) for v in range(c)])[None, :]
    pmf = np.where(lam > 0, np.exp(log_pmf), (k == 0).astype(np.float64))
    cdf = np.minimum(np.cumsum(pmf, axis=1), 1.0)
    return torch.from_numpy((np.arange(256)[:, None] + cdf).reshape(-1))


_POISSON_BINS = 1024


def _shot_values(c: int) -> torch.Tensor:
    """The recipe's output ``floor(clip(k / c, 0, 1) * 255)`` for counts ``k = 0..c`` (computed in float64)."""
    return torch.floor(torch.clamp(torch.arange(c + 1, dtype=torch.float64) / c, 0, 1) * 255)


@lru_cache(maxsize=8)
def _poisson_lookup(c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables of :func:`shot_noise` for ``c``: the flat CDF table and the table of outputs per (level, u-bin).

    The flat CDF table is float64 (:func:`_poisson_table`); the other holds, per (level, u-bin of width ``1 / 1024``),
    the output value of the count at the bin's start, plus 1000 when a CDF step falls inside the bin (float32,
    ``[256 * 1024]``).
    """
    flat = _poisson_table(c)
    table = flat.view(256, c) - torch.arange(256, dtype=torch.float64)[:, None]
    edges = torch.arange(_POISSON_BINS + 1, dtype=torch.float64) / _POISSON_BINS
    lo = (table[:, None, :] <= edges[None, :-1, None]).sum(-1)
    hi = (table[:, None, :] < edges[None, 1:, None]).sum(-1)
    packed = _shot_values(c)[lo] + 1000 * (lo != hi)
    return flat, packed.reshape(-1).float()


def shot_noise(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """``clip(Poisson(c x) / c, 0, 1) * 255`` (photon noise at ``c`` photons per unit intensity).

    Exact inversion of the Poisson CDF per grey level ``l``: ``count = #{k < c : CDF_l(k) <= u}``, ``u ~ U(0, 1)``
    (counts >= c all clip to 1). A table indexed by ``(l, floor(1024 u))`` answers wherever no CDF step falls inside
    the ``u`` bin; the few remaining values (~2%) are found with a binary search (:func:`_poisson_table`).
    """
    c = severity_params("shot_noise", severity, recipe)
    flat_cdf, packed = (t.to(x.device) for t in _poisson_lookup(c))
    level = torch.round(x * 255)
    u = _draw(gens, "rand", tuple(x.shape[1:]), x.device, 0.0, float(_POISSON_BINS))  # 1024 u
    cell = torch.floor(u).add_(level, alpha=_POISSON_BINS).to(torch.int32)
    out = packed.index_select(0, cell.view(-1))
    open_ = torch.nonzero(out >= 1000).squeeze(1)
    if open_.numel():
        lv = level.view(-1)[open_]
        query = lv.double() + u.view(-1)[open_].double() / _POISSON_BINS
        counts = (torch.searchsorted(flat_cdf, query, right=True) - lv.to(torch.int64) * c).clamp_(0, c)
        out[open_] = _shot_values(c).to(x.device, x.dtype)[counts]
    return out.view(x.shape)


def impulse_noise(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Salt and pepper: each value (pixel and channel) is replaced with prob. ``c`` by 0 or 1 (even odds).

    One ``u ~ U(0, 1)`` per value: ``u < c / 2`` gives 0, ``c / 2 <= u < c`` gives 1, else unchanged.
    """
    c = severity_params("impulse_noise", severity, recipe)
    u = _draw(gens, "rand", tuple(x.shape[1:]), x.device)
    # u < c flips the value; the lower half of that band is pepper (0), the upper half salt (1)
    out = torch.where(u < c, (u >= c / 2).to(x.dtype), x)
    return out * 255


def speckle_noise(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Multiplicative noise ``clip(x + x N(0, c^2), 0, 1) * 255``."""
    c = severity_params("speckle_noise", severity, recipe)
    return (x + x * (c * _draw(gens, "randn", tuple(x.shape[1:]), x.device))).clamp_(0, 1) * 255
