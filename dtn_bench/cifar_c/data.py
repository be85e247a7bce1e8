"""CIFAR-10-C, CIFAR-100-C and Tiny-ImageNet-C data: layout checks and image sources read on demand.

CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019, https://zenodo.org/record/2535967 and /3555552): one
``<corruption>.npy`` per corruption, ``uint8 [50000, 32, 32, 3]`` (HWC, RGB): 5 severities of the 10,000 test
images, severity 1 first, and ``labels.npy`` (``[50000]`` integers, the test labels repeated 5 times). Severity ``s``
is rows ``(s - 1) * N .. s * N - 1`` with ``N = len / 5``, as RobustBench's loader slices them. The arrays are opened
memory-mapped (``np.load(mmap_mode="r")``): only the rows a batch needs are read. Smaller arrays of the same form
(``5 * N`` rows) are accepted (tests, subsets); shapes, dtypes and lengths are checked from the headers before any
work, each problem a one-line error.

Tiny-ImageNet-C (https://zenodo.org/record/2536630): the ImageNet-C folder layout
``<corruption>/<severity>/<wnid>/<image>`` at 64 x 64 with 200 classes, read with
:func:`dtn_bench.imagenet_c.data.scan_layout` (class index: the sorted wnids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import SEVERITIES


@dataclass(frozen=True)
class DatasetSpec:
    """One corrupted dataset: its name in tables, format, image size, classes and where it is downloaded."""

    label: str
    layout: str  # "npy" or "folders"
    size: int
    classes: int
    url: str


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("CIFAR-10-C", "npy", 32, 10, "https://zenodo.org/record/2535967"),
    "cifar100": DatasetSpec("CIFAR-100-C", "npy", 32, 100, "https://zenodo.org/record/3555552"),
    "tiny-imagenet": DatasetSpec("Tiny-ImageNet-C", "folders", 64, 200, "https://zenodo.org/record/2536630"),
}
LABELS = "labels.npy"


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in DATASETS:
        raise DTNBenchError(f"--dataset {name!r}: use one of {', '.join(DATASETS)}")
    return DATASETS[name]


def download_hint(name: str) -> str:
    """Where to get the dataset and how to lay it out."""
    spec = DATASETS[name]
    what = ("<corruption>.npy and labels.npy in one folder" if spec.layout == "npy"
            else "<corruption>/<severity>/<wnid>/<image> in one folder")
    return f"{spec.label} is not bundled: download it from {spec.url}, extract it so that it holds {what}"


def open_array(path: Path) -> np.ndarray:
    """``path`` memory-mapped (nothing read beyond the header); an unreadable file is a one-line error."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except EOFError:  # numpy's error for a 0-byte file; click would report it as "aborted" (exit 130)
        raise DTNBenchError(f"cannot read {path} as a .npy array: the file is empty (0 bytes)") from None
    except (OSError, ValueError) as e:
        raise DTNBenchError(f"cannot read {path} as a .npy array: {e}".splitlines()[0]) from None


def check_images(arr: np.ndarray, path: Path, size: int, rows: int | None = None) -> None:
    """``arr`` must be ``uint8 [rows, size, size, 3]`` (``rows``: any when ``None``)."""
    want = f"uint8 [{'N' if rows is None else rows}, {size}, {size}, 3]"
    if arr.dtype != np.uint8:
        raise DTNBenchError(f"{path}: dtype {arr.dtype}, expected {want} (images as released)")
    if arr.ndim != 4 or tuple(arr.shape[1:]) != (size, size, 3) or rows is not None and arr.shape[0] != rows:
        raise DTNBenchError(f"{path}: shape {list(arr.shape)}, expected {want}")


