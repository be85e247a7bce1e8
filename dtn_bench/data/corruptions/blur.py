"""Blur corruptions: defocus, glass, motion, zoom and gaussian blur.

Each function reads its severity parameters from the table of its ``recipe`` (a
:class:`~dtn_bench.data.corruptions.filters.Recipe`; ImageNet-C's, in :mod:`dtn_bench.data.corruptions`, by default).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from dtn_bench.data.corruptions.filters import (
    IMAGENET_C,
    Gens,
    Recipe,
    _fft_correlate,
    _filter_matrix,
    _gaussian,
    _motion_blur,
    _scalars,
    severity_params,
)


def _disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """The recipe's defocus kernel: an anti-aliased disk of radius ``radius``.

    A normalised disk ``x^2 + y^2 <= r^2`` on the grid ``-8..8`` (``-r..r`` when ``r > 8``), smoothed by a ``3x3``
    (``5x5`` when ``r > 8``) Gaussian of sigma ``alias_blur`` with OpenCV's reflect-101 border (OpenCV
    ``getGaussianKernel`` weights ``∝ exp(-k^2 / (2 s^2))``).
    """
    half, ksize = (8, 3) if radius <= 8 else (radius, 5)
    ax = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    k = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(k**2) / (2 * alias_blur**2))
    g /= g.sum()
    blur = _filter_matrix(tuple(g.tolist()), disk.shape[0], "reflect101").numpy()
    return blur @ disk @ blur.T


def defocus_blur(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """``clip(x ⋆ disk(r, s), 0, 1) * 255`` with the anti-aliased disk of :func:`_disk_kernel`, reflect-101 border."""
    r, s = severity_params("defocus_blur", severity, recipe)
    kern = torch.from_numpy(_disk_kernel(r, s))
    return _fft_correlate(x, kern, "reflect101").clamp_(0, 1) * 255


def gaussian_blur(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """The skimage ``gaussian(x, sigma=c)``: truncated at ``4 sigma``, border ``nearest``; ``clip * 255``."""
    c = severity_params("gaussian_blur", severity, recipe)
    return _gaussian(x, c).clamp_(0, 1) * 255


@lru_cache(maxsize=1)
def _glass_sweep() -> Callable:
    """The compiled sweep of :mod:`dtn_bench.data.corruptions._glass`.

    Imports numba on first use; its machine code is cached on disk, so only the first call on a machine compiles
    (about a second).
    """
    from dtn_bench.data.corruptions._glass import glass_sweep

    return glass_sweep


def glass_codes(gens: Gens, h: int, w: int, d: int, iterations: int) -> torch.Tensor:
    """The random shifts of :func:`glass_blur`, drawn at once from each image's generator.

    Int8 ``[N, iterations, h - 2d, w - 2d]`` (swept pixels in sweep order), codes ``k ~ U{0, .., 4 d^2 - 1}`` that
    stand for ``dx = k mod 2d - d``, ``dy = k div 2d - d``: two independent ``U{-d, .., d - 1}``, the distribution of
    the recipe's ``np.random.randint(-d, d, 2)``, from one draw.
    """
    out = torch.empty(len(gens), iterations, max(h - 2 * d, 0), max(w - 2 * d, 0), dtype=torch.int8)
    for i, g in enumerate(gens):
        out[i] = torch.randint(0, 4 * d * d, out.shape[1:], generator=g, dtype=torch.int8)
    return out


def glass_blur(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Gaussian(sigma), uint8, ``iterations`` serial sweeps of local pixel moves within ``d``, Gaussian(sigma).

    The output is ``clip * 255``. The sweep is the recipe's: rows ``h`` from ``224 - d`` down to ``d + 1``, and
    within a row columns ``w`` likewise, draw ``(dx, dy) ~ U{-d, .., d - 1}^2`` and execute ``x[h, w], x[h', w'] =
    x[h', w'], x[h, w]`` with ``(h', w') = (h + dy, w + dx)``. On NumPy views of an ``[H, W, 3]`` array that
    statement copies pixel ``(h', w')`` to ``(h, w)`` and leaves ``(h', w')`` as it was (the second assignment reads
    the view that the first has just overwritten), so that is what runs here: one move at a time, each reading the
    image as the earlier moves left it, so pixels travel along chains (compiled loop, :func:`_glass_sweep`; shifts
    from :func:`glass_codes`).
    """
    sigma, d, iters = severity_params("glass_blur", severity, recipe)
    h, w = x.shape[-2:]
    y = torch.floor(_gaussian(x, sigma).clamp_(0, 1) * 255)  # np.uint8(gaussian(x) * 255)
    codes = glass_codes(gens, h, w, d, iters).numpy()
    img = y.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    _glass_sweep()(img, codes, d)
    y = torch.from_numpy(img).to(x.device).permute(0, 3, 1, 2).to(x.dtype, memory_format=torch.contiguous_format)
    return _gaussian(y / 255, sigma).clamp_(0, 1) * 255


def motion_blur(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Line-kernel motion blur (radius, sigma) at an angle ``~ U(-45, 45)`` degrees per image.

    The output is 8-bit (truncated). Deviation: the kernel of :func:`motion_kernel` instead of ImageMagick (see the
    module docstring).
    """
    radius, sigma = severity_params("motion_blur", severity, recipe)
    angles = _scalars(gens, -45, 45)
    return _motion_blur(x * 255, radius, sigma, angles)


def zoom_factors(severity: int, recipe: Recipe | None = None) -> np.ndarray:
    """The zoom-blur factors: ``np.arange(1, stop, step)`` as in the recipe's script.

    ImageNet-C (``recipe`` ``None`` or without a table of its own): per-severity (stop, step) pairs, 12, 16, 11, 13,
    11 values. Other recipes: ``stop`` from their table, their ``zoom_step`` (0.01 in the CIFAR and Tiny-ImageNet
    scripts).
    """
    if recipe is None or recipe.table is None or recipe.zoom_step is None:
        stop, step = [(1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)][severity - 1]
    else:
        stop, step = severity_params("zoom_blur", severity, recipe), recipe.zoom_step
    return np.arange(1, stop, step)


def zoom_blur(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """``(x + sum_z clipped_zoom(x, z)) / (Z + 1)`` over the recipe's zoom factors, ``clip * 255``.

    ``clipped_zoom`` of an ``n``-pixel side (224 in ImageNet-C): the central ``ch = ceil(n / z)`` square (from
    ``top = (n - ch) // 2``) resized bilinearly to ``m = round(ch z)`` with scipy's corner-aligned grid
    (``u = j (ch - 1) / (m - 1)``, i.e. ``align_corners=True``), then the central ``n`` kept (from ``(m - n) // 2``);
    see :func:`_zoom_taps`. Factors from :func:`zoom_factors`.
    """
    n, c, h, w = x.shape
    acc = x.clone()
    zs = zoom_factors(severity, recipe)
    for z in zs:
        ch = int(np.ceil(h / z))
        top = (h - ch) // 2
        m = int(round(ch * z))
        trim = (m - h) // 2
        zoomed = F.interpolate(x[..., top : top + ch, top : top + ch], size=(m, m), mode="bilinear",
                               align_corners=True)
        acc += zoomed[..., trim : trim + h, trim : trim + w]
    return (acc / (len(zs) + 1)).clamp_(0, 1) * 255


def prepare_compiled() -> None:
    """Loads (or, the first time on a machine, compiles) the glass-blur sweep, so that no timing pays for it."""
    _glass_sweep()(np.zeros((1, 4, 4, 3), dtype=np.uint8), np.zeros((1, 1, 2, 2), dtype=np.int8), 1)
