"""``dtn-bench corrupt --set imagenet-c-bar``: the 10 corruptions against the published formulas, the job, errors.

The references below are written from the formulas of ``imagenet_c_bar/corrupt.py`` (facebookresearch/
augmentation-corruption), pixel by pixel in plain Python/NumPy as the recipe evaluates them, from the parameters
:func:`sample_parameters` reports for the same generator; the generator must agree within one grey level.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, assert_one_line_message, run_cli
from PIL import Image

from dtn_bench.data import corruptions as C
from dtn_bench.data.corruptions.cbar import (
    CBAR_CORRUPTIONS,
    CBAR_FNS,
    IMAGENET_C_BAR,
    LEVELS,
    RELEASED_LEVEL_FOLDERS,
    parameter_document,
    resolve_set,
    sample_parameters,
)
from dtn_bench.errors import DTNBenchError

# imagenet_c_bar.csv of facebookresearch/augmentation-corruption, as released (name, levels at severities 1..5)
CSV = """caustic_refraction,2.35,3.2,4.9,6.6,9.15
inverse_sparkles,1.0,2.0,4.0,9.0,10.0
sparkles,1.0,2.0,3.0,5.0,6.0
perlin_noise,4.6,5.2,5.8,7.6,8.8
blue_noise_sample,0.8,1.6,2.4,4.0,5.6
plasma_noise,4.75,7.0,8.5,9.25,10.0
checkerboard_cutout,2.0,3.0,4.0,5.0,6.0
cocentric_sine_waves,3.0,5.0,8.0,9.0,10.0
single_frequency_greyscale,1.0,1.5,2.0,4.5,5.0
brownish_noise,1.0,2.0,3.0,4.0,5.0"""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image plus noise, uint8 ``[S, S, 3]``."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((size // 4 + 1, size // 4 + 1, 1)))[:size, :size]
    return np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)


def _ours(img: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    size = img.shape[0]
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    out = C.corrupt_batch(x, name, severity, [_gen(seed)], replace(IMAGENET_C_BAR, size=size))
    return out[0].permute(1, 2, 0).numpy()


def _params(name: str, severity: int, seed: int, size: int) -> dict:
    p = sample_parameters(name, severity, _gen(seed), size)
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in p.items()}


def _assert_close(ours: np.ndarray, ref: np.ndarray, exact: float = 0.97) -> None:
    ref = np.clip(ref, 0, 255).astype(np.uint8)  # the recipe's np.clip(...).astype(np.uint8)
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff == 0).mean() >= exact, (diff == 0).mean()


def _pixels(size: int):
    return ((y, x) for y in range(size) for x in range(size))


# ---------------------------------------------------------------------------------------------------------------
# references: the recipe's per-pixel formulas


def ref_single_frequency(img, p):
    out = img.astype(np.float64).copy()
    for y, x in _pixels(img.shape[0]):
        out[y, x] += p["intensity"] * math.sin(x * p["freq"][0] + y * p["freq"][1] + p["phase"])
    return out


def ref_cocentric(img, p):
    out = img.astype(np.float64).copy()
    (x0, y0), w = p["offset"], p["ring_width"]
    for y, x in _pixels(img.shape[0]):
        angle = math.atan2(x - x0, y - y0) * p["freq"]
        d = ((math.sqrt((x - x0) ** 2 + (y - y0) ** 2) + math.sin(angle) * p["amplitude"]) % w) / w - 0.5
        out[y, x] += p["intensity"] * d
    return out


def ref_plasma(img, p):
    rand, out = p["time"], np.zeros(img.shape)
    for y0, x0 in _pixels(img.shape[0]):
        x, y = x0 / p["scale"], y0 / p["scale"]
        i = [1.0, 1.0, 1.0, 0.0]  # the recipe's four factors, the fourth included
        for _ in range(p["iterations"]):
            r = [math.cos(y * i[0] - i[3] + rand / i[1]) / i[2], math.sin(x * i[0] - i[3] + rand / i[1]) / i[2]]
            r = [r[0] - r[1] * 0.3, r[1] + r[0] * 0.3]
            x, y = x + r[0], y + r[1]
            i = [i[0] * 1.93, i[1] * 1.15, i[2] * (2.25 - p["sharpness"]), i[3] * rand * i[1]]
        noise = [math.sin(x - rand), math.sin((x + y + math.sin(rand)) * 0.5), math.sin(y + rand)]
        out[y0, x0] = (1 - p["intensity"] / 255) * img[y0, x0] + p["intensity"] * np.array(noise)
    return out


def ref_perlin(img, p):
    big_b = 256
    table = list(p["perm"]) + list(p["perm"][: big_b + 2])  # the recipe's 2B + 2 entries
    grads = p["grads"]

    def noise(x, y):
        t = x + 4096
        bx0, rx0 = int(t) % big_b, t % 1
        bx1, rx1 = (bx0 + 1) % big_b, t % 1 - 1.0
        t = y + 4096
        by0, ry0 = int(t) % big_b, t % 1
        by1, ry1 = (by0 + 1) % big_b, t % 1 - 1.0
        i, j = table[bx0], table[bx1]
        b00, b10, b01, b11 = table[i + by0], table[j + by0], table[i + by1], table[j + by1]
        sx, sy = rx0**2 * (3.0 - 2.0 * rx0), ry0**2 * (3.0 - 2.0 * ry0)
        u, v = rx0 * grads[b00, 0] + ry0 * grads[b00, 1], rx1 * grads[b10, 0] + ry0 * grads[b10, 1]
        a = u + sx * (v - u)
        u, v = rx0 * grads[b01, 0] + ry1 * grads[b01, 1], rx1 * grads[b11, 0] + ry1 * grads[b11, 1]
        b = u + sx * (v - u)
        return 1.5 * (a + sy * (b - a))

    m = np.eye(2) / (32 * img.shape[0] / 224)
    out = np.zeros(img.shape)
    for y, x in _pixels(img.shape[0]):
        ny, nx = np.array([y, x]) @ m
        f, octave = 0.0, 1.0
        while octave <= 16:
            f += abs(noise(octave * ny, octave * nx)) / octave
            octave *= 2
        f = min(max(0.5 * f + 0.5, 0.0), 1.0)
        out[y, x] = (1 - p["alpha"]) * img[y, x] + 255 * p["alpha"] * f
    return out


def _ref_fourier(phases, size, power):
    half = phases[:, : size // 2]
    assert np.array_equal(phases[:, size // 2 :], half[::-1, ::-1])  # the recipe's mirrored phases
    field = np.array([[power(math.hypot(x - size / 2, y - size / 2)) for x in range(size)] for y in range(size)])
    field = field * (np.cos(phases) + 1j * np.sin(phases))
    field = np.roll(np.roll(field, size // 2, axis=0), size // 2, axis=1)
    noise = np.real(np.fft.ifft2(field))
    return noise / np.std(noise)


def ref_blue_sample(img, p):
    noise = _ref_fourier(p["phases"], img.shape[0], lambda d: d)
    return img * (noise > p["threshold"])[:, :, None]


def ref_brownish(img, p):
    noise = np.stack([_ref_fourier(ph, img.shape[0], lambda d: 1 / (d**2 + 1)) for ph in p["phases"]], axis=2)
    return img + p["intensity"] * noise


def ref_checkerboard(img, p):
    out = img.astype(np.float64).copy()
    grid = p["cells"] < p["fraction"]
    a, s = p["angle"], p["scale"]
    for y, x in _pixels(img.shape[0]):
        nx = (np.cos(a) * y + np.sin(a) * x) / s
        ny = (-np.sin(a) * y + np.cos(a) * x) / s
        if not (int(nx % 2) != int(ny % 2) or not grid[int(nx), int(ny)]):
            out[y, x] = 128
    return out


def _star(point, value, centre, rays, exponent, towards):
    dp = np.asarray(point, dtype=np.float64) - np.asarray(centre)
    dist = np.linalg.norm(dp)
    d = (math.atan2(dp[1], dp[0]) + math.pi) / (2 * math.pi) * len(rays)
    i = int(d)
    f = d - i
    length = rays[i % len(rays)] + f * (rays[(i + 1) % len(rays)] - rays[i % len(rays)])
    g = (length**2 / (dist**2 + 1e-4)) ** exponent
    f = min(max((1 - (f - 0.5) ** 2) * g, 0.0), 1.0)
    return value + f * (255 - value) if towards == "white" else 255 + f * (value - 255)


def ref_sparkles(img, p):
    out = img.astype(np.float64)
    r = p["radius"]
    for centre, z in zip(p["centres"], p["normals"], strict=True):
        rays = [max(1, r + 25 / 100.0 * r * zi) for zi in z.tolist()]
        out = np.array([[_star((y, x), out[y, x], centre, rays, p["exponent"], "white")
                         for x in range(img.shape[0])] for y in range(img.shape[0])])
    return out


def ref_inverse_sparkles(img, p):
    r = p["radius"]
    rays = [r + 25 / 100.0 * r * zi for zi in p["normals"].tolist()]
    return np.array([[_star((y, x), img[y, x].astype(np.float64), p["centre"], rays, p["exponent"], "hole")
                      for x in range(img.shape[0])] for y in range(img.shape[0])])


def _ref_gaussian_reflect(a, sigma=1.0):
    k = np.arange(-4, 5)
    w = np.exp(-0.5 * k**2 / sigma**2)
    w /= w.sum()
    for axis in (0, 1):
        padded = np.pad(a, [(4, 4) if ax == axis else (0, 0) for ax in range(2)], mode="symmetric")
        a = sum(wk * np.take(padded, range(j, j + a.shape[axis]), axis=axis) for j, wk in enumerate(w))
    return a


def _ref_refract(normal, eta):
    incident = np.array([0.0, 0.0, 1.0])
    if abs(incident @ normal) >= 1.0 - 1e-3:
        return incident
    angle = math.acos(incident @ normal)
    out_angle = math.asin(math.sin(angle) / eta)
    spectator = np.cross(incident, normal)
    spectator /= np.linalg.norm(spectator)
    rotation = np.stack((normal, np.cross(normal, spectator), spectator), axis=0)
    return np.linalg.inv(rotation) @ np.array([math.cos(out_angle), math.sin(out_angle), 0.0])


def _ref_bilinear(image, point):
    def at(r, c):
        inside = 0 <= r < image.shape[0] and 0 <= c < image.shape[1]
        return image[r, c] if inside else np.zeros(3)

    lo, up = math.floor(point[0]), math.floor(point[1])
    left = at(lo, up) * (1.0 - point[1] + up) + at(lo, up + 1) * (1.0 - (up + 1) + point[1])
    right = at(lo + 1, up) * (1.0 - point[1] + up) + at(lo + 1, up + 1) * (1.0 - (up + 1) + point[1])
    return left * (1.0 - point[0] + lo) + right * (1.0 - (lo + 1) + point[0])


def ref_caustic(img, p):
    size = img.shape[0]
    pattern = np.zeros((size, size))
    for y, x in _pixels(size):
        q = (np.array([y, x]) / p["period"]) % 1 * 6.28318530718 - 250
        k, c = q.copy(), 1.0
        for n in range(5):
            t = p["time"] * (1.0 - (3.5 / (n + 1)))
            k = q + np.array([math.cos(t - k[0]) + math.sin(t + k[1]), math.sin(t - k[1]) + math.cos(t + k[0])])
            a, b = q[0] / (math.sin(k[0] + t) / 0.005), q[1] / (math.cos(k[1] + t) / 0.005)
            c += 1.0 / math.sqrt(a**2 + b**2)
        pattern[y, x] = min(max(abs(1.17 - (c / 5.0) ** 1.4) ** 8.0, 0.0), 1.0)
    height = _ref_gaussian_reflect(pattern) * (0.2126 + 0.7152 + 0.0722)

    def h(r, c):
        return height[r, c] if 0 <= r < size and 0 <= c < size else 0.0

    image = img.astype(np.float32) / 255
    out = np.zeros(img.shape)
    for y, x in _pixels(size):
        north, south, west, east = h(y, x - 1), h(y, x + 1), h(y - 1, x), h(y + 1, x)
        normal = np.array([east - west, south - north, 1.0])
        ray = np.round(_ref_refract(normal / np.linalg.norm(normal), p["eta"]) * p["lens_scale"], 3)
        pixel = _ref_bilinear(image, np.array([y, x]) + ray[:2])
        pixel = pixel + (north - south) * p["lighting"] + (east - west) * p["lighting"]
        out[y, x] = np.floor(np.clip(pixel, 0, 1) * 255)
    return out


REFERENCES = {
    "single_frequency_greyscale": ref_single_frequency, "cocentric_sine_waves": ref_cocentric,
    "plasma_noise": ref_plasma, "perlin_noise": ref_perlin, "blue_noise_sample": ref_blue_sample,
    "brownish_noise": ref_brownish, "checkerboard_cutout": ref_checkerboard, "sparkles": ref_sparkles,
    "inverse_sparkles": ref_inverse_sparkles, "caustic_refraction": ref_caustic,
}


@pytest.mark.parametrize("name", CBAR_CORRUPTIONS)
@pytest.mark.parametrize(("severity", "seed", "size"), [(1, 3, 24), (5, 11, 32)])
def test_each_corruption_follows_the_published_formula(name, severity, seed, size):
    img = _image(size, seed)
    ours = _ours(img, name, severity, seed)
    ref = REFERENCES[name](img, _params(name, severity, seed, size))
    _assert_close(ours, ref)
    assert not np.array_equal(ours, img)  # it does something


def test_checkerboard_indexes_cells_as_the_recipe_where_the_board_coordinate_is_negative():
    # int() truncates toward zero and a negative index counts from the end: cells -1 < u < 1 share index 0
    negative = 0
    for seed in range(12):
        img = _image(24, seed)
        p = _params("checkerboard_cutout", 5, seed, 24)
        negative += math.cos(p["angle"]) < 0 or math.sin(p["angle"]) < 0
        _assert_close(_ours(img, "checkerboard_cutout", 5, seed), ref_checkerboard(img, p), exact=1.0)
    assert negative >= 6


def test_the_reference_covers_the_ten_and_the_registry_holds_them():
    assert set(REFERENCES) == set(CBAR_CORRUPTIONS) == set(CBAR_FNS.names())
    assert len(CBAR_CORRUPTIONS) == 10 and tuple(CBAR_FNS.names()) == CBAR_CORRUPTIONS


def test_levels_are_the_released_csv():
    csv = {row.split(",")[0]: tuple(float(v) for v in row.split(",")[1:]) for row in CSV.splitlines()}
    assert csv == LEVELS
    assert RELEASED_LEVEL_FOLDERS["caustic_refraction"] == ("2.35", "3.20", "4.90", "6.60", "9.15")


# ---------------------------------------------------------------------------------------------------------------
# statistics and geometry at 224 px: what each formula promises


def _grey(n: int, level: int = 128, size: int = 224) -> torch.Tensor:
    return torch.full((n, 3, size, size), level, dtype=torch.uint8)


def _cbar(x: torch.Tensor, name: str, severity: int, seeds) -> torch.Tensor:
    return C.corrupt_batch(x, name, severity, [_gen(s) for s in seeds], IMAGENET_C_BAR)


@pytest.mark.parametrize("severity", [1, 5])
def test_brownish_noise_has_unit_variance_scaled_by_the_intensity(severity):
    out = _cbar(_grey(2), "brownish_noise", severity, [0, 1]).double() - 128
    intensity = 64 * LEVELS["brownish_noise"][severity - 1] / 10
    # truncation of 128 + n shifts the mean by about -1/2 and adds 1/12 to the variance
    std = (out.var(dim=(2, 3)) - 1 / 12).sqrt()
    assert torch.allclose(std, torch.full_like(std, intensity), rtol=0.03), std
    flat = out.flatten(2)
    corr = torch.corrcoef(flat[0])  # each channel its own field (few low frequencies: sample correlations vary)
    assert corr[0, 1].abs() < 0.9 and corr[0, 2].abs() < 0.9 and corr[1, 2].abs() < 0.9
    # brownish: most of the power at low frequencies (amplitude 1 / (|f|^2 + 1))
    spec = torch.fft.fft2(flat[0, 0].reshape(224, 224) - flat[0, 0].mean()).abs() ** 2
    low = spec[:8, :8].sum() + spec[-8:, :8].sum() + spec[:8, -8:].sum() + spec[-8:, -8:].sum()
    assert low / spec.sum() > 0.9


@pytest.mark.parametrize("severity", [1, 5])
def test_blue_noise_sample_blacks_out_the_gaussian_tail_below_the_threshold(severity):
    out = _cbar(_grey(3, 200), "blue_noise_sample", severity, [0, 1, 2])
    assert set(out.unique().tolist()) == {0, 200}
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])  # one mask for all channels
    threshold = 3 * LEVELS["blue_noise_sample"][severity - 1] / 10 - 2.5
    expected = 0.5 * (1 + math.erf(threshold / math.sqrt(2)))  # P(n <= threshold) for unit-variance noise
    black = (out[:, 0] == 0).double().mean().item()
    assert abs(black - expected) < 0.02, (black, expected)
    # blue: the mask's power rises with the frequency
    mask = (out[0, 0] == 0).double()
    spec = torch.fft.fftshift(torch.fft.fft2(mask - mask.mean()).abs() ** 2)
    yy, xx = torch.meshgrid(torch.arange(224) - 112, torch.arange(224) - 112, indexing="ij")
    radius = torch.sqrt(yy.double() ** 2 + xx.double() ** 2)
    assert spec[radius < 20].mean() < spec[(radius > 60) & (radius < 110)].mean()


def test_single_frequency_peaks_at_the_drawn_frequency():
    for seed in range(4):
        out = _cbar(_grey(1), "single_frequency_greyscale", 5, [seed])[0, 0].double()
        p = sample_parameters("single_frequency_greyscale", 5, _gen(seed))
        spec = torch.fft.fft2(out - out.mean()).abs()
        peak = divmod(int(spec.argmax()), 224)  # (row, column) bin: the y and x frequencies
        want = [round(f * 224 / (2 * math.pi)) % 224 for f in (p["freq"][1], p["freq"][0])]
        conj = [(-w) % 224 for w in want]
        near = lambda a, b: all(min(abs(u - v), 224 - abs(u - v)) <= 1 for u, v in zip(a, b, strict=True))  # noqa: E731
        assert near(peak, want) or near(peak, conj), (peak, want)
        assert max(abs(p["freq"][0]), abs(p["freq"][1])) <= math.pi
        assert min(abs(p["freq"][0]), abs(p["freq"][1])) <= max(abs(p["freq"][0]), abs(p["freq"][1]))
        assert out.max().item() <= 128 + 98 and out.min().item() >= 128 - 98 - 1  # intensity 196 * 5 / 10


def test_checkerboard_cuts_a_fraction_of_one_colour_of_a_rotated_board():
    seeds = list(range(12))
    out = _cbar(_grey(12, 60), "checkerboard_cutout", 5, seeds)
    assert set(out.unique().tolist()) == {60, 128}
    grey = (out[:, 0] == 128).double().mean().item()
    assert abs(grey - 0.6 / 2) < 0.06, grey  # fraction 0.6 of the board's second colour, half the cells
    # geometry: a step of one cell side along the board's axis flips the colour (where no cell is cut)
    p = sample_parameters("checkerboard_cutout", 5, _gen(0))
    p["fraction"] = 1.0  # every second-colour cell cut: the mask is the board itself
    from dtn_bench.data.corruptions.cbar_shapes import checkerboard_mask

    board = checkerboard_mask(224, p, torch.device("cpu"))
    c, s, side = math.cos(p["angle"]), math.sin(p["angle"]), p["scale"]
    flips = total = 0
    for y in range(20, 200, 7):
        for x in range(20, 200, 7):
            y2, x2 = round(y + c * side), round(x + s * side)  # one cell along the u axis
            if 0 <= y2 < 224 and 0 <= x2 < 224:
                total += 1
                flips += bool(board[y, x] != board[y2, x2])
    assert flips / total > 0.8, flips / total  # rounding to pixels blurs the cell edges only


def test_sparkles_are_white_at_their_centres_and_leave_far_pixels_alone():
    img = _grey(1, 90)
    out = _cbar(img, "sparkles", 5, [4])[0]
    p = sample_parameters("sparkles", 5, _gen(4))
    for cy, cx in p["centres"]:  # radius 13.44: g = L^2 / d^2 >> 1 next to the centre, so f = 1
        assert (out[:, min(int(cy), 223), min(int(cx), 223)] == 255).all()
    # each star adds f (255 - v) <= g 165 with g = L^2 / d^2: where the five add up to < 1, 90 stays 90
    out = _cbar(img, "sparkles", 1, [4])[0]
    p = sample_parameters("sparkles", 1, _gen(4))
    yy, xx = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    bound = torch.zeros(224, 224, dtype=torch.float64)
    for (cy, cx), z in zip(p["centres"], p["normals"], strict=True):
        longest = max(1.0, p["radius"] * (1 + 0.25 * z.max().item()))
        bound += 165 * longest**2 / ((yy - cy) ** 2 + (xx - cx) ** 2 + 1e-4)
    far = bound < 1
    assert far.sum() > 1000 and (out[:, far] == 90).all() and (out[:, ~far] > 90).any()
    borders = []
    for severity in (1, 5):  # the exponent (100 - amount) / 50 grows with the severity: whiter away from the hole
        hole = _cbar(img, "inverse_sparkles", severity, [4])[0].double()
        q = sample_parameters("inverse_sparkles", severity, _gen(4))
        assert (hole[:, int(q["centre"][0]), int(q["centre"][1])] == 90).all()  # the image through the hole
        borders.append(torch.cat([hole[:, 0], hole[:, -1], hole[:, :, 0], hole[:, :, -1]], dim=1).mean().item())
    assert 90 < borders[0] < borders[1] and borders[1] > 200, borders


@pytest.mark.parametrize(("name", "severity"), [("perlin_noise", 5), ("plasma_noise", 5), ("cocentric_sine_waves", 3),
                                               ("caustic_refraction", 5)])
def test_blends_stay_in_their_formulas_range(name, severity):
    level = LEVELS[name][severity - 1]
    black, white = _cbar(_grey(2, 0), name, severity, [1, 2]), _cbar(_grey(2, 255), name, severity, [1, 2])
    if name == "perlin_noise":  # (1 - a) img + 255 a f, f in [0, 1]
        a = 0.5 * level / 10
        assert black.max() <= math.ceil(255 * a) and white.min() >= math.floor(255 * (1 - a))
    elif name == "plasma_noise":  # (1 - a / 255) img + a n, n in [-1, 1]
        a = 64 * level / 10
        assert black.max() <= a and white.min() >= math.floor(255 - 2 * a)
    elif name == "cocentric_sine_waves":  # img + a (d - 1/2), d in [0, 1)
        a = 128 * level / 10
        assert black.max() <= a / 2 and white.min() >= math.floor(255 - a / 2)
    else:  # refraction of a flat image: the image (zero outside) plus the shading
        grey = _cbar(_grey(2, 128), name, severity, [1, 2]).double()
        assert abs(grey.median().item() - 128) <= 2 and grey.std() > 1


# ---------------------------------------------------------------------------------------------------------------
# determinism: per image, whatever the batch


def test_same_generators_same_bytes_at_any_batch_size():
    x = torch.from_numpy(np.stack([_image(96, s) for s in range(3)])).permute(0, 3, 1, 2).contiguous()
    recipe = replace(IMAGENET_C_BAR, size=96)
    for name in CBAR_CORRUPTIONS:
        both = C.corrupt_batch(x, name, 3, [_gen(s) for s in (10, 11, 12)], recipe)
        for i in range(3):
            assert torch.equal(both[i], C.corrupt_batch(x[i : i + 1], name, 3, [_gen(10 + i)], recipe)[0]), name
        assert not torch.equal(both, C.corrupt_batch(x, name, 3, [_gen(s) for s in (20, 21, 22)], recipe)), name


# ---------------------------------------------------------------------------------------------------------------
# the folder job and the CLI


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    rng = np.random.default_rng(1)
    for k, cls in enumerate(("n01440764", "n01443537")):
        (root / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (240 + 30 * k, 300, 3), dtype=np.uint8)).save(root / cls / "a.JPEG")
        Image.fromarray(_image(256, k)).save(root / cls / "b.png")
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_through_the_imagenet_c_folder_loader(src, tmp_path, invoke):
    from dtn_bench.shifts.layout import scan_layout
    from dtn_bench.shifts.loader import OK, FileSource, ImageItems, Item
    from dtn_bench.shifts.sets import SETS

    cbar = SETS["imagenet-c-bar"]  # the engine's description of the set reads what the generator wrote

    out = tmp_path / "ImageNet-C-bar"
    code, stdout, err = invoke("corrupt", str(src), str(out), "--set", "imagenet-c-bar", "--severities", "5",
                               "--seed", "3", "--batch-size", "3")
    assert code == 0, err
    assert "ImageNet-C-bar in" in stdout and "40 files from 4 images" in stdout
    manifest = json.loads((out / C.MANIFEST_NAME).read_text())
    assert manifest["set"] == "imagenet-c-bar" and manifest["format"] == "imagenet-c-bar"
    assert manifest["corruptions"] == list(CBAR_CORRUPTIONS) and manifest["severities"] == [5]
    assert not (out / C.PARTIAL_NAME).exists()
    assert cbar.corruptions == CBAR_CORRUPTIONS
    layout = scan_layout(out, CBAR_CORRUPTIONS, (5,), label=cbar.label, severity_folders=cbar.severity_folder,
                         known=cbar.corruptions)
    assert layout.classes == ("n01440764", "n01443537")
    assert layout.files[("sparkles", 5)] == ["n01440764/a.JPEG", "n01440764/b.jpg", "n01443537/a.JPEG",
                                             "n01443537/b.jpg"]
    names = layout.files[("plasma_noise", 5)]
    data = ImageItems([FileSource(layout.folders[("plasma_noise", 5)], names, cbar.transform)],
                      [Item(0, i, layout.label(f)) for i, f in enumerate(names)], (224, 224))
    for i, f in enumerate(layout.files[("plasma_noise", 5)]):
        image, label, _, status, _ = data[i]
        assert status == OK and image.shape == (3, 224, 224) and label == (0 if f.startswith("n0144076") else 1)
        # the file is corrupt_batch of the cropped source with the image's own seed, saved as JPEG quality 85
        source = C.load_image(src / f.replace("b.jpg", "b.png"))
        gen = _gen(C.image_seed(3, "plasma_noise", 5, f.replace("b.jpg", "b.png")))
        want = C.corrupt_batch(source[None], "plasma_noise", 5, [gen], IMAGENET_C_BAR)[0]
        assert (out / "plasma_noise" / "5" / f).read_bytes() == C.encode_jpeg(want)
    with Image.open(io.BytesIO((out / "sparkles" / "5" / "n01443537" / "a.JPEG").read_bytes())) as im:
        assert im.format == "JPEG" and im.size == (224, 224)


def test_same_seed_same_bytes_at_two_batch_sizes(src, tmp_path):
    names = ["brownish_noise", "caustic_refraction"]
    C.corrupt_folder(src, tmp_path / "a", names, [2], seed=5, batch_size=1, recipe=IMAGENET_C_BAR)
    C.corrupt_folder(src, tmp_path / "b", names, [2], seed=5, batch_size=4, recipe=IMAGENET_C_BAR)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 2 * 4 + 1
    assert all(a[k] == b[k] for k in a if k != C.MANIFEST_NAME)
    C.corrupt_folder(src, tmp_path / "c", names, [2], seed=6, batch_size=4, recipe=IMAGENET_C_BAR)
    c = _tree(tmp_path / "c")
    assert all(c[k] != a[k] for k in a if k != C.MANIFEST_NAME)


def test_imagenet_c_manifest_records_its_set(src, tmp_path):
    C.corrupt_folder(src, tmp_path / "o", ["contrast"], [1])
    assert json.loads((tmp_path / "o" / C.MANIFEST_NAME).read_text())["set"] == "imagenet-c"


def test_an_interrupted_job_continues_and_refuses_another_set(src, tmp_path, invoke):
    good = (src / "n01443537" / "a.JPEG").read_bytes()
    (src / "n01443537" / "a.JPEG").write_bytes(good[: len(good) // 2])  # header intact, data cut
    out = tmp_path / "out"
    argv = ["corrupt", str(src), str(out), "--set", "imagenet-c-bar", "--corruptions", "sparkles,checkerboard_cutout",
            "--severities", "2", "--batch-size", "1"]
    code, _, err = invoke(*argv)
    assert_one_line_error(code, err, "n01443537", "run the same command again to continue", "4 of 8 files")
    assert json.loads((out / C.PARTIAL_NAME).read_text())["set"] == "imagenet-c-bar"
    written = {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.JPEG")} | {
        p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    assert len(written) == 4
    # the same source and seed as ImageNet-C would mix two sets in one folder: refused
    code, _, err = invoke("corrupt", str(src), str(out), "--corruptions", "contrast")
    assert_one_line_error(code, err, "unfinished dtn-bench corrupt job", "--set imagenet-c-bar")
    (src / "n01443537" / "a.JPEG").write_bytes(good)
    code, stdout, err = invoke(*argv)
    assert code == 0, err
    assert "4 kept from the unfinished earlier job" in stdout
    assert all((out / k).stat().st_mtime_ns == t for k, t in written.items())  # kept, not rewritten
    C.corrupt_folder(src, tmp_path / "fresh", ["sparkles", "checkerboard_cutout"], [2], seed=0, batch_size=4,
                     recipe=IMAGENET_C_BAR)
    assert _tree(out) == _tree(tmp_path / "fresh")


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "imagenet-c-barr"], ("unknown --set 'imagenet-c-barr'", "did you mean imagenet-c-bar?")),
    (["--set", "imagenet-3dcc"], ("evaluation-only", "depth map", "https://datasets.epfl.ch/3dcc/index.html")),
    (["--set", "imagenet-c-bar", "--corruptions", "fog"], ("'fog' is an ImageNet-C corruption", "sparkles")),
    (["--set", "imagenet-c-bar", "--corruptions", "sparkle"], ("unknown corruption 'sparkle'", "did you mean",
                                                               "sparkles")),
    (["--corruptions", "sparkles"], ("unknown corruption 'sparkles'",)),
    (["--set", "imagenet-c-bar", "--severities", "6"], ("out of range", "--set imagenet-c-bar has severities 1..5")),
    (["--set", "imagenet-c-bar", "--severities", "2.35"], ("'2.35' is not an integer 1..5",)),
    (["--set", "imagenet-c-bar", "--extra"], ("--extra", "has none")),
    (["--set", "imagenet-c-bar", "--format", "cifar10-c"], ("drop --format cifar10-c",)),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(src, tmp_path, invoke, args, expected):
    code, _, err = invoke("corrupt", str(src), str(tmp_path / "out"), *args)
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "out").exists()


def test_library_errors_are_one_line():
    with pytest.raises(DTNBenchError) as e:
        resolve_set("imagenet-3dcc")
    assert_one_line_message(e.value, "ImageNet-3DCC", "EPFL-VILAB/3DCommonCorruptions")
    with pytest.raises(DTNBenchError) as e:
        C.resolve_corruptions(["gaussian_noise"], recipe=IMAGENET_C_BAR)
    assert_one_line_message(e.value, "not one of --set imagenet-c-bar's 10")
    assert C.resolve_corruptions(None, recipe=IMAGENET_C_BAR) == CBAR_CORRUPTIONS
    assert C.resolve_corruptions(["sparkles", "perlin_noise", "sparkles"], recipe=IMAGENET_C_BAR) == (
        "sparkles", "perlin_noise")
    with pytest.raises(DTNBenchError) as e:
        C.corrupt_batch(_grey(1, size=32), "sparkles", 1, [_gen(0)], IMAGENET_C_BAR)
    assert_one_line_message(e.value, "imagenet-c-bar images are 224x224, got 32x32")
    with pytest.raises(DTNBenchError) as e:
        sample_parameters("fog", 1, _gen(0))
    assert_one_line_message(e.value, "unknown ImageNet-C-bar corruption 'fog'")


def test_the_parameter_document_in_docs_is_the_rendered_table():
    text = (Path(__file__).resolve().parents[1] / "docs" / "imagenet_c_bar_parameters.md").read_text()
    assert text == parameter_document()
    assert "| caustic_refraction | lens_scale = 0.5 S l / 10, lighting = 2 l / 10 | l = 2.35: lens_scale 26.32, " \
           "lighting 0.47 |" in text
    assert "l = 5: intensity 98 |" in text  # single_frequency_greyscale at severity 5: 196 * 5 / 10


def test_cli_help_names_the_set_and_3dcc(capsys):
    assert run_cli(["corrupt", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--set" in out and "imagenet-c-bar" in out and "imagenet-3dcc" in out
