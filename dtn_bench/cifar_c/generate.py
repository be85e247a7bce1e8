"""Generate CIFAR-10-C, CIFAR-100-C and Tiny-ImageNet-C with each dataset's own severity parameters.

``dtn-bench corrupt --format cifar10-c|cifar100-c|tiny-imagenet-c`` runs these; ``imagenet-c`` (the default) is
:func:`dtn_bench.data.corruptions.corrupt_folder` unchanged. The corruption functions are ImageNet-C's
(:mod:`dtn_bench.data.corruptions`, with its stated deviations) given the dataset's :class:`Recipe`: the table of
:mod:`dtn_bench.cifar_c.params` and the size-dependent choices of ``make_cifar_c.py`` / ``make_tinyimagenet_c.py``
(fog's plasma map of 32 / 64, frost photographs scaled by 0.2 / 0.3, elastic parameters as fractions of the size,
zoom factors in steps of 0.01).

Sources and outputs:

- CIFAR-10-C / CIFAR-100-C: SRC is the clean test set, either a ``.npy`` of ``uint8 [N, 32, 32, 3]`` with its labels
  in ``--src-labels y.npy`` (the arrays ``dtn-bench cifar-c --clean-images/--clean-labels`` takes), or the CIFAR
  python pickle (``cifar-10-batches-py/test_batch``: ``labels``; ``cifar-100-python/test``: ``fine_labels``), read
  with an unpickler that builds only NumPy arrays. Output: ``OUT/<corruption>.npy`` ``uint8 [5N, 32, 32, 3]``
  (severities 1..5 concatenated, severity 1 first) and ``OUT/labels.npy`` (``uint8 [5N]``), as released. Image ``i``
  at a (corruption, severity) is seeded with :func:`~dtn_bench.data.corruptions.image_seed` ``(seed, corruption,
  severity, str(i))``. Every ``.npy`` is written atomically (temporary file + rename); a job that stops continues
  when run again with the same settings (:func:`~dtn_bench.data.corruptions.job.job_settings`), keeping the
  corruptions already written (the marker and manifest of :func:`~dtn_bench.data.corruptions.corrupt_folder`).
- Tiny-ImageNet-C: SRC is an image folder ``<wnid>/<image>``; each image is resized to 64 x 64 (bilinear, as the
  script's ``Resize((64, 64))``), corrupted, saved as JPEG quality 85 in ``OUT/<corruption>/<severity>/<wnid>/``.
"""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dtn_bench.cifar_c.params import CIFAR, FROST_PHOTO_SCALE, TINY_IMAGENET
from dtn_bench.data.corruptions import Recipe
from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import SEVERITIES

CIFAR10_C = Recipe("cifar10-c", 32, CIFAR, fog_mapsize=32, frost_scale=FROST_PHOTO_SCALE["cifar"], elastic_unit=32,
                   zoom_step=0.01)
CIFAR100_C = replace(CIFAR10_C, name="cifar100-c")  # one script makes both
TINY_IMAGENET_C = Recipe("tiny-imagenet-c", 64, TINY_IMAGENET, fog_mapsize=64,
                         frost_scale=FROST_PHOTO_SCALE["tiny-imagenet"], elastic_unit=64, zoom_step=0.01)
FORMATS: dict[str, Recipe | None] = {"imagenet-c": None, "cifar10-c": CIFAR10_C, "cifar100-c": CIFAR100_C,
                                     "tiny-imagenet-c": TINY_IMAGENET_C}
"""``--format`` -> its recipe (``None``: ImageNet-C, the generator's own table)."""
CLASSES = {"cifar10-c": 10, "cifar100-c": 100}
LABEL_KEYS = {"cifar10-c": "labels", "cifar100-c": "fine_labels"}


def resolve_format(name: str) -> Recipe | None:
    """The recipe of ``--format name``; an unknown name is a one-line error with the closest match."""
    from dtn_bench.checks import did_you_mean

    if name not in FORMATS:
        hint = did_you_mean(name, list(FORMATS), n=1, cutoff=0.4, show=None, sort_known=False)
        raise DTNBenchError(f"unknown --format {name!r}{hint}")
    return FORMATS[name]


