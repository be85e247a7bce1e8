"""Per-image top-1 correctness of an evaluation run: one bit per image per unit, kept in the run folder.

The rows hold counts; a paired comparison of two models on the same images (bootstrap interval of the mCE or top-1
difference, McNemar per unit, :mod:`dtn_bench.stats`) needs to know which images each model got right. A run keeps
that in ``<run>/correct/``:

``<corruption>-<severity>.bits`` (``clean-0.bits`` for ImageNet-C's clean set; a ``shifts`` run's units are named
``<set>--<classes>--<corruption>-<severity>``)
    :func:`dtn_bench.stats.pack_bits` of the pair's images in the plan's order (the sorted ``wnid/name`` paths of
    the layout scan, after the subset): image ``i`` is bit ``i % 8`` (least significant first) of byte ``i // 8``,
    1 = top-1 right; the unused high bits of the last byte are 0. An unreadable image is 0 (it is named in the
    index, and the rows leave it out of the error).
``images-<16 hex>.txt``
    An ordered image list, one ``wnid/name`` per line (UTF-8, each line ending in a newline); the hex digits begin
    the SHA-256 of the file. Pairs with the same images (the released data: every pair) share one file.
``index.json``
    ``{"format": "dtn-bench per-image correctness 1", "pairs": {"<corruption>-<severity>": {"corruption",
    "severity", "n", "bits", "images", "images_sha256", "unreadable": [wnid/name, ...]}}}``, and ``set`` /
    ``classes`` for a unit of a ``shifts`` run. Two runs hold the same images in a unit when their ``images_sha256``
    agree.

Every file is written atomically (:func:`dtn_bench.results.writer.atomic_write_bytes`), the index last, so a pair the
index lists has its files and a killed run never leaves half a file. A resumed run re-evaluates the pairs its rows
lack and rewrites their bits. Only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtn_bench.errors import DTNBenchError
from dtn_bench.stats import pack_bits, unpack_bits

FOLDER = "correct"
INDEX = "index.json"
FORMAT = "dtn-bench per-image correctness 1"
IDENTITY = ("set", "classes")
"""Index fields that tell units of several sets apart (``shifts`` runs), in key order."""


def pair_name(corruption: str, severity: int, identity: dict[str, str] | None = None) -> str:
    """The file stem of a unit: ``gaussian_noise-3`` (``clean-0`` for the clean set), after ``set--classes--``."""
    prefix = "".join(f"{_safe(v)}--" for v in (identity or {}).values())
    return f"{prefix}{_safe(corruption)}-{int(severity)}"


def _safe(text: str) -> str:
    """``text`` as a file-name part (letters, digits, ``.``, ``_``, ``-``)."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in str(text))


def images_text(paths: Sequence[str]) -> str:
    """The image list file's text: one ``wnid/name`` per line, each line ending in a newline."""
    return "".join(f"{p}\n" for p in paths)


def images_sha256(paths: Sequence[str]) -> str:
    """SHA-256 (hex) of :func:`images_text`: what identifies a pair's ordered images."""
    return hashlib.sha256(images_text(paths).encode("utf-8")).hexdigest()


