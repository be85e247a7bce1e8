"""The offline ``shifts`` demo: procedural stand-ins of four sets, built from the ImageNet-C demo machinery.

Nothing here is ImageNet: every row says ``demo stand-in``. Under ``<root>/sets/``:

- ``imagenet-val``: the ImageNet-C demo's clean images (:func:`dtn_bench.imagenet_c.demo_data.make_demo_data`);
- ``imagenet-c``: those images through the corruption generator (15 corruptions x 5 severities);
- ``imagenet-v2-matched-frequency``: a re-drawn test set of the same classes (another seed, 256 px), in class-index
  folders ``0..K-1`` as ImageNet-V2 is released - V2's idea, a new sample of the same distribution;
- ``imagenet-sketch``: sketches of re-drawn images (dark edges of the pattern on white, 256 px) - a rendition shift.

The model is the demo's stand-in (a random backbone with a ridge-regression head fitted on the demo's training
images, :func:`dtn_bench.imagenet_c.demo_data.fit_demo_model`). A finished set is marked by ``complete.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZE = 256
DEMO_SETS = ("imagenet-val", "imagenet-c", "imagenet-v2-matched-frequency", "imagenet-sketch")


def _sketch(img: np.ndarray) -> np.ndarray:
    """Dark edges on white: ``255 - 4 |grad(luminance)|``, three channels."""
    lum = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gy, gx = np.gradient(lum)
    edges = np.clip(255.0 - 4.0 * np.hypot(gx, gy), 0, 255).astype(np.uint8)
    return np.repeat(edges[..., None], 3, axis=2)


def _redraw(folder: Path, names: list[str], per_class: int, seed: int, *, by_index: bool, sketch: bool) -> None:
    """Fresh draws of the demo classes (seed ``seed + 1``), by index or class folder, optionally as sketches."""
    from PIL import Image

    from dtn_bench.imagenet_c.demo_data import draw

    rng = np.random.default_rng([seed, 1])
    for k, cls in enumerate(names):
        sub = folder / (str(k) if by_index else cls)
        sub.mkdir(parents=True, exist_ok=True)
        palette = np.random.default_rng([seed, k]).uniform(0.1, 0.9, (2, 3))  # the class's colours, as in training
        for i in range(per_class):
            img = draw(cls.split("_", 1)[1], rng, size=SIZE, colors=palette)
            Image.fromarray(_sketch(img) if sketch else img).save(sub / f"{'sketch' if sketch else 'v2'}_{i:04d}.jpeg",
                                                                  quality=90)


def make_shifts_demo(root: str | Path, model: str, *, norm: str | None = None, classes: int = 10, images: int = 2,
                     train_images: int = 16, seed: int = 0, progress: Callable[[int, int], None] | None = None
                     ) -> tuple[Path, Path]:
    """Build (or reuse) the demo sets and the stand-in model under ``root``: ``(data root, checkpoint)``."""
    import shutil

    from dtn_bench.imagenet_c.demo_data import class_names, fit_demo_model, make_demo_data

    root = Path(root)
    names = class_names(classes)
    base = make_demo_data(root / "base", classes=classes, images=images, train_images=train_images, seed=seed,
                          progress=progress)
    sets = root / "sets"
    settings = dict(classes=classes, images=images, train_images=train_images, seed=seed, version=1)
    marker = sets / "complete.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == settings):
        shutil.rmtree(sets, ignore_errors=True)
        sets.mkdir(parents=True)
        (sets / "imagenet-val").symlink_to(Path(base["clean"]).resolve(), target_is_directory=True)
        (sets / "imagenet-c").symlink_to(Path(base["imagenet_c"]).resolve(), target_is_directory=True)
        _redraw(sets / "imagenet-v2-matched-frequency", names, images, seed, by_index=True, sketch=False)
        _redraw(sets / "imagenet-sketch", names, images, seed, by_index=False, sketch=True)
        marker.write_text(json.dumps(settings))
    ckpt = fit_demo_model(model, base["train"], root / f"model-{model}{'-' + norm if norm else ''}.safetensors",
                          norm=norm, seed=seed)
    return sets, ckpt
