"""Reading and checking the releases' layouts (:data:`~dtn_bench.shifts.sets.LAYOUTS`) before any work.

Every reader lists a set's images as ``<class folder>/<name>`` paths (sorted, hidden entries and plain files at the
root such as a ``README.txt`` left out) and reports what is wrong in one line naming the folder:

- :func:`scan_layout`: ``<root>/<corruption>/<severity>/<class>/<image>`` for the wanted pairs; every pair must hold
  the same non-empty class folders (or, for a partial copy, folders among the given classes);
- :func:`scan_split`: ``<root>/<class>/<image>`` (class folders named by wnid, or by class index for ImageNet-V2);
- :func:`check_arrays`: ``<corruption>.npy`` + ``labels.npy`` (CIFAR-10-C / CIFAR-100-C), memory-mapped, headers only;
- subsets: :func:`stratified_subset` (class-stratified, deterministic) and subset files (:func:`read_subset_file`,
  :func:`apply_subset_file`: RobustBench's 5,000-image list and the like).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import SEVERITIES

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
TAR_GROUPS = ("noise", "blur", "weather", "digital", "extra")
"""The group folders ImageNet-C's tar files unpack into."""


def more(items: Sequence[str], limit: int = 4) -> str:
    """``a, b, c, d (+3 more)``."""
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def list_images(folder: Path, where: str) -> list[str]:
    """Image file names of one class folder; anything else that is not hidden is a one-line error."""
    names = []
    with os.scandir(folder) as it:
        for entry in it:
            if _is_hidden(entry.name):
                continue
            if not entry.is_file():
                raise DTNBenchError(f"unexpected folder {folder / entry.name} inside a class folder ({where})")
            if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                raise DTNBenchError(f"non-image file {folder / entry.name}: class folders of {where} must hold only "
                                    f"images ({', '.join(IMAGE_EXTENSIONS)})")
            names.append(entry.name)
    return sorted(names)


