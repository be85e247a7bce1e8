"""ImageNet-C data: checking the released layout, class index, subsets, and a batched decoding pipeline.

Layout (as released): ``<root>/<corruption>/<severity 1..5>/<wnid>/<image>.JPEG``. The class index is the sorted
order of the wnid folders (the standard ImageNet-1k index when there are 1,000). :func:`scan_layout` reads the whole
tree once and reports every missing corruption / severity / class folder in one line before any work starts.

Images are fed as released: 224 x 224, no resize, no crop, scaled to ``[0, 1]`` and normalised with the model's own
mean/std. Only a clean ImageNet val folder (``--clean-dir``) is resized the way ImageNet-C was made (shorter side to
``size * 256 / 224``, bilinear with antialiasing, then a centre crop of ``size``).

Decoding: on the CPU, DataLoader workers read and decode (``torchvision.io.decode_image``); on a GPU the workers only
read the files and the main process decodes each batch of JPEGs at once on the GPU (``torchvision.io.decode_jpeg``
with a list of tensors and ``device="cuda"``), falling back to the CPU for anything that is not a JPEG. Pinned host
memory when the target is a GPU.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import ALEXNET_ERRORS, CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
DOWNLOAD_HINT = (
    "ImageNet-C is not bundled: download the tar files of https://zenodo.org/record/2235448 (Hendrycks & Dietterich: "
    "noise.tar, blur.tar, weather.tar, digital.tar, extra.tar for the 4 extras; about 47 GB for the 15), extract them "
    "into one folder so that it holds <corruption>/<severity>/<wnid>/*.JPEG, and pass --data-dir FOLDER "
    "(or try --demo for a small offline run on procedural images)"
)

# status codes a decoded item carries
OK, UNREADABLE, WRONG_SIZE = 0, 1, 2


def _more(items: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def resolve_corruptions(names: Sequence[str] | None, *, extra: bool = False) -> tuple[str, ...]:
    """The corruptions to evaluate, in canonical order; an unknown name is a one-line error with the closest match.

    Args:
        names: corruption names; ``None`` or empty means the 15 of the mCE (plus the 4 extras with ``extra``).
        extra: add the 4 extra corruptions when ``names`` is not given.
    """
    known = list(ALEXNET_ERRORS)
    if not names:
        return CORRUPTIONS + (EXTRA_CORRUPTIONS if extra else ())
    chosen = []
    for name in names:
        if name not in ALEXNET_ERRORS:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"
            raise DTNBenchError(f"unknown corruption {name!r}{hint}")
        if name not in chosen:
            chosen.append(name)
    order = {c: i for i, c in enumerate(known)}
    return tuple(sorted(chosen, key=order.__getitem__))


def resolve_severities(values: Sequence[int] | None) -> tuple[int, ...]:
    """Severities to evaluate, sorted and unique; each must be 1..5."""
    if not values:
        return SEVERITIES
    bad = [v for v in values if v not in SEVERITIES]
    if bad:
        raise DTNBenchError(f"severity {bad[0]} is not one of 1, 2, 3, 4, 5")
    return tuple(sorted(set(int(v) for v in values)))


@dataclass
class Layout:
    """A checked ImageNet-C tree: its classes and the image files of every (corruption, severity) pair.

    Attributes:
        root: the data folder.
        classes: wnid folder names, sorted; the class index of a wnid is its position here.
        files: ``(corruption, severity)`` -> sorted ``["wnid/name", ...]``.
    """

    root: Path
    classes: tuple[str, ...]
    files: dict[tuple[str, int], list[str]] = field(default_factory=dict)

    def label(self, relpath: str) -> int:
        """Class index of a ``wnid/name`` path."""
        return self._index[relpath.split("/", 1)[0]]

    def __post_init__(self) -> None:
        self._index = {w: i for i, w in enumerate(self.classes)}


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _list_images(folder: Path, where: str) -> list[str]:
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


def _subfolders(folder: Path) -> tuple[list[str], list[str]]:
    """(sorted sub-folder names, sorted plain file names) of ``folder``, hidden entries left out."""
    dirs, files = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if _is_hidden(entry.name):
                continue
            (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(dirs), sorted(files)


def _check_root(root: Path, what: str) -> None:
    if not root.exists():
        raise DTNBenchError(f"{what} {root} does not exist. {DOWNLOAD_HINT}" if what == "--data-dir"
                            else f"{what} {root} does not exist")
    if not root.is_dir():
        raise DTNBenchError(f"{what} {root} is not a folder")


def scan_layout(root: str | Path, corruptions: Sequence[str], severities: Sequence[int], *,
                progress: Callable[[int, int], None] | None = None) -> Layout:
    """Check the released layout under ``root`` for the wanted pairs and list their images.

    Every wanted ``<corruption>/<severity>`` folder must exist and hold the same set of non-empty wnid folders
    (their union is the class set); class folders hold only images.

    Args:
        root: the ImageNet-C folder.
        corruptions: corruption names (already validated).
        severities: severities 1..5.
        progress: called with (pairs scanned, pairs total).

    Raises:
        DTNBenchError: one line listing what is missing (corruption, severity and class folders), naming a non-image
            file, or saying how the layout is wrong (images directly under a severity folder, a corruption folder
            or a tar group folder given as the root).
    """
    root = Path(root)
    _check_root(root, "--data-dir")
    top, _ = _subfolders(root)
    if set(top) & {"1", "2", "3", "4", "5"} and not set(top) & set(ALEXNET_ERRORS):
        raise DTNBenchError(f"wrong layout: {root} holds severity folders; it looks like one corruption folder - pass "
                            f"its parent as --data-dir (expected <root>/<corruption>/<severity>/<wnid>/<image>)")
    groups = {"noise", "blur", "weather", "digital", "extra"}
    if set(top) & groups and not set(top) & set(ALEXNET_ERRORS):
        raise DTNBenchError(f"wrong layout: {root} holds the tar group folders ({', '.join(sorted(set(top) & groups))})"
                            f"; move the corruption folders inside them up into one folder")
    missing: list[str] = []
    found: dict[tuple[str, int], dict[str, list[str]]] = {}
    pairs = [(c, s) for c in corruptions for s in severities]
    for done, (c, s) in enumerate(pairs, 1):
        folder = root / c / str(s)
        if not (root / c).is_dir():
            if f"{c} (all severities)" not in missing:
                missing.append(f"{c} (all severities)")
            continue
        if not folder.is_dir():
            missing.append(f"{c}/{s}")
            continue
        wnids, loose = _subfolders(folder)
        images = [f for f in loose if f.lower().endswith(IMAGE_EXTENSIONS)]
        if images:
            raise DTNBenchError(f"wrong layout: images directly in {folder} (e.g. {images[0]}); expected "
                                f"<corruption>/<severity>/<wnid>/<image>")
        if not wnids:
            missing.append(f"{c}/{s} (no class folders)")
            continue
        found[(c, s)] = {w: _list_images(folder / w, f"{c}/{s}") for w in wnids}
        if progress is not None:
            progress(done, len(pairs))
    classes = sorted({w for per in found.values() for w, names in per.items() if names})
    for (c, s), per in found.items():
        for w in classes:
            if not per.get(w):
                missing.append(f"{c}/{s}/{w}" + (" (empty)" if w in per else ""))
    if missing:
        raise DTNBenchError(f"ImageNet-C layout under {root} is incomplete: missing {len(missing)} folder(s): "
                            f"{_more(missing)}")
    layout = Layout(root, tuple(classes))
    for key, per in found.items():
        layout.files[key] = [f"{w}/{n}" for w in classes for n in per[w]]
    return layout


def scan_clean(root: str | Path, classes: Sequence[str]) -> list[str]:
    """``wnid/name`` paths of a clean ImageNet val folder (``<val>/<wnid>/<image>``) with exactly ``classes``."""
    root = Path(root)
    _check_root(root, "--clean-dir")
    wnids, loose = _subfolders(root)
    images = [f for f in loose if f.lower().endswith(IMAGE_EXTENSIONS)]
    if images:
        raise DTNBenchError(f"wrong layout: images directly in --clean-dir {root} (e.g. {images[0]}); expected "
                            f"<val>/<wnid>/<image> (torchvision ImageFolder layout)")
    missing = [w for w in classes if w not in wnids]
    extra = [w for w in wnids if w not in set(classes)]
    if missing or extra:
        parts = ([f"missing {len(missing)} class folder(s): {_more(missing)}"] if missing else []) + (
            [f"{len(extra)} class folder(s) not in the ImageNet-C data: {_more(extra)}"] if extra else [])
        raise DTNBenchError(f"--clean-dir {root}: {'; '.join(parts)}")
    out = []
    for w in classes:
        names = _list_images(root / w, "--clean-dir")
        if not names:
            raise DTNBenchError(f"--clean-dir {root}: class folder {w} is empty")
        out += [f"{w}/{n}" for n in names]
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
        raise DTNBenchError(f"--subset-file: {len(missing)} listed image(s) not found in {where}: {_more(missing, 3)}")
    return sorted(set(chosen))


# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One image to evaluate: its file, class index, the group (pair) it counts towards, and whether to resize."""

    path: str
    label: int
    group: int
    clean: bool = False


