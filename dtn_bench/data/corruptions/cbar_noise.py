"""ImageNet-C-bar's additive and blended fields: six of its ten corruptions, as torch functions.

Clean-room from the formulas of Mintun et al. (NeurIPS 2021), ``imagenet_c_bar/corrupt.py`` of
github.com/facebookresearch/augmentation-corruption (commit ``ba4d5a5e``; the classes ``SingleFrequencyGreyscale``,
``CocentricSineWaves``, ``PlasmaNoise``, ``PerlinNoise`` with ``utils/perlin_noise.py``, ``BlueNoiseSample``,
``BrownishNoise``). Each corruption there takes a *level* ``l`` (the per-severity values of ``imagenet_c_bar.csv``,
:data:`dtn_bench.data.corruptions.cbar.LEVELS`) and scales its maximum by ``l / 10`` (``float_parameter(l, max) =
l * max / 10``); the image size ``S`` is 224.

Conventions: as for ImageNet-C (:mod:`dtn_bench.data.corruptions`), a corruption function takes ``x`` = image / 255
(float32 ``[N, 3, S, S]``), the severity, one generator per image and the recipe, and returns the 0..255 result
(``corrupt_batch`` clamps and truncates to uint8, as the recipe's ``np.clip(...).astype(np.uint8)``). Pixel ``(y,
x)`` is row ``y``, column ``x``; the recipe's per-pixel loops become tensor expressions over the pixel grid. Each
corruption is three parts, registered together (:mod:`dtn_bench.data.corruptions.cbar`): ``fixed(l, S)``, the
parameters the level sets; ``draw(g, S)``, the per-image random parameters, drawn from the image's generator in a
fixed order; ``apply(x_i, p)``, the image's result from both. An image's maths runs on its own (one image at a
time), so its bytes depend only on its generator, not on the batch it is in. The maths is float64, where the recipe
mixes float64 with some float32 steps: results agree with a float64 evaluation of the recipe's formulas within one
grey level before the JPEG save.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from dtn_bench.data.corruptions.filters import Gens, Recipe, severity_params
from dtn_bench.errors import DTNBenchError

Params = dict[str, Any]
Apply = Callable[[torch.Tensor, Params], torch.Tensor]

PERLIN_B = 256
"""Size of the Perlin lattice's permutation and gradient tables (``utils/perlin_noise.py``: ``B = 256``)."""
PERLIN_OFFSET = 4096
"""Added to each coordinate before the lattice lookup (``N = 16 * 256``)."""


# ---------------------------------------------------------------------------------------------------------------
# shared: draws, the pixel grid, running one corruption over a batch


def uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    """One ``U(lo, hi)`` number (float64) from ``g``."""
    return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()


def uniform_open_low(g: torch.Generator, hi: float) -> float:
    """One ``U(0, hi]`` number: never 0 (used where the recipe divides by the draw)."""
    return hi * (1.0 - torch.rand((), generator=g, dtype=torch.float64).item())


def randint(g: torch.Generator, lo: int, hi: int, size: tuple[int, ...] = ()) -> torch.Tensor:
    """Integers uniform in ``[lo, hi)`` (int64, CPU) from ``g``."""
    return torch.randint(lo, hi, size, generator=g)


def pixel_grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(yy, xx)``: float64 ``[S, S]`` row and column index of every pixel."""
    ar = torch.arange(size, dtype=torch.float64, device=device)
    return ar[:, None].expand(size, size), ar[None, :].expand(size, size)


def levels_of(name: str, severity: int, recipe: Recipe) -> float:
    """The level ``l`` of corruption ``name`` at ``severity`` in the recipe's table."""
    return float(severity_params(name, severity, recipe))


def run(name: str, x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe,
        fixed: Callable[[float, int], Params], draw: Callable[[torch.Generator, int], Params],
        apply: Apply) -> torch.Tensor:
    """The 0..255 float64 result of one corruption over a batch, one image at a time.

    Image ``i`` gets ``apply(x[i], fixed(l, S) | draw(gens[i], S))``: its random parameters come from its own
    generator, and its maths runs alone (elementwise kernels split a batch at boundaries that depend on its size,
    and their vectorised and scalar transcendental functions can differ in the last bit).
    """
    size = x.shape[-1]
    if x.shape[-2] != size:
        raise DTNBenchError(f"{name}: ImageNet-C-bar's corruptions take square images, got {x.shape[-2]}x{size}")
    common = fixed(levels_of(name, severity, recipe), size)
    out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
    for i, g in enumerate(gens):
        out[i] = apply(x[i], {**common, **draw(g, size)})
    return out


