"""ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019), re-implemented as batched torch functions.

Clean-room implementation of the 19 corruptions of ``make_imagenet_c.py`` from their published parameter tables
(the 15 of the mCE plus the 4 extras), vectorised over a batch ``[N, 3, 224, 224]`` and running on CPU or GPU, and
a folder generator that writes the released layout ``OUT/<corruption>/<severity>/<class>/<image>``.

Recipe (as released): ``Resize(256)`` (bilinear, on the PIL image) + ``CenterCrop(224)``, corrupt, truncate to
uint8 (``np.uint8`` of the float result), save JPEG quality 85 (``optimize=True``).

Conventions: a corruption function receives ``x`` = image / 255 as float32 ``[N, 3, H, W]`` in ``[0, 1]``, the
severity (1..5) and one :class:`torch.Generator` per image, and returns the corrupted image on the 0..255 scale
(float); :func:`corrupt_batch` clamps to ``[0, 255]`` and truncates to uint8. Random numbers are drawn on the CPU
from the image's own generator, in a fixed order, so an image's result depends only on its generator's seed (not
on the batch it is in). :func:`corrupt_folder` seeds each image's generator from ``sha256(seed, corruption,
severity, relative path)``: same seed, same bytes, whatever the batch size (FFTs and dense matrix products run one
image at a time so that their last bits do not depend on the batch). CPU and GPU float maths differ in the last
bits, so a truncation can differ by one grey level between devices. Output names keep the source's name; a
non-JPEG source ``x.png`` is written as ``x.jpg`` (the content is always JPEG).

Deviations from the released code (numbers with these corruptions are not bit-comparable to the released data;
the released data were made without a seed, so nothing is bit-exact anyway):

* ``frost``: the recipe blends a random 224 crop of one of five frost photographs, which are not redistributable.
  Here the texture's structure is procedural (:func:`frost_texture`: a plasma fractal for cloudy ice plus needle
  crystals, crosses of line kernels at random angles), and its statistics are the photographs': each image picks one
  of the five as the recipe does and gets that photograph's per-channel mean and contrast (:data:`FROST_PHOTO_STATS`,
  measured on 224 crops of the photographs; mean over the five RGB 143.7 / 164.8 / 176.8, std within a crop 13-36).
  Same blend ``clip(c0 * x + c1 * frost)`` and weights as the table.
* ``motion_blur`` and ``snow``: ImageMagick's ``MotionBlurImage`` is replaced by the same line kernel computed
  here: width ``w = 2 * ceil(radius) + 1``, weights ``k_i ∝ exp(-i^2 / (2 sigma^2))`` for ``i = 0..w-1``
  (one-sided), taps at ``(round(i cos a), round(i sin a))``, edge pixels repeated; applied with an FFT and truncated
  to 8 bits as ImageMagick's 8-bit output is.
* ``shot_noise`` and all other random draws use torch's generators (not NumPy's), so values differ from any NumPy
  run while the distributions are the recipe's (Poisson counts by exact CDF inversion).
* ``elastic_transform``: OpenCV's ``warpAffine`` quantises coordinates to 1/32 pixel; here sampling is exact
  bilinear (``grid_sample``). Borders as in the recipe (reflect-101 for the affine, half-sample reflect after).
* ``spatter`` (extra): OpenCV's Canny detector, distance transform, histogram equalisation and emboss filter are
  re-implemented in torch (Sobel L1 magnitude, 4-direction non-maximum suppression, 8-connected hysteresis; the
  distance is the exact Euclidean one where OpenCV uses a 5x5 mask approximation).
* ``pixelate``: Pillow's BOX resampling is re-implemented with the same coefficients (in floating point where
  Pillow uses 22-bit fixed point, rounding after each pass as Pillow does); agrees within one grey level.

Everything else follows the recipe's formulas (noted per function); the 8 deterministic corruptions (brightness,
contrast, pixelate, jpeg_compression, saturate, defocus_blur, gaussian_blur, zoom_blur) agree with a plain
NumPy/PIL implementation of the recipe within one grey level before the JPEG save. ``glass_blur`` runs the recipe's
serial sweep of dependent pixel moves (~50k per iteration) as it executes in NumPy, compiled with numba
(:mod:`dtn_bench.data._glass`).
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dtn_bench.distributed import check_device
from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES
from dtn_bench.registry import Registry, unknown_name_message

__all__ = [
    "ALL_CORRUPTIONS",
    "CORRUPTION_FNS",
    "CorruptSummary",
    "IMAGE_EXTENSIONS",
    "check_folder_args",
    "corrupt_batch",
    "corrupt_folder",
    "image_seed",
    "load_image",
    "plasma_fractal",
    "resolve_corruptions",
    "resolve_severities",
]

SIZE = 224
"""Side of every ImageNet-C image (after Resize(256) + CenterCrop(224))."""
JPEG_QUALITY = 85
"""Quality of the saved JPEGs (the release's ``quality=85, optimize=True``)."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".webp", ".tif", ".tiff")
"""Source files the generator reads (case-insensitive); other non-hidden files are an error."""
MANIFEST_NAME = "dtn-bench-corrupt.json"
"""Written at the root of OUT by :func:`corrupt_folder` last, once every image is there: a folder without it is
incomplete. ``imagenet-c --data-dir`` reads it to label the data as generated (not the released ImageNet-C)."""
PARTIAL_NAME = ".dtn-bench-corrupt.partial.json"
"""Written at the root of OUT when a job starts (source and seed), removed after the manifest: a re-run with the same
source and seed continues that job."""
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS

CORRUPTION_FNS = Registry("corruption")
"""name -> ``fn(x, severity, gens)``; meta ``params`` (the severity table) and ``stochastic``."""

Gens = Sequence[torch.Generator]


def _register(name: str, params: tuple, stochastic: bool) -> Callable[[Callable], Callable]:
    return CORRUPTION_FNS.register(name, params=params, stochastic=stochastic)


# ---------------------------------------------------------------------------------------------------------------
# random numbers: per image, on the CPU, in a fixed order


def _draw(gens: Gens, kind: str, shape: tuple[int, ...], device: torch.device, lo: float = 0.0,
          hi: float = 1.0) -> torch.Tensor:
    """``[N, *shape]`` float32 on ``device``: one draw of ``kind`` (rand: ``U(lo, hi)``, randn: ``N(0, 1)``) per image
    from its own generator (filled in place, no stacking copy)."""
    out = torch.empty((len(gens), *shape))
    for i, g in enumerate(gens):
        if kind == "rand":
            out[i].uniform_(lo, hi, generator=g)
        else:
            out[i].normal_(0, 1, generator=g)
    return out.to(device)


def _uniform(gens: Gens, shape: tuple[int, ...], lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return _draw(gens, "rand", shape, device, lo, hi)


def _scalars(gens: Gens, lo: float, hi: float) -> list[float]:
    """One ``U(lo, hi)`` number per image (float64, CPU)."""
    return [lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item() for g in gens]


# ---------------------------------------------------------------------------------------------------------------
# linear filters with explicit borders


def _border_index(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Maps out-of-range indices into ``[0, n)``.

    ``nearest``: clamp (``aaa|abc|ccc``); ``reflect``: half-sample symmetric, scipy's ``reflect`` (``cba|abc|cba``);
    ``reflect101``: whole-sample symmetric, OpenCV's default / scipy's ``mirror`` (``cb|abc|ba``).
    """
    if mode == "nearest":
        return np.clip(idx, 0, n - 1)
    if mode == "reflect":
        m = np.mod(idx, 2 * n)
        return np.where(m >= n, 2 * n - 1 - m, m)
    if mode == "reflect101":
        if n == 1:
            return np.zeros_like(idx)
        m = np.mod(idx, 2 * n - 2)
        return np.where(m >= n, 2 * n - 2 - m, m)
    raise ValueError(f"unknown border mode {mode!r}")


def _gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """scipy's 1-D Gaussian: ``w_k ∝ exp(-k^2 / (2 sigma^2))`` for ``|k| <= int(truncate * sigma + 0.5)``."""
    radius = int(truncate * float(sigma) + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * k**2 / float(sigma) ** 2)
    return w / w.sum()


@lru_cache(maxsize=128)
def _filter_matrix(weights: tuple[float, ...], n: int, mode: str) -> torch.Tensor:
    """The ``[n, n]`` matrix of a centred 1-D correlation with ``weights`` and border ``mode`` (float64, CPU)."""
    w = np.asarray(weights)
    r = (len(w) - 1) // 2
    mat = np.zeros((n, n))
    rows = np.arange(n)
    for j, wj in enumerate(w):
        np.add.at(mat, (rows, _border_index(rows + j - r, n, mode)), wj)
    return torch.from_numpy(mat)


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    """Pads the last two dims by index gathering (any amount, any :func:`_border_index` mode)."""
    h, w = x.shape[-2:]
    if mode in ("nearest", "reflect101") and max(top, bottom) < h and max(left, right) < w and x.dim() in (3, 4):
        return F.pad(x, (left, right, top, bottom), mode="replicate" if mode == "nearest" else "reflect")
    ri = torch.from_numpy(_border_index(np.arange(-top, h + bottom), h, mode)).to(x.device)
    ci = torch.from_numpy(_border_index(np.arange(-left, w + right), w, mode)).to(x.device)
    return x.index_select(-2, ri).index_select(-1, ci)


def _filter_1d_pair(x: torch.Tensor, weights: np.ndarray, mode: str) -> torch.Tensor:
    """Separable filter of the last two dims with the same centred ``weights`` along both (correlation).

    Kernels of up to 31 taps run as two depthwise convolutions in channels-last layout (oneDNN's fast path) on a
    padded copy; longer kernels (large sigmas, possibly longer than the image) as two products with the dense
    ``[n, n]`` operator ``G`` that folds the border in (``y = G_h x G_w^T``, exact for any length).
    """
    h, w = x.shape[-2:]
    r = (len(weights) - 1) // 2
    if x.dim() == 4 and len(weights) <= 31 and r < min(h, w):
        c = x.shape[1]
        k = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
        y = _pad(x, r, r, r, r, mode).contiguous(memory_format=torch.channels_last)
        y = F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return y.contiguous()
    key = tuple(weights.tolist())
    gh = _filter_matrix(key, h, mode).to(x.device, x.dtype)
    gw = gh if w == h else _filter_matrix(key, w, mode).to(x.device, x.dtype)
    if x.dim() != 4:
        return gh @ x @ gw.T
    # one image at a time: the product's blocking (and so its last bits) must not depend on the batch size
    out = torch.empty_like(x)
    for i, xi in enumerate(x):
        torch.matmul(gh @ xi, gw.T, out=out[i])
    return out


def _gaussian(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage ``gaussian`` / scipy ``gaussian_filter`` over the last two dims (default border ``nearest``)."""
    return _filter_1d_pair(x, _gaussian_weights(sigma, truncate), mode)


def _fft_correlate(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """2-D correlation ``y(p) = sum_o K(o) x(p + o)`` of ``x [N, C, H, W]`` with centred kernels, via the FFT.

    Args:
        x: images.
        kernel: ``[K, K]`` (shared) or ``[N, K, K]`` (one per image), ``K = 2 r + 1`` odd, centre at ``(r, r)``.
        mode: border, see :func:`_border_index`.
    """
    h, w = x.shape[-2:]
    r = (kernel.shape[-1] - 1) // 2
    size = 32 * math.ceil((max(h, w) + 2 * r) / 32)
    xp = _pad(x, r, size - h - r, r, size - w - r, mode)
    kp = torch.zeros(*kernel.shape[:-2], size, size, dtype=x.dtype, device=x.device)
    kp[..., : 2 * r + 1, : 2 * r + 1] = kernel.to(x.device, x.dtype)
    kp = torch.roll(kp, shifts=(-r, -r), dims=(-2, -1))  # kernel centre at the origin
    kf = torch.fft.rfft2(kp).conj()
    # one image at a time: pocketfft's batching (and so the last bits) must not depend on the batch size
    out = torch.empty_like(x)
    for i, xi in enumerate(xp):
        yi = torch.fft.irfft2(torch.fft.rfft2(xi) * (kf[i] if kernel.dim() == 3 else kf), s=(size, size))
        out[i] = yi[..., r : r + h, r : r + w]
    return out


def _rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (OpenCV ``RGB2GRAY``): ``0.299 R + 0.587 G + 0.114 B``, shape ``[N, 1, H, W]``."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


# ---------------------------------------------------------------------------------------------------------------
# geometry helpers


def zoom_factors(severity: int) -> np.ndarray:
    """The zoom-blur factors: ``np.arange(1, stop, step)`` as in the recipe (12, 16, 11, 13, 11 values)."""
    stop, step = [(1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)][severity - 1]
    return np.arange(1, stop, step)


def _zoom_taps(z: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps of the recipe's ``clipped_zoom`` along one axis.

    The central ``ch = ceil(n / z)`` pixels (from ``top = (n - ch) // 2``) are zoomed with scipy's ``zoom(order=1)``
    to ``m = round(ch z)`` pixels (``u = j (ch - 1) / (m - 1)``) and the central ``n`` are kept (from
    ``(m - n) // 2``). Returns the lower input index ``i0`` and the weight ``f`` of ``i0 + 1`` per output pixel.
    """
    ch = int(np.ceil(n / z))
    top = (n - ch) // 2
    m = int(round(ch * z))
    trim = (m - n) // 2
    j = np.arange(n) + trim
    u = j * (ch - 1) / (m - 1) if m > 1 else np.zeros(n)
    i0 = np.minimum(np.floor(u).astype(np.int64), ch - 1)
    f = u - i0
    i1 = np.minimum(i0 + 1, ch - 1)
    f = np.where(i1 == i0, 0.0, f)
    return top + i0, f


@lru_cache(maxsize=64)
def _zoom_matrix(z: float, n: int) -> torch.Tensor:
    """``[n, n]`` matrix ``A`` of :func:`_zoom_taps`: ``clipped_zoom(X) = A X A^T`` per channel (float64)."""
    i0, f = _zoom_taps(z, n)
    a = np.zeros((n, n))
    rows = np.arange(n)
    np.add.at(a, (rows, i0), 1 - f)
    np.add.at(a, (rows, np.minimum(i0 + 1, n - 1)), f)
    return torch.from_numpy(a)


def _clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """The recipe's ``clipped_zoom`` of the last two (square) dims: ``A X A^T``."""
    a = _zoom_matrix(float(z), x.shape[-1]).to(x.device, x.dtype)
    return a @ x @ a.T


def plasma_fractal(gens: Gens, mapsize: int = 256, wibbledecay: float = 3.0,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Diamond-square plasma fractals, one per generator, ``[N, mapsize, mapsize]`` in ``[0, 1]``.

    As in the recipe: start from 0 at the corner, step = mapsize, wibble = 100; per level the square centres get
    ``mean of 4 corners + wibble * U(-wibble, wibble)`` (sic: the noise scale is ``wibble^2``), then the diamond
    points likewise (periodic wrap); step /= 2 and wibble /= wibbledecay until step < 2; finally min-max scaled.
    """
    n = len(gens)
    dev = torch.device(device)
    grid = torch.zeros(n, mapsize, mapsize, device=dev)  # float32: the min-max scaling keeps ~1e-7 precision
    step, wibble = mapsize, 100.0

    def wibbled(total: torch.Tensor) -> torch.Tensor:
        noise = _uniform(gens, tuple(total.shape[1:]), -wibble, wibble, dev)
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = grid[:, 0:mapsize:step, 0:mapsize:step]
        sq = corners + torch.roll(corners, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        grid[:, half:mapsize:step, half:mapsize:step] = wibbled(sq)
        centres = grid[:, half:mapsize:step, half:mapsize:step]
        corners = grid[:, 0:mapsize:step, 0:mapsize:step]
        left = centres + torch.roll(centres, 1, dims=1) + corners + torch.roll(corners, -1, dims=2)
        grid[:, 0:mapsize:step, half:mapsize:step] = wibbled(left)
        top = centres + torch.roll(centres, 1, dims=2) + corners + torch.roll(corners, -1, dims=1)
        grid[:, half:mapsize:step, 0:mapsize:step] = wibbled(top)
        step //= 2
        wibble /= wibbledecay
    lo = grid.amin(dim=(1, 2), keepdim=True)
    grid = grid - lo
    return grid / grid.amax(dim=(1, 2), keepdim=True)


def motion_kernel(radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """ImageMagick-style motion-blur line kernel as a centred ``[2w-1, 2w-1]`` correlation kernel.

    ``w = 2 ceil(radius) + 1`` taps ``i = 0..w-1`` with weights ``k_i = exp(-i^2 / (2 sigma^2)) / Z`` (one-sided:
    the blur trails on one side of each pixel) at offsets ``(dx, dy) = (ceil(i cos a - 0.5), ceil(i sin a - 0.5))``
    (x right, y down, ``a`` in degrees).
    """
    width = int(2 * math.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i**2) / (2 * sigma**2))
    k /= k.sum()
    a = math.radians(angle_deg)
    dx = np.ceil(i * math.cos(a) - 0.5).astype(np.int64)
    dy = np.ceil(i * math.sin(a) - 0.5).astype(np.int64)
    r = width - 1
    kern = np.zeros((2 * r + 1, 2 * r + 1))
    np.add.at(kern, (dy + r, dx + r), k)
    return kern


_FFT_SLACK = 1e-3
"""Added before truncating an FFT result of 0..255 values: float32 FFT round-off is below 1e-4 grey levels, so an
exact integer (a flat region) that comes out as ``k - 1e-5`` still truncates to ``k``."""


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: Sequence[float]) -> torch.Tensor:
    """Per-image line-kernel motion blur of 0..255 ``x [N, C, H, W]`` (edge pixels repeated; see
    :func:`motion_kernel`), truncated to 8 bits as the recipe's ImageMagick output is (a measured comparison with
    ImageMagick found rounding here 0.5 grey level brighter on average)."""
    kern = torch.from_numpy(np.stack([motion_kernel(radius, sigma, a) for a in angles]))
    return torch.floor(_fft_correlate(x, kern, "nearest").add_(_FFT_SLACK)).clamp_(0, 255)


# ---------------------------------------------------------------------------------------------------------------
# noise


@_register("gaussian_noise", (0.08, 0.12, 0.18, 0.26, 0.38), stochastic=True)
def gaussian_noise(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """``clip(x + N(0, c^2), 0, 1) * 255``, noise i.i.d. per pixel and channel."""
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
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
    """Tables of :func:`shot_noise` for ``c``: the flat CDF table (float64) and, per (level, u-bin of width
    ``1 / 1024``), the output value of the count at the bin's start, plus 1000 when a CDF step falls inside the bin
    (float32, ``[256 * 1024]``)."""
    flat = _poisson_table(c)
    table = flat.view(256, c) - torch.arange(256, dtype=torch.float64)[:, None]
    edges = torch.arange(_POISSON_BINS + 1, dtype=torch.float64) / _POISSON_BINS
    lo = (table[:, None, :] <= edges[None, :-1, None]).sum(-1)
    hi = (table[:, None, :] < edges[None, 1:, None]).sum(-1)
    packed = _shot_values(c)[lo] + 1000 * (lo != hi)
    return flat, packed.reshape(-1).float()


@_register("shot_noise", (60, 25, 12, 5, 3), stochastic=True)
def shot_noise(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """``clip(Poisson(c x) / c, 0, 1) * 255`` (photon noise at ``c`` photons per unit intensity).

    Exact inversion of the Poisson CDF per grey level ``l``: ``count = #{k < c : CDF_l(k) <= u}``, ``u ~ U(0, 1)``
    (counts >= c all clip to 1). A table indexed by ``(l, floor(1024 u))`` answers wherever no CDF step falls inside
    the ``u`` bin; the few remaining values (~2%) are found with a binary search (:func:`_poisson_table`).
    """
    c = (60, 25, 12, 5, 3)[severity - 1]
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


@_register("impulse_noise", (0.03, 0.06, 0.09, 0.17, 0.27), stochastic=True)
def impulse_noise(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Salt and pepper: each value (pixel and channel) is replaced with prob. ``c`` by 0 or 1 (even odds).

    One ``u ~ U(0, 1)`` per value: ``u < c / 2`` gives 0, ``c / 2 <= u < c`` gives 1, else unchanged.
    """
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    u = _draw(gens, "rand", tuple(x.shape[1:]), x.device)
    # u < c flips the value; the lower half of that band is pepper (0), the upper half salt (1)
    out = torch.where(u < c, (u >= c / 2).to(x.dtype), x)
    return out * 255


@_register("speckle_noise", (0.15, 0.2, 0.35, 0.45, 0.6), stochastic=True)
def speckle_noise(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Multiplicative noise ``clip(x + x N(0, c^2), 0, 1) * 255``."""
    c = (0.15, 0.2, 0.35, 0.45, 0.6)[severity - 1]
    return (x + x * (c * _draw(gens, "randn", tuple(x.shape[1:]), x.device))).clamp_(0, 1) * 255


# ---------------------------------------------------------------------------------------------------------------
# blur


def _disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """The recipe's defocus kernel: a normalised disk ``x^2 + y^2 <= r^2`` on the grid ``-8..8`` (``-r..r`` when
    ``r > 8``), smoothed by a ``3x3`` (``5x5`` when ``r > 8``) Gaussian of sigma ``alias_blur`` with OpenCV's
    reflect-101 border (OpenCV ``getGaussianKernel`` weights ``∝ exp(-k^2 / (2 s^2))``)."""
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


@_register("defocus_blur", ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)), stochastic=False)
def defocus_blur(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """``clip(x ⋆ disk(r, s), 0, 1) * 255`` with the anti-aliased disk of :func:`_disk_kernel`, reflect-101 border."""
    r, s = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    kern = torch.from_numpy(_disk_kernel(r, s))
    return _fft_correlate(x, kern, "reflect101").clamp_(0, 1) * 255


@_register("gaussian_blur", (1, 2, 3, 4, 6), stochastic=False)
def gaussian_blur(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """skimage ``gaussian(x, sigma=c)``: truncated at ``4 sigma``, border ``nearest``; ``clip * 255``."""
    c = (1, 2, 3, 4, 6)[severity - 1]
    return _gaussian(x, c).clamp_(0, 1) * 255


@lru_cache(maxsize=1)
def _glass_sweep() -> Callable:
    """The compiled sweep of :mod:`dtn_bench.data._glass` (imports numba on first use; its machine code is cached
    on disk, so only the first call on a machine compiles, about a second)."""
    from dtn_bench.data._glass import glass_sweep

    return glass_sweep


def glass_codes(gens: Gens, h: int, w: int, d: int, iterations: int) -> torch.Tensor:
    """The random shifts of :func:`glass_blur`, drawn at once from each image's generator: int8
    ``[N, iterations, h - 2d, w - 2d]`` (swept pixels in sweep order), codes ``k ~ U{0, .., 4 d^2 - 1}`` that stand
    for ``dx = k mod 2d - d``, ``dy = k div 2d - d``: two independent ``U{-d, .., d - 1}``, the distribution of the
    recipe's ``np.random.randint(-d, d, 2)``, from one draw."""
    out = torch.empty(len(gens), iterations, max(h - 2 * d, 0), max(w - 2 * d, 0), dtype=torch.int8)
    for i, g in enumerate(gens):
        out[i] = torch.randint(0, 4 * d * d, out.shape[1:], generator=g, dtype=torch.int8)
    return out


@_register("glass_blur", ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)), stochastic=True)
def glass_blur(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Gaussian(sigma), truncate to uint8, ``iterations`` serial sweeps of local pixel moves within ``d``,
    Gaussian(sigma); ``clip * 255``.

    The sweep is the recipe's: rows ``h`` from ``224 - d`` down to ``d + 1``, and within a row columns ``w`` likewise,
    draw ``(dx, dy) ~ U{-d, .., d - 1}^2`` and execute ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with
    ``(h', w') = (h + dy, w + dx)``. On NumPy views of an ``[H, W, 3]`` array that statement copies pixel ``(h', w')``
    to ``(h, w)`` and leaves ``(h', w')`` as it was (the second assignment reads the view that the first has just
    overwritten), so that is what runs here: one move at a time, each reading the image as the earlier moves left
    it, so pixels travel along chains (compiled loop, :func:`_glass_sweep`; shifts from :func:`glass_codes`).
    """
    sigma, d, iters = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[severity - 1]
    h, w = x.shape[-2:]
    y = torch.floor(_gaussian(x, sigma).clamp_(0, 1) * 255)  # np.uint8(gaussian(x) * 255)
    codes = glass_codes(gens, h, w, d, iters).numpy()
    img = y.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    _glass_sweep()(img, codes, d)
    y = torch.from_numpy(img).to(x.device).permute(0, 3, 1, 2).to(x.dtype, memory_format=torch.contiguous_format)
    return _gaussian(y / 255, sigma).clamp_(0, 1) * 255


@_register("motion_blur", ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), stochastic=True)
def motion_blur(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Line-kernel motion blur (radius, sigma) at an angle ``~ U(-45, 45)`` degrees per image, 8-bit (truncated)
    output.

    Deviation: the kernel of :func:`motion_kernel` instead of ImageMagick (see the module docstring).
    """
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    angles = _scalars(gens, -45, 45)
    return _motion_blur(x * 255, radius, sigma, angles)


@_register("zoom_blur", tuple(tuple(zoom_factors(s).round(2).tolist()) for s in SEVERITIES), stochastic=False)
def zoom_blur(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """``(x + sum_z clipped_zoom(x, z)) / (Z + 1)`` over the recipe's zoom factors, ``clip * 255``.

    ``clipped_zoom``: the central ``ch = ceil(224 / z)`` square (from ``top = (224 - ch) // 2``) resized bilinearly
    to ``m = round(ch z)`` with scipy's corner-aligned grid (``u = j (ch - 1) / (m - 1)``, i.e.
    ``align_corners=True``), then the central 224 kept (from ``(m - 224) // 2``); see :func:`_zoom_taps`.
    """
    n, c, h, w = x.shape
    acc = x.clone()
    zs = zoom_factors(severity)
    for z in zs:
        ch = int(np.ceil(h / z))
        top = (h - ch) // 2
        m = int(round(ch * z))
        trim = (m - h) // 2
        zoomed = F.interpolate(x[..., top : top + ch, top : top + ch], size=(m, m), mode="bilinear",
                               align_corners=True)
        acc += zoomed[..., trim : trim + h, trim : trim + w]
    return (acc / (len(zs) + 1)).clamp_(0, 1) * 255


# ---------------------------------------------------------------------------------------------------------------
# weather


@_register("snow", ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)), stochastic=True)
def snow(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Snow layer ``S`` = ``N(loc, scale)`` field, clipped-zoomed, zeroed below ``threshold``, 8-bit, motion-blurred
    (radius, sigma, angle ``~ U(-135, -45)``). Output ``clip(b x + (1 - b) max(x, 1.5 gray(x) + 0.5) + S +
    rot180(S), 0, 1) * 255``.
    """
    loc, scale, zoom, thr, radius, sigma, blend = CORRUPTION_FNS.get("snow").meta["params"][severity - 1]
    n, _, h, w = x.shape
    layer = loc + scale * _draw(gens, "randn", (1, h, w), x.device)
    angles = _scalars(gens, -135, -45)
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < thr, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255)  # uint8 grey image
    layer = _motion_blur(layer, radius, sigma, angles) / 255
    gray = _rgb_to_gray(x)
    x = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + layer + torch.flip(layer, dims=(-2, -1))).clamp_(0, 1) * 255


FROST_PHOTO_STATS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((76.98, 147.73, 164.15), (23.83, 14.36, 13.45)),  # frost1.png
    ((197.89, 202.25, 211.47), (19.49, 20.09, 20.87)),  # frost2.png
    ((197.89, 202.25, 211.47), (19.49, 20.09, 20.87)),  # frost3.png (the same statistics as frost2)
    ((144.86, 159.68, 172.58), (26.14, 26.21, 27.49)),  # frost4.jpg
    ((100.83, 112.22, 124.10), (36.34, 35.89, 35.11)),  # frost5.jpg
)
"""Per frost photograph of the recipe (``np.random.randint(5)`` picks one of the first five; frost6 is never used):
``(mean RGB, std RGB)`` of a 224 x 224 crop at a uniformly random position, as the recipe crops (the expected
per-channel crop mean and the root-mean-square per-channel standard deviation within a crop, 0..255, decoded as
``cv2.imread`` does). Measured on the photographs of hendrycks/robustness (``ImageNet-C/create_c``); the numbers are
facts about them, the photographs are not part of this package. Their average, the recipe's mean frost colour, is
RGB 143.7 / 164.8 / 176.8."""


def frost_texture(gens: Gens, size: int = SIZE, device: torch.device | str = "cpu") -> torch.Tensor:
    """Procedural frost, ``[N, 3, size, size]`` uint8-valued floats (the documented stand-in for the photographs),
    with the statistics of the photograph the recipe would have picked.

    Per image: a photograph ``k ~ U{0..4}`` of :data:`FROST_PHOTO_STATS` (mean ``mu_k``, std ``s_k`` per channel);
    a structure ``V = 0.45 P + 1.1 C``, ``P`` a plasma fractal (decay 1.6, cloudy ice) and ``C`` crystals: seeds
    where ``U < 0.006``, each drawn as a cross of two needles (the line kernels of :func:`motion_kernel`, radius 6,
    sigma 4, both ways along angles ``a ~ U(0, 180)`` and ``a + U(50, 130)``), scaled by ``1 / max``, then ``sqrt``;
    ``Z = (V - mean V) / std V``; texture ``round(clip(mu_k + o + g s_k Z, 0, 255))`` with the offset ``o`` and gain
    ``g`` (per channel) refined from ``0`` and ``1`` in a few fixed-point steps so that the clipped texture has mean
    ``mu_k`` and std ``s_k`` (:func:`_frost_level_scale`; to a fraction of a grey level). The structure is
    procedural (a stated deviation); the mean colour and contrast, and how they vary between images, are the
    photographs'.
    """
    dev = torch.device(device)
    n = len(gens)
    pick = [int(torch.randint(len(FROST_PHOTO_STATS), (), generator=g)) for g in gens]
    plasma = plasma_fractal(gens, 256, 1.6, dev)[:, None, :size, :size]
    seeds = (_draw(gens, "rand", (1, size, size), dev) < 0.006).float()
    a1 = _scalars(gens, 0, 180)
    a2 = [a + d for a, d in zip(a1, _scalars(gens, 50, 130), strict=True)]
    kern = np.stack([sum(motion_kernel(6, 4, a) for a in (p, p + 180, q, q + 180))
                     for p, q in zip(a1, a2, strict=True)])
    crystals = _fft_correlate(seeds, torch.from_numpy(kern), "nearest")
    crystals = torch.where(crystals > 1e-6, crystals, 0.0)  # FFT round-off (and denormals) to exact zeros
    crystals = (crystals / crystals.amax(dim=(1, 2, 3), keepdim=True).clamp_(min=1e-12)).sqrt()
    v = 0.45 * plasma + 1.1 * crystals
    out = torch.empty(n, 3, size, size, device=dev)
    # one image at a time: a reduction's summation order (and so its last bits) must not depend on the batch
    for i, k in enumerate(pick):
        std, mean = torch.std_mean(v[i], dim=(1, 2), keepdim=True)
        z = (v[i] - mean) / std.clamp_(min=1e-6)
        level, scale = _frost_level_scale(z, *FROST_PHOTO_STATS[k])
        torch.round(torch.addcmul(torch.tensor(level, device=dev, dtype=z.dtype).view(3, 1, 1),
                                  torch.tensor(scale, device=dev, dtype=z.dtype).view(3, 1, 1), z).clamp_(0, 255),
                    out=out[i])
    return out


def _frost_level_scale(z: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                       bins: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per channel ``(a, b)`` such that ``clip(a + b z, 0, 255)`` has the given mean and std (population).

    Without clipping ``a = mean, b = std`` (``z`` is standardised); clipping moves both, so five fixed-point steps
    ``b *= std / std_now``, ``a += mean - mean_now`` steer them back. The moments come from a histogram of ``z``
    holding each bin's count, sum and sum of squares: exact for the bins that do not straddle a clipping point,
    which are few (``bins`` of them over the range of ``z``).
    """
    flat = z.reshape(-1).double().cpu()
    lo, hi = flat.min().item(), flat.max().item()
    width = max(hi - lo, 1e-9) / bins
    idx = ((flat - lo) / width).long().clamp_(0, bins - 1)
    count, s1, s2 = (torch.bincount(idx, weights=w, minlength=bins).numpy() for w in (None, flat, flat * flat))
    centre = lo + (np.arange(bins) + 0.5) * width
    total = count.sum()
    target_m, target_s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    a, b = target_m.copy(), target_s.copy()
    for _ in range(5):
        y = a[:, None] + b[:, None] * centre[None, :]  # [3, bins] value at each bin's centre
        mid, top = (y > 0) & (y < 255), y >= 255
        m1 = (255 * (count * top) + mid * (a[:, None] * count + b[:, None] * s1)).sum(1) / total
        m2 = (255**2 * (count * top) + mid * (a[:, None] ** 2 * count + 2 * (a * b)[:, None] * s1
                                              + b[:, None] ** 2 * s2)).sum(1) / total
        b = b * target_s / np.sqrt(np.maximum(m2 - m1 * m1, 1e-12))
        a = a + target_m - m1
    return a, b


@_register("frost", ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)), stochastic=True)
def frost(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """``clip(c0 * x_uint8 + c1 * frost_uint8, 0, 255)``; frost from :func:`frost_texture` (deviation)."""
    c0, c1 = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[severity - 1]
    tex = frost_texture(gens, x.shape[-1], x.device)
    return (c0 * torch.round(x * 255) + c1 * tex).clamp_(0, 255)


@_register("fog", ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)), stochastic=True)
def fog(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """``m = max(x)``; ``x + c0 P`` with ``P`` a 256 plasma fractal (decay ``c1``) cropped to 224;
    output ``clip((x + c0 P) m / (m + c0), 0, 1) * 255``."""
    c0, c1 = ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))[severity - 1]
    h, w = x.shape[-2:]
    m = x.amax(dim=(1, 2, 3), keepdim=True)
    plasma = plasma_fractal(gens, 256, c1, x.device)[:, None, :h, :w]
    return ((x + c0 * plasma) * m / (m + c0)).clamp_(0, 1) * 255


