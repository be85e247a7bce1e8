"""ImageNet-C-bar's geometric corruptions: sparkles, inverse sparkles, the checkerboard cut-out, caustic refraction.

Clean-room from the formulas of Mintun et al. (NeurIPS 2021), ``imagenet_c_bar/corrupt.py`` of
github.com/facebookresearch/augmentation-corruption (commit ``ba4d5a5e``; the classes ``Sparkles``,
``InverseSparkles``, ``CheckerBoardCutOut``, ``CausticRefraction`` with ``utils/image.py``'s
``bilinear_interpolation``). Conventions, levels and the three parts of each corruption (``fixed``, ``draw``,
``apply``) as in :mod:`dtn_bench.data.corruptions.cbar_noise`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dtn_bench.data.corruptions.cbar_noise import Params, grey_levels, pixel_grid, randint, run, uniform
from dtn_bench.data.corruptions.filters import Gens, Recipe, _gaussian

SPARKLE_RANDOMNESS = 25
"""Spread of the ray lengths around the radius, in percent (``randomness = 25``)."""
SPARKLE_COUNT = 5
"""Stars per image of ``sparkles``."""
LUMA = (0.2126, 0.7152, 0.0722)
"""The luma weights caustic refraction reads its lens height with (Rec. 709)."""
CAUSTIC_TWO_PI = 6.28318530718
"""The recipe's literal for 2 pi in the caustic pattern."""


# ---------------------------------------------------------------------------------------------------------------
# sparkles and inverse sparkles: the star of rays of each sparkle


def star_weight(yy: torch.Tensor, xx: torch.Tensor, centre: tuple[float, float], rays: torch.Tensor,
                exponent: float) -> torch.Tensor:
    """The weight ``f`` in ``[0, 1]`` of one star of ``len(rays)`` rays at ``centre = (row, column)``.

    As the recipe's ``kernel``: ``d = (atan2(dx, dy) + pi) / (2 pi) * n`` with ``(dy, dx)`` from the centre, ``i =
    floor(d)``, ``f = d - i``; the ray length ``L = rays[i mod n] + f (rays[i + 1 mod n] - rays[i mod n])``, ``g =
    (L^2 / (dist^2 + 1e-4))^exponent``, ``f = clip((1 - (f - 1/2)^2) g, 0, 1)``.
    """
    n = rays.numel()
    dy, dx = yy - centre[0], xx - centre[1]
    dist = torch.sqrt(dy**2 + dx**2)
    d = (torch.atan2(dx, dy) + math.pi) / (2 * math.pi) * n
    i = torch.floor(d)
    f = d - i
    k = i.long()
    lo, hi = rays[k % n], rays[(k + 1) % n]
    length = lo + f * (hi - lo)
    g = (length**2 / (dist**2 + 1e-4)) ** exponent
    return torch.clamp((1 - (f - 0.5) ** 2) * g, 0.0, 1.0)


def sparkles_fixed(level: float, size: int) -> Params:
    """``radius = 0.1 l / 10 * S``; ``amount = 50`` (so ``g``'s exponent ``(100 - amount) / 50 = 1``); white."""
    return {"radius": level * 0.1 / 10 * size, "exponent": (100 - 50) / 50.0}


def sparkles_draw(g: torch.Generator, size: int) -> Params:
    """Five centres ``U(0, S)^2`` (row, column), ray counts in ``50..199``, then ``N(0, 1)`` per ray, star by star."""
    centres = [(uniform(g, 0.0, size), uniform(g, 0.0, size)) for _ in range(SPARKLE_COUNT)]
    counts = randint(g, 50, 200, (SPARKLE_COUNT,)).tolist()
    return {"centres": centres, "normals": [torch.randn(n, generator=g, dtype=torch.float64) for n in counts]}


def sparkles_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """Each star in turn: ``v += f (255 - v)``; ray lengths ``max(1, r + 0.25 r z)``, ``z`` the drawn normals."""
    yy, xx = pixel_grid(xi.shape[-1], xi.device)
    r = p["radius"]
    value = grey_levels(xi)
    for centre, z in zip(p["centres"], p["normals"], strict=True):
        rays = torch.clamp_min(r + SPARKLE_RANDOMNESS / 100.0 * r * z, 1.0).to(xi.device)
        value = value + star_weight(yy, xx, centre, rays, p["exponent"]) * (255 - value)
    return value