def grey_levels(xi: torch.Tensor) -> torch.Tensor:
    """The uint8 values of an image given as value / 255 (float32), as exact float64 integers."""
    return torch.round(xi.double() * 255)


# ---------------------------------------------------------------------------------------------------------------
# single_frequency_greyscale


def single_frequency_fixed(level: float, size: int) -> Params:
    """``intensity = 196 l / 10``."""
    return {"intensity": level * 196 / 10}


def single_frequency_draw(g: torch.Generator, size: int) -> Params:
    """``m ~ U(-pi, pi)``, ``m2 ~ U(-|m|, |m|)``, ``freq`` = ``(m, m2)`` in a random order, ``phase ~ U(0, 2 pi)``."""
    mag = uniform(g, -math.pi, math.pi)
    other = uniform(g, -abs(mag), abs(mag))
    swap = bool(randint(g, 0, 2).item())
    return {"freq": (other, mag) if swap else (mag, other), "phase": uniform(g, 0.0, 2 * math.pi)}


def single_frequency_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """``img + intensity * sin(x f0 + y f1 + phase)``, the same grey wave on the three channels."""
    yy, xx = pixel_grid(xi.shape[-1], xi.device)
    f0, f1 = p["freq"]
    return grey_levels(xi) + p["intensity"] * torch.sin(xx * f0 + yy * f1 + p["phase"])


