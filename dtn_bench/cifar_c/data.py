"""CIFAR-10-C, CIFAR-100-C and Tiny-ImageNet-C data: the datasets' names and their checked layouts.

CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019, https://zenodo.org/record/2535967 and /3555552): one
``<corruption>.npy`` per corruption, ``uint8 [50000, 32, 32, 3]`` (HWC, RGB): 5 severities of the 10,000 test
images, severity 1 first, and ``labels.npy`` (``[50000]`` integers, the test labels repeated 5 times). Severity ``s``
is rows ``(s - 1) * N .. s * N - 1`` with ``N = len / 5``, as RobustBench's loader slices them. The arrays are opened
memory-mapped (``np.load(mmap_mode="r")``): only the rows a batch needs are read. Smaller arrays of the same form
(``5 * N`` rows) are accepted (tests, subsets); shapes, dtypes and lengths are checked from the headers before any
work, each problem a one-line error (:func:`dtn_bench.shifts.layout.check_arrays`).

Tiny-ImageNet-C (https://zenodo.org/record/2536630): the ImageNet-C folder layout
``<corruption>/<severity>/<wnid>/<image>`` at 64 x 64 with 200 classes, read with
:func:`dtn_bench.shifts.layout.scan_layout` (class index: the sorted wnids).

The datasets are the engine's set descriptions (:data:`dtn_bench.shifts.sets.SETS`): ``cifar10`` is ``cifar10-c``,
``cifar100`` is ``cifar100-c``, ``tiny-imagenet`` is ``tiny-imagenet-c``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dtn_bench.errors import DTNBenchError
from dtn_bench.shifts import layout as L
from dtn_bench.shifts.sets import SETS, ShiftSet

DATASETS: dict[str, str] = {"cifar10": "cifar10-c", "cifar100": "cifar100-c", "tiny-imagenet": "tiny-imagenet-c"}
"""``--dataset`` name -> the set's name on the engine."""


def dataset_spec(name: str) -> ShiftSet:
    """The set description of ``--dataset name``; an unknown name is a one-line error listing the known ones."""
    if name not in DATASETS:
        raise DTNBenchError(f"--dataset {name!r}: use one of {', '.join(DATASETS)}")
    return SETS[DATASETS[name]]


def download_hint(name: str) -> str:
    """Where to get the dataset and how to lay it out."""
    spec = dataset_spec(name)
    what = ("<corruption>.npy and labels.npy in one folder" if spec.layout == "arrays"
            else "<corruption>/<severity>/<wnid>/<image> in one folder")
    return f"{spec.label} is not bundled: download it from {spec.url}, extract it so that it holds {what}"


def check_arrays(root: str | Path, corruptions: Sequence[str], dataset: str, classes: int) -> L.ArrayData:
    """Check the CIFAR-C folder ``root`` for ``corruptions`` (headers only, memory-mapped).

    ``classes``: the model's outputs (10 / 100 as released); every label must be below it.
    """
    spec = dataset_spec(dataset)
    return L.check_arrays(root, corruptions, label=spec.label, size=spec.size, classes=classes,
                          hint=download_hint(dataset))


def load_clean(images: str | Path, labels: str | Path, dataset: str, classes: int) -> tuple[Path, np.ndarray]:
    """The clean test set: ``(images file, int64 labels)``, checked like the corrupted arrays (headers only)."""
    spec = dataset_spec(dataset)
    images, labels = Path(images), Path(labels)
    for p, flag in ((images, "--clean-images"), (labels, "--clean-labels")):
        if not p.is_file():
            raise DTNBenchError(f"{flag} {p} does not exist or is not a file")
    x = L.open_array(images)
    L.check_images(x, images, spec.size)
    return images, L.check_labels(L.open_array(labels), labels, x.shape[0], classes, images.name)


def scan_folders(root: str | Path, corruptions: Sequence[str], severities: Sequence[int], dataset: str) -> L.Layout:
    """The checked Tiny-ImageNet-C layout under ``root`` for the wanted pairs."""
    spec, root = dataset_spec(dataset), Path(root)
    if not root.is_dir():
        raise DTNBenchError(f"--data-dir {root} {'is not a folder' if root.exists() else 'does not exist'}. "
                            f"{download_hint(dataset)}")
    return L.scan_layout(root, corruptions, severities, label=spec.label, hint=download_hint(dataset),
                         known=spec.corruptions)