def sparkles(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """Five white stars of rays painted over the image, one after another: ``v + f (255 - v)``.

    ``Sparkles``: ``f`` of each star as :func:`star_weight` (exponent 1); radius ``0.1 l / 10 * S``, centres ``U(0,
    S)^2``, ``50..199`` rays each, ray lengths ``max(1, radius (1 + 0.25 z))``, ``z ~ N(0, 1)``.
    """
    return run("sparkles", x, severity, gens, recipe, sparkles_fixed, sparkles_draw, sparkles_apply)


def inverse_sparkles_fixed(level: float, size: int) -> Params:
    """``radius = S / 4``; ``amount = 100 - 65 l / 10``, so ``g``'s exponent is ``(100 - amount) / 50``."""
    amount = 100 - level * 65 / 10
    return {"radius": 0.25 * size, "exponent": (100 - amount) / 50.0}


def inverse_sparkles_draw(g: torch.Generator, size: int) -> Params:
    """One centre ``U(S/4, 3S/4)^2`` (row, column), a ray count in ``50..199``, then ``N(0, 1)`` per ray."""
    centre = (uniform(g, 0.25, 0.75) * size, uniform(g, 0.25, 0.75) * size)
    count = int(randint(g, 50, 200).item())
    return {"centre": centre, "normals": torch.randn(count, generator=g, dtype=torch.float64)}


def inverse_sparkles_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """``255 + f (v - 255)``; ray lengths ``r + 0.25 r z`` (not bounded below, as in the recipe)."""
    yy, xx = pixel_grid(xi.shape[-1], xi.device)
    r = p["radius"]
    rays = (r + SPARKLE_RANDOMNESS / 100.0 * r * p["normals"]).to(xi.device)
    return 255 + star_weight(yy, xx, p["centre"], rays, p["exponent"]) * (grey_levels(xi) - 255)


def inverse_sparkles(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """The image seen through one star-shaped hole in white: ``255 + f (v - 255)``.

    ``InverseSparkles``: ``f`` as :func:`star_weight` with exponent ``65 l / 10 / 50`` (``amount = 100 - 65 l /
    10``), radius ``S / 4``, centre ``U(S/4, 3S/4)^2``, ``50..199`` rays of length ``radius (1 + 0.25 z)``.
    """
    return run("inverse_sparkles", x, severity, gens, recipe, inverse_sparkles_fixed, inverse_sparkles_draw,
               inverse_sparkles_apply)


# ---------------------------------------------------------------------------------------------------------------
# checkerboard_cutout


def checkerboard_fixed(level: float, size: int) -> Params:
    """``fraction = l / 10``: the chance that a cell of the board's grey colour is cut out."""
    return {"fraction": level * 1.0 / 10}


def checkerboard_draw(g: torch.Generator, size: int) -> Params:
    """``angle ~ U(0, 2 pi)``, ``scale = max(U(0.1, 0.25) S, 1)``, then ``U(0, 1)`` per cell of the board.

    The board's grid is ``m x m`` cells, ``m = int(4 S // scale)``.
    """
    angle = uniform(g, 0.0, 2 * math.pi)
    scale = max(uniform(g, 0.1, 0.25) * size, 1.0)
    m = int(4 * size // scale)
    return {"angle": angle, "scale": scale, "cells": torch.rand((m, m), generator=g, dtype=torch.float64)}


def checkerboard_mask(size: int, p: Params, device: torch.device) -> torch.Tensor:
    """``[S, S]`` bool: the pixels turned grey.

    ``u = (cos a y + sin a x) / scale``, ``v = (-sin a y + cos a x) / scale``; a pixel is cut when ``int(u mod 2) ==
    int(v mod 2)`` (the board's second colour) and the cell's draw is below ``fraction``. The cell is indexed as the
    recipe does, ``grid[int(u), int(v)]``: ``int`` truncates toward zero and a negative index counts from the end.
    """
    yy, xx = pixel_grid(size, device)
    c, s = math.cos(p["angle"]), math.sin(p["angle"])
    u = (c * yy + s * xx) / p["scale"]
    v = (-s * yy + c * xx) / p["scale"]
    same = torch.trunc(torch.remainder(u, 2)) == torch.trunc(torch.remainder(v, 2))
    grid = p["cells"].to(device) < p["fraction"]
    m = grid.shape[0]
    iu, iv = torch.remainder(torch.trunc(u).long(), m), torch.remainder(torch.trunc(v).long(), m)
    return same & grid[iu, iv]


def checkerboard_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """Grey 128 on the cut pixels, the image elsewhere."""
    cut = checkerboard_mask(xi.shape[-1], p, xi.device)
    return torch.where(cut, torch.full_like(xi, 128, dtype=torch.float64), grey_levels(xi))


def checkerboard_cutout(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """A rotated checkerboard, a random ``fraction`` of one colour's cells painted grey 128.

    ``CheckerBoardCutOut``: cells of side ``scale = max(U(0.1, 0.25) S, 1)`` at ``angle ~ U(0, 2 pi)``, ``fraction = l
    / 10`` (:func:`checkerboard_mask`).
    """
    return run("checkerboard_cutout", x, severity, gens, recipe, checkerboard_fixed, checkerboard_draw,
               checkerboard_apply)


# ---------------------------------------------------------------------------------------------------------------
# caustic_refraction


def caustic_fixed(level: float, size: int) -> Params:
    """``lens_scale = 0.5 S l / 10``, ``lighting = 2 l / 10``; ``eta = 4``, softening sigma 1."""
    return {"lens_scale": level * (0.5 * size) / 10, "lighting": level * 2.0 / 10, "eta": 4.0, "softening": 1.0}


def caustic_draw(g: torch.Generator, size: int) -> Params:
    """``time ~ U(0.5, 2)``, ``size ~ U(0.75, 1.25) S`` (the pattern's period in pixels)."""
    return {"time": uniform(g, 0.5, 2.0), "period": uniform(g, 0.75, 1.25) * size}


def caustic_pattern(size: int, p: Params, device: torch.device) -> torch.Tensor:
    """The caustic brightness ``[S, S]`` in ``[0, 1]`` before softening (the recipe's ``caustic_noise_kernel``).

    ``q = ((y, x) / period mod 1) * 2 pi - 250``, ``k = q``, ``c = 1``; for ``n = 0..4``: ``t = time (1 - 3.5 / (n +
    1))``, ``k = q + (cos(t - k0) + sin(t + k1), sin(t - k1) + cos(t + k0))``, ``c += 1 / sqrt((q0 / (sin(k0 + t) /
    0.005))^2 + (q1 / (cos(k1 + t) / 0.005))^2)``; then ``c = 1.17 - (c / 5)^1.4`` and ``clip(|c|^8, 0, 1)``.
    """
    yy, xx = pixel_grid(size, device)
    q0 = torch.remainder(yy / p["period"], 1) * CAUSTIC_TWO_PI - 250
    q1 = torch.remainder(xx / p["period"], 1) * CAUSTIC_TWO_PI - 250
    k0, k1 = q0, q1
    c = torch.ones_like(q0)
    for n in range(5):
        t = p["time"] * (1.0 - (3.5 / (n + 1)))
        k0, k1 = q0 + (torch.cos(t - k0) + torch.sin(t + k1)), q1 + (torch.sin(t - k1) + torch.cos(t + k0))
        length = torch.sqrt((q0 / (torch.sin(k0 + t) / 0.005)) ** 2 + (q1 / (torch.cos(k1 + t) / 0.005)) ** 2)
        c = c + 1.0 / length
    c = 1.17 - (c / 5.0) ** 1.4
    return torch.clamp(torch.abs(c) ** 8.0, 0.0, 1.0)


def refraction_offsets(height: torch.Tensor, lens_scale: float, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the (row, column) offset where the refracted ray reads the image, from the lens height ``h``.

    As the recipe's ``luma_based_refract`` and ``refract``: with ``h`` zero outside the image, the normal is ``n =
    (h[y+1, x] - h[y-1, x], h[y, x+1] - h[y, x-1], 1)`` normalised; the vertical ray ``(0, 0, 1)`` refracts by
    Snell's law to ``cos(b) n + sin(b) o`` with ``sin b = sin(acos n_z) / eta`` and ``o`` the unit vector in the
    plane of ``n`` and the ray, orthogonal to ``n`` (``o = (-n_z n_x, -n_z n_y, r) / r``, ``r = |(n_x, n_y)|``); a
    normal within ``1e-3`` of vertical leaves the ray as it is. The offset is the ray's ``(x, y)`` part times
    ``lens_scale``, rounded to 3 decimals.
    """
    padded = F.pad(height, (1, 1, 1, 1))
    nx = padded[2:, 1:-1] - padded[:-2, 1:-1]
    ny = padded[1:-1, 2:] - padded[1:-1, :-2]
    norm = torch.sqrt(nx**2 + ny**2 + 1.0)
    nx, ny, nz = nx / norm, ny / norm, 1.0 / norm
    r = torch.sqrt(nx**2 + ny**2)
    out_angle = torch.asin(torch.sin(torch.acos(nz)) / eta)
    along = torch.sin(out_angle) * nz / torch.where(r > 0, r, torch.ones_like(r))
    coeff = torch.where(torch.abs(nz) >= 1.0 - 1e-3, torch.zeros_like(r), torch.cos(out_angle) - along)
    return torch.round(nx * coeff * lens_scale * 1000) / 1000, torch.round(ny * coeff * lens_scale * 1000) / 1000


def bilinear_zero(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``image`` ``[C, S, S]`` read at real ``(rows, cols)`` by bilinear interpolation, 0 outside the image.

    As ``utils/image.py``'s ``bilinear_interpolation``: corners ``(l, u)``, ``(l, u + 1)``, ``(l + 1, u)``, ``(l + 1,
    u + 1)`` with ``l = floor(row)``, ``u = floor(col)``, weights ``1 - (col - u)`` and ``col - u`` along the row,
    then ``1 - (row - l)`` and ``row - l``; a corner outside the image counts as 0.
    """
    size_r, size_c = image.shape[-2:]
    flat = image.reshape(image.shape[0], -1)
    lo_r, lo_c = torch.floor(rows), torch.floor(cols)
    li, ui = lo_r.long(), lo_c.long()

    def corner(ri: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        inside = (ri >= 0) & (ri < size_r) & (ci >= 0) & (ci < size_c)
        index = (ri.clamp(0, size_r - 1) * size_c + ci.clamp(0, size_c - 1)).reshape(-1)
        return flat[:, index].reshape(image.shape[0], *rows.shape) * inside

    w_u, w_d = 1.0 - cols + lo_c, 1.0 - (lo_c + 1) + cols
    left = corner(li, ui) * w_u + corner(li, ui + 1) * w_d
    right = corner(li + 1, ui) * w_u + corner(li + 1, ui + 1) * w_d
    return left * (1.0 - rows + lo_r) + right * (1.0 - (lo_r + 1) + rows)


def caustic_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """Refract through the softened caustic lens, add its shading, clip to ``[0, 1]``, times 255."""
    size = xi.shape[-1]
    pattern = _gaussian(caustic_pattern(size, p, xi.device)[None, None], p["softening"], mode="reflect")[0, 0]
    height = pattern * LUMA[0] + pattern * LUMA[1] + pattern * LUMA[2]
    d_rows, d_cols = refraction_offsets(height, p["lens_scale"], p["eta"])
    yy, xx = pixel_grid(size, xi.device)
    out = bilinear_zero(xi.double(), yy + d_rows, xx + d_cols)
    padded = F.pad(height, (1, 1, 1, 1))
    north, south = padded[1:-1, :-2], padded[1:-1, 2:]
    west, east = padded[:-2, 1:-1], padded[2:, 1:-1]
    out = out + (north - south) * p["lighting"]
    out = out + (east - west) * p["lighting"]
    return torch.clamp(out, 0.0, 1.0) * 255


def caustic_refraction(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """The image seen through a rippled water surface: refraction by a caustic height field, plus its shading.

    ``CausticRefraction``: the height is the caustic pattern (:func:`caustic_pattern`, ``time ~ U(0.5, 2)``, period
    ``U(0.75, 1.25) S``) softened by a Gaussian of sigma 1 (scipy's ``reflect`` border), read as luma; each pixel takes
    the image (as float32 value / 255) at the refracted offset (:func:`refraction_offsets`, ``eta = 4``, ``lens_scale
    = 0.5 S l / 10``) by zero-padded bilinear interpolation (:func:`bilinear_zero`), plus ``lighting ((h_N - h_S) +
    (h_E - h_W))``, ``lighting = 2 l / 10``, where the recipe's north/south are the column neighbours ``x - 1 / x + 1``
    and west/east the row neighbours ``y - 1 / y + 1``; clipped to ``[0, 1]``, times 255, truncated.
    """
    return run("caustic_refraction", x, severity, gens, recipe, caustic_fixed, caustic_draw, caustic_apply)