def check_labels(arr: np.ndarray, path: Path, rows: int, classes: int, what: str) -> np.ndarray:
    """``arr`` as int64 labels: 1-D integers, ``rows`` of them, each in ``0 .. classes - 1``."""
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DTNBenchError(f"{path}: shape {list(arr.shape)} dtype {arr.dtype}, expected 1-D integer labels")
    if arr.shape[0] != rows:
        raise DTNBenchError(f"{path}: {arr.shape[0]} labels but {what} has {rows} images")
    labels = np.asarray(arr, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DTNBenchError(f"{path}: labels span {labels.min()}..{labels.max()}, expected 0..{classes - 1}")
    return labels


@dataclass
class ArrayData:
    """Checked CIFAR-C arrays: the memory-mapped images of each corruption and the labels of all severities."""

    root: Path
    images: dict[str, np.ndarray]
    labels: np.ndarray
    per_severity: int


def check_arrays(root: str | Path, corruptions: Sequence[str], dataset: str, classes: int) -> ArrayData:
    """Check the CIFAR-C folder ``root`` for ``corruptions`` (headers only) and open the arrays memory-mapped.

    ``classes``: the model's outputs (10 / 100 as released); every label must be below it.

    Raises:
        DTNBenchError: one line naming every missing file, or the first array of the wrong shape, dtype or length.
    """
    spec, root = DATASETS[dataset], Path(root)
    if not root.is_dir():
        raise DTNBenchError(f"--data-dir {root} {'is not a folder' if root.exists() else 'does not exist'}. "
                            f"{download_hint(dataset)}")
    missing = [n for n in (LABELS, *(f"{c}.npy" for c in corruptions)) if not (root / n).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise DTNBenchError(f"{spec.label} layout under {root} is incomplete: missing {shown}. "
                            f"{download_hint(dataset)}")
    images = {c: open_array(root / f"{c}.npy") for c in corruptions}
    first = root / f"{corruptions[0]}.npy"
    check_images(images[corruptions[0]], first, spec.size)
    rows = images[corruptions[0]].shape[0]
    if rows == 0 or rows % len(SEVERITIES):
        raise DTNBenchError(f"{first}: {rows} images, expected 5 severities x N (50000 as released)")
    for c in corruptions[1:]:
        check_images(images[c], root / f"{c}.npy", spec.size, rows)
    labels = check_labels(open_array(root / LABELS), root / LABELS, rows, classes, first.name)
    return ArrayData(root, images, labels, rows // len(SEVERITIES))


def load_clean(images: str | Path, labels: str | Path, dataset: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean test set as ``(uint8 [N, H, W, 3] memory-mapped, int64 [N])``, checked like the corrupted one."""
    spec = DATASETS[dataset]
    images, labels = Path(images), Path(labels)
    for p, flag in ((images, "--clean-images"), (labels, "--clean-labels")):
        if not p.is_file():
            raise DTNBenchError(f"{flag} {p} does not exist or is not a file")
    x = open_array(images)
    check_images(x, images, spec.size)
    return x, check_labels(open_array(labels), labels, x.shape[0], classes, images.name)


class Source:
    """The images of one (corruption, severity) pair, read on demand: ``len``, ``labels``, ``read(indices)``."""

    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def read(self, index: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """``uint8 [len(index), H, W, 3]`` of the images at ``index`` (increasing)."""
        raise NotImplementedError


class ArraySource(Source):
    """Rows ``start .. start + n - 1`` of a memory-mapped array: severity ``s`` is ``start = (s - 1) * n``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, start: int, n: int):
        self.images, self.start = images, start
        self.labels = labels[start:start + n]

    def read(self, index: np.ndarray) -> np.ndarray:
        """The rows at ``index`` (a copy of those rows only)."""
        return np.asarray(self.images[self.start + index])


class FolderSource(Source):
    """Image files ``root/<wnid>/<name>`` of one Tiny-ImageNet-C pair, decoded on demand (checked size)."""

    def __init__(self, root: Path, paths: list[str], labels: np.ndarray, size: int):
        self.root, self.paths, self.labels, self.size = root, paths, labels, size

    def read(self, index: np.ndarray) -> np.ndarray:
        """Decoded RGB images; an unreadable file or one of another size is a one-line error."""
        from PIL import Image

        out = np.empty((len(index), self.size, self.size, 3), dtype=np.uint8)
        for k, i in enumerate(index.tolist()):
            path = self.root / self.paths[i]
            try:
                with Image.open(path) as im:
                    img = np.asarray(im.convert("RGB"))
            except OSError as e:
                raise DTNBenchError(f"unreadable image {path}: {type(e).__name__}") from None
            if img.shape[:2] != (self.size, self.size):
                raise DTNBenchError(f"{path} is {img.shape[0]}x{img.shape[1]}, expected {self.size}x{self.size} "
                                    f"(Tiny-ImageNet-C as released)")
            out[k] = img
        return out


def folder_sources(root: str | Path, corruptions: Sequence[str], severities: Sequence[int], dataset: str,
                   classes: int) -> tuple[tuple[str, ...], dict[tuple[str, int], FolderSource]]:
    """The class wnids and one :class:`FolderSource` per pair of a Tiny-ImageNet-C folder (layout checked).

    ``classes``: the class folders expected (the model's outputs; 200 as released).
    """
    from dtn_bench.imagenet_c.data import scan_layout

    spec, root = DATASETS[dataset], Path(root)
    if not root.is_dir():
        raise DTNBenchError(f"--data-dir {root} {'is not a folder' if root.exists() else 'does not exist'}. "
                            f"{download_hint(dataset)}")
    try:
        layout = scan_layout(root, corruptions, severities)
    except DTNBenchError as e:
        raise DTNBenchError(str(e).replace("ImageNet-C layout", f"{spec.label} layout")) from None
    if len(layout.classes) != classes:
        raise DTNBenchError(f"{spec.label} under {root} has {len(layout.classes)} class folders but the model "
                            f"predicts {classes} classes")
    sources = {}
    for (c, s), paths in layout.files.items():
        labels = np.array([layout.label(p) for p in paths], dtype=np.int64)
        sources[(c, s)] = FolderSource(root / c / str(s), paths, labels, spec.size)
    return layout.classes, sources
