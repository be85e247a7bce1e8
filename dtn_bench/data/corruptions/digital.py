"""Digital corruptions: contrast, elastic transform, pixelate, JPEG compression, and saturate (an extra).

Each function reads its severity parameters from the table of its ``recipe`` (a
:class:`~dtn_bench.data.corruptions.filters.Recipe`; ImageNet-C's, in :mod:`dtn_bench.data.corruptions`, by default).
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from dtn_bench.data.corruptions.filters import (
    IMAGENET_C,
    Gens,
    Recipe,
    _gaussian,
    _uniform,
    _value_saturation,
    severity_params,
)


def contrast(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """``clip((x - mu) c + mu, 0, 1) * 255`` with ``mu`` the per-image, per-channel mean."""
    c = severity_params("contrast", severity, recipe)
    mu = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mu) * c + mu).clamp_(0, 1) * 255


def elastic_transform(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Random affine, then a smooth random displacement, both bilinear.

    Affine: the points ``c + (s, s), c + (s, -s), c - (s, s)`` (``c = 112``, ``s = 74``) each moved by
    ``U(-c2, c2)^2``; reflect-101 border. Displacement: ``dx, dy = alpha * gaussian(U(-1, 1), sigma, reflect,
    truncate=3)``; output ``x(row + dy, col + dx)`` with half-sample reflection; ``clip * 255``. (The table's pixel
    values are the recipe's ``244 * (2, 0.7, 0.1)`` etc.; 244 is the recipe's typo for 224, kept as released. The
    CIFAR and Tiny-ImageNet tables hold fractions of the image size, multiplied by ``recipe.elastic_unit`` = the
    size, as those scripts' ``IMSIZE * ...``; the centre ``c = n // 2`` and ``s = n // 3`` follow the size ``n``.)
    """
    alpha, sigma, jitter = (recipe.elastic_unit * v for v in severity_params("elastic_transform", severity, recipe))
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


def pixelate(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Pillow BOX down to ``int(n c)`` and BOX back up to ``n`` (8-bit between and after the passes).

    ``n`` is the image side: 224 in ImageNet-C, 32 / 64 in the CIFAR / Tiny-ImageNet scripts.
    """
    c = severity_params("pixelate", severity, recipe)
    size = x.shape[-1]
    img = torch.round(x * 255)
    return _pil_box_resize(_pil_box_resize(img, int(size * c)), size)


def jpeg_compression(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """Pillow JPEG round trip at quality ``c`` (libjpeg, 4:2:0), decoded to 8-bit RGB."""
    from PIL import Image

    q = severity_params("jpeg_compression", severity, recipe)
    arr = torch.round(x * 255).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=q)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype)


def saturate(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe = IMAGENET_C) -> torch.Tensor:
    """HSV: ``S <- clip(S c0 + c1, 0, 1)``, back to RGB.

    With ``V = max``, ``D = max - min``, ``S = D / V``, hue kept: ``x' = V - (S'/S)(V - x)`` for ``D > 0``; a grey
    pixel (``D = 0``, hue 0) becomes ``(V, V (1 - S'), V (1 - S'))`` (reddish when ``c1 > 0``, as in skimage).
    """
    c0, c1 = severity_params("saturate", severity, recipe)
    v, delta = _value_saturation(x)
    s = torch.where(delta > 0, delta / v.clamp(min=1e-12), torch.zeros_like(v))
    s2 = (s * c0 + c1).clamp(0, 1)
    coloured = v - (v - x) * (s2 * v / delta.clamp(min=1e-12))
    grey = torch.cat([v, v * (1 - s2), v * (1 - s2)], dim=1)
    out = torch.where(delta > 0, coloured, grey)
    return out.clamp_(0, 1) * 255