# ---------------------------------------------------------------------------------------------------------------
# digital and colour


def _value_saturation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    return v, delta


@_register("brightness", (0.1, 0.2, 0.3, 0.4, 0.5), stochastic=False)
def brightness(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """HSV: ``V <- clip(V + c, 0, 1)``, back to RGB.

    Hue and saturation are unchanged, so RGB scales by ``V'/V`` (``x' = x V'/V``); a black pixel (``V = 0``: hue 0,
    saturation 0) becomes grey ``V'``. Equal to skimage's ``rgb2hsv``/``hsv2rgb`` round trip.
    """
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    v, _ = _value_saturation(x)
    v2 = (v + c).clamp(0, 1)
    out = torch.where(v > 0, x * (v2 / v.clamp(min=1e-12)), v2.expand_as(x))
    return out.clamp_(0, 1) * 255


@_register("saturate", ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)), stochastic=False)
def saturate(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """HSV: ``S <- clip(S c0 + c1, 0, 1)``, back to RGB.

    With ``V = max``, ``D = max - min``, ``S = D / V``, hue kept: ``x' = V - (S'/S)(V - x)`` for ``D > 0``; a grey
    pixel (``D = 0``, hue 0) becomes ``(V, V (1 - S'), V (1 - S'))`` (reddish when ``c1 > 0``, as in skimage).
    """
    c0, c1 = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))[severity - 1]
    v, delta = _value_saturation(x)
    s = torch.where(delta > 0, delta / v.clamp(min=1e-12), torch.zeros_like(v))
    s2 = (s * c0 + c1).clamp(0, 1)
    coloured = v - (v - x) * (s2 * v / delta.clamp(min=1e-12))
    grey = torch.cat([v, v * (1 - s2), v * (1 - s2)], dim=1)
    out = torch.where(delta > 0, coloured, grey)
    return out.clamp_(0, 1) * 255


