"""The one loader: image sources of the units, decoded and sized as each set's description says.

A unit's images come from a :class:`Source`: files (:class:`FileSource`, ``<root>/<class>/<name>``) or rows of a
memory-mapped array (:class:`ArraySource`, CIFAR-C). :class:`ImageItems` reads the items of this process's shard and
returns ``uint8 [3, H, W]`` images of the model's input size (or the raw bytes of a file, for GPU decoding), with a
status: :data:`OK`, :data:`UNREADABLE` (counted, or fatal under ``strict``) or :data:`WRONG_SIZE` (always fatal).

How an image is sized (the source's ``transform``):

- :data:`~dtn_bench.shifts.sets.AS_RELEASED`: decoded as is; a size other than the expected one is
  :data:`WRONG_SIZE`, unless ``allow_resize`` (then resized, bilinear with antialiasing; changes results);
- :data:`~dtn_bench.shifts.sets.IMAGENET_C_RECIPE`: how ImageNet-C was made from val (shorter side to
  ``size * 256 / 224``, bilinear with antialiasing, centre crop); images already of the model's size go in as they are;
- :data:`~dtn_bench.shifts.sets.MODEL_EVAL`: the model's eval transform, timm's ``create_transform(**data_config,
  use_prefetcher=True)`` on the PIL image (resize by ``crop_pct`` with its interpolation, centre crop, ``uint8``).

Normalisation (``/ 255``, the model's mean and std) happens on the device, for every set the same. On a GPU the
workers only read as-released files and the main process decodes each batch of JPEGs at once
(``torchvision.io.decode_jpeg`` with ``device="cuda"``), falling back to the CPU for anything that is not a JPEG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dtn_bench.shifts.sets import AS_RELEASED, IMAGENET_C_RECIPE, MODEL_EVAL

OK, UNREADABLE, WRONG_SIZE = 0, 1, 2


class Source:
    """The images of one unit, in evaluation order: ``len``, ``names`` (for per-image data), ``load(i)``."""

    transform: str = AS_RELEASED
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def raw(self, i: int) -> bool:
        """Whether item ``i`` can be handed over undecoded (a file the GPU may decode)."""
        return False

    def where(self, i: int) -> str:
        """Where image ``i`` is (a path), for messages."""
        return self.names[i]


class FileSource(Source):
    """Image files ``root/<class>/<name>`` (``names``: those relative paths), sized by ``transform``."""

    def __init__(self, root: str | Path, names: Sequence[str], transform: str = AS_RELEASED):
        self.root, self.names, self.transform = Path(root), list(names), transform

    def raw(self, i: int) -> bool:
        """As-released and recipe files may be decoded on the GPU."""
        return self.transform != MODEL_EVAL

    def where(self, i: int) -> str:
        """The file's path."""
        return str(self.root / self.names[i])

    def read(self, i: int) -> bytes | None:
        """The file's bytes, ``None`` when it cannot be read."""
        try:
            with open(self.root / self.names[i], "rb") as f:
                return f.read()
        except OSError:
            return None


class ArraySource(Source):
    """Rows ``start .. start + n - 1`` of a ``uint8 [N, H, W, 3]`` ``.npy`` (severity ``s``: ``start = (s-1) * n``).

    The array is opened memory-mapped in each process on first use (never pickled into DataLoader workers).
    """

    def __init__(self, path: str | Path, start: int, n: int, names: Sequence[str] | None = None):
        self.path, self.start = Path(path), int(start)
        self.names = list(names) if names is not None else [f"{i:05d}" for i in range(n)]
        self._array: np.ndarray | None = None

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    def where(self, i: int) -> str:
        """``file.npy[row]``."""
        return f"{self.path}[{self.start + i}]"

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as ``uint8 [3, H, W]``."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return torch.from_numpy(np.array(self._array[self.start + i])).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class Item:
    """One image of this process's shard: its unit (index into the sources), position in the unit, class label."""

    unit: int
    position: int
    label: int


