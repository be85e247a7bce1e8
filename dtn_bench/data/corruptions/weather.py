"""Weather corruptions: snow, frost, fog, brightness, and spatter (an extra).

Spatter needs OpenCV's Canny detector, distance transform, histogram equalisation and emboss filter, re-implemented
here in torch.

Each function reads its severity parameters from the table of its ``recipe`` (a
:class:`~dtn_bench.data.corruptions.filters.Recipe`; ImageNet-C's, in :mod:`dtn_bench.data.corruptions`, by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dtn_bench.data.corruptions.filters import (
    IMAGENET_C,
    SIZE,
    Gens,
    Recipe,
    _clipped_zoom,
    _draw,
    _fft_correlate,
    _gaussian,
    _motion_blur,
    _pad,
    _scalars,
    _uniform,
    _value_saturation,
    motion_kernel,
    severity_params,
)


def _rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (OpenCV ``RGB2GRAY``): ``0.299 R + 0.587 G + 0.114 B``, shape ``[N, 1, H, W]``."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


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


def snow(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Snow: a motion-blurred layer of flakes over a brightened, greyed image.

    Snow layer ``S`` = ``N(loc, scale)`` field, clipped-zoomed, zeroed below ``threshold``, 8-bit, motion-blurred
    (radius, sigma, angle ``~ U(-135, -45)``). Output ``clip(b x + (1 - b) max(x, 1.5 gray(x) + 0.5) + S +
    rot180(S), 0, 1) * 255``.
    """
    loc, scale, zoom, thr, radius, sigma, blend = severity_params("snow", severity, recipe)
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


def frost_texture(gens: Gens, size: int = SIZE, device: torch.device | str = "cpu") -> torch.Tensor:
    """Procedural frost with the statistics of the photograph the recipe would have picked.

    Returns ``[N, 3, size, size]`` uint8-valued floats (the documented stand-in for the photographs).

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


def frost(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """``clip(c0 * x_uint8 + c1 * frost_uint8, 0, 255)``; frost from :func:`frost_texture` (deviation).

    Where the recipe's script resizes its photographs by ``recipe.frost_scale`` before the random crop (CIFAR 0.2,
    Tiny-ImageNet 0.3), the texture is made at the photograph's scale, ``round(n / frost_scale)`` pixels (160 for
    CIFAR's 32, 213 for Tiny-ImageNet's 64), and resized to ``n`` as ``cv2.resize`` does (bilinear on half-pixel
    centres, no anti-aliasing, rounded to 8 bits): the crop of a resized photograph (:func:`_frost_resized`).
    """
    c0, c1 = severity_params("frost", severity, recipe)
    size = x.shape[-1]
    if recipe.frost_scale is None:
        tex = frost_texture(gens, size, x.device)
    else:
        tex = _frost_resized(frost_texture(gens, round(size / recipe.frost_scale), x.device), size)
    return (c0 * torch.round(x * 255) + c1 * tex).clamp_(0, 255)


def _frost_resized(tex: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 3, T, T]`` uint8-valued texture resized to ``size`` like ``cv2.resize(INTER_LINEAR)``, rounded."""
    out = F.interpolate(tex, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return torch.round(out).clamp_(0, 255)


def fog(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Fog: a plasma fractal added, the contrast lowered to keep the maximum.

    ``m = max(x)``; ``x + c0 P`` with ``P`` a plasma fractal of side ``recipe.fog_mapsize`` (256 for ImageNet-C, 32
    for CIFAR, 64 for Tiny-ImageNet; decay ``c1``) cropped to the image; output ``clip((x + c0 P) m / (m + c0), 0,
    1) * 255``.
    """
    c0, c1 = severity_params("fog", severity, recipe)
    h, w = x.shape[-2:]
    m = x.amax(dim=(1, 2, 3), keepdim=True)
    plasma = plasma_fractal(gens, recipe.fog_mapsize, c1, x.device)[:, None, :h, :w]
    return ((x + c0 * plasma) * m / (m + c0)).clamp_(0, 1) * 255


def brightness(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """HSV: ``V <- clip(V + c, 0, 1)``, back to RGB.

    Hue and saturation are unchanged, so RGB scales by ``V'/V`` (``x' = x V'/V``); a black pixel (``V = 0``: hue 0,
    saturation 0) becomes grey ``V'``. Equal to skimage's ``rgb2hsv``/``hsv2rgb`` round trip.
    """
    c = severity_params("brightness", severity, recipe)
    v, _ = _value_saturation(x)
    v2 = (v + c).clamp(0, 1)
    out = torch.where(v > 0, x * (v2 / v.clamp(min=1e-12)), v2.expand_as(x))
    return out.clamp_(0, 1) * 255


# ---------------------------------------------------------------------------------------------------------------
# spatter: Canny, distance transform, histogram equalisation, emboss


def _conv3x3(x: torch.Tensor, kernel: Sequence[Sequence[float]], mode: str) -> torch.Tensor:
    """Correlation of ``x [N, 1, H, W]`` with a 3x3 kernel and a gathered border."""
    k = torch.tensor(kernel, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    return F.conv2d(_pad(x, 1, 1, 1, 1, mode), k)


def _canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges of uint8-valued ``img [N, 1, H, W]``, bool.

    Sobel 3x3 with replicated border, L1 magnitude, non-maximum suppression over 4 directions with ``tan 22.5°``
    sectors, 8-connected hysteresis.
    """
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
    """OpenCV ``equalizeHist`` per image of uint8-valued ``img [N, 1, H, W]``.

    ``lut[i] = round(255 (cdf(i) - cdf(i0)) / (total - hist[i0]))`` with ``i0`` the lowest occupied level.
    """
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


def spatter(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Water (mode 0) or mud (mode 1) splashes from a thresholded, smoothed ``N(loc, scale)`` field ``L``.

    Water: ``E`` = Canny(8-bit L, 50, 150); ``D = box3(min(dist(E), 20))`` to 8 bits, equalised, embossed with
    ``[[-2,-1,0],[-1,1,1],[0,1,2]]`` (8-bit), ``box3``; ``m = c4 L D / max(L D)``; output ``clip(x + m * (175,
    238, 238)/255)``. Mud: ``m = gaussian(L > thr, c4)``, zeroed below 0.8; output ``x (1 - m) + m (63, 42,
    20)/255``. Deviation: OpenCV's operators re-implemented (module docstring).
    """
    loc, scale, sigma, thr, intensity, mode = severity_params("spatter", severity, recipe)
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
