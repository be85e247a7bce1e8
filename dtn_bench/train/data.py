"""Training data in the formats researchers already have, each checked before any work, and two built-in sets.

=================  ==========================================================================================
``imagenet``       ``DIR/train/<wnid>/*.JPEG`` and ``DIR/val/<wnid>/*.JPEG`` (the val set re-foldered by wnid); class
                   index = the sorted wnids, which must be the same in both.
``cifar10``        the python pickles: ``cifar-10-batches-py/data_batch_1..5`` and ``test_batch`` (``data``
                   ``uint8 [N, 3072]`` in CHW order, ``labels``); ``DIR`` may be that folder or its parent.
``cifar100``       ``cifar-100-python/train`` and ``test`` (``data``, ``fine_labels``).
``tiny-imagenet``  Tiny-ImageNet-200: ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with
                   ``val/val_annotations.txt`` (tab-separated file, wnid, box); class index = the sorted wnids, as
                   Tiny-ImageNet-C's folders are read (:mod:`dtn_bench.cifar_c.data`). The test split has no labels.
``digits``         built in, offline: scikit-learn's bundled handwritten digits (1,797 real 8 x 8 grey images of 10
                   classes, UCI optdigits; values 0..16 scaled to 0..255, grey copied to RGB); images
                   ``i % 5 == 4`` (359) are the validation split, the other 1,438 train. Not CIFAR.
``demo``           built in, offline: the procedural classes of the ImageNet-C demo
                   (:func:`dtn_bench.imagenet_c.demo_data.draw`), drawn at 32 px, seeded. Not real images.
=================  ==========================================================================================

A layout problem is a one-line :class:`~dtn_bench.errors.DTNBenchError` naming what is missing, raised by
:func:`load_data` before any model is built or any file written. CIFAR pickles are read with an unpickler that
accepts numpy arrays and plain containers only (a pickle can run code; these are data).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtn_bench.errors import DTNBenchError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
CIFAR = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", 10,
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", 100,
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}
DEMO_CLASSES, DEMO_TRAIN, DEMO_VAL, DEMO_SIZE = 10, 60, 20, 32


@dataclass
class Split:
    """One split: ``labels`` (int64) and either ``images`` (``uint8 [N, H, W, 3]``) or ``paths`` (image files)."""

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[str] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, i: int):
        """Image ``i`` as an RGB PIL image (a file that cannot be decoded is a one-line error)."""
        from PIL import Image

        if self.images is not None:
            return Image.fromarray(self.images[i])
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except OSError as e:
            raise DTNBenchError(f"unreadable image {path}: {type(e).__name__}") from None


@dataclass
class TrainData:
    """The checked training and validation splits of one dataset.

    Attributes:
        name: what rows and tables call the data (built-in sets say what they are and that they are not CIFAR).
        dataset: the ``dataset`` setting.
        train: the training split.
        val: the validation split (evaluated every epoch).
        classes: the number of classes.
        class_names: their names (wnids, digits, pattern names), in class-index order.
    """

    name: str
    dataset: str
    train: Split
    val: Split
    classes: int
    class_names: list[str]


def load_data(dataset: str, data_dir: str | None) -> TrainData:
    """The splits of ``dataset`` (under ``data_dir`` unless built in), checked.

    Raises:
        DTNBenchError: one line naming the missing folder or file, classes that differ between the splits, labels
            out of range, or a file that is not what the format says.
    """
    if dataset == "digits":
        return _digits()
    if dataset == "demo":
        return _demo()
    if data_dir is None:
        raise DTNBenchError(f"train: dataset {dataset} needs data_dir (--data-dir PATH)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DTNBenchError(f"--data-dir {root} {'is not a folder' if root.exists() else 'does not exist'} "
                            f"({dataset})")
    if dataset in CIFAR:
        return _cifar(root, dataset)
    if dataset == "tiny-imagenet":
        return _tiny_imagenet(root)
    return _imagenet(root)


# ------------------------------------------------------------------------------------------------------------------
# ImageNet folders
def _class_folders(folder: Path, what: str) -> list[str]:
    if not folder.is_dir():
        raise DTNBenchError(f"{what}: no folder {folder}")
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DTNBenchError(f"{what}: {folder} has no class folders")
    return names


def _images_in(folder: Path) -> list[str]:
    return sorted(e.path for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def _folder_split(folder: Path, classes: list[str], what: str, sub: str = "") -> Split:
    paths: list[str] = []
    labels: list[int] = []
    for k, wnid in enumerate(classes):
        files = _images_in(folder / wnid / sub) if (folder / wnid / sub).is_dir() else []
        if not files:
            raise DTNBenchError(f"{what}: {folder / wnid / sub} holds no images ({', '.join(IMAGE_EXTENSIONS[:3])} "
                                "...)")
        paths += files
        labels += [k] * len(files)
    return Split(np.asarray(labels, dtype=np.int64), paths=paths)


def _imagenet(root: Path) -> TrainData:
    train_classes = _class_folders(root / "train", "ImageNet layout")
    val_classes = _class_folders(root / "val", "ImageNet layout")
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        parts = [f"{len(train_classes)} class folders in train/, {len(val_classes)} in val/"]
        if only_train:
            parts.append(f"only in train/: {', '.join(only_train[:3])}{' ...' if len(only_train) > 3 else ''}")
        if only_val:
            parts.append(f"only in val/: {', '.join(only_val[:3])}{' ...' if len(only_val) > 3 else ''}")
        raise DTNBenchError(f"ImageNet layout under {root}: the train and val classes differ ({'; '.join(parts)}); "
                            "val/ must be re-foldered by wnid with the same classes")
    train = _folder_split(root / "train", train_classes, "ImageNet layout")
    val = _folder_split(root / "val", val_classes, "ImageNet layout")
    return TrainData(f"imagenet:{root}", "imagenet", train, val, len(train_classes), train_classes)


# ------------------------------------------------------------------------------------------------------------------
# CIFAR pickles
class _DataUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _DataUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any reader failure is the user's file
        raise DTNBenchError(f"cannot read {path} as a CIFAR python pickle: {type(e).__name__}: {e}"[:300]) from None
    if not isinstance(obj, dict):
        raise DTNBenchError(f"{path}: not a CIFAR python pickle (a {type(obj).__name__}, expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_split(folder: Path, files: tuple[str, ...], label_key: str, classes: int) -> Split:
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = _read_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise DTNBenchError(f"{path}: no 'data' and '{label_key}' entries (keys: {', '.join(map(str, batch))})")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DTNBenchError(f"{path}: data is {data.dtype} {list(data.shape)}, expected uint8 [N, 3072]")
        y = np.asarray(batch[label_key], dtype=np.int64)
        if y.shape != (data.shape[0],):
            raise DTNBenchError(f"{path}: {y.size} labels for {data.shape[0]} images")
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise DTNBenchError(f"{path}: labels span {y.min()}..{y.max()}, expected 0..{classes - 1}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(y)
    return Split(np.concatenate(labels), images=np.ascontiguousarray(np.concatenate(images)))


def _cifar(root: Path, dataset: str) -> TrainData:
    sub, train_files, test_files, label_key, classes, url = CIFAR[dataset]
    folder = root / sub if (root / sub).is_dir() else root
    missing = [n for n in (*train_files, *test_files) if not (folder / n).is_file()]
    if missing:
        raise DTNBenchError(f"{dataset} python pickles under {folder}: missing {', '.join(missing)} (download "
                            f"{url} and extract it; --data-dir is {sub}/ or the folder holding it)")
    train = _cifar_split(folder, train_files, label_key, classes)
    val = _cifar_split(folder, test_files, label_key, classes)
    return TrainData(f"{dataset}:{folder}", dataset, train, val, classes, [str(i) for i in range(classes)])


# ------------------------------------------------------------------------------------------------------------------
# Tiny-ImageNet-200
def _tiny_annotations(root: Path, classes: list[str]) -> Split:
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DTNBenchError(f"Tiny-ImageNet-200 under {root}: no {ann} (the validation labels: file, wnid, box per "
                            "line, tab-separated)")
    index = {w: k for k, w in enumerate(classes)}
    paths, labels = [], []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            what = "a file and a wnid" if len(parts) < 2 else f"wnid {parts[1]!r}, which train/ does not have"
            raise DTNBenchError(f"{ann} line {n}: expected {what}")
        path = root / "val" / "images" / parts[0]
        if not path.is_file():
            raise DTNBenchError(f"{ann} line {n}: no image {path}")
        paths.append(str(path))
        labels.append(index[parts[1]])
    if not paths:
        raise DTNBenchError(f"{ann} lists no images")
    return Split(np.asarray(labels, dtype=np.int64), paths=paths)


def _tiny_imagenet(root: Path) -> TrainData:
    classes = _class_folders(root / "train", "Tiny-ImageNet-200 layout")
    wnids = root / "wnids.txt"
    if wnids.is_file():
        listed = sorted(w.strip() for w in wnids.read_text().split() if w.strip())
        if listed != classes:
            raise DTNBenchError(f"Tiny-ImageNet-200 under {root}: wnids.txt lists {len(listed)} classes but train/ "
                                f"has {len(classes)} class folders that differ from them")
    if not (root / "val" / "images").is_dir():
        raise DTNBenchError(f"Tiny-ImageNet-200 under {root}: no folder {root / 'val' / 'images'}")
    train = _folder_split(root / "train", classes, "Tiny-ImageNet-200 layout", "images")
    val = _tiny_annotations(root, classes)
    return TrainData(f"tiny-imagenet:{root}", "tiny-imagenet", train, val, len(classes), classes)


# ------------------------------------------------------------------------------------------------------------------
# built-in sets
def _digits() -> TrainData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DTNBenchError("dataset digits needs scikit-learn (pip install scikit-learn), which ships the images; "
                            "or use --set dataset=demo") from None
    d = load_digits()
    gray = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
    labels = d.target.astype(np.int64)
    val = np.arange(len(labels)) % 5 == 4
    return TrainData("digits (scikit-learn 8x8 handwritten digits; not CIFAR)", "digits",
                     Split(labels[~val], images=rgb[~val]), Split(labels[val], images=rgb[val]), 10,
                     [str(i) for i in range(10)])


def _demo() -> TrainData:
    from dtn_bench.imagenet_c.demo_data import class_names, draw

    names = class_names(DEMO_CLASSES)
    splits = []
    for tag, per in ((0, DEMO_TRAIN), (1, DEMO_VAL)):
        images, labels = [], []
        for k, cls in enumerate(names):
            palette = np.random.default_rng([7, k]).uniform(0.1, 0.9, (2, 3))
            rng = np.random.default_rng([7, k, tag])
            images += [draw(cls.split("_", 1)[1], rng, size=DEMO_SIZE, colors=palette) for _ in range(per)]
            labels += [k] * per
        splits.append(Split(np.asarray(labels, dtype=np.int64), images=np.stack(images)))
    return TrainData("demo (procedural patterns of the ImageNet-C demo; not real images)", "demo", splits[0],
                     splits[1], DEMO_CLASSES, names)


# ------------------------------------------------------------------------------------------------------------------
class ImageSet:
    """A torch dataset over a :class:`Split`: ``(transform(image), label)``."""

    def __init__(self, split: Split, transform):
        """``split`` read through ``transform``."""
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.transform(self.split.image(int(i))), int(self.split.labels[i])