def subfolders(folder: Path) -> tuple[list[str], list[str]]:
    """(sorted sub-folder names, sorted plain file names) of ``folder``, hidden entries left out."""
    dirs, files = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if _is_hidden(entry.name):
                continue
            (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(dirs), sorted(files)


def class_folders(folder: Path, where: str, expected: str) -> list[str]:
    """The sorted class folders in ``folder``; images directly in it are a one-line error (``where`` names it)."""
    dirs, loose = subfolders(folder)
    images = [f for f in loose if f.lower().endswith(IMAGE_EXTENSIONS)]
    if images:
        raise DTNBenchError(f"wrong layout: images directly in {where} (e.g. {images[0]}); expected {expected}")
    return dirs


def check_root(root: Path, what: str, hint: str = "") -> None:
    """One-line errors for a data folder that does not exist or is a file (``hint`` appended to the first)."""
    if not root.exists():
        raise DTNBenchError(f"{what} {root} does not exist" + (f". {hint}" if hint else ""))
    if not root.is_dir():
        raise DTNBenchError(f"{what} {root} is not a folder")


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Layout:
    """A checked corruption tree: its classes and the image files of every (corruption, severity) pair.

    Attributes:
        root: the data folder.
        classes: class folder names, sorted; the class index of a wnid is its position here.
        files: ``(corruption, severity)`` -> sorted ``["wnid/name", ...]``.
        folders: ``(corruption, severity)`` -> the pair's folder (``<root>/<corruption>/<severity folder>``).
    """

    root: Path
    classes: tuple[str, ...]
    files: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    folders: dict[tuple[str, int], Path] = field(default_factory=dict)

    def label(self, relpath: str) -> int:
        """Class index of a ``wnid/name`` path."""
        return self._index[relpath.split("/", 1)[0]]

    def __post_init__(self) -> None:
        self._index = {w: i for i, w in enumerate(self.classes)}


def scan_layout(root: str | Path, corruptions: Sequence[str], severities: Sequence[int], *,
                progress: Callable[[int, int], None] | None = None, classes: Sequence[str] | None = None,
                label: str = "ImageNet-C", flag: str = "--data-dir", hint: str = "",
                severity_folders: Callable[[str, int], Sequence[str]] | None = None,
                known: Sequence[str] = ()) -> Layout:
    """Check the corruption layout under ``root`` for the wanted pairs and list their images.

    Every wanted ``<corruption>/<severity>`` folder must exist and hold the same set of non-empty class folders
    (their union is the class set); class folders hold only images. With ``classes`` given (a partial copy, e.g. only
    the images of a subset list, evaluated by a model whose classes are known) the class set is ``classes`` and the
    class folders present need only be among them: what a subset needs is checked by :func:`apply_subset_file`.

    Args:
        root: the data folder.
        corruptions: corruption names (already validated).
        severities: severities 1..5.
        progress: called with (pairs scanned, pairs total).
        classes: the class set of a partial copy (ImageNet-1k's wnids for a 1000-class model), or ``None``.
        label: the set's name in messages.
        flag: how the folder was given (``--data-dir``) in messages.
        hint: where to get the data, added to the message of a missing root.
        severity_folders: ``(corruption, severity) -> folder names`` it may have (default ``str(severity)``).
        known: the set's corruption names (a root holding severity folders but none of these is one corruption).

    Raises:
        DTNBenchError: one line listing what is missing (corruption, severity and class folders), naming a non-image
            file, or saying how the layout is wrong (images directly under a severity folder, a corruption folder
            or a tar group folder given as the root).
    """
    root = Path(root)
    check_root(root, flag, hint)
    _check_top(root, flag, tuple(known) or tuple(corruptions))
    folders_of = severity_folders or (lambda c, s: (str(s),))
    missing: list[str] = []
    found: dict[tuple[str, int], dict[str, list[str]]] = {}
    where: dict[tuple[str, int], Path] = {}
    pairs = [(c, s) for c in corruptions for s in severities]
    for done, (c, s) in enumerate(pairs, 1):
        folder = _pair_folder(root, c, s, folders_of(c, s), missing)
        per = None if folder is None else _scan_pair(folder, c, s, missing)
        if per is None:
            continue
        found[(c, s)], where[(c, s)] = per, folder
        if progress is not None:
            progress(done, len(pairs))
    if classes is None:
        classes = sorted({w for per in found.values() for w, names in per.items() if names})
        missing += _missing_classes(found, classes)
    else:
        _check_known_classes(where, found, classes)
    if missing:
        raise DTNBenchError(f"{label} layout under {root} is incomplete: missing {len(missing)} folder(s): "
                            f"{more(missing)}")
    layout = Layout(root, tuple(classes), folders=where)
    for key, per in found.items():
        layout.files[key] = [f"{w}/{n}" for w in classes for n in per.get(w, ())]
    return layout


def _check_top(root: Path, flag: str, known: Sequence[str]) -> None:
    """One-line errors for a root that is one corruption folder, or the folder of ImageNet-C's tar groups."""
    top, _ = subfolders(root)
    if set(top) & {"1", "2", "3", "4", "5"} and not set(top) & set(known):
        raise DTNBenchError(f"wrong layout: {root} holds severity folders; it looks like one corruption folder - pass "
                            f"its parent as {flag} (expected <root>/<corruption>/<severity>/<wnid>/<image>)")
    if set(top) & set(TAR_GROUPS) and not set(top) & set(known):
        raise DTNBenchError(f"wrong layout: {root} holds the tar group folders "
                            f"({', '.join(sorted(set(top) & set(TAR_GROUPS)))}); move the corruption folders inside "
                            f"them up into one folder")


def _pair_folder(root: Path, c: str, s: int, names: Sequence[str], missing: list[str]) -> Path | None:
    """The pair's folder (the first of ``names`` present), or ``None`` with what is missing added to ``missing``."""
    if not (root / c).is_dir():
        if f"{c} (all severities)" not in missing:
            missing.append(f"{c} (all severities)")
        return None
    folder = next((root / c / n for n in names if (root / c / n).is_dir()), None)
    if folder is None:
        missing.append(f"{c}/{s}" + (f" (or {c}/{names[1]})" if len(names) > 1 else ""))
    return folder


def _scan_pair(folder: Path, c: str, s: int, missing: list[str]) -> dict[str, list[str]] | None:
    """``{class folder: image names}`` of a pair folder; ``None`` (and ``missing`` told) without class folders."""
    wnids = class_folders(folder, str(folder), "<corruption>/<severity>/<wnid>/<image>")
    if not wnids:
        missing.append(f"{c}/{s} (no class folders)")
        return None
    return {w: list_images(folder / w, f"{c}/{s}") for w in wnids}


def _missing_classes(found: dict[tuple[str, int], dict[str, list[str]]], classes: Sequence[str]) -> list[str]:
    """``c/s/wnid`` (``(empty)`` when the folder is there but empty) of every class a pair lacks."""
    return [f"{c}/{s}/{w}" + (" (empty)" if w in per else "") for (c, s), per in found.items() for w in classes
            if not per.get(w)]


def _check_known_classes(where: dict[tuple[str, int], Path], found: dict[tuple[str, int], dict[str, list[str]]],
                         classes: Sequence[str]) -> None:
    """A partial copy: every class folder must be one of the model's ``classes``."""
    known = set(classes)
    for (c, s), per in found.items():
        unknown = [w for w in per if w not in known]
        if unknown:
            raise DTNBenchError(f"class folder {where[(c, s)] / unknown[0]} is not one of the model's "
                                f"{len(classes)} classes ({len(unknown)} such folder(s) in {c}/{s})")


# ------------------------------------------------------------------------------------------------------------------
def scan_split(root: str | Path, label: str, flag: str, hint: str = "") -> dict[str, list[str]]:
    """``{class folder: sorted image names}`` of a one-split set (``<root>/<class>/<image>``), checked.

    Plain files at the root (a ``README.txt``) are ignored; images directly at the root, a class folder holding a
    folder or a non-image file, and a root with no class folders are one-line errors.
    """
    root = Path(root)
    check_root(root, flag, hint)
    classes = class_folders(root, f"{flag} {root}", f"<class folder>/<image> ({label})")
    if not classes:
        raise DTNBenchError(f"wrong layout: {flag} {root} holds no class folders ({label}: <class folder>/<image>)")
    out = {}
    for c in classes:
        names = list_images(root / c, f"{label} under {root}")
        if not names:
            raise DTNBenchError(f"{label} under {root}: class folder {c} is empty")
        out[c] = names
    return out


# ------------------------------------------------------------------------------------------------------------------
def _order_key(seed: int, text: str) -> bytes:
    return hashlib.sha256(f"{seed}/{text}".encode()).digest()


def stratified_subset(paths: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """A deterministic class-stratified sample of ``n`` of the ``wnid/name`` paths.

    Within each class the images are ordered by ``sha256(f"{seed}/{wnid}/{name}")``; the classes, ordered by
    ``sha256(f"{seed}/{wnid}")``, then take turns giving their next image until ``n`` are chosen. So per-class counts
    differ by at most one (when every class has enough images), the choice does not depend on the file system's
    listing order or on the other corruptions, and the same file names give the same subset in every
    (corruption, severity) pair. The result is in sorted path order.

    Args:
        paths: ``wnid/name`` paths of one pair.
        n: images to choose (1 .. len(paths)).
        seed: changes the sample.

    Raises:
        DTNBenchError: if ``n`` is not in ``1 .. len(paths)``.
    """
    if not 1 <= n <= len(paths):
        raise DTNBenchError(f"--subset {n}: must be between 1 and the {len(paths)} images of a pair")
    per: dict[str, list[str]] = {}
    for p in paths:
        per.setdefault(p.split("/", 1)[0], []).append(p)
    queues = {w: sorted(ps, key=lambda p: _order_key(seed, p)) for w, ps in per.items()}
    turn = sorted(queues, key=lambda w: _order_key(seed, w))
    chosen: list[str] = []
    depth = 0
    while len(chosen) < n:
        for w in turn:
            if depth < len(queues[w]):
                chosen.append(queues[w][depth])
                if len(chosen) == n:
                    break
        depth += 1
    return sorted(chosen)


def read_subset_file(path: str | Path) -> list[str]:
    """Entries of a subset list: one image per line, ``wnid/name`` (as RobustBench's 5,000-image list) or ``name``.

    Blank lines and ``#`` comments are skipped; anything after the first whitespace on a line (a label) is ignored.
    """
    p = Path(path)
    if not p.is_file():
        raise DTNBenchError(f"--subset-file {p} does not exist or is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DTNBenchError(f"cannot read --subset-file {p}: {type(e).__name__}") from e
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line.split()[0].replace("\\", "/").strip("/"))
    if not entries:
        raise DTNBenchError(f"--subset-file {p} lists no images")
    return entries


def apply_subset_file(paths: Sequence[str], entries: Sequence[str], where: str) -> list[str]:
    """The ``wnid/name`` paths named by ``entries`` (full ``wnid/name`` or bare file names); all must be present."""
    have = set(paths)
    by_name: dict[str, list[str]] = {}
    for p in paths:
        by_name.setdefault(p.rsplit("/", 1)[-1], []).append(p)
    chosen, missing = [], []
    for e in entries:
        if "/" in e:
            key = "/".join(e.split("/")[-2:])
            (chosen.append(key) if key in have else missing.append(e))
        else:
            hits = by_name.get(e, [])
            if len(hits) > 1:
                raise DTNBenchError(f"--subset-file entry {e!r} matches {len(hits)} images in {where}; give wnid/name")
            (chosen.append(hits[0]) if hits else missing.append(e))
    if missing:
        raise DTNBenchError(f"--subset-file: {len(missing)} listed image(s) not found in {where}: {more(missing, 3)}")
    return sorted(set(chosen))


# ------------------------------------------------------------------------------------------------------------------
LABELS = "labels.npy"


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
    """Checked corruption arrays: the file of each corruption, the labels of all severities, images per severity."""

    root: Path
    files: dict[str, Path]
    labels: np.ndarray
    per_severity: int


def check_arrays(root: str | Path, corruptions: Sequence[str], *, label: str, size: int, classes: int,
                 hint: str = "", flag: str = "--data-dir") -> ArrayData:
    """Check a CIFAR-C style folder ``root`` for ``corruptions`` (headers only, memory-mapped).

    ``classes``: the model's outputs; every label must be below it.

    Raises:
        DTNBenchError: one line naming every missing file, or the first array of the wrong shape, dtype or length.
    """
    root = Path(root)
    if not root.is_dir():
        raise DTNBenchError(f"{flag} {root} {'is not a folder' if root.exists() else 'does not exist'}. {hint}")
    missing = [n for n in (LABELS, *(f"{c}.npy" for c in corruptions)) if not (root / n).is_file()]
    if missing:
        raise DTNBenchError(f"{label} layout under {root} is incomplete: missing {more(missing, 5)}. {hint}")
    images = {c: open_array(root / f"{c}.npy") for c in corruptions}
    first = root / f"{corruptions[0]}.npy"
    check_images(images[corruptions[0]], first, size)
    rows = images[corruptions[0]].shape[0]
    if rows == 0 or rows % len(SEVERITIES):
        raise DTNBenchError(f"{first}: {rows} images, expected 5 severities x N (50000 as released)")
    for c in corruptions[1:]:
        check_images(images[c], root / f"{c}.npy", size, rows)
    labels = check_labels(open_array(root / LABELS), root / LABELS, rows, classes, first.name)
    return ArrayData(root, {c: root / f"{c}.npy" for c in corruptions}, labels, rows // len(SEVERITIES))