def _read_index(folder: Path) -> dict:
    path = folder / INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DTNBenchError(f"cannot read per-image correctness index {path}: {type(e).__name__}: {e}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("pairs"), dict):
        raise DTNBenchError(f"{path} is not a per-image correctness index ({FORMAT!r})")
    return index


def write_pair(run_dir: str | Path, corruption: str, severity: int, paths: Sequence[str], correct: np.ndarray,
               unreadable: Sequence[str] = (), identity: dict[str, str] | None = None) -> Path:
    """Write one pair's bits (and its image list when new), then list it in the index; all atomically.

    Args:
        run_dir: the run folder.
        corruption: the pair's corruption (``clean`` for the clean set).
        severity: its severity (0 for the clean set).
        paths: the pair's images (``wnid/name``) in evaluation order.
        correct: one boolean per image of ``paths``, top-1 right (unreadable images ``False``).
        unreadable: the unreadable images (``wnid/name``), recorded in the index.
        identity: what else tells the unit apart (a ``shifts`` run: ``{"set": ..., "classes": ...}``), recorded.

    Returns:
        The bits file.
    """
    from dtn_bench.results.writer import atomic_write_bytes, atomic_write_text

    correct = np.asarray(correct, dtype=bool)
    if correct.shape != (len(paths),):
        raise ValueError(f"{corruption}/{severity}: {correct.size} correctness values for {len(paths)} images")
    folder = Path(run_dir) / FOLDER
    name = pair_name(corruption, severity, identity)
    bits = atomic_write_bytes(folder / f"{name}.bits", pack_bits(correct))
    digest = images_sha256(paths)
    listing = f"images-{digest[:16]}.txt"
    if not (folder / listing).is_file():
        atomic_write_text(folder / listing, images_text(paths))
    index = _read_index(folder) if (folder / INDEX).is_file() else {"format": FORMAT, "pairs": {}}
    index["pairs"][name] = {**(identity or {}), "corruption": corruption, "severity": int(severity), "n": len(paths),
                            "bits": bits.name, "images": listing, "images_sha256": digest,
                            "unreadable": sorted(unreadable)}
    atomic_write_text(folder / INDEX, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return bits


@dataclass(frozen=True)
class PairBits:
    """What the index says of one unit of a run (see the module docstring); ``identity``: its set and classes."""

    corruption: str
    severity: int
    n: int
    bits: str
    images: str
    images_sha256: str
    unreadable: tuple[str, ...]
    identity: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple:
        """``(corruption, severity)``, after the identity values (``(set, classes, corruption, severity)``)."""
        return (*(v for _, v in self.identity), self.corruption, self.severity)


@dataclass(frozen=True)
class RunBits:
    """The per-image correctness a run folder holds.

    Attributes:
        run: the run folder.
        pairs: ``(corruption, severity)`` (a ``shifts`` run: ``(set, classes, corruption, severity)``) -> its
            :class:`PairBits`.
    """

    run: Path
    pairs: dict[tuple[str, int], PairBits]

    @property
    def folder(self) -> Path:
        """``<run>/correct``."""
        return self.run / FOLDER

    def correct(self, key: tuple[str, int]) -> np.ndarray:
        """The booleans of pair ``key`` (one per image, in the order of :meth:`images`)."""
        entry = self.pairs[key]
        path = self.folder / entry.bits
        try:
            return unpack_bits(path.read_bytes(), entry.n)
        except (OSError, ValueError) as e:
            raise DTNBenchError(f"per-image correctness {path}: {e}") from None

    def images(self, key: tuple[str, int]) -> list[str]:
        """The ordered ``wnid/name`` images of pair ``key``."""
        path = self.folder / self.pairs[key].images
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise DTNBenchError(f"cannot read image list {path}: {e}") from None


def read_run(run_dir: str | Path) -> RunBits | None:
    """The per-image correctness of a run folder; ``None`` when it has none (runs made before it was kept).

    Raises:
        DTNBenchError: an index that cannot be read or is not ours (one line, naming the file).
    """
    folder = Path(run_dir) / FOLDER
    if not (folder / INDEX).is_file():
        return None
    index = _read_index(folder)
    pairs = {}
    for name, e in index["pairs"].items():
        try:
            entry = PairBits(str(e["corruption"]), int(e["severity"]), int(e["n"]), str(e["bits"]), str(e["images"]),
                             str(e["images_sha256"]), tuple(e.get("unreadable", ())),
                             tuple((k, str(e[k])) for k in IDENTITY if k in e))
        except (KeyError, TypeError, ValueError) as err:
            raise DTNBenchError(f"{folder / INDEX}: pair {name!r} is malformed ({type(err).__name__}: {err})") from None
        pairs[entry.key] = entry
    return RunBits(Path(run_dir), pairs)