def single_frequency_greyscale(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """A plane sine wave added to every channel: ``img + intensity sin(x f0 + y f1 + phase)``.

    ``SingleFrequencyGreyscale``: ``intensity = 196 l / 10``; one of ``|f0|, |f1|`` is ``|m|`` with ``m ~ U(-pi, pi)``
    and the other ``U(-|m|, |m|)`` (which is which is a coin flip), ``phase ~ U(0, 2 pi)``.
    """
    return run("single_frequency_greyscale", x, severity, gens, recipe, single_frequency_fixed,
               single_frequency_draw, single_frequency_apply)


# ---------------------------------------------------------------------------------------------------------------
# cocentric_sine_waves


def cocentric_fixed(level: float, size: int) -> Params:
    """``intensity = 128 l / 10`` (the same on the three channels)."""
    return {"intensity": level * 128 / 10}


def cocentric_draw(g: torch.Generator, size: int) -> Params:
    """``offset ~ U(0, S)^2`` (column, row), ``freq ~ U(0, 10)``, ``amplitude ~ U(0, S/10)``, ``ring ~ (0, S/10]``.

    The recipe draws the ring width from ``U(0, S/10)`` and divides by it; it is drawn here from ``(0, S/10]``.
    """
    offset = (uniform(g, 0.0, size), uniform(g, 0.0, size))
    return {"offset": offset, "freq": uniform(g, 0.0, 10.0), "amplitude": uniform(g, 0.0, size / 10),
            "ring_width": uniform_open_low(g, size / 10)}


def cocentric_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """``img + intensity * (((r + amplitude sin(freq atan2(dx, dy))) mod w) / w - 1/2)``."""
    yy, xx = pixel_grid(xi.shape[-1], xi.device)
    dx, dy = xx - p["offset"][0], yy - p["offset"][1]
    angle = torch.atan2(dx, dy) * p["freq"]
    w = p["ring_width"]
    rings = torch.remainder(torch.sqrt(dx**2 + dy**2) + torch.sin(angle) * p["amplitude"], w) / w - 0.5
    return grey_levels(xi) + p["intensity"] * rings


def cocentric_sine_waves(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """Rings around a random centre whose radius wobbles with the angle, added as a sawtooth.

    ``CocentricSineWaves``: with ``dx = x - o0``, ``dy = y - o1``, ``r = sqrt(dx^2 + dy^2)``, ``a = freq atan2(dx,
    dy)``: ``noise = ((r + amplitude sin a) mod w) / w - 1/2`` and ``out = img + intensity noise``, ``intensity = 128
    l / 10``; ``o ~ U(0, S)^2``, ``freq ~ U(0, 10)``, ``amplitude ~ U(0, S/10)``, ring width ``w ~ U(0, S/10)``.
    """
    return run("cocentric_sine_waves", x, severity, gens, recipe, cocentric_fixed, cocentric_draw, cocentric_apply)


# ---------------------------------------------------------------------------------------------------------------
# plasma_noise


def plasma_fixed(level: float, size: int) -> Params:
    """``intensity = 64 l / 10``."""
    return {"intensity": level * 64 / 10}


def plasma_draw(g: torch.Generator, size: int) -> Params:
    """``time ~ U(0, 6 pi)``, ``iterations`` in ``{4, 5, 6}``, ``sharpness ~ U(0.5, 1)``, ``scale ~ U(.075, .2) S``."""
    return {"time": uniform(g, 0.0, 6 * math.pi), "iterations": int(randint(g, 4, 7).item()),
            "sharpness": uniform(g, 0.5, 1.0), "scale": uniform(g, 0.075, 0.2) * size}


def plasma_field(size: int, p: Params, device: torch.device) -> torch.Tensor:
    """The plasma's colour field ``[3, S, S]`` in ``[-1, 1]`` (the recipe's ``kernel``).

    Per pixel, ``u = x / scale``, ``v = y / scale`` and ``(k0, k1, k2) = (1, 1, 1)``; each iteration
    ``r = (cos(v k0 + t / k1), sin(u k0 + t / k1)) / k2``, ``r += 0.3 (-r1, r0)``, ``(u, v) += r``, then ``k0 *= 1.93,
    k1 *= 1.15, k2 *= 2.25 - sharpness``. The recipe carries a fourth factor, subtracted inside the cosine and the
    sine, that starts at 0 and is only ever multiplied: it stays 0 and is left out. Colour ``(sin(u - t),
    sin((u + v + sin t) / 2), sin(v + t))``.
    """
    yy, xx = pixel_grid(size, device)
    u, v, t = xx / p["scale"], yy / p["scale"], p["time"]
    k0 = k1 = k2 = 1.0
    for _ in range(p["iterations"]):
        r0 = torch.cos(v * k0 + t / k1) / k2
        r1 = torch.sin(u * k0 + t / k1) / k2
        r0, r1 = r0 - r1 * 0.3, r1 + r0 * 0.3
        u, v = u + r0, v + r1
        k0, k1, k2 = k0 * 1.93, k1 * 1.15, k2 * (2.25 - p["sharpness"])
    return torch.stack([torch.sin(u - t), torch.sin((u + v + math.sin(t)) * 0.5), torch.sin(v + t)])


def plasma_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """``(1 - intensity / 255) img + intensity plasma``."""
    a = p["intensity"]
    return (1 - a / 255) * grey_levels(xi) + a * plasma_field(xi.shape[-1], p, xi.device)


def plasma_noise(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """A coloured plasma (iterated trigonometric warp) blended in: ``(1 - a / 255) img + a plasma``.

    ``PlasmaNoise``: ``a = 64 l / 10``; the field is :func:`plasma_field` with ``time ~ U(0, 6 pi)``, ``iterations``
    in ``{4, 5, 6}``, ``sharpness ~ U(0.5, 1)``, ``scale ~ U(0.075, 0.2) S``.
    """
    return run("plasma_noise", x, severity, gens, recipe, plasma_fixed, plasma_draw, plasma_apply)


# ---------------------------------------------------------------------------------------------------------------
# perlin_noise


def perlin_fixed(level: float, size: int) -> Params:
    """``alpha = 0.5 l / 10``; lattice scale ``32 S / 224`` pixels; 16 octaves of turbulence, gain and bias 1/2."""
    return {"alpha": level * 0.50 / 10, "period": 32 * size / 224, "turbulence": 16.0, "gain": 0.5, "bias": 0.5}


def perlin_draw(g: torch.Generator, size: int) -> Params:
    """The lattice tables of ``PerlinNoiseGenerator``: 256 gradients, then a permutation of ``0..255``.

    Gradient ``k`` is ``(a, b) / 256`` normalised, ``a, b`` uniform integers in ``[-256, 255]`` (the recipe's
    ``randint(0, 2^31) % 512 - 256``); a ``(0, 0)`` draw, which the recipe turns into NaN, is kept as a zero
    gradient. The permutation is the recipe's swap loop: ``p = 0..255``, then for ``i = 255 .. 0`` swap ``p[i]`` and
    ``p[j]``, ``j`` uniform in ``0..255``.
    """
    ints = randint(g, -PERLIN_B, PERLIN_B, (PERLIN_B, 2)).double() / PERLIN_B
    norm = torch.linalg.vector_norm(ints, dim=1, keepdim=True)
    grads = torch.where(norm > 0, ints / norm.clamp_min(1e-300), torch.zeros_like(ints))
    perm = list(range(PERLIN_B))
    for i, j in zip(range(PERLIN_B - 1, -1, -1), randint(g, 0, PERLIN_B, (PERLIN_B,)).tolist(), strict=True):
        perm[i], perm[j] = perm[j], perm[i]
    return {"grads": grads, "perm": torch.tensor(perm, dtype=torch.int64)}


def _s_curve(t: torch.Tensor) -> torch.Tensor:
    return t**2 * (3.0 - 2.0 * t)


def corner_gradients(perm: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """``[256 * 256, 2]``: the gradient of lattice corner ``(a, b)`` at row ``256 a + b``, ``grads[p[p[a] + b]]``.

    ``p`` is read modulo 256, as the recipe's table of ``2 B + 2`` entries repeats its first ``B + 2``.
    """
    b = torch.arange(PERLIN_B, device=perm.device)
    return grads[perm[(perm[:, None] + b[None, :]) % PERLIN_B]].reshape(-1, 2)


def perlin_lattice_noise(u: torch.Tensor, v: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Ken Perlin's 2-D gradient noise at ``(u, v)``, as ``PerlinNoiseGenerator.noise`` (about ``[-1.5, 1.5]``).

    ``t = u + 4096``: lattice cell ``b0 = floor(t) mod 256``, ``b1 = b0 + 1 mod 256``, offsets ``r0 = t mod 1``, ``r1
    = r0 - 1`` (and the same for ``v``); corner ``(i, j)`` has the gradient ``g_ij = grads[p[p[bu_i] + bv_j]]``
    (:func:`corner_gradients`); ``1.5 * lerp(s(rv0), lerp(s(ru0), g_00 . (ru0, rv0), g_10 . (ru1, rv0)),
    lerp(s(ru0), g_01 . (ru0, rv1), g_11 . (ru1, rv1)))`` with ``s(t) = t^2 (3 - 2 t)``.
    """
    tu, tv = u + PERLIN_OFFSET, v + PERLIN_OFFSET
    fu, fv = torch.floor(tu), torch.floor(tv)
    bu0, bv0 = fu.long() % PERLIN_B, fv.long() % PERLIN_B
    bu1, bv1 = (bu0 + 1) % PERLIN_B, (bv0 + 1) % PERLIN_B
    ru0, rv0 = tu - fu, tv - fv
    ru1, rv1 = ru0 - 1.0, rv0 - 1.0

    def dot(bu: torch.Tensor, bv: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        g = corners[bu * PERLIN_B + bv]
        return a * g[..., 0] + c * g[..., 1]

    su, sv = _s_curve(ru0), _s_curve(rv0)
    lo_u, lo_v = dot(bu0, bv0, ru0, rv0), dot(bu1, bv0, ru1, rv0)
    a = lo_u + su * (lo_v - lo_u)
    hi_u, hi_v = dot(bu0, bv1, ru0, rv1), dot(bu1, bv1, ru1, rv1)
    b = hi_u + su * (hi_v - hi_u)
    return 1.5 * (a + sv * (b - a))


def perlin_field(size: int, p: Params, device: torch.device) -> torch.Tensor:
    """The Perlin field ``clip(gain * turbulence + bias, 0, 1)``, ``[S, S]``.

    Turbulence ``sum_{f = 1, 2, 4, .. <= 16} |noise(f u, f v)| / f`` at ``(u, v) = (y, x) / (32 S / 224)`` (the row is
    the noise's first coordinate, as in the recipe).
    """
    ar = torch.arange(size, dtype=torch.float64, device=device)
    inv = 1.0 / p["period"]
    u, v = ar[:, None] * inv, ar[None, :] * inv  # a row and a column: the lattice maths broadcasts to [S, S]
    corners = corner_gradients(p["perm"].to(device), p["grads"].to(device))
    total = torch.zeros_like(u)
    f = 1.0
    while f <= p["turbulence"]:
        total = total + torch.abs(perlin_lattice_noise(f * u, f * v, corners)) / f
        f *= 2
    return torch.clamp(p["gain"] * total + p["bias"], 0.0, 1.0)


def perlin_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """``(1 - alpha) img + 255 alpha perlin``."""
    a = p["alpha"]
    return (1 - a) * grey_levels(xi) + 255 * a * perlin_field(xi.shape[-1], p, xi.device)


def perlin_noise(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """Grey Perlin turbulence blended in: ``(1 - alpha) img + 255 alpha clip(turbulence / 2 + 1/2, 0, 1)``.

    ``PerlinNoise`` with ``utils/perlin_noise.py``: ``alpha = 0.5 l / 10``, lattice period 32 px at 224, octaves
    1, 2, 4, 8, 16 (:func:`perlin_field`); the permutation and gradients are random per image (:func:`perlin_draw`).
    """
    return run("perlin_noise", x, severity, gens, recipe, perlin_fixed, perlin_draw, perlin_apply)


# ---------------------------------------------------------------------------------------------------------------
# noise with a power spectrum: blue_noise_sample, brownish_noise


def draw_phases(g: torch.Generator, size: int) -> torch.Tensor:
    """The random phases of one Fourier field ``[S, S]``: ``U(0, 2 pi)`` on the left half, mirrored on the right.

    As the recipe builds them: ``P ~ U(0, 2 pi)`` of shape ``[S, S // 2]``, then ``[P, flip(P)]`` (both axes flipped)
    for even ``S``; for odd ``S`` a centre column ``[c, 0, flip(c)]``, ``c ~ U(0, 2 pi)`` of ``S // 2``, drawn after
    ``P``, goes between them.
    """
    half = torch.rand((size, size // 2), generator=g, dtype=torch.float64) * (2 * math.pi)
    mirrored = torch.flip(half, (0, 1))
    if size % 2 == 0:
        return torch.cat([half, mirrored], dim=1)
    c = torch.rand((size // 2, 1), generator=g, dtype=torch.float64) * (2 * math.pi)
    centre = torch.cat([c, torch.zeros(1, 1, dtype=torch.float64), torch.flip(c, (0,))], dim=0)
    return torch.cat([half, centre, mirrored], dim=1)


def spectrum(size: int, kind: str, device: torch.device) -> torch.Tensor:
    """The amplitude of each frequency before the shift to the corner: ``d`` (blue) or ``1 / (d^2 + 1)`` (brownish).

    ``d`` is the distance of ``(x, y)`` from ``(S/2, S/2)``.
    """
    yy, xx = pixel_grid(size, device)
    d = torch.sqrt((xx - size / 2) ** 2 + (yy - size / 2) ** 2)
    return d if kind == "blue" else 1 / (d**2 + 1)


def fourier_noise(phases: torch.Tensor, amplitude: torch.Tensor) -> torch.Tensor:
    """``n / std(n)``, ``n = Re(ifft2(roll(amplitude e^{i phases}, (S/2, S/2))))`` (population std; its mean is 0)."""
    size = phases.shape[-1]
    field = torch.polar(amplitude, phases.to(amplitude.device))
    field = torch.roll(field, (size // 2, size // 2), dims=(0, 1))
    noise = torch.fft.ifft2(field).real
    return noise / torch.std(noise, correction=0)


def blue_sample_fixed(level: float, size: int) -> Params:
    """``threshold = 3 l / 10 - 2.5``."""
    return {"threshold": level * 3.0 / 10 - 2.5}


def blue_sample_draw(g: torch.Generator, size: int) -> Params:
    """The phases of one field: ``U(0, 2 pi)`` on an ``S x S/2`` half, flipped on both axes onto the other half."""
    return {"phases": draw_phases(g, size)}


def blue_sample_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """``img * [blue > threshold]`` (every channel)."""
    blue = fourier_noise(p["phases"], spectrum(xi.shape[-1], "blue", xi.device))
    return grey_levels(xi) * (blue > p["threshold"])


def blue_noise_sample(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """Pixels blacked out where a blue-noise field falls below a threshold: ``img * [n > threshold]``.

    ``BlueNoiseSample``: ``n`` is unit-variance noise with amplitude ``|f|`` at frequency ``f`` and random phases
    (:func:`fourier_noise`), ``threshold = 3 l / 10 - 2.5``.
    """
    return run("blue_noise_sample", x, severity, gens, recipe, blue_sample_fixed, blue_sample_draw,
               blue_sample_apply)


def brownish_fixed(level: float, size: int) -> Params:
    """``intensity = 64 l / 10``."""
    return {"intensity": level * 64 / 10}


def brownish_draw(g: torch.Generator, size: int) -> Params:
    """The phases of three fields as ``blue_noise_sample``'s, one per channel (R, G, B in that order)."""
    return {"phases": torch.stack([draw_phases(g, size) for _ in range(3)])}


def brownish_apply(xi: torch.Tensor, p: Params) -> torch.Tensor:
    """``img_c + intensity n_c`` per channel."""
    amplitude = spectrum(xi.shape[-1], "brownish", xi.device)
    noise = torch.stack([fourier_noise(ph, amplitude) for ph in p["phases"]])
    return grey_levels(xi) + p["intensity"] * noise


def brownish_noise(x: torch.Tensor, severity: int, gens: Gens, recipe: Recipe) -> torch.Tensor:
    """Unit-variance noise with amplitude ``1 / (|f|^2 + 1)``, its own per channel, added: ``img + intensity n``.

    ``BrownishNoise``: ``intensity = 64 l / 10``; the noise as :func:`fourier_noise` builds it.
    """
    return run("brownish_noise", x, severity, gens, recipe, brownish_fixed, brownish_draw, brownish_apply)