class _ArrayUnpickler(pickle.Unpickler):
    """Builds NumPy arrays and plain containers only (a CIFAR pickle holds nothing else)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle's hook
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR pickle")
        return super().find_class(module, name)


def _read_pickle(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 32, 32, 3]`` and labels of a CIFAR python pickle (``data`` rows are CHW, 3072 bytes)."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DTNBenchError(f"{path}: not a .npy array nor a CIFAR python pickle ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise DTNBenchError(f"{path}: not a CIFAR python pickle (expected a dict with data and labels)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    key = LABEL_KEYS[fmt]
    if "data" not in batch or key not in batch:
        raise DTNBenchError(f"{path}: a CIFAR pickle for {fmt} needs 'data' and {key!r}; it has "
                            f"{', '.join(map(str, batch))}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DTNBenchError(f"{path}: 'data' is {data.dtype} {list(data.shape)}, expected uint8 [N, 3072]")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), np.asarray(batch[key])


def load_source(src: str | Path, labels: str | Path | None, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """The clean test set of a CIFAR format: ``(uint8 [N, 32, 32, 3], int64 [N])``, checked (one-line errors)."""
    from dtn_bench.shifts.layout import check_images, check_labels, open_array

    src = Path(src)
    if not src.is_file():
        raise DTNBenchError(f"source {src} {'is not a file' if src.exists() else 'does not exist'} (expected "
                            f"uint8 [N, 32, 32, 3] .npy with --src-labels, or the CIFAR python pickle)")
    if src.suffix.lower() == ".npy":
        if labels is None:
            raise DTNBenchError(f"{src}: a .npy source needs its labels: --src-labels y.npy")
        labels = Path(labels)
        if not labels.is_file():
            raise DTNBenchError(f"--src-labels {labels} does not exist or is not a file")
        images, raw = open_array(src), open_array(labels)
        where = labels
    else:
        if labels is not None:
            raise DTNBenchError(f"--src-labels is for a .npy source; the pickle {src} holds its labels")
        images, raw = _read_pickle(src, fmt)
        where = src
    check_images(images, src, 32)
    if images.shape[0] == 0:
        raise DTNBenchError(f"{src}: no images")
    return np.array(images), check_labels(raw, where, images.shape[0], CLASSES[fmt], src.name)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def corrupt_arrays(src: str | Path, out: str | Path, fmt: str, corruptions: Sequence[str] | None = None, *,
                   labels: str | Path | None = None, extra: bool = False, seed: int = 0,
                   device: str | torch.device = "cpu", batch_size: int = 256,
                   progress: Callable[[int, int], None] | None = None):
    """Writes CIFAR-10-C / CIFAR-100-C arrays (module docstring); returns a :class:`CorruptSummary`.

    Args:
        src: the clean test set (``.npy`` with ``labels``, or the CIFAR python pickle).
        out: output folder (``dtn-bench cifar-c --data-dir``).
        fmt: ``cifar10-c`` or ``cifar100-c``.
        corruptions: names; ``None`` for the 15.
        labels: the labels ``.npy`` of a ``.npy`` source.
        extra: also the 4 extras.
        seed: run seed.
        device: torch device of the corruption maths.
        batch_size: images per :func:`corrupt_batch` call.
        progress: ``progress(done, total)`` in images written (or kept).

    Raises:
        DTNBenchError: bad source, shapes, labels, names, device or batch size (before anything is written).
    """
    from dtn_bench.data.corruptions import CorruptSummary, corrupt_batch, image_seed, resolve_corruptions
    from dtn_bench.data.corruptions.blur import prepare_compiled
    from dtn_bench.data.corruptions.job import (
        MANIFEST_NAME,
        PARTIAL_NAME,
        _begin,
        _json_bytes,
        check_job_settings,
        job_settings,
    )
    from dtn_bench.results.env import dtn_bench_version
    from dtn_bench.results.writer import atomic_write_bytes

    recipe = FORMATS[fmt]
    names = resolve_corruptions(corruptions, extra)
    dev = check_job_settings(batch_size, device)
    images, y = load_source(src, labels, fmt)
    out, n = Path(out), images.shape[0]
    source = f"{Path(src).resolve()} ({fmt})"
    resuming = _begin(out, job_settings(source, seed, names, SEVERITIES, recipe))
    atomic_write_bytes(out / "labels.npy", _npy_bytes(np.tile(y, len(SEVERITIES)).astype(np.uint8)))
    total, done, skipped, per = len(names) * 5 * n, 0, 0, dict.fromkeys(names, 0.0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    if "glass_blur" in names:
        prepare_compiled()
    t0 = time.perf_counter()
    for name in names:
        target = out / f"{name}.npy"
        if resuming and target.is_file():
            done, skipped = done + 5 * n, skipped + 5 * n
            if progress is not None:
                progress(done, total)
            continue
        result = np.empty((5 * n, 32, 32, 3), dtype=np.uint8)
        for sev in SEVERITIES:
            for start in range(0, n, batch_size):
                t1 = time.perf_counter()
                gens = [torch.Generator().manual_seed(image_seed(seed, name, sev, str(i)))
                        for i in range(start, min(start + batch_size, n))]
                batch = x[start : start + len(gens)].to(dev)
                part = corrupt_batch(batch, name, sev, gens, recipe).permute(0, 2, 3, 1).cpu().numpy()
                per[name] += time.perf_counter() - t1
                result[(sev - 1) * n + start : (sev - 1) * n + start + len(gens)] = part
                done += len(gens)
                if progress is not None:
                    progress(done, total)
        try:
            atomic_write_bytes(target, _npy_bytes(result))
        except OSError as e:
            raise DTNBenchError(f"cannot write {target}: {e.strerror or type(e).__name__}; run the same command "
                                f"again to continue (finished corruptions are kept)") from None
    manifest = {"generator": "dtn-bench corrupt", "dtn_bench_version": dtn_bench_version(), "source": source,
                "format": fmt, "seed": int(seed), "corruptions": list(names), "severities": list(SEVERITIES),
                "images": n, "files": len(names) + 1, "size": 32, "device": str(dev)}
    path = out / MANIFEST_NAME
    atomic_write_bytes(path, _json_bytes(manifest))
    (out / PARTIAL_NAME).unlink()
    return CorruptSummary(out, n, names, SEVERITIES, total, time.perf_counter() - t0, int(seed), str(dev), per,
                          skipped=skipped, manifest=path)