@_register("contrast", (0.4, 0.3, 0.2, 0.1, 0.05), stochastic=False)
def contrast(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """``clip((x - mu) c + mu, 0, 1) * 255`` with ``mu`` the per-image, per-channel mean."""
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    mu = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mu) * c + mu).clamp_(0, 1) * 255


@lru_cache(maxsize=64)
def _box_resample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's BOX resampling coefficients as an ``[n_out, n_in]`` matrix (float64).

    ``scale = n_in / n_out``, ``fs = max(scale, 1)``, support ``0.5 fs``; output ``j`` centred at
    ``(j + 0.5) scale`` uses input pixels ``i`` in ``[int(centre - support + 0.5), int(centre + support + 0.5))``
    with weight ``box((i - centre + 0.5) / fs)``, ``box(t) = 1`` on ``(-0.5, 0.5]``, normalised.
    """
    scale = n_in / n_out
    fs = max(scale, 1.0)
    support = 0.5 * fs
    mat = np.zeros((n_out, n_in))
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - centre + 0.5) / fs
            mat[j, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        total = mat[j].sum()
        if total:
            mat[j] /= total
    return torch.from_numpy(mat)


def _pil_box_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pillow ``resize((size, size), BOX)`` of uint8-valued ``x``: horizontal pass, round, vertical pass, round."""
    h, w = x.shape[-2:]
    dt = torch.float32
    mw = _box_resample_matrix(w, size).to(x.device, dt)
    mh = _box_resample_matrix(h, size).to(x.device, dt)
    y = torch.floor(x.to(dt) @ mw.T + 0.5).clamp_(0, 255)
    return torch.floor(mh @ y + 0.5).clamp_(0, 255).to(x.dtype)


