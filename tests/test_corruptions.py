"""ImageNet-C corruption generator: fidelity to the recipe, noise statistics, determinism, layout, CLI errors.

The fidelity references below are plain NumPy / Pillow implementations of the recipe (Hendrycks & Dietterich's
``make_imagenet_c.py``), written independently of the library: loops over kernel taps, ``np.pad`` borders,
skimage's HSV algorithm.
"""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import record, run_cli
from PIL import Image

from dtn_bench.bench.corrupt import peer_speedups
from dtn_bench.data import corruptions as C
from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import CORRUPTIONS, EXTRA_CORRUPTIONS


def _images(n: int = 2, seed: int = 0) -> np.ndarray:
    """``[n, 224, 224, 3]`` uint8: smooth colour fields plus texture, a black and a grey patch, a saturated edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224] / 223.0
    out = []
    for _ in range(n):
        phase = rng.uniform(0, 2 * np.pi, 3)
        img = np.stack([0.5 + 0.45 * np.sin(5 * xx + 3 * yy * (k + 1) + phase[k]) for k in range(3)], -1)
        img = np.clip(img * 255 + rng.normal(0, 12, img.shape), 0, 255)
        img[10:30, 10:30] = 0
        img[40:60, 10:30] = 128
        img[:, 200:] = [255, 10, 10]
        out.append(img.astype(np.uint8))
    return np.stack(out)


def _torch(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------------------------
# plain references of the recipe (float64 in, 0..255 float64 out before the uint8 truncation)


def _rgb2hsv(x):
    v = x.max(-1)
    delta = x.ptp(-1) if hasattr(x, "ptp") else x.max(-1) - x.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(delta == 0, 0.0, delta / np.where(v == 0, 1, v))
        h = np.zeros_like(v)
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        d = np.where(delta == 0, 1, delta)
        h = np.where(r == v, (g - b) / d, h)
        h = np.where(g == v, 2.0 + (b - r) / d, h)
        h = np.where(b == v, 4.0 + (r - g) / d, h)
        h = (h / 6.0) % 1.0
        h[delta == 0] = 0
    return np.stack([h, s, v], -1)


def _hsv2rgb(hsv):
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.astype(np.int64) % 6
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape)
    for k, (r, g, b) in enumerate(table):
        m = hi == k
        out[m] = np.stack([r[m], g[m], b[m]], -1)
    return out


def ref_brightness(img, c):
    hsv = _rgb2hsv(img / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(_hsv2rgb(hsv), 0, 1) * 255


def ref_saturate(img, c):
    hsv = _rgb2hsv(img / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return np.clip(_hsv2rgb(hsv), 0, 1) * 255


def ref_contrast(img, c):
    x = img / 255.0
    m = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - m) * c + m, 0, 1) * 255


def ref_pixelate(img, c):
    im = Image.fromarray(img).resize((int(224 * c), int(224 * c)), Image.BOX).resize((224, 224), Image.BOX)
    return np.asarray(im).astype(np.float64)


def ref_jpeg(img, q):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64)


def _correlate(x, kernel, pad_mode):
    """``sum_{dy,dx} K[dy, dx] x(p + (dy, dx))`` over a 2-D kernel, with ``np.pad`` borders (per channel)."""
    r = kernel.shape[0] // 2
    h, w = x.shape[:2]
    xp = np.pad(x, ((r, r), (r, r), (0, 0)), mode=pad_mode)
    out = np.zeros_like(x)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if kernel[dy + r, dx + r]:
                out += kernel[dy + r, dx + r] * xp[r + dy : r + dy + h, r + dx : r + dx + w]
    return out


def ref_defocus(img, c):
    radius, alias = c
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = 3 if radius <= 8 else 5
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - ksize // 2
    g1 = np.exp(-(t**2) / (2 * alias**2))
    g1 /= g1.sum()
    kernel = _correlate(disk[..., None], np.outer(g1, g1), "reflect")[..., 0]  # np "reflect" = OpenCV reflect-101
    return np.clip(_correlate(img / 255.0, kernel, "reflect"), 0, 1) * 255


def ref_gaussian_blur(img, sigma):
    r = int(4.0 * sigma + 0.5)
    t = np.arange(-r, r + 1)
    g1 = np.exp(-0.5 * t**2 / sigma**2)
    g1 /= g1.sum()
    x = img / 255.0
    xp = np.pad(x, ((0, 0), (r, r), (0, 0)), mode="edge")
    x = sum(g1[k] * xp[:, k : k + 224] for k in range(2 * r + 1))
    xp = np.pad(x, ((r, r), (0, 0), (0, 0)), mode="edge")
    x = sum(g1[k] * xp[k : k + 224] for k in range(2 * r + 1))
    return np.clip(x, 0, 1) * 255


def _scipy_zoom_order1(a, z):
    """scipy ``zoom(a, (z, z, 1), order=1)``: output ``round(n z)``, input coordinate ``j (n - 1) / (m - 1)``."""
    n = a.shape[0]
    m = int(round(n * z))
    coord = np.arange(m) * ((n - 1) / (m - 1))
    lo = np.floor(coord).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    f = coord - lo
    a = a[lo] * (1 - f)[:, None, None] + a[hi] * f[:, None, None]
    return a[:, lo] * (1 - f)[None, :, None] + a[:, hi] * f[None, :, None]


def ref_zoom_blur(img, severity):
    zs = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02), np.arange(1, 1.26, 0.02),
          np.arange(1, 1.31, 0.03)][severity - 1]
    x = (img / 255.0).astype(np.float32)
    out = np.zeros_like(x, dtype=np.float64)
    for z in zs:
        ch = int(np.ceil(224 / z))
        top = (224 - ch) // 2
        zoomed = _scipy_zoom_order1(x[top : top + ch, top : top + ch].astype(np.float64), z)
        trim = (zoomed.shape[0] - 224) // 2
        out += zoomed[trim : trim + 224, trim : trim + 224]
    return np.clip((x + out) / (len(zs) + 1), 0, 1) * 255


REFERENCES = {
    "brightness": (ref_brightness, (0.1, 0.2, 0.3, 0.4, 0.5)),
    "contrast": (ref_contrast, (0.4, 0.3, 0.2, 0.1, 0.05)),
    "saturate": (ref_saturate, ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))),
    "pixelate": (ref_pixelate, (0.6, 0.5, 0.4, 0.3, 0.25)),
    "jpeg_compression": (ref_jpeg, (25, 18, 15, 10, 7)),
    "defocus_blur": (ref_defocus, ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))),
    "gaussian_blur": (ref_gaussian_blur, (1, 2, 3, 4, 6)),
    "zoom_blur": (ref_zoom_blur, (1, 2, 3, 4, 5)),
}


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return _images(2)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_deterministic_corruptions_match_the_recipe(name, batch):
    ref, params = REFERENCES[name]
    for severity, c in enumerate(params, start=1):
        ours = _numpy(C.corrupt_batch(_torch(batch), name, severity)).astype(int)
        for i, img in enumerate(batch):
            want = np.uint8(ref(img, c)).astype(int)  # the recipe's truncation
            diff = np.abs(ours[i] - want)
            assert diff.max() <= 1, f"{name} s{severity}: max diff {diff.max()} grey levels"
            assert (diff > 0).mean() < 0.2, f"{name} s{severity}: {(diff > 0).mean():.1%} of values differ"


def test_deterministic_corruptions_change_the_image(batch):
    for name in REFERENCES:
        out = C.corrupt_batch(_torch(batch), name, 3).numpy().astype(int)
        assert np.abs(out - _torch(batch).numpy()).mean() > 1, name


# ---------------------------------------------------------------------------------------------------------------
# stochastic: statistics


def _flat(level: int, n: int = 2) -> torch.Tensor:
    return torch.full((n, 3, 224, 224), level, dtype=torch.uint8)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_and_speckle_noise_statistics(severity):
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    out = C.corrupt_batch(_flat(128), "gaussian_noise", severity, torch.Generator().manual_seed(1)).double()
    noise = out / 255 - 128 / 255
    inside = (out > 0) & (out < 255)  # clipping (at most ~8% at severity 5) truncates the tails
    assert abs(noise.mean().item() + 0.5 / 255) < 0.01
    if severity < 5:
        assert noise[inside].std().item() == pytest.approx(c, rel=0.05)
    cs = (0.15, 0.2, 0.35, 0.45, 0.6)[severity - 1]
    out = C.corrupt_batch(_flat(64), "speckle_noise", severity, torch.Generator().manual_seed(2)).double()
    rel = (out + 0.5) / 64 - 1  # x + x N(0, c^2): relative noise ~ N(0, c^2)
    assert rel.std().item() == pytest.approx(cs, rel=0.05)
    if severity < 5:  # at c = 0.6, 5% of the values clip at 0 and raise the mean
        assert abs(rel.mean().item()) < 0.01


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_shot_noise_is_poisson(severity):
    c = (60, 25, 12, 5, 3)[severity - 1]
    level = 51  # lambda = c / 5
    out = C.corrupt_batch(_flat(level), "shot_noise", severity, torch.Generator().manual_seed(3)).numpy()
    counts = np.round((out.astype(np.float64) + 0.5) * c / 255).astype(int)
    lam = c * level / 255
    kmax = c  # counts >= c clip to 255
    pmf = np.array([math.exp(-lam) * lam**k / math.factorial(k) for k in range(kmax)])
    freq = np.bincount(counts.ravel(), minlength=kmax + 1)[:kmax] / counts.size
    assert np.abs(freq - pmf).max() < 0.004
    assert counts.mean() == pytest.approx(lam, rel=0.02)
    if severity <= 3:
        assert counts.var() == pytest.approx(lam, rel=0.04)


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_rates(severity):
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    out = C.corrupt_batch(_flat(100), "impulse_noise", severity, torch.Generator().manual_seed(4)).numpy()
    assert set(np.unique(out)) <= {0, 100, 255}
    assert (out == 0).mean() == pytest.approx(c / 2, rel=0.05)
    assert (out == 255).mean() == pytest.approx(c / 2, rel=0.05)


def test_motion_kernel_is_one_sided_line():
    k = C.motion_kernel(10, 3, 0.0)  # angle 0: taps to the right of the centre
    r = k.shape[0] // 2
    assert k.sum() == pytest.approx(1.0)
    assert np.count_nonzero(k) == 21 and np.count_nonzero(k[r, r:]) == 21
    assert np.all(np.diff(k[r, r:]) < 0)  # Gaussian decay along the line
    k90 = C.motion_kernel(10, 3, 90.0)
    assert np.count_nonzero(k90[r:, r]) == 21


def test_plasma_fractal_range_and_roughness():
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    p = C.plasma_fractal(gens, 256, 2.0)
    assert p.shape == (2, 256, 256)
    assert p.min().item() == 0.0 and p.max().item() == 1.0
    assert not torch.equal(p[0], p[1])
    smooth = C.plasma_fractal(gens, 256, 3.0)  # faster decay: less fine detail
    rough = lambda t: (t[:, 1:] - t[:, :-1]).abs().mean().item()  # noqa: E731
    assert rough(smooth) < rough(p)


# ---------------------------------------------------------------------------------------------------------------
# every corruption: shape, determinism, independence from the batch


@pytest.mark.parametrize("name", C.ALL_CORRUPTIONS)
def test_every_corruption_is_seeded_per_image(name):
    x = _torch(_images(2, seed=5)[:, :, :, :])
    sev = 4
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    both = C.corrupt_batch(x, name, sev, [g(10), g(11)])
    assert both.dtype == torch.uint8 and both.shape == x.shape
    alone = C.corrupt_batch(x[1:], name, sev, [g(11)])
    assert torch.equal(both[1], alone[0])  # independent of the other images in the batch
    again = C.corrupt_batch(x.contiguous(memory_format=torch.channels_last), name, sev, [g(10), g(11)])
    assert torch.equal(both, again)  # same generators, same bytes (whatever the memory layout)
    other = C.corrupt_batch(x, name, sev, [g(12), g(13)])
    stochastic = CORRUPTION_STOCHASTIC[name]
    assert torch.equal(both, other) != stochastic
    assert (both.int() - x.int()).abs().float().mean() > 0.5  # it does something


CORRUPTION_STOCHASTIC = {e.name: e.meta["stochastic"] for e in C.CORRUPTION_FNS}


def test_registry_holds_the_19():
    assert set(C.CORRUPTION_FNS.names()) == set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    assert not any(CORRUPTION_STOCHASTIC[n] for n in REFERENCES)


def test_zoom_factor_counts():
    assert [len(C.zoom_factors(s)) for s in range(1, 6)] == [12, 16, 11, 13, 11]


def test_corrupt_batch_errors():
    x = _flat(0, 1)
    with pytest.raises(DTNBenchError, match="did you mean: gaussian_noise"):
        C.corrupt_batch(x, "gausian_noise", 1)
    with pytest.raises(DTNBenchError, match="out of range"):
        C.corrupt_batch(x, "fog", 6)
    with pytest.raises(DTNBenchError, match="expected"):
        C.corrupt_batch(torch.zeros(1, 4, 224, 224, dtype=torch.uint8), "fog", 1)


# ---------------------------------------------------------------------------------------------------------------
# folder generator and CLI


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("n001", "n002")):
        (root / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (240 + 20 * k, 300, 3), dtype=np.uint8)).save(root / cls / "a.JPEG")
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(root / cls / "b.png")
    (root / "n001" / ".DS_Store").write_bytes(b"ignored")
    return root


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_corrupt_folder_layout_and_determinism(src, tmp_path):
    names, sevs = ["contrast", "shot_noise"], [1, 5]
    summary = C.corrupt_folder(src, tmp_path / "o1", names, sevs, seed=7, batch_size=3)
    tree = _tree(tmp_path / "o1")
    assert summary.images == 4 and summary.files == 16 and len(tree) == 16 + 1  # + the manifest
    manifest = json.loads(tree.pop(C.MANIFEST_NAME))
    assert manifest["source"] == str(src.resolve()) and manifest["seed"] == 7 and manifest["files"] == 16
    assert manifest["corruptions"] == names and manifest["severities"] == sevs and manifest["dtn_bench_version"]
    assert "shot_noise/5/n002/a.JPEG" in tree and "contrast/1/n001/b.jpg" in tree
    img = Image.open(io.BytesIO(tree["contrast/1/n001/a.JPEG"]))
    assert img.format == "JPEG" and img.size == (224, 224)
    # same seed, same bytes (another batch size); another seed changes only the stochastic corruption
    C.corrupt_folder(src, tmp_path / "o2", names, sevs, seed=7, batch_size=1)
    assert {k: v for k, v in _tree(tmp_path / "o2").items() if k != C.MANIFEST_NAME} == tree
    C.corrupt_folder(src, tmp_path / "o3", names, sevs, seed=8, batch_size=4)
    other = _tree(tmp_path / "o3")
    assert all(other[k] == v for k, v in tree.items() if k.startswith("contrast"))
    assert all(other[k] != v for k, v in tree.items() if k.startswith("shot_noise"))


def test_corrupt_folder_matches_corrupt_batch(src, tmp_path):
    C.corrupt_folder(src, tmp_path / "o", ["fog"], [2], seed=3)
    x = C.load_image(src / "n002" / "a.JPEG")
    gen = torch.Generator().manual_seed(C.image_seed(3, "fog", 2, "n002/a.JPEG"))
    want = C.corrupt_batch(x[None], "fog", 2, [gen])[0]
    assert (tmp_path / "o" / "fog" / "2" / "n002" / "a.JPEG").read_bytes() == C.encode_jpeg(want)


def test_cli_corrupt_writes_the_layout(src, tmp_path, capsys):
    out = tmp_path / "out"
    rc = run_cli(["corrupt", str(src), str(out), "--corruptions", "brightness", "--severities", "3", "--extra",
                  "--seed", "1"])
    assert rc == 0
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == sorted(["brightness", *EXTRA_CORRUPTIONS])
    assert sorted(p.name for p in out.iterdir() if not p.is_dir()) == [C.MANIFEST_NAME]  # the job finished
    manifest = json.loads((out / C.MANIFEST_NAME).read_text())
    assert manifest["corruptions"] == ["brightness", *EXTRA_CORRUPTIONS] and manifest["seed"] == 1
    assert len(list(out.rglob("*.JPEG"))) == 5 * 2 and not list(out.rglob("*.tmp"))
    assert "20 files from 4 images" in capsys.readouterr().out


def _one_line_error(capsys, argv) -> str:
    rc = run_cli(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_cli_bad_inputs(src, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = _one_line_error(capsys, ["corrupt", str(src), out, "--corruptions", "contrast,zoom_blurr"])
    assert "unknown corruption 'zoom_blurr'" in err and "did you mean: zoom_blur" in err
    err = _one_line_error(capsys, ["corrupt", str(tmp_path / "missing"), out])
    assert "does not exist" in err
    for bad in ("0", "6", "two", ","):
        err = _one_line_error(capsys, ["corrupt", str(src), out, "--severities", bad])
        assert "severit" in err
    err = _one_line_error(capsys, ["corrupt", str(src), out, "--batch-size", "0"])
    assert "batch size must be > 0" in err
    err = _one_line_error(capsys, ["corrupt", str(src), str(src / "n001" / "c")])
    assert "must not be inside the source folder" in err
    assert not (tmp_path / "out").exists() and not (src / "n001" / "c").exists()


def test_cli_non_image_files(src, tmp_path, capsys):
    out = str(tmp_path / "out")
    (src / "n001" / "notes.txt").write_text("not an image")
    err = _one_line_error(capsys, ["corrupt", str(src), out, "--corruptions", "contrast"])
    assert "notes.txt" in err and "not an image" in err
    (src / "n001" / "notes.txt").unlink()
    (src / "n002" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    err = _one_line_error(capsys, ["corrupt", str(src), out, "--corruptions", "contrast", "--severities", "1"])
    assert "broken.jpg" in err and "not a readable image" in err
    (src / "n002" / "broken.jpg").unlink()
    (src / "loose.png").write_bytes(b"")
    err = _one_line_error(capsys, ["corrupt", str(src), out])
    assert "class folders" in err


def _bench_rows(tmp_path, run_id: str) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "bench-corrupt" / run_id / "rows.csv")


def test_bench_corrupt_writes_rows(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(C, "load_peer", lambda: (None, "not installed"))
    threads = torch.get_num_threads()
    rc = run_cli(["bench", "corrupt", "--preset", "quick", "--batch", "1", "--out", str(tmp_path), "--run-id",
                  "t1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert torch.get_num_threads() == threads  # the process-wide setting is restored
    df = _bench_rows(tmp_path, "t1")
    med = df[(df["metric"] == "time_ms") & (df["stat"] == "median")]
    per, total = med[med["corruption"] != "pass"], med[med["corruption"] == "pass"]["value"].item()
    assert list(per["corruption"]) == list(CORRUPTIONS) and (per["value"] > 0).all()
    cpu = df[df["metric"] == "cpu_time_ms"]
    assert list(cpu["corruption"]) == list(CORRUPTIONS) and (cpu["value"] > 0).all()
    assert total == pytest.approx(per["value"].sum())
    assert set(df["impl"]) == {"dtn-bench"} and set(df["threads"]) == {1}  # default: 1 thread, recorded
    assert "speedup" not in set(df["metric"])  # no peer timed, no ratio
    assert "imagecorruptions not installed: no peer timing, no speed ratio" in out
    assert "one pass, dtn-bench: throughput_img_s = " in out and "speedup" not in out
    assert (tmp_path / "bench-corrupt" / "t1" / "table.md").exists()
    err = _one_line_error(capsys, ["bench", "corrupt", "--corruptions", "snoww", "--out", str(tmp_path)])
    assert "did you mean: snow" in err
    err = _one_line_error(capsys, ["bench", "corrupt", "--peer-batch", "0", "--out", str(tmp_path)])
    assert "--peer-batch must be > 0" in err


def test_load_peer_says_why_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "PEER", "dtn_bench_no_such_peer")
    assert C.load_peer() == (None, "not installed")
    (tmp_path / "dtn_bench_broken_peer.py").write_text("import dtn_bench_no_such_module_either\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(C, "PEER", "dtn_bench_broken_peer")  # imports, then fails inside (as 1.1.2 on pkg_resources)
    module, why = C.load_peer()
    assert module is None
    assert why == "does not import (ModuleNotFoundError: No module named 'dtn_bench_no_such_module_either')"


class _FakePeer:
    """Stands in for imagecorruptions: ``corrupt(image, corruption_name=, severity=)`` on one HWC uint8 image."""

    def __init__(self, fails: tuple[str, ...] = ()):
        self.fails, self.calls = fails, []

    def corrupt(self, image, corruption_name, severity):
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8
        self.calls.append((corruption_name, severity))
        if corruption_name in self.fails:
            raise TypeError("gaussian() got an unexpected keyword argument 'multichannel'")
        return 255 - np.sqrt(image.astype(np.float64) * 255).astype(np.uint8)


@pytest.mark.parametrize("fails", [(), ("fog",)])
def test_bench_corrupt_times_the_peer_in_the_same_run(tmp_path, capsys, monkeypatch, fails):
    peer = _FakePeer(fails)
    monkeypatch.setattr(C, "load_peer", lambda: (peer, "1.1.2"))
    names = ["contrast", "fog", "brightness"]
    rc = run_cli(["bench", "corrupt", "--preset", "quick", "--batch-size", "3", "--peer-batch", "2", "--iters", "2",
                  "--corruptions", ",".join(names), "--out", str(tmp_path), "--run-id", "p"])
    out = capsys.readouterr().out
    assert rc == 0, out
    # 2 images x 2 timed runs (no warm-up in the quick preset) at severity 3; a failure stops that corruption
    assert peer.calls == [(n, 3) for n in names for _ in range(1 if n in fails else 2 * 2)]
    df = _bench_rows(tmp_path, "p")
    med = df[(df["metric"] == "time_ms") & (df["stat"] == "median")].set_index(["impl", "corruption"])["value"]
    ran = [n for n in names if n not in fails]
    assert sorted(med["imagecorruptions"].index) == sorted(ran + ([] if fails else ["pass"]))
    assert set(df[df["impl"] == "imagecorruptions"]["batch_size"]) == {2}
    assert set(df[df["impl"] == "imagecorruptions"]["impl_version"]) == {"1.1.2"}
    assert "speedup" not in set(df["metric"])  # measurements only: the ratio is derived when rendered
    speedup = peer_speedups(df)
    assert len(speedup) == 1
    want = sum(med["imagecorruptions"][n] for n in ran) / sum(med["dtn-bench"][n] for n in ran)
    assert speedup["value"].item() == pytest.approx(want)
    versus = speedup["versus"].item()
    assert "imagecorruptions 1.1.2 timed in this run on 2 of the same images" in versus
    assert ("the 2 of 3 corruptions it ran (fog failed)" in versus) if fails else ("all 3 corruptions" in versus)
    assert versus.endswith(", 1 thread(s)")
    if fails:
        assert "imagecorruptions 1.1.2 failed on fog: TypeError: gaussian() got an unexpected keyword" in out
    assert f"one pass, dtn-bench: speedup = {speedup['value'].item():.2f} x ({versus})" in " ".join(out.split())
    table = (tmp_path / "bench-corrupt" / "p" / "table.md").read_text()
    assert "imagecorruptions time median (ms)" in table and "dtn-bench speedup median" in table and versus in table


def test_bench_corrupt_python_api(tmp_path, monkeypatch):
    """One call runs the suite through the runner: the run folder, its rows, the lines about the peer as notes."""
    from dtn_bench.bench import corrupt as bc

    monkeypatch.setattr(C, "load_peer", lambda: (None, "not installed"))
    threads = torch.get_num_threads()
    events = []
    result = bc.benchmark("quick", out=str(tmp_path), run_id="api", corruptions=("contrast", "brightness"), batch=1,
                          threads=1, on_event=record(events))
    assert torch.get_num_threads() == threads
    assert result.path == tmp_path / "bench-corrupt" / "api"
    assert {p.name for p in result.path.iterdir()} >= {"rows.csv", "rows.parquet", "config.json", "table.md",
                                                      "table.tex", "corrupt.png"}
    per = result.rows[(result.rows["metric"] == "time_ms") & (result.rows["stat"] == "median")]
    assert list(per["corruption"]) == ["contrast", "brightness", "pass"]
    assert [info["text"] for kind, info in events if kind == "note"] == [
        "imagecorruptions not installed: no peer timing, no speed ratio"]
    assert [info["label"] for kind, info in events if kind == "step"] == ["contrast", "brightness", "pass"]
    assert peer_speedups(result.rows).empty
    with pytest.raises(DTNBenchError, match="bench corrupt: --batch must be > 0"):
        bc.benchmark("quick", out=str(tmp_path), batch=0)


# ---------------------------------------------------------------------------------------------------------------
# a job that stops half-way: one-line error, no manifest, the same command continues it


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, image data cut: passes the header probe


def test_truncated_source_stops_cleanly_and_the_same_command_continues(src, tmp_path, capsys):
    good = (src / "n002" / "a.JPEG").read_bytes()
    _truncate(src / "n002" / "a.JPEG")
    out = tmp_path / "out"
    argv = ["corrupt", str(src), str(out), "--corruptions", "contrast,fog", "--severities", "1,2", "--batch-size", "1"]
    err = _one_line_error(capsys, argv)
    assert str(src / "n002" / "a.JPEG") in err and "truncated" in err
    assert "run the same command again to continue" in err and "8 of 16 files" in err
    assert not (out / C.MANIFEST_NAME).exists() and (out / C.PARTIAL_NAME).is_file()  # recognisably unfinished
    written = {p.relative_to(out).as_posix(): p for p in out.rglob("*.JPEG")} | {
        p.relative_to(out).as_posix(): p for p in out.rglob("*.jpg")}
    assert len(written) == 8 and not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert all(k.split("/")[2] == "n001" for k in written)  # sorted order: n001's two images, then the bad one
    before = {k: p.stat().st_mtime_ns for k, p in written.items()}
    # another seed over the unfinished folder is refused (it would mix two jobs)
    err = _one_line_error(capsys, [*argv, "--seed", "3"])
    assert "unfinished dtn-bench corrupt job" in err and "--seed 0" in err
    (src / "n002" / "a.JPEG").write_bytes(good)
    assert run_cli(argv) == 0
    assert "8 kept from the unfinished earlier job" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == before[k] for k, p in written.items())  # kept, not rewritten
    assert (out / C.MANIFEST_NAME).is_file() and not (out / C.PARTIAL_NAME).exists()
    # the continued folder is byte-identical to one made in one go
    C.corrupt_folder(src, tmp_path / "fresh", ["contrast", "fog"], [1, 2], seed=0, batch_size=4)
    assert _tree(out) == _tree(tmp_path / "fresh")


def test_rerun_over_a_complete_folder_rewrites_it(src, tmp_path):
    out = tmp_path / "out"
    C.corrupt_folder(src, out, ["brightness"], [1], seed=0)
    target = out / "brightness" / "1" / "n001" / "a.JPEG"
    os.utime(target, ns=(0, 0))
    again = C.corrupt_folder(src, out, ["brightness"], [1], seed=0)
    assert again.skipped == 0 and again.files == 4 and target.stat().st_mtime_ns != 0
    assert (out / C.MANIFEST_NAME).is_file() and not (out / C.PARTIAL_NAME).exists()


# ---------------------------------------------------------------------------------------------------------------
# corruption and severity resolution: one implementation, two call sites with their own (pinned) behaviour

_C15 = CORRUPTIONS
_C19 = CORRUPTIONS + EXTRA_CORRUPTIONS


@pytest.mark.parametrize("args, kwargs, generator, evaluation", [
    ((None,), {}, _C15, _C15),
    (([],), {}, _C15, _C15),
    ((["fog", "contrast", "fog"],), {}, ("fog", "contrast"), ("fog", "contrast")),
    ((None,), {"extra": True}, _C19, _C19),
    ((["saturate", "fog", "gaussian_noise"],), {"extra": True},
     ("saturate", "fog", "gaussian_noise", "speckle_noise", "gaussian_blur", "spatter"),  # given order, extras after
     ("gaussian_noise", "fog", "speckle_noise", "gaussian_blur", "spatter", "saturate")),  # canonical order
    ((("spatter",),), {}, ("spatter",), ("spatter",)),
    ((["zoom_blurr"],), {}, "unknown corruption 'zoom_blurr' (did you mean: zoom_blur, motion_blur, defocus_blur?)",
     "unknown corruption 'zoom_blurr' (did you mean zoom_blur?)"),
    ((["fog", "snoww"],), {"extra": True}, "unknown corruption 'snoww' (did you mean: snow?)",
     "unknown corruption 'snoww' (did you mean snow?)"),
    ((["xyz"],), {}, "unknown corruption 'xyz' (known: " + ", ".join(sorted(_C19)[:12]) + ")",
     "unknown corruption 'xyz' (known: " + ", ".join(_C19) + ")"),
])
def test_resolve_corruptions_at_both_call_sites(args, kwargs, generator, evaluation):
    """``dtn_bench.data.corruptions`` (corrupt, bench corrupt) keeps the given order and names up to 3 near
    matches; ``dtn_bench.imagenet_c.data`` (imagenet-c) sorts into the canonical order and names the closest."""
    from dtn_bench.imagenet_c import data as D

    for fn, want in ((C.resolve_corruptions, generator), (D.resolve_corruptions, evaluation)):
        if isinstance(want, str):
            with pytest.raises(DTNBenchError) as e:
                fn(*args, **kwargs)
            assert str(e.value) == want
        else:
            assert fn(*args, **kwargs) == want


@pytest.mark.parametrize("values, generator, evaluation", [
    (None, TypeError, (1, 2, 3, 4, 5)),
    ([], "no severity given: choose from 1..5", (1, 2, 3, 4, 5)),
    ([3, 1, 3], (3, 1), (1, 3)),
    ([5, 1, 1], (5, 1), (1, 5)),
    (["2", " 4", "2"], (2, 4), "severity 2 is not one of 1, 2, 3, 4, 5"),
    (["3"], (3,), "severity 3 is not one of 1, 2, 3, 4, 5"),
    ([6], "severity 6 is out of range: ImageNet-C severities are 1..5", "severity 6 is not one of 1, 2, 3, 4, 5"),
    ([0, 9], "severity 0 is out of range: ImageNet-C severities are 1..5", "severity 0 is not one of 1, 2, 3, 4, 5"),
    (["x"], "severity 'x' is not an integer 1..5", "severity x is not one of 1, 2, 3, 4, 5"),
    ([2.0], "severity 2.0 is not an integer 1..5", (2,)),
    ([2.5], "severity 2.5 is not an integer 1..5", "severity 2.5 is not one of 1, 2, 3, 4, 5"),
])
def test_resolve_severities_at_both_call_sites(values, generator, evaluation):
    """The generator's resolver parses text, keeps the order and needs one severity; the evaluation's takes the
    values as given, sorts them and defaults to all five."""
    from dtn_bench.imagenet_c import data as D

    for fn, want in ((C.resolve_severities, generator), (D.resolve_severities, evaluation)):
        if want is TypeError:
            with pytest.raises(TypeError):
                fn(values)
        elif isinstance(want, str):
            with pytest.raises(DTNBenchError) as e:
                fn(values)
            assert str(e.value) == want
        else:
            assert fn(values) == want


# ---------------------------------------------------------------------------------------------------------------
# issue 21 section 5: the unfinished-job marker holds every setting that shapes the bytes; modes; leftovers
def _stopped_job(src, out, capsys, argv) -> bytes:
    """Runs ``argv`` with n002/a.JPEG truncated, so the job stops part way; returns the good bytes of that image."""
    good = (src / "n002" / "a.JPEG").read_bytes()
    _truncate(src / "n002" / "a.JPEG")
    assert "is incomplete" in _one_line_error(capsys, argv)
    (src / "n002" / "a.JPEG").write_bytes(good)
    return good


@pytest.mark.parametrize("change, shown", [
    (["--format", "tiny-imagenet-c"], "--format imagenet-c there, --format tiny-imagenet-c now; size 224 there, size "
                                      "64 now"),
    (["--severities", "1,3"], "--severities 1,2 there, --severities 1,3 now"),
    (["--corruptions", "contrast"], "--corruptions contrast,fog there, --corruptions contrast now"),
])
def test_an_unfinished_job_is_continued_only_with_the_same_settings(change, shown, src, tmp_path, capsys):
    # hostile pass, failure 2: a job stopped in the default format was continued with --format tiny-imagenet-c,
    # kept 224 px files beside new 64 px ones and wrote a manifest saying 64 px
    out = tmp_path / "out"
    argv = ["corrupt", str(src), str(out), "--corruptions", "contrast,fog", "--severities", "1,2", "--batch-size", "1"]
    _stopped_job(src, out, capsys, argv)
    marker = json.loads((out / C.PARTIAL_NAME).read_text())
    assert {k: marker[k] for k in ("seed", "format", "size", "corruptions", "severities", "jpeg_quality")} == {
        "seed": 0, "format": "imagenet-c", "size": 224, "corruptions": ["contrast", "fog"], "severities": [1, 2],
        "jpeg_quality": 85}
    assert marker["source"] == str(src.resolve()) and len(marker["recipe"]) == 16
    before = _tree(out)
    err = _one_line_error(capsys, [*argv, *change])
    assert f"{out} holds an unfinished dtn-bench corrupt job with other settings ({shown}" in err
    assert _tree(out) == before  # nothing written
    assert run_cli(argv) == 0  # the same settings continue it
    assert "8 kept from the unfinished earlier job" in capsys.readouterr().out


def test_job_settings_tell_recipes_and_severity_tables_apart():
    from dtn_bench.cifar_c.generate import CIFAR10_C, CIFAR100_C, TINY_IMAGENET_C

    base = C.job_settings("s", 0, ["fog"], [1], None)
    assert base["format"] == "imagenet-c" and base["size"] == 224
    others = [C.job_settings("s", 0, ["fog"], [1], r) for r in (CIFAR10_C, CIFAR100_C, TINY_IMAGENET_C)]
    assert len({base["recipe"], *(o["recipe"] for o in others)}) == 4
    assert others[0]["format"] == "cifar10-c" and others[2]["size"] == 64
    assert C.job_settings("s", 0, ["fog"], [2], None)["recipe"] != base["recipe"]  # another table row
    assert C.job_settings("s", 0, ["fog"], [1], None, set="c-bar")["set"] == "c-bar"  # a new setting: one more key


def test_an_old_marker_without_the_settings_is_refused(src, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / C.PARTIAL_NAME).write_text(json.dumps({"source": str(src.resolve()), "seed": 0}))
    err = _one_line_error(capsys, ["corrupt", str(src), str(out), "--corruptions", "fog", "--severities", "1"])
    assert "--format (not recorded) there, --format imagenet-c now" in err


def test_continuing_removes_the_writers_leftover_temporary_files(src, tmp_path, capsys):
    # hostile pass, failure 16: a planted .tmp (a kill inside atomic_write_bytes) was kept in a folder declared complete
    out = tmp_path / "out"
    argv = ["corrupt", str(src), str(out), "--corruptions", "contrast", "--severities", "1", "--batch-size", "1"]
    _stopped_job(src, out, capsys, argv)
    leftovers = [out / "contrast" / "1" / "n001" / ".a.JPEG.0a1b2c3d.tmp", out / ".dtn-bench-corrupt.json.k_x9y2zq.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    mine = out / "contrast" / "1" / "n001" / ".notes.tmp"  # not named like the writer's: left alone
    mine.write_text("x")
    assert run_cli(argv) == 0
    assert not any(p.exists() for p in leftovers) and mine.exists()


def test_written_files_get_the_umask_mode_and_empty_lists_are_refused(src, tmp_path, capsys):
    # hostile pass, failure 7: every atomically written file was 0600 whatever the umask
    old = os.umask(0o022)
    try:
        C.corrupt_folder(src, tmp_path / "o", ["contrast"], [1])
    finally:
        os.umask(old)
    modes = {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "o").rglob("*") if p.is_file()}
    assert modes == {"0o644"}
    # F35: --corruptions '' meant all 15 corruptions
    err = _one_line_error(capsys, ["corrupt", str(src), str(tmp_path / "e"), "--corruptions", "", "--severities", "1"])
    assert "--corruptions '' is empty: give one value at least" in err and not (tmp_path / "e").exists()
    err = _one_line_error(capsys, ["bench", "corrupt", "--corruptions", ",", "--out", str(tmp_path / "b")])
    assert "--corruptions ',' is empty" in err
