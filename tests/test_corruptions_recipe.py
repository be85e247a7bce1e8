"""The corruptions that follow the recipe's code closely beyond its formulas: glass blur's serial sweep, the frost
texture's statistics, and the 8-bit truncation of ImageMagick's motion blur (motion blur, snow).

The references here are NumPy transcriptions of ``make_imagenet_c.py`` (Hendrycks & Dietterich), written apart
from the library; they reuse only its Gaussian filter and clipped zoom (checked against the recipe in
``test_corruptions.py``) and its motion kernel (checked there too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtn_bench.data import corruptions as C

GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))


def _mosaic(n: int, size: int, block: int = 6, seed: int = 0) -> np.ndarray:
    """``[n, size, size, 3]`` uint8: squares of ``block`` pixels with random colours (sharp edges everywhere, so
    moved pixels show)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (n, size // block + 1, size // block + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(cells, block, 1), block, 2)[:, :size, :size])


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------------------------
# glass blur


def _recipe_sweep(x: np.ndarray, d: int, shifts) -> None:
    """The recipe's loop on one ``[H, W, 3]`` uint8 image, in place, statement for statement; ``shifts()`` gives the
    next ``(dx, dy)`` (the recipe's ``np.random.randint(-d, d, size=(2,))``)."""
    h_size, w_size = x.shape[:2]
    for h in range(h_size - d, d, -1):
        for w in range(w_size - d, d, -1):
            dx, dy = shifts()
            h_prime, w_prime = h + dy, w + dx
            # swap
            x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_compiled_glass_sweep_is_the_recipes_loop(d):
    rng = np.random.default_rng(d)
    img = rng.integers(0, 256, (2, 20, 17, 3), dtype=np.uint8)
    iters = 2
    codes = rng.integers(0, 4 * d * d, (2, iters, 20 - 2 * d, 17 - 2 * d)).astype(np.int8)
    ours = img.copy()
    C._glass_sweep()(ours, codes, d)
    for i in range(2):
        want = img[i].copy()
        for t in range(iters):
            flat = iter(codes[i, t].reshape(-1).tolist())  # sweep order: rows down from the bottom, columns likewise

            def shifts(flat=flat):
                k = next(flat)
                return k % (2 * d) - d, k // (2 * d) - d

            _recipe_sweep(want, d, shifts)
        assert np.array_equal(ours[i], want), f"image {i}, d = {d}"
    assert not np.array_equal(ours, img)


def test_glass_codes_are_the_recipes_shift_distribution():
    gens = [torch.Generator().manual_seed(s) for s in range(2)]
    codes = C.glass_codes(gens, 224, 224, 3, 2)
    assert codes.shape == (2, 2, 218, 218) and codes.dtype == torch.int8
    assert torch.equal(codes, C.glass_codes([torch.Generator().manual_seed(s) for s in range(2)], 224, 224, 3, 2))
    k = codes.long().reshape(-1)
    dx, dy = k % 6 - 3, k // 6 - 3  # the decoding of the compiled sweep
    for v in (dx, dy):
        freq = torch.bincount(v + 3, minlength=6).double() / v.numel()
        assert v.min() == -3 and v.max() == 2  # np.random.randint(-3, 3): -3 .. 2
        assert (freq - 1 / 6).abs().max() < 0.003
    joint = torch.bincount(k, minlength=36).double() / k.numel()
    assert (joint - 1 / 36).abs().max() < 0.002  # dx and dy independent


def _recipe_glass(img: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """The recipe's ``glass_blur`` of one ``[H, W, 3]`` image (its loop; the library's Gaussian), then ``np.uint8``."""
    sigma, d, iters = GLASS[severity - 1]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    y = torch.floor(C._gaussian(x, sigma).clamp(0, 1) * 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)
    moves = (img.shape[0] - 2 * d) * (img.shape[1] - 2 * d)
    for _ in range(iters):
        shifts = iter(rng.randint(-d, d, size=(moves, 2)).tolist())
        _recipe_sweep(y, d, lambda shifts=shifts: next(shifts))
    z = torch.from_numpy(y).permute(2, 0, 1)[None].float() / 255
    return torch.floor(C._gaussian(z, sigma).clamp(0, 1) * 255)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("severity", [2, 3, 4, 5])
def test_glass_blur_changes_the_image_as_much_as_the_recipe(severity):
    # A parallel scramble (every pixel reads the image as it was before the iteration) moves pixels less far than
    # the recipe's serial moves, which read pixels the sweep has already moved: here 5% (severity 2) to 12% less
    # change than the recipe; the serial sweep is within 1%.
    imgs = _mosaic(8, 64, seed=severity)
    rng = np.random.RandomState(severity)
    want = np.mean([np.abs(_recipe_glass(im, severity, rng) - im).mean() for im in imgs])
    gens = [torch.Generator().manual_seed(100 * severity + i) for i in range(len(imgs))]
    out = C.corrupt_batch(_nchw(imgs), "glass_blur", severity, gens).permute(0, 2, 3, 1).numpy().astype(float)
    got = np.abs(out - imgs).mean()
    assert got / want == pytest.approx(1, abs=0.025), f"mean change {got:.3f}, recipe {want:.3f}"


# ---------------------------------------------------------------------------------------------------------------
# frost


def test_frost_texture_has_the_photographs_statistics():
    stats = np.array(C.FROST_PHOTO_STATS)  # [5, 2 (mean, std), 3]
    # the recipe's mean frost colour (the average over its five photographs)
    assert stats[:, 0].mean(0) == pytest.approx([143.69, 164.82, 176.75], abs=0.05)
    n = 60
    tex = C.frost_texture([torch.Generator().manual_seed(s) for s in range(n)]).double()
    assert tex.shape == (n, 3, 224, 224) and torch.equal(tex, tex.round()) and tex.min() >= 0 and tex.max() <= 255
    means, stds = tex.mean(dim=(2, 3)).numpy(), tex.std(dim=(2, 3)).numpy()
    picked = np.abs(means[:, None, :] - stats[None, :, 0]).sum(-1).argmin(1)  # the photograph each one imitates
    assert np.abs(means - stats[picked, 0]).max() < 1.0  # each texture: its photograph's mean colour ...
    assert np.abs(stds - stats[picked, 1]).max() < 1.0  # ... and contrast, per channel, within a grey level
    counts = np.bincount(np.where(picked == 2, 1, picked), minlength=5)  # frost2 and frost3 are alike
    assert counts[[0, 3, 4]].min() >= 5 and counts[1] >= 12  # each photograph ~1/5 (frost2 + frost3: 2/5)
    # over many images the texture's average colour is the photographs' (old texture: RGB 118 / 127 / 137)
    assert means.mean(0) == pytest.approx(stats[:, 0].mean(0), abs=12)


def test_frost_brightens_like_the_recipe():
    x = torch.full((40, 3, 224, 224), 100, dtype=torch.uint8)
    gens = [torch.Generator().manual_seed(s) for s in range(40)]
    out = C.corrupt_batch(x, "frost", 1, gens).double()  # severity 1: 1 * x + 0.4 * frost
    added = (out - 100).mean(dim=(0, 2, 3)).numpy()
    assert added == pytest.approx(0.4 * np.array([143.69, 164.82, 176.75]), abs=6)


# ---------------------------------------------------------------------------------------------------------------
# motion blur and snow: ImageMagick's 8-bit output truncates


def _line_blur(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """``sum_o K(o) x(p + o)`` over the motion kernel, edge pixels repeated, float64 (``[..., H, W]``)."""
    k = C.motion_kernel(radius, sigma, angle)
    r = k.shape[0] // 2
    h, w = img.shape[-2:]
    pad = [(0, 0)] * (img.ndim - 2) + [(r, r), (r, r)]
    xp = np.pad(img.astype(np.float64), pad, mode="edge")
    out = np.zeros(img.shape)
    for dy, dx in zip(*np.nonzero(k), strict=True):
        out += k[dy, dx] * xp[..., dy : dy + h, dx : dx + w]
    return out


def _angle(seed: int, lo: float, hi: float, skip: tuple[int, ...] = ()) -> float:
    """The first ``U(lo, hi)`` float64 draw of a generator seeded ``seed`` after ``skip`` (a shape of normals)."""
    g = torch.Generator().manual_seed(seed)
    if skip:
        torch.empty(skip).normal_(0, 1, generator=g)
    return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()


@pytest.mark.parametrize("severity", [1, 4])
def test_motion_blur_truncates_like_imagemagick(severity):
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    img = np.random.default_rng(severity).integers(0, 256, (1, 3, 64, 64), dtype=np.uint8)
    out = C.corrupt_batch(torch.from_numpy(img), "motion_blur", severity, [torch.Generator().manual_seed(9)])
    exact = _line_blur(img, radius, sigma, _angle(9, -45, 45))
    frac = exact - np.floor(exact)
    clear = (frac > 1e-3) & (frac < 1 - 1e-3)  # away from integers, where float round-off could tip it either way
    assert clear.mean() > 0.9
    assert np.array_equal(out.numpy()[clear], np.floor(exact[clear]))
    assert np.abs(out.numpy().astype(float) - exact).max() < 1


def test_snow_layer_truncates_like_imagemagick():
    loc, scale, zoom, thr, radius, sigma, blend = (0.2, 0.3, 2, 0.5, 12, 4, 0.7)  # severity 2
    img = np.full((1, 3, 96, 96), 40, dtype=np.uint8)
    img[..., 48:, :] = 90
    out = C.corrupt_batch(torch.from_numpy(img), "snow", 2, [torch.Generator().manual_seed(5)]).numpy()[0]
    g = torch.Generator().manual_seed(5)
    noise = torch.empty(1, 96, 96).normal_(0, 1, generator=g)  # the draws, in the library's order
    angle = _angle(5, -135, -45, skip=(1, 96, 96))
    layer = C._clipped_zoom((loc + scale * noise).double(), zoom).numpy()[0]
    layer[layer < thr] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255)  # astype(np.uint8)
    layer = np.floor(_line_blur(layer, radius, sigma, angle) + 1e-6) / 255  # ImageMagick: 8-bit, truncated
    x = img[0] / 255
    gray = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    x = blend * x + (1 - blend) * np.maximum(x, gray * 1.5 + 0.5)
    want = np.floor(np.clip(x + layer + layer[::-1, ::-1], 0, 1) * 255)
    diff = out.astype(float) - want
    assert np.abs(diff).max() <= 1  # float32 against float64 at the last truncation
    assert abs(diff.mean()) < 0.05  # rounding the layer instead would add ~+0.5 grey level per layer
    assert (diff == 0).mean() > 0.95