@_register("pixelate", (0.6, 0.5, 0.4, 0.3, 0.25), stochastic=False)
def pixelate(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Pillow BOX down to ``int(224 c)`` and BOX back up to 224 (8-bit between and after the passes)."""
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    size = x.shape[-1]
    img = torch.round(x * 255)
    return _pil_box_resize(_pil_box_resize(img, int(size * c)), size)


@_register("jpeg_compression", (25, 18, 15, 10, 7), stochastic=False)
def jpeg_compression(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Pillow JPEG round trip at quality ``c`` (libjpeg, 4:2:0), decoded to 8-bit RGB."""
    from PIL import Image

    q = (25, 18, 15, 10, 7)[severity - 1]
    arr = torch.round(x * 255).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=q)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype)


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``M`` with ``M [src_i, 1] = dst_i`` for 3 points (OpenCV ``getAffineTransform``)."""
    a = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.linalg.solve(a, dst).T


def _sample(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor, mode: str) -> torch.Tensor:
    """Bilinear ``x`` at pixel coordinates ``(px, py) [N, H, W]``; ``reflect101`` or half-sample ``reflect``."""
    h, w = x.shape[-2:]
    if mode == "reflect101":  # align_corners=True reflects about the edge-pixel centres
        gx, gy = 2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1
        grid = torch.stack([gx, gy], dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    gx, gy = (2 * px + 1) / w - 1, (2 * py + 1) / h - 1  # align_corners=False reflects about the image edges
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@_register("elastic_transform", ((488, 170.8, 24.4), (488, 19.52, 48.8), (12.2, 2.44, 4.88), (17.08, 2.44, 4.88),
                                 (29.28, 2.44, 4.88)), stochastic=True)
def elastic_transform(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Random affine, then a smooth random displacement, both bilinear.

    Affine: the points ``c + (s, s), c + (s, -s), c - (s, s)`` (``c = 112``, ``s = 74``) each moved by
    ``U(-c2, c2)^2``; reflect-101 border. Displacement: ``dx, dy = alpha * gaussian(U(-1, 1), sigma, reflect,
    truncate=3)``; output ``x(row + dy, col + dx)`` with half-sample reflection; ``clip * 255``. (The table's pixel
    values are the recipe's ``244 * (2, 0.7, 0.1)`` etc.; 244 is the recipe's typo for 224, kept as released.)
    """
    alpha, sigma, jitter = CORRUPTION_FNS.get("elastic_transform").meta["params"][severity - 1]
    n, _, h, w = x.shape
    centre, half = np.float64(min(h, w) // 2), min(h, w) // 3
    pts1 = np.array([[centre + half, centre + half], [centre + half, centre - half], [centre - half, centre - half]])
    jit = torch.stack([torch.rand((3, 2), generator=g, dtype=torch.float64) for g in gens]).numpy()
    fields = _uniform(gens, (2, h, w), -1, 1, x.device)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device),
                            torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij")
    inv = []
    for j in jit:
        m = _affine_from_points(pts1, pts1 + (2 * j - 1) * jitter)
        full = np.vstack([m, [0, 0, 1]])
        inv.append(np.linalg.inv(full)[:2])
    inv_t = torch.from_numpy(np.stack(inv)).to(x.device, x.dtype)  # [N, 2, 3]: dst (x, y, 1) -> src (x, y)
    sx = inv_t[:, 0, 0, None, None] * xs + inv_t[:, 0, 1, None, None] * ys + inv_t[:, 0, 2, None, None]
    sy = inv_t[:, 1, 0, None, None] * xs + inv_t[:, 1, 1, None, None] * ys + inv_t[:, 1, 2, None, None]
    warped = _sample(x, sx, sy, "reflect101")
    disp = _gaussian(fields, sigma, "reflect", 3.0) * alpha
    out = _sample(warped, xs + disp[:, 0], ys + disp[:, 1], "reflect")
    return out.clamp_(0, 1) * 255