def clean_transform(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """How ImageNet-C was made from val: shorter side to ``size * 256 / 224`` (bilinear, antialias), centre crop."""
    from torchvision.transforms.v2 import functional as F

    short = round(min(size) * 256 / 224)
    img = F.resize(img, [short], antialias=True)
    return F.center_crop(img, list(size))


def fit(img: torch.Tensor, size: tuple[int, int], *, transform: str = AS_RELEASED, allow_resize: bool = False):
    """Apply the size policy to a decoded image: ``(image or None, status, (h, w) as decoded)``."""
    hw = (int(img.shape[-2]), int(img.shape[-1]))
    if transform == IMAGENET_C_RECIPE and hw != tuple(size):
        return clean_transform(img, size), OK, hw
    if hw != tuple(size):
        if not allow_resize:
            return None, WRONG_SIZE, hw
        from torchvision.transforms.v2 import functional as F

        img = F.resize(img, list(size), antialias=True)
    return img, OK, hw


def decode_one(data: torch.Tensor, size: tuple[int, int], *, transform: str = AS_RELEASED,
               allow_resize: bool = False, device: str | torch.device = "cpu"):
    """Decode one image file's bytes to ``uint8 [3, H, W]`` RGB; returns ``(image or None, status, (h, w))``."""
    from torchvision.io import ImageReadMode, decode_image

    if data.numel() == 0:
        return None, UNREADABLE, (0, 0)
    try:
        img = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return None, UNREADABLE, (0, 0)
    return fit(img.to(device), size, transform=transform, allow_resize=allow_resize)


def model_eval_transform(data_config: dict) -> Callable:
    """The eval transform timm makes of a model's data config, giving a ``uint8 [3, H, W]`` tensor (not normalised)."""
    from timm.data import create_transform

    return create_transform(**data_config, is_training=False, use_prefetcher=True)


def describe_transform(data_config: dict) -> str:
    """The model eval transform in words: ``timm eval: resize 248 bicubic, centre crop 224 (crop_pct 0.9)``."""
    import math

    size = tuple(int(v) for v in data_config["input_size"][1:])
    crop_pct = data_config.get("crop_pct") or 0.875
    scale = math.floor(size[0] / crop_pct)
    return (f"timm eval transform: resize {scale} {data_config.get('interpolation', 'bilinear')}, centre crop "
            f"{size[0]}x{size[1]} (crop_pct {crop_pct}, crop_mode {data_config.get('crop_mode') or 'center'})")


class ImageItems(torch.utils.data.Dataset):
    """Reads (and, unless ``decode`` is false for raw files, decodes and sizes) the items of a shard.

    ``__getitem__`` returns ``(data, label, index, status, (h, w))``: ``data`` is a ``uint8 [3, H, W]`` image, or the
    raw bytes (1-D ``uint8``) of an as-released file when ``decode`` is false; unreadable or wrong-sized images get
    a zero image and their status.
    """

    def __init__(self, sources: Sequence[Source], items: Sequence[Item], size: tuple[int, int], *,
                 decode: bool = True, allow_resize: bool = False, data_config: dict | None = None):
        self.sources, self.items = list(sources), list(items)
        self.size = tuple(size)
        self.decode, self.allow_resize = decode, allow_resize
        self.data_config = data_config
        self._eval: Callable | None = None

    def __getstate__(self):
        return {**self.__dict__, "_eval": None}

    def __len__(self) -> int:
        return len(self.items)

    def blank(self) -> torch.Tensor:
        """The all-zero image that stands in for an unreadable or wrong-sized one in a batch."""
        return torch.zeros(3, *self.size, dtype=torch.uint8)

    def where(self, i: int) -> str:
        """Where item ``i``'s image is."""
        item = self.items[i]
        return self.sources[item.unit].where(item.position)

    def source(self, i: int) -> Source:
        """The source of item ``i``."""
        return self.sources[self.items[i].unit]

    def __getitem__(self, i: int):
        item = self.items[i]
        src = self.sources[item.unit]
        if isinstance(src, ArraySource):
            return src.image(item.position), item.label, i, OK, (0, 0)
        raw = src.read(item.position)
        if raw is None:
            return self._failed(src, item, i)
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        if not self.decode and src.raw(item.position):
            return data, item.label, i, OK, (0, 0)
        if src.transform == MODEL_EVAL:
            img, status, hw = self._model_eval(raw)
        else:
            img, status, hw = decode_one(data, self.size, transform=src.transform, allow_resize=self.allow_resize)
        return (img if img is not None else self.blank()), item.label, i, status, hw

    def _failed(self, src: Source, item: Item, i: int):
        blank = self.blank() if self.decode or not src.raw(item.position) else torch.empty(0, dtype=torch.uint8)
        return blank, item.label, i, UNREADABLE, (0, 0)

    def _model_eval(self, raw: bytes):
        import io

        from PIL import Image, UnidentifiedImageError

        if self._eval is None:
            self._eval = model_eval_transform(self.data_config or {})
        try:
            with Image.open(io.BytesIO(raw)) as im:
                img = im.convert("RGB")
                hw = (img.height, img.width)
        except (OSError, UnidentifiedImageError, ValueError):
            return None, UNREADABLE, (0, 0)
        return self._eval(img), OK, hw


def collate(batch):
    """Stack decoded images (or keep a list when raw bytes are among them) with labels, indices, statuses, sizes."""
    data, labels, index, status, hw = zip(*batch, strict=True)
    images = torch.stack(data) if all(d.dim() == 3 for d in data) else list(data)
    return (images, torch.tensor(labels, dtype=torch.int64), torch.tensor(index, dtype=torch.int64),
            torch.tensor(status, dtype=torch.int64), torch.tensor(hw, dtype=torch.int64))


def gpu_decode(raw: list[torch.Tensor], dataset: ImageItems, index: torch.Tensor, status: torch.Tensor,
               device: torch.device):
    """Decode a batch of raw files on the GPU at once (``torchvision.io.decode_jpeg``); non-JPEGs on the CPU.

    Items already decoded (``uint8 [3, H, W]``) are moved as they are. Returns ``(images uint8 [B, 3, H, W] on
    device, status, hw)``; unreadable / wrong-size items get a zero image.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    n = len(raw)
    status = status.clone()
    hw = torch.zeros(n, 2, dtype=torch.int64)
    images: list[torch.Tensor | None] = [None] * n
    is_raw = [raw[i].dim() == 1 for i in range(n)]
    jpeg = [i for i in range(n) if is_raw[i] and status[i] == OK and raw[i].numel() > 2 and raw[i][0] == 0xFF
            and raw[i][1] == 0xD8]
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
        if not is_raw[i]:
            images[i] = raw[i].to(device)
            continue
        transform = dataset.source(int(index[i])).transform
        if i in decoded:
            img, st, size = fit(decoded[i], dataset.size, transform=transform, allow_resize=dataset.allow_resize)
        else:
            img, st, size = decode_one(raw[i], dataset.size, transform=transform, allow_resize=dataset.allow_resize,
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
