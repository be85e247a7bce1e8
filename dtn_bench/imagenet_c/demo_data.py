"""The offline demo: a small procedural image set, corrupted by the generator, and a model that can tell its classes.

Nothing here is ImageNet: every row and table of a demo run says ``demo data - not ImageNet-C``.

- Classes: ``classes`` procedural patterns (stripes at four angles, checkerboard, rings, dots, blobs, gradients,
  rectangles, plaid, spiral), each with its own two-colour palette; every image has a random phase and frequency,
  jittered colours and a little noise (seeded numpy), 224 x 224, saved as JPEG quality 85 like ImageNet-C.
- ``clean/`` holds the images evaluated (also the clean error), ``train/`` other images of the same classes, and
  ``imagenet-c/`` the released layout made by :func:`dtn_bench.data.corruptions.corrupt_folder` from ``clean/``.
- Model: the requested architecture with seeded random weights and a classifier head fitted in closed form (ridge
  regression on its pre-logits features of ``train/``), saved as ``model.safetensors`` and loaded like any checkpoint.
  A random backbone with a fitted head is a stand-in that makes the errors move with the corruptions; it is not a
  trained ViT.

A finished set is marked by ``complete.json`` (written last) and reused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dtn_bench.errors import DTNBenchError

PATTERNS = ("stripes_0", "stripes_45", "stripes_90", "checker", "rings", "dots", "blobs", "gradient", "rectangles",
            "plaid", "stripes_135", "spiral")
SIZE = 224


def class_names(classes: int) -> list[str]:
    """Folder names of the demo classes (sorted order = class index)."""
    if not 2 <= classes <= len(PATTERNS):
        raise DTNBenchError(f"--demo-classes must be between 2 and {len(PATTERNS)}, got {classes}")
    return [f"demo{i:02d}_{PATTERNS[i]}" for i in range(classes)]


def _stripes(x, y, freq, phase, rng, pattern):
    a = math.radians(float(pattern.split("_")[1]) + rng.uniform(-8, 8))
    return np.sin(2 * math.pi * freq * (x * math.cos(a) + y * math.sin(a)) + phase) > 0


def _checker(x, y, freq, phase, rng, pattern):
    return (np.floor(x * freq + phase) + np.floor(y * freq + phase)) % 2 > 0


def _rings(x, y, freq, phase, rng, pattern):
    cx, cy = rng.uniform(0.3, 0.7, 2)
    return np.sin(2 * math.pi * freq * np.hypot(x - cx, y - cy) + phase) > 0


def _dots(x, y, freq, phase, rng, pattern):
    return (np.sin(2 * math.pi * freq * x + phase) * np.sin(2 * math.pi * freq * y + phase)) > 0.5


def _blobs(x, y, freq, phase, rng, pattern):
    t = np.zeros_like(x, dtype=bool)
    for _ in range(rng.integers(3, 6)):
        cx, cy, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.08, 0.18)
        t |= np.hypot(x - cx, y - cy) < r
    return t


def _gradient(x, y, freq, phase, rng, pattern):
    a = rng.uniform(0, 2 * math.pi)
    g = (x * math.cos(a) + y * math.sin(a))
    return (g - g.min()) / (g.max() - g.min() + 1e-6)


def _rectangles(x, y, freq, phase, rng, pattern):
    t = np.zeros_like(x, dtype=bool)
    for _ in range(rng.integers(3, 6)):
        x0, y0 = rng.uniform(0, 0.7, 2)
        w, h = rng.uniform(0.1, 0.3, 2)
        t ^= (x > x0) & (x < x0 + w) & (y > y0) & (y < y0 + h)
    return t


def _plaid(x, y, freq, phase, rng, pattern):
    return (np.sin(2 * math.pi * freq * x + phase) + np.sin(2 * math.pi * freq * 0.5 * y)) / 4 + 0.5


def _spiral(x, y, freq, phase, rng, pattern):
    r, th = np.hypot(x - 0.5, y - 0.5), np.arctan2(y - 0.5, x - 0.5)
    return np.sin(3 * th + 2 * math.pi * freq * r + phase) > 0


_DRAW = {"checker": _checker, "rings": _rings, "dots": _dots, "blobs": _blobs, "gradient": _gradient,
         "rectangles": _rectangles, "plaid": _plaid, "spiral": _spiral}
"""Pattern -> ``f(x, y, freq, phase, rng, pattern)``: the pattern's mask or intensity in ``[0, 1]`` (``stripes_*``
apart: its angle is in the name)."""


def draw(pattern: str, rng: np.random.Generator, size: int = SIZE, colors: np.ndarray | None = None) -> np.ndarray:
    """One ``uint8 [size, size, 3]`` image of ``pattern`` with random phase and frequency.

    ``colors`` (``[2, 3]`` in ``[0, 1]``) is the class's palette, jittered per image; random colours when ``None``.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    freq = rng.uniform(5, 9)
    phase = rng.uniform(0, 2 * math.pi)
    shape = _stripes if pattern.startswith("stripes") else _DRAW.get(pattern)
    if shape is None:
        raise ValueError(pattern)
    t = shape(x, y, freq, phase, rng, pattern).astype(np.float32)[..., None]
    if colors is None:
        colors = rng.uniform(0, 1, (2, 3))
    c0, c1 = np.clip(colors + rng.normal(0, 0.06, (2, 3)), 0, 1)
    img = c0 * (1 - t) + c1 * t + rng.normal(0, 0.03, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _save_set(folder: Path, names: list[str], per_class: int, rng: np.random.Generator, tag: str,
              seed: int) -> None:
    from PIL import Image

    for k, cls in enumerate(names):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        pattern = cls.split("_", 1)[1]
        palette = np.random.default_rng([seed, k]).uniform(0.1, 0.9, (2, 3))  # the class's two colours
        for i in range(per_class):
            img = draw(pattern, rng, colors=palette)
            Image.fromarray(img).save(folder / cls / f"{tag}_{cls[:6]}_{i:04d}.JPEG", quality=85)


def demo_paths(root: str | Path, classes: int) -> dict:
    """Where :func:`make_demo_data` puts the set under ``root``: ``{"clean", "train", "imagenet_c", "classes"}``."""
    root = Path(root)
    return {"clean": root / "clean", "train": root / "train", "imagenet_c": root / "imagenet-c",
            "classes": class_names(classes)}


def make_demo_data(root: str | Path, *, classes: int = 10, images: int = 2, train_images: int = 16,
                   corruptions=None, severities=(1, 2, 3, 4, 5), seed: int = 0, device: str = "cpu",
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Build (or reuse) the demo set under ``root``; returns ``{"clean", "train", "imagenet_c", "classes"}`` paths.

    Args:
        root: folder for this demo set.
        classes: procedural classes (2..12).
        images: evaluated images per class (each corrupted at every pair).
        train_images: images per class the demo head is fitted on.
        corruptions: corruption names (default: the 15 of the mCE).
        severities: severities to generate.
        seed: everything is seeded from this.
        device: where the generator runs.
        progress: passed to the generator (``progress(done, total)``).
    """
    root = Path(root)
    settings = dict(classes=classes, images=images, train_images=train_images, seed=seed,
                    corruptions=list(corruptions) if corruptions else None, severities=list(severities), version=2)
    marker = root / "complete.json"
    paths = demo_paths(root, classes)
    names = paths["classes"]
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return paths
    if images <= 0 or train_images <= 0:
        raise DTNBenchError("--demo-images must be > 0")
    import shutil

    for sub in ("clean", "train", "imagenet-c"):
        shutil.rmtree(root / sub, ignore_errors=True)
    marker.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    _save_set(paths["clean"], names, images, rng, "eval", seed)
    _save_set(paths["train"], names, train_images, rng, "train", seed)
    try:
        from dtn_bench.data.corruptions import corrupt_folder
    except ImportError as e:
        raise DTNBenchError(f"the corruption generator (dtn_bench.data.corruptions) is not available: {e}") from e
    corrupt_folder(paths["clean"], paths["imagenet_c"], corruptions, tuple(severities), seed=seed, device=device,
                   progress=progress)
    marker.write_text(json.dumps(settings))
    return paths


def fit_demo_model(model_name: str, train_dir: str | Path, out: str | Path, *, norm: str | None = None,
                   seed: int = 0, ridge: float = 1e-2) -> Path:
    """Seeded random ``model_name`` with a ridge-regression head fitted on ``train_dir``; saved to ``out``.

    Returns the checkpoint path (``.safetensors``). Same arguments, same file.
    """
    from safetensors.torch import save_file
    from timm.data import resolve_model_data_config

    from dtn_bench.models import create
    from dtn_bench.shifts.loader import FileSource, ImageItems, Item, collate

    train_dir = Path(train_dir)
    names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    torch.manual_seed(seed)
    model = create(model_name, norm=norm, num_classes=len(names)).eval()
    dc = resolve_model_data_config(model)
    files = [(f"{n}/{f.name}", k) for k, n in enumerate(names) for f in sorted((train_dir / n).iterdir())]
    items = [Item(0, i, k) for i, (_, k) in enumerate(files)]
    ds = ImageItems([FileSource(train_dir, [f for f, _ in files])], items, (SIZE, SIZE))
    mean = torch.tensor(dc["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(dc["std"]).view(1, -1, 1, 1)
    feats, labels = [], []
    with torch.inference_mode():
        for images, y, _, status, _ in torch.utils.data.DataLoader(ds, batch_size=32, collate_fn=collate):
            if (status != 0).any():
                raise DTNBenchError(f"demo training image unreadable under {train_dir}")
            x = images.float().div(255).sub(mean).div(std)
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True))
            labels.append(y)
    f = torch.cat(feats).double()
    y = torch.nn.functional.one_hot(torch.cat(labels), len(names)).double()
    mu, sd = f.mean(0), f.std(0) + 1e-6
    z = (f - mu) / sd
    a = z.T @ z + ridge * len(z) * torch.eye(z.shape[1], dtype=z.dtype)
    w = torch.linalg.solve(a, z.T @ (y - y.mean(0)))  # [dim, classes] on standardised features
    weight = (w / sd[:, None]).T
    bias = y.mean(0) - (mu / sd) @ w
    with torch.no_grad():
        model.head.weight.copy_(weight.float())
        model.head.bias.copy_(bias.float())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out