# ---------------------------------------------------------------------------------------------------------------
# spatter (extra): Canny, distance transform, histogram equalisation, emboss


def _conv3x3(x: torch.Tensor, kernel: Sequence[Sequence[float]], mode: str) -> torch.Tensor:
    """Correlation of ``x [N, 1, H, W]`` with a 3x3 kernel and a gathered border."""
    k = torch.tensor(kernel, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    return F.conv2d(_pad(x, 1, 1, 1, 1, mode), k)


def _canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges of uint8-valued ``img [N, 1, H, W]`` (Sobel 3x3 with replicated border, L1 magnitude,
    non-maximum suppression over 4 directions with ``tan 22.5°`` sectors, 8-connected hysteresis); bool."""
    gx = _conv3x3(img, ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1)), "nearest")
    gy = _conv3x3(img, ((-1, -2, -1), (0, 0, 0), (1, 2, 1)), "nearest")
    mag = gx.abs() + gy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))

    def nb(dy: int, dx: int) -> torch.Tensor:
        h, w = mag.shape[-2:]
        return mp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    ax, ay = gx.abs(), gy.abs()
    t22, t67 = math.tan(math.radians(22.5)), math.tan(math.radians(67.5))
    horiz = ay < ax * t22
    vert = ay > ax * t67
    s = torch.where((gx * gy) < 0, -1, 1)
    diag_keep = torch.where(s > 0, (mag > nb(-1, -1)) & (mag >= nb(1, 1)), (mag > nb(-1, 1)) & (mag >= nb(1, -1)))
    keep = torch.where(horiz, (mag > nb(0, -1)) & (mag >= nb(0, 1)),
                       torch.where(vert, (mag > nb(-1, 0)) & (mag >= nb(1, 0)), diag_keep))
    cand = keep & (mag > low)
    edges = cand & (mag > high)
    for _ in range(img.shape[-1] * img.shape[-2]):
        grown = cand & (F.max_pool2d(edges.float(), 3, 1, 1) > 0)
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges


def _edge_distance(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Euclidean distance to the nearest edge pixel, capped at ``cap`` (``[N, 1, H, W]`` bool -> float).

    Exact within the cap: ``d^2(y, x) = min_dy (dy^2 + r(y + dy, x)^2)`` with ``r`` the distance along the row.
    """
    big = float(cap + 1)
    h, w = edges.shape[-2:]
    ep = F.pad(edges.to(torch.float32), (cap, cap))
    row = torch.full(edges.shape, big, device=edges.device)
    for dx in range(-cap, cap + 1):
        hit = ep[..., cap + dx : cap + dx + w] > 0
        row = torch.where(hit, torch.clamp(row, max=float(abs(dx))), row)
    rp = F.pad(row**2, (0, 0, cap, cap), value=big**2)
    d2 = row**2
    for dy in range(-cap, cap + 1):
        d2 = torch.minimum(d2, rp[..., cap + dy : cap + dy + h, :] + dy * dy)
    return d2.sqrt().clamp_(max=float(cap))


def _equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """OpenCV ``equalizeHist`` per image of uint8-valued ``img [N, 1, H, W]``: ``lut[i] = round(255 (cdf(i) -
    cdf(i0)) / (total - hist[i0]))`` with ``i0`` the lowest occupied level."""
    n = img.shape[0]
    flat = img.reshape(n, -1).long()
    hist = torch.zeros(n, 256, dtype=torch.long, device=img.device).scatter_add_(1, flat, torch.ones_like(flat))
    cdf = hist.cumsum(1)
    total = flat.shape[1]
    first = (hist > 0).float().argmax(1, keepdim=True)
    h0 = hist.gather(1, first)
    scale = 255.0 / (total - h0).clamp(min=1).double()
    lut = torch.round((cdf - h0).double() * scale).clamp_(0, 255)
    lut = torch.where(torch.arange(256, device=img.device)[None] <= first, 0.0, lut)
    lut = torch.where(h0 == total, first.double().expand(-1, 256), lut)
    return lut.gather(1, flat).reshape(img.shape).to(img.dtype)


@_register("spatter", ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                       (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)), stochastic=True)
def spatter(x: torch.Tensor, severity: int, gens: Gens) -> torch.Tensor:
    """Water (mode 0) or mud (mode 1) splashes from a thresholded, smoothed ``N(loc, scale)`` field ``L``.

    Water: ``E`` = Canny(8-bit L, 50, 150); ``D = box3(min(dist(E), 20))`` to 8 bits, equalised, embossed with
    ``[[-2,-1,0],[-1,1,1],[0,1,2]]`` (8-bit), ``box3``; ``m = c4 L D / max(L D)``; output ``clip(x + m * (175,
    238, 238)/255)``. Mud: ``m = gaussian(L > thr, c4)``, zeroed below 0.8; output ``x (1 - m) + m (63, 42,
    20)/255``. Deviation: OpenCV's operators re-implemented (module docstring).
    """
    loc, scale, sigma, thr, intensity, mode = CORRUPTION_FNS.get("spatter").meta["params"][severity - 1]
    n, _, h, w = x.shape
    liquid = loc + scale * _draw(gens, "randn", (1, h, w), x.device)
    liquid = _gaussian(liquid, sigma)
    liquid = torch.where(liquid < thr, torch.zeros_like(liquid), liquid)
    if mode == 0:
        img = torch.floor((liquid * 255).clamp(0, 255))  # astype(uint8) of values in [0, ~1.7]: saturate
        edges = _canny(img, 50, 150)
        dist = _edge_distance(edges, 20)
        dist = torch.floor(_conv3x3(dist, ((1 / 9,) * 3,) * 3, "reflect101"))
        dist = _equalize_hist(dist)
        dist = torch.round(_conv3x3(dist, ((-2, -1, 0), (-1, 1, 1), (0, 1, 2)), "reflect101")).clamp_(0, 255)
        dist = _conv3x3(dist, ((1 / 9,) * 3,) * 3, "reflect101")
        dist = torch.round(dist).clamp_(0, 255)
        m = liquid * dist
        m = m / m.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12) * intensity
        colour = torch.tensor((175 / 255, 238 / 255, 238 / 255), device=x.device).view(1, 3, 1, 1)
        return (x + m * colour).clamp_(0, 1) * 255
    m = _gaussian((liquid > thr).to(x.dtype), intensity)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    colour = torch.tensor((63 / 255, 42 / 255, 20 / 255), device=x.device).view(1, 3, 1, 1)
    return (x * (1 - m) + colour * m).clamp_(0, 1) * 255


