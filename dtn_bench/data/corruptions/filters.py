"""Helpers several corruption families share.

The :class:`Recipe` of a corrupted dataset (its severity table, image size and the size-dependent choices of its
script), per-image random draws, linear filters with explicit borders, the recipe's ``clipped_zoom`` resampling, the
motion-blur line kernel, and HSV value / saturation.

Conventions (see :mod:`dtn_bench.data.corruptions`): images are float32 ``[N, C, H, W]``; ``gens`` holds one
:class:`torch.Generator` per image and every random number is drawn on the CPU from the image's own generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dtn_bench.registry import Registry

SIZE = 224
"""Side of every ImageNet-C image (after Resize(256) + CenterCrop(224))."""

Gens = Sequence[torch.Generator]


@dataclass(frozen=True)
class Recipe:
    """What a corruption function needs to know about the dataset it makes, beyond the image.

    ImageNet-C (:data:`IMAGENET_C`, the default of every corruption function) is ``make_imagenet_c.py`` at 224 px;
    CIFAR-10/100-C and Tiny-ImageNet-C (:mod:`dtn_bench.cifar_c.generate`) are Hendrycks' ``make_cifar_c.py`` (32 px)
    and ``make_tinyimagenet_c.py`` (64 px), whose per-severity constants differ and which also differ in a few
    size-dependent choices, each a field here.

    Attributes:
        name: the format's name (``imagenet-c``, ``cifar10-c``, ...).
        size: the side of its (square) images.
        table: corruption -> its parameters at severities 1..5; ``None``: ImageNet-C's table (``CORRUPTION_FNS``, meta
            ``params``, in :mod:`dtn_bench.data.corruptions`).
        fog_mapsize: side of fog's plasma fractal before the crop to ``size`` (256 / 32 / 64 in the three scripts).
        frost_scale: the factor the frost photographs are resized by before the random ``size`` crop (``None``: not
            resized, ImageNet-C; 0.2 CIFAR, 0.3 Tiny-ImageNet).
        elastic_unit: what ``elastic_transform``'s table values are multiplied by (1: ImageNet-C's table holds
            pixels; the image size where the table holds fractions of it, as the CIFAR / Tiny scripts' ``IMSIZE *``).
        zoom_step: step of ``zoom_blur``'s factors ``np.arange(1, table value, step)``; ``None``: ImageNet-C's
            per-severity (end, step) pairs (:func:`dtn_bench.data.corruptions.blur.zoom_factors`).
        functions: the corruption functions of another corruption set (name -> ``fn(x, severity, gens, recipe)``,
            in the set's order; ImageNet-C-bar: :mod:`dtn_bench.data.corruptions.cbar`); ``None``: ImageNet-C's 19.
        crop: how the folder job brings a source image to ``size``: ``True``: ImageNet's ``Resize(256)`` +
            ``CenterCrop(224)`` (``make_imagenet_c.py``, ``make_imagenet_c_bar.py``); ``False``: a square
            ``Resize((size, size))`` (``make_tinyimagenet_c.py``).
    """

    name: str
    size: int = SIZE
    table: Mapping[str, tuple[Any, ...]] | None = None
    fog_mapsize: int = 256
    frost_scale: float | None = None
    elastic_unit: float = 1.0
    zoom_step: float | None = None
    functions: Registry | None = None
    crop: bool = False

    @property
    def corruption_set(self) -> str:
        """The corruption set this recipe makes: its own name when it brings its functions, else ``imagenet-c``."""
        return "imagenet-c" if self.functions is None else self.name


IMAGENET_C = Recipe("imagenet-c", crop=True)
"""ImageNet-C: ``make_imagenet_c.py``'s table at 224 px (the default of every corruption function)."""


def severity_params(name: str, severity: int, recipe: Recipe | None = None) -> Any:
    """The parameters of corruption ``name`` at ``severity`` (1..5) in ``recipe``'s table (ImageNet-C's by default).

    ImageNet-C's table (``CORRUPTION_FNS``, meta ``params``) is in :mod:`dtn_bench.data.corruptions`, read at call
    time: every corruption module is imported before it is filled.
    """
    if recipe is not None and recipe.table is not None:
        return recipe.table[name][severity - 1]
    from dtn_bench.data.corruptions import CORRUPTION_FNS

    return CORRUPTION_FNS.get(name).meta["params"][severity - 1]


# ---------------------------------------------------------------------------------------------------------------
# random numbers: per image, on the CPU, in a fixed order


def _draw(gens: Gens, kind: str, shape: tuple[int, ...], device: torch.device, lo: float = 0.0,
          hi: float = 1.0) -> torch.Tensor:
    """``[N, *shape]`` float32 on ``device``: one draw of ``kind`` per image from its own generator.

    ``kind`` rand: ``U(lo, hi)``, randn: ``N(0, 1)``; filled in place, no stacking copy.
    """
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
    """The 1-D Gaussian of scipy: ``w_k ∝ exp(-k^2 / (2 sigma^2))`` for ``|k| <= int(truncate * sigma + 0.5)``.

    ``sigma <= 1e-15`` is the identity (``[1]``), as scipy's ``gaussian_filter`` skips such an axis (CIFAR-C's
    elastic transform at severity 1 smooths with sigma 0).
    """
    if float(sigma) <= 1e-15:
        return np.ones(1)
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
    """The ``gaussian`` of skimage (``gaussian_filter`` of scipy) over the last two dims, border ``nearest``.

    Other borders and truncations as the arguments say.
    """
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


# ---------------------------------------------------------------------------------------------------------------
# resampling: the recipe's clipped_zoom


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


# ---------------------------------------------------------------------------------------------------------------
# the motion-blur line kernel (motion_blur, snow, frost)


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
    """Per-image line-kernel motion blur of 0..255 ``x [N, C, H, W]``, edge pixels repeated (:func:`motion_kernel`).

    Truncated to 8 bits as the recipe's ImageMagick output is (a measured comparison with ImageMagick found rounding
    here 0.5 grey level brighter on average).
    """
    kern = torch.from_numpy(np.stack([motion_kernel(radius, sigma, a) for a in angles]))
    return torch.floor(_fft_correlate(x, kern, "nearest").add_(_FFT_SLACK)).clamp_(0, 255)


# ---------------------------------------------------------------------------------------------------------------
# colour


def _value_saturation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    return v, delta