def clean_transform(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """How ImageNet-C was made from val: shorter side to ``size * 256 / 224`` (bilinear, antialias), centre crop.

    Clean images that already have the model's size are fed as they are (a pre-cropped val set, the demo)."""
    from torchvision.transforms.v2 import functional as F

    short = round(min(size) * 256 / 224)
    img = F.resize(img, [short], antialias=True)
    return F.center_crop(img, list(size))


class ImageItems(torch.utils.data.Dataset):
    """Reads (and on the CPU decodes) the images of a list of :class:`Item`.

    ``__getitem__`` returns ``(data, label, index, status, (h, w))``: ``data`` is a ``uint8 [3, H, W]`` image when
    ``decode`` is true, else the raw file bytes (1-D ``uint8``). A file that cannot be read or decoded gives status
    :data:`UNREADABLE` and a zero image; an image whose size is not ``size`` gives :data:`WRONG_SIZE` unless
    ``allow_resize`` (then it is resized to ``size``, bilinear with antialiasing). Clean val images are resized and
    cropped with :func:`clean_transform`.
    """

    def __init__(self, items: Sequence[Item], size: tuple[int, int], *, decode: bool = True,
                 allow_resize: bool = False):
        self.items = list(items)
        self.size = tuple(size)
        self.decode = decode
        self.allow_resize = allow_resize

    def __len__(self) -> int:
        return len(self.items)

    def blank(self) -> torch.Tensor:
        return torch.zeros(3, *self.size, dtype=torch.uint8)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            with open(item.path, "rb") as f:
                raw = f.read()
        except OSError:
            return (self.blank() if self.decode else torch.empty(0, dtype=torch.uint8)), item.label, i, UNREADABLE, (
                0, 0)
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        if not self.decode:
            return data, item.label, i, OK, (0, 0)
        img, status, hw = decode_one(data, self.size, clean=item.clean, allow_resize=self.allow_resize)
        return (img if img is not None else self.blank()), item.label, i, status, hw


def decode_one(data: torch.Tensor, size: tuple[int, int], *, clean: bool = False, allow_resize: bool = False,
               device: str | torch.device = "cpu"):
    """Decode one image file's bytes to ``uint8 [3, H, W]`` RGB; returns ``(image or None, status, (h, w))``."""
    from torchvision.io import ImageReadMode, decode_image

    if data.numel() == 0:
        return None, UNREADABLE, (0, 0)
    try:
        img = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return None, UNREADABLE, (0, 0)
    return fit(img.to(device), size, clean=clean, allow_resize=allow_resize)


def fit(img: torch.Tensor, size: tuple[int, int], *, clean: bool = False, allow_resize: bool = False):
    """Apply the size policy to a decoded image: ``(image or None, status, (h, w) as decoded)``."""
    hw = (int(img.shape[-2]), int(img.shape[-1]))
    if clean and hw != tuple(size):
        return clean_transform(img, size), OK, hw
    if hw != tuple(size):
        if not allow_resize:
            return None, WRONG_SIZE, hw
        from torchvision.transforms.v2 import functional as F

        img = F.resize(img, list(size), antialias=True)
    return img, OK, hw


def collate(batch):
    """Stack decoded images (or keep raw bytes as a list) with labels, indices, statuses and decoded sizes."""
    data, labels, index, status, hw = zip(*batch, strict=True)
    first = data[0]
    images = torch.stack(data) if first.dim() == 3 else list(data)
    return (images, torch.tensor(labels, dtype=torch.int64), torch.tensor(index, dtype=torch.int64),
            torch.tensor(status, dtype=torch.int64), torch.tensor(hw, dtype=torch.int64))


def gpu_decode(raw: list[torch.Tensor], dataset: ImageItems, index: torch.Tensor, status: torch.Tensor,
               device: torch.device):
    """Decode a batch of raw files on the GPU at once (``torchvision.io.decode_jpeg``); non-JPEGs on the CPU.

    Returns ``(images uint8 [B, 3, H, W] on device, status, hw)``; unreadable / wrong-size items get a zero image.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    n = len(raw)
    status = status.clone()
    hw = torch.zeros(n, 2, dtype=torch.int64)
    images: list[torch.Tensor | None] = [None] * n
    jpeg = [i for i in range(n) if status[i] == OK and raw[i].numel() > 2 and raw[i][0] == 0xFF and raw[i][1] == 0xD8]
    decoded: dict[int, torch.Tensor] = {}
    if jpeg:
        try:
            out = decode_jpeg([raw[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
            decoded = dict(zip(jpeg, out, strict=True))
        except RuntimeError:  # one bad file fails the whole batch: decode one by one to find it
            for i in jpeg:
                try:
                    decoded[i] = decode_jpeg(raw[i], mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    pass
    for i in range(n):
        if status[i] != OK:
            continue
        item = dataset.items[int(index[i])]
        if i in decoded:
            img, st, size = fit(decoded[i], dataset.size, clean=item.clean, allow_resize=dataset.allow_resize)
        else:
            img, st, size = decode_one(raw[i], dataset.size, clean=item.clean, allow_resize=dataset.allow_resize,
                                       device=device)
        images[i], status[i], hw[i] = img, st, torch.tensor(size)
    blank = torch.zeros(3, *dataset.size, dtype=torch.uint8, device=device)
    return torch.stack([img if img is not None else blank for img in images]), status, hw


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file from its header (PIL reads only the header)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError:
        return (0, 0)
    return (h, w)