# ---------------------------------------------------------------------------------------------------------------
# public API


def corrupt_batch(images: torch.Tensor, name: str, severity: int,
                  generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """Corrupts a batch of images as the ImageNet-C recipe does, up to (not including) the JPEG save.

    Args:
        images: uint8 ``[N, 3, H, W]`` or ``[3, H, W]`` (RGB; ImageNet-C uses ``H = W = 224``), on any device. A
            float tensor is read as 0..255 values.
        name: corruption name (see :data:`ALL_CORRUPTIONS`).
        severity: 1..5.
        generator: one :class:`torch.Generator` per image (the result of image ``i`` then depends only on
            ``generator[i]``), or a single generator used for the images in order, or ``None`` (a fresh unseeded
            one; not reproducible).

    Returns:
        uint8 tensor of the input's shape and device: ``trunc(clip(out, 0, 255))`` as ``np.uint8`` would.

    Raises:
        DTNBenchError: unknown name, bad severity, bad shape.
    """
    entry = CORRUPTION_FNS.get(name)
    resolve_severities([severity])
    single = images.dim() == 3
    x = images[None] if single else images
    if x.dim() != 4 or x.shape[1] != 3:
        raise DTNBenchError(f"corrupt_batch: expected [N, 3, H, W] images, got shape {tuple(images.shape)}")
    n = x.shape[0]
    if generator is None:
        generator = torch.Generator()
    gens = [generator] * n if isinstance(generator, torch.Generator) else list(generator)
    if len(gens) != n:
        raise DTNBenchError(f"corrupt_batch: {len(gens)} generators for {n} images")
    xf = x.to(torch.float32).contiguous() / 255
    with torch.no_grad():
        out = entry.factory(xf, int(severity), gens)
    out = torch.floor(out.clamp_(0, 255)).to(torch.uint8)
    return out[0] if single else out


def resolve_corruptions(names: Sequence[str] | None = None, extra: bool = False) -> tuple[str, ...]:
    """The corruptions to make: ``names`` (checked, order kept, duplicates dropped) or the 15; ``extra`` adds the 4
    extras. An unknown name is a one-line error with the closest matches."""
    chosen = list(CORRUPTIONS) if not names else []
    for nm in names or ():
        if nm not in CORRUPTION_FNS:
            raise DTNBenchError(unknown_name_message("corruption", nm, list(ALL_CORRUPTIONS)))
        if nm not in chosen:
            chosen.append(nm)
    if extra:
        chosen += [c for c in EXTRA_CORRUPTIONS if c not in chosen]
    return tuple(chosen)


def resolve_severities(severities: Sequence[int | str]) -> tuple[int, ...]:
    """Checked severities (integers 1..5, order kept, duplicates dropped); a one-line error otherwise."""
    out: list[int] = []
    for s in severities:
        try:
            v = int(str(s).strip())
        except ValueError:
            raise DTNBenchError(f"severity {s!r} is not an integer 1..5") from None
        if v not in SEVERITIES:
            raise DTNBenchError(f"severity {v} is out of range: ImageNet-C severities are 1..5")
        if v not in out:
            out.append(v)
    if not out:
        raise DTNBenchError("no severity given: choose from 1..5")
    return tuple(out)


def image_seed(seed: int, corruption: str, severity: int, relpath: str) -> int:
    """The 63-bit seed of one output image: ``sha256("seed|corruption|severity|relpath")`` (POSIX relpath)."""
    digest = hashlib.sha256(f"{int(seed)}|{corruption}|{int(severity)}|{relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def load_image(path: str | Path) -> torch.Tensor:
    """Reads an image as RGB and applies ``Resize(256)`` (bilinear, Pillow, antialiased) + ``CenterCrop(224)``.

    Returns:
        uint8 ``[3, 224, 224]``.

    Raises:
        DTNBenchError: the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DTNBenchError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    img = TF.center_crop(TF.resize(img, 256, interpolation=InterpolationMode.BILINEAR), SIZE)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _probe_image(path: Path) -> None:
    """Reads an image's header only (fast); a one-line error when Pillow cannot identify it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - parsing the header is the check
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DTNBenchError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def encode_jpeg(image: torch.Tensor, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of a uint8 ``[3, H, W]`` image, as the release saved them (``quality=85, optimize=True``)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _output_name(rel: Path) -> Path:
    """Released file name: the source's (``.JPEG`` names kept); non-JPEG sources get ``.jpg`` added to the stem."""
    return rel if rel.suffix.lower() in (".jpg", ".jpeg") else rel.with_suffix(".jpg")


def list_images(src: str | Path) -> list[Path]:
    """Source images ``SRC/<class>/<image>`` as sorted relative paths; one-line errors for a bad layout.

    Hidden files (starting with ``.``) are ignored. Raises :class:`DTNBenchError` when SRC is missing or not a
    folder, holds files outside class folders or nested folders, a file without an image extension, or no image.
    """
    root = Path(src)
    if not root.exists():
        raise DTNBenchError(f"source folder {root} does not exist")
    if not root.is_dir():
        raise DTNBenchError(f"source {root} is not a folder (expected SRC/<class>/<image>)")
    found: list[Path] = []
    for cls in sorted(root.iterdir()):
        if cls.name.startswith("."):
            continue
        if not cls.is_dir():
            raise DTNBenchError(f"{cls}: files must be in class folders (expected SRC/<class>/<image>)")
        for f in sorted(cls.iterdir()):
            if f.name.startswith("."):
                continue
            if f.is_dir():
                raise DTNBenchError(f"{f}: nested folder; expected SRC/<class>/<image>")
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DTNBenchError(f"{f}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
            found.append(f.relative_to(root))
    if not found:
        raise DTNBenchError(f"source folder {root} holds no images (expected SRC/<class>/<image>)")
    outs: dict[Path, Path] = {}
    for rel in found:
        o = _output_name(rel)
        if o in outs:
            raise DTNBenchError(f"{root / rel} and {root / outs[o]} would both be written as {o}")
        outs[o] = rel
    return found


@dataclass
class CorruptSummary:
    """What :func:`corrupt_folder` wrote."""

    out_dir: Path
    images: int
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    files: int
    seconds: float
    seed: int
    device: str
    per_corruption_s: dict[str, float] = field(default_factory=dict)
    skipped: int = 0
    """Files of an unfinished earlier job that were already there and kept (counted in ``files``)."""
    manifest: Path | None = None


def check_folder_args(src: str | Path, out: str | Path, batch_size: int,
                      device: str | torch.device) -> tuple[torch.device, list[Path]]:
    """Checks the arguments of :func:`corrupt_folder` before anything is written.

    Returns:
        The torch device and the source images (relative paths, see :func:`list_images`), every one of which has
        a header Pillow can read.

    Raises:
        DTNBenchError: bad batch size or device, a bad source layout, an unreadable image, OUT inside SRC.
    """
    if batch_size <= 0:
        raise DTNBenchError(f"batch size must be > 0, got {batch_size}")
    dev = check_device("corrupt", device)
    src, out = Path(src), Path(out)
    rels = list_images(src)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise DTNBenchError(f"output folder {out} must not be inside the source folder {src}")
    for rel in rels:
        _probe_image(src / rel)
    return dev, rels


def read_json_object(path: Path, what: str = "", hint: str = "") -> dict:
    """The JSON object in ``path``; a one-line error (``what`` before the path, ``hint`` after the reason) when it
    cannot be read or is not an object."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DTNBenchError(f"cannot read {what}{path}: {type(e).__name__}: {e}{hint}") from None
    if not isinstance(data, dict):
        raise DTNBenchError(f"{what}{path} does not hold a JSON object{hint}")
    return data


def _json_bytes(data: dict) -> bytes:
    import json

    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def corrupt_folder(src: str | Path, out: str | Path, corruptions: Sequence[str] | None = None,
                   severities: Sequence[int] = SEVERITIES, *, extra: bool = False, seed: int = 0,
                   device: str | torch.device = "cpu", batch_size: int = 32,
                   progress: Callable[[int, int], None] | None = None) -> CorruptSummary:
    """Writes ImageNet-C from an image folder: ``OUT/<corruption>/<severity>/<class>/<image>``.

    Every source image gets ``Resize(256) + CenterCrop(224)``, each corruption x severity, uint8 truncation, and is
    saved as JPEG quality 85. Files are written atomically (temporary file + rename). Each output's randomness comes
    from its own generator seeded with :func:`image_seed` ``(seed, corruption, severity, relative path)``, so the
    bytes do not depend on the batch size, the order or the other images.

    Completion and continuing: the manifest :data:`MANIFEST_NAME` (source, seed, corruptions, severities, counts,
    dtn-bench version) is written at the root of OUT last, atomically, only when every file is there; a job starts by
    removing an earlier manifest and writing the marker :data:`PARTIAL_NAME` (source and seed). If a job stops (an
    unreadable image, a full disk, a kill), OUT has the marker and no manifest; running the same job again (same
    source and seed) continues it: files already there are complete (atomic writes) and are kept. A new job over a
    complete OUT (manifest, no marker) writes every file again, as a first job does.

    Args:
        src: folder ``SRC/<class>/<image>`` (e.g. ImageNet val).
        out: output root (the folder ``imagenet-c --data-dir`` reads).
        corruptions: names; ``None`` for the 15 mCE corruptions.
        severities: subset of 1..5.
        extra: also the 4 extra corruptions.
        seed: run seed.
        device: torch device of the corruption maths.
        batch_size: images per batch.
        progress: called as ``progress(done, total)`` with counts of files written (or kept).

    Returns:
        A :class:`CorruptSummary`.

    Raises:
        DTNBenchError: bad names, severities, source layout, unreadable images (one line, naming the file and, once
            files were written, how to continue), an unfinished job in OUT with another source or seed.
    """
    from dtn_bench.results.env import dtn_bench_version
    from dtn_bench.results.writer import atomic_write_bytes

    names = resolve_corruptions(corruptions, extra)
    sevs = resolve_severities(severities)
    src, out = Path(src), Path(out)
    dev, rels = check_folder_args(src, out, batch_size, device)
    if out.exists() and not out.is_dir():
        raise DTNBenchError(f"output {out} exists and is not a folder")
    source = str(src.resolve())
    marker, manifest_path = out / PARTIAL_NAME, out / MANIFEST_NAME
    resuming = marker.is_file()
    if resuming:
        earlier = read_json_object(marker, hint=f" (delete it to start {out} afresh)")
        if earlier.get("source") != source or earlier.get("seed") != int(seed):
            raise DTNBenchError(f"{out} holds an unfinished dtn-bench corrupt job from {earlier.get('source')} with "
                                f"--seed {earlier.get('seed')}: run that job again to finish it, or choose another "
                                f"output folder (or delete {out})")
    atomic_write_bytes(marker, _json_bytes({"source": source, "seed": int(seed)}))
    manifest_path.unlink(missing_ok=True)

    jobs = [(name, sev) for name in names for sev in sevs]
    todo = {rel: [(n, s) for n, s in jobs if not (resuming and (out / n / str(s) / _output_name(rel)).is_file())]
            for rel in rels}
    total = len(rels) * len(jobs)
    skipped = total - sum(len(v) for v in todo.values())
    work = [rel for rel in rels if todo[rel]]
    done = skipped
    if progress is not None and skipped:
        progress(done, total)

    def stop(reason: str) -> DTNBenchError:
        return DTNBenchError(f"{reason}; {out} is incomplete ({done:,} of {total:,} files, no {MANIFEST_NAME}): fix "
                             f"or remove that file and run the same command again to continue (finished images are "
                             f"kept)")

    per: dict[str, float] = dict.fromkeys(names, 0.0)
    t0 = time.perf_counter()
    for start in range(0, len(work), batch_size):
        chunk = work[start : start + batch_size]
        try:
            batch = torch.stack([load_image(src / r) for r in chunk]).to(dev)
        except DTNBenchError as e:
            raise stop(str(e)) from None
        for name, sev in jobs:
            pick = [i for i, r in enumerate(chunk) if (name, sev) in todo[r]]
            if not pick:
                continue
            t1 = time.perf_counter()
            gens = [torch.Generator().manual_seed(image_seed(seed, name, sev, chunk[i].as_posix())) for i in pick]
            result = corrupt_batch(batch[pick] if len(pick) < len(chunk) else batch, name, sev, gens).cpu()
            per[name] += time.perf_counter() - t1
            for i, img in zip(pick, result, strict=True):
                target = out / name / str(sev) / _output_name(chunk[i])
                try:
                    atomic_write_bytes(target, encode_jpeg(img))
                except OSError as e:
                    raise stop(f"cannot write {target}: {e.strerror or type(e).__name__}") from None
                done += 1
            if progress is not None:
                progress(done, total)
    manifest = {"generator": "dtn-bench corrupt", "dtn_bench_version": dtn_bench_version(), "source": source,
                "seed": int(seed), "corruptions": list(names), "severities": list(sevs), "images": len(rels),
                "files": total, "jpeg_quality": JPEG_QUALITY, "size": SIZE, "device": str(dev)}
    atomic_write_bytes(manifest_path, _json_bytes(manifest))
    marker.unlink()
    return CorruptSummary(out, len(rels), names, sevs, done, time.perf_counter() - t0, int(seed), str(dev), per,
                          skipped=skipped, manifest=manifest_path)


# ---------------------------------------------------------------------------------------------------------------
# speed benchmark (measurement only: rows out)

PEER = "imagecorruptions"
"""The peer that :func:`benchmark` times beside ours when it imports (the optional extra ``dtn-bench[peer]``)."""


def load_peer() -> tuple[object | None, str]:
    """The ``imagecorruptions`` module and its version, or ``(None, why not)`` when it does not import."""
    import importlib
    import importlib.metadata
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources import warns on every setuptools that still has it
            module = importlib.import_module(PEER)
    except Exception as e:  # any failure to import means "no peer", said in one line
        reason = "not installed" if isinstance(e, ModuleNotFoundError) and e.name == PEER else \
            f"does not import ({type(e).__name__}: {e})"
        return None, reason
    try:
        version = importlib.metadata.version(PEER)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    return module, version


def prepare_compiled() -> None:
    """Loads (or, the first time on a machine, compiles) the compiled glass-blur sweep, so that no timing pays
    for it."""
    _glass_sweep()(np.zeros((1, 4, 4, 3), dtype=np.uint8), np.zeros((1, 1, 2, 2), dtype=np.int8), 1)


def _timed(fn: Callable[[int], None], warmup: int, iters: int, per: int, dev: torch.device) -> tuple[list, list]:
    """Wall and process-CPU milliseconds per image of ``fn(i)`` (which handles ``per`` images) for ``iters`` runs
    after ``warmup`` untimed ones."""
    wall, cpu = [], []
    for i in range(warmup + iters):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            wall.append((time.perf_counter() - t0) * 1e3 / per)
            cpu.append((time.process_time() - c0) * 1e3 / per)
    return wall, cpu


def benchmark(corruptions: Sequence[str], severity: int = 3, batch: int = 16, warmup: int = 1, iters: int = 3,
              device: str | torch.device = "cpu", seed: int = 0, suite: str = "bench-corrupt", peer: bool = True,
              peer_batch: int = 4, notes: list[str] | None = None):
    """Times each corruption on a batch of synthetic 224 images, and the peer on the same images; yields
    ``(label, rows)``.

    Ours (``impl = "dtn-bench"``), per corruption, per image (the batch time divided by ``batch``; synchronised on
    CUDA; generator set-up included): ``time_ms`` with ``stat`` ``median`` and ``min`` over ``iters`` runs after
    ``warmup``, and ``cpu_time_ms`` (process CPU time, median; on a shared machine wall time above CPU time /
    threads means the process waited for a core). Then the pass over all ``corruptions`` (``corruption = "pass"``):
    ``time_ms`` as the sums of the medians and of the minima, ``throughput_img_s`` = source images per second through
    the whole set (``1000 / median pass``). Every row records ``threads`` (torch's intra-op threads).

    The peer (``impl = "imagecorruptions"``, when ``peer`` and :func:`load_peer` finds it): right after ours, each
    corruption on the first ``peer_batch`` of the same images (HWC uint8, one ``corrupt()`` call per image, NumPy's
    global seed set per call), the same rows. A corruption the peer fails on gets no rows and a line in ``notes``.
    Then, if the peer ran at least one: its pass rows (only when it ran every corruption) and ``speedup`` (``impl =
    "dtn-bench"``) = the peer's summed medians over our summed medians, over the corruptions both ran; ``versus``
    says what was compared. Without the peer there is no ``speedup`` row, and ``notes`` says why.
    """
    import statistics

    from dtn_bench.results.schema import make_row

    dev = check_device("bench corrupt", device)
    notes = [] if notes is None else notes
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, 3, 28, 28, generator=g)
    images = (F.interpolate(base, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1) * 255)
    images = (images + 20 * torch.rand(images.shape, generator=g)).clamp(0, 255).to(torch.uint8).to(dev)
    common = dict(severity=severity, batch_size=batch, device_kind=dev.type, threads=torch.get_num_threads())
    module, version = load_peer() if peer else (None, "not asked for (--no-peer)")
    if module is None:
        notes.append(f"{PEER} {version}: no peer timing, no speed ratio")
    else:
        import sys

        if "cv2" in sys.modules:  # the peer's OpenCV calls get the same thread count as ours
            sys.modules["cv2"].setNumThreads(torch.get_num_threads())
        peer_images = [im.permute(1, 2, 0).cpu().numpy().copy() for im in images[: max(1, min(peer_batch, batch))]]
        peer_common = dict(common, batch_size=len(peer_images))
    if "glass_blur" in corruptions:
        prepare_compiled()

    def stat_rows(impl: str, name: str, wall: list, cpu: list, settings: dict) -> list[dict]:
        rows = [make_row(suite, "-", "-", "time_ms", v, corruption=name, stat=k, impl=impl, **settings)
                for k, v in (("median", statistics.median(wall)), ("min", min(wall)))]
        rows.append(make_row(suite, "-", "-", "cpu_time_ms", statistics.median(cpu), unit="ms", corruption=name,
                             stat="median", impl=impl, **settings))
        return rows

    ours: dict[str, tuple[float, float]] = {}
    theirs: dict[str, tuple[float, float]] = {}
    for name in corruptions:

        def run_ours(i: int, name: str = name) -> None:
            gens = [torch.Generator().manual_seed(seed + 1000 * i + j) for j in range(batch)]
            corrupt_batch(images, name, severity, gens)

        wall, cpu = _timed(run_ours, warmup, iters, batch, dev)
        ours[name] = (statistics.median(wall), min(wall))
        rows = stat_rows("dtn-bench", name, wall, cpu, common)
        if module is not None:

            def run_peer(i: int, name: str = name) -> None:
                for j, im in enumerate(peer_images):
                    np.random.seed((seed + 1000 * i + j) % 2**32)
                    module.corrupt(im, corruption_name=name, severity=severity)

            try:
                wall, cpu = _timed(run_peer, warmup, iters, len(peer_images), torch.device("cpu"))
            except Exception as e:  # the peer's failure is reported, not ours
                notes.append(f"{PEER} {version} failed on {name}: {type(e).__name__}: {str(e).splitlines()[0]}"[:240])
            else:
                theirs[name] = (statistics.median(wall), min(wall))
                rows += stat_rows(PEER, name, wall, cpu, peer_common)
        yield name, rows

    total = {"median": sum(v[0] for v in ours.values()), "min": sum(v[1] for v in ours.values())}
    rows = [make_row(suite, "-", "-", "time_ms", v, corruption="pass", stat=k, impl="dtn-bench", **common)
            for k, v in total.items()]
    rows.append(make_row(suite, "-", "-", "throughput_img_s", 1e3 / total["median"], corruption="pass",
                         stat="median", impl="dtn-bench", **common))
    if theirs:
        both = [n for n in corruptions if n in theirs]
        failed = [n for n in corruptions if n not in theirs]
        if not failed:
            peer_total = {"median": sum(v[0] for v in theirs.values()), "min": sum(v[1] for v in theirs.values())}
            rows += [make_row(suite, "-", "-", "time_ms", v, corruption="pass", stat=k, impl=PEER, **peer_common)
                     for k, v in peer_total.items()]
            rows.append(make_row(suite, "-", "-", "throughput_img_s", 1e3 / peer_total["median"], corruption="pass",
                                 stat="median", impl=PEER, **peer_common))
        scope = (f"all {len(both)} corruptions" if not failed else
                 f"the {len(both)} of {len(corruptions)} corruptions it ran ({', '.join(failed)} failed)")
        versus = (f"{PEER} {version} timed in this run on {len(peer_images)} of the same images, {scope}, "
                  f"{common['threads']} thread(s)")
        ratio = sum(theirs[n][0] for n in both) / sum(ours[n][0] for n in both)
        rows.append(make_row(suite, "-", "-", "speedup", ratio, corruption="pass", stat="median", impl="dtn-bench",
                             versus=versus, **common))
    yield "pass", rows
