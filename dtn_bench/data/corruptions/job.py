"""The folder job of ``dtn-bench corrupt`` and the speed benchmark of ``dtn-bench bench corrupt``.

:func:`corrupt_folder` writes the released layout; :func:`benchmark` times the corruptions (measurement only: rows
out; the ``bench-corrupt`` suite, :mod:`dtn_bench.bench.corrupt`, runs it and derives the speed ratio from the rows).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dtn_bench.checks import read_json_object
from dtn_bench.data.corruptions import corrupt_batch, resolve_corruptions, resolve_severities
from dtn_bench.data.corruptions.blur import prepare_compiled
from dtn_bench.data.corruptions.filters import SIZE, Recipe
from dtn_bench.distributed import check_device
from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import SEVERITIES

JPEG_QUALITY = 85
"""Quality of the saved JPEGs (the release's ``quality=85, optimize=True``)."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".webp", ".tif", ".tiff")
"""Source files the generator reads (case-insensitive); other non-hidden files are an error."""
MANIFEST_NAME = "dtn-bench-corrupt.json"
"""Written at the root of OUT by :func:`corrupt_folder` last, once every image is there: a folder without it is
incomplete. ``imagenet-c --data-dir`` reads it to label the data as generated (not the released ImageNet-C)."""
PARTIAL_NAME = ".dtn-bench-corrupt.partial.json"
"""Written at the root of OUT when a job starts (every setting that shapes the bytes, :func:`job_settings`), removed
after the manifest: a re-run with the same settings continues that job; other settings are refused."""


# ---------------------------------------------------------------------------------------------------------------
# images in and out


def image_seed(seed: int, corruption: str, severity: int, relpath: str) -> int:
    """The 63-bit seed of one output image: ``sha256("seed|corruption|severity|relpath")``.

    Args:
        seed: the run seed.
        corruption: the corruption's name.
        severity: 1..5.
        relpath: the source image's path relative to SRC, POSIX style (``n01440764/x.JPEG``).

    Returns:
        The first 8 digest bytes (little-endian), top bit cleared.
    """
    digest = hashlib.sha256(f"{int(seed)}|{corruption}|{int(severity)}|{relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Reads an image as RGB and applies ``Resize(256)`` (bilinear, Pillow, antialiased) + ``CenterCrop(224)``.

    With ``size``: ``Resize((size, size))`` instead (bilinear, antialiased, the aspect ratio not kept), as
    ``make_tinyimagenet_c.py`` makes its 64 x 64 images.

    Args:
        path: the image file.
        size: ``None`` for ImageNet-C's resize and crop, else the side of the square resize.

    Returns:
        uint8 ``[3, 224, 224]`` (``[3, size, size]``).

    Raises:
        DTNBenchError: the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DTNBenchError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if size is None:
        img = TF.center_crop(TF.resize(img, 256, interpolation=InterpolationMode.BILINEAR), SIZE)
    else:
        img = TF.resize(img, [size, size], interpolation=InterpolationMode.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _probe_image(path: Path) -> None:
    """Reads an image's header only (fast); a one-line error when Pillow cannot identify it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - parsing the header is the check
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DTNBenchError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def encode_jpeg(image: torch.Tensor, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an image, as the release saved them (``quality=85, optimize=True``).

    Args:
        image: uint8 ``[3, H, W]`` (any device).
        quality: the JPEG quality.

    Returns:
        The file's bytes.
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _output_name(rel: Path) -> Path:
    """Released file name: the source's (``.JPEG`` names kept); non-JPEG sources get ``.jpg`` added to the stem."""
    return rel if rel.suffix.lower() in (".jpg", ".jpeg") else rel.with_suffix(".jpg")


def _class_images(root: Path, cls: Path) -> list[Path]:
    """The images of one class folder as paths relative to ``root``, sorted; one-line errors for anything else."""
    found = []
    for f in sorted(cls.iterdir()):
        if f.name.startswith("."):
            continue
        if f.is_dir():
            raise DTNBenchError(f"{f}: nested folder; expected SRC/<class>/<image>")
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DTNBenchError(f"{f}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
        found.append(f.relative_to(root))
    return found


def _check_output_names(root: Path, found: list[Path]) -> None:
    """A one-line error when two sources would be written to the same output file (``x.png`` and ``x.jpg``)."""
    outs: dict[Path, Path] = {}
    for rel in found:
        o = _output_name(rel)
        if o in outs:
            raise DTNBenchError(f"{root / rel} and {root / outs[o]} would both be written as {o}")
        outs[o] = rel


def list_images(src: str | Path) -> list[Path]:
    """Source images ``SRC/<class>/<image>`` as sorted relative paths; one-line errors for a bad layout.

    Hidden files (starting with ``.``) are ignored.

    Args:
        src: the source folder.

    Returns:
        The image paths relative to ``src``, sorted by class folder, then file name.

    Raises:
        DTNBenchError: SRC is missing or not a folder, holds files outside class folders or nested folders, a file
            without an image extension, or no image.
    """
    root = Path(src)
    if not root.exists():
        raise DTNBenchError(f"source folder {root} does not exist")
    if not root.is_dir():
        raise DTNBenchError(f"source {root} is not a folder (expected SRC/<class>/<image>)")
    found: list[Path] = []
    for cls in sorted(root.iterdir()):
        if cls.name.startswith("."):
            continue
        if not cls.is_dir():
            raise DTNBenchError(f"{cls}: files must be in class folders (expected SRC/<class>/<image>)")
        found += _class_images(root, cls)
    if not found:
        raise DTNBenchError(f"source folder {root} holds no images (expected SRC/<class>/<image>)")
    _check_output_names(root, found)
    return found


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------------------------------------------------------
# the folder job


@dataclass
class CorruptSummary:
    """What :func:`corrupt_folder` wrote."""

    out_dir: Path
    images: int
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    files: int
    seconds: float
    seed: int
    device: str
    per_corruption_s: dict[str, float] = field(default_factory=dict)
    skipped: int = 0
    """Files of an unfinished earlier job that were already there and kept (counted in ``files``)."""
    manifest: Path | None = None


def check_job_settings(batch_size: int, device: str | torch.device) -> torch.device:
    """The torch device of a corruption job, after checking ``batch_size > 0`` and the device (one-line errors)."""
    if batch_size <= 0:
        raise DTNBenchError(f"batch size must be > 0, got {batch_size}")
    return check_device("corrupt", device)


def check_folder_args(src: str | Path, out: str | Path, batch_size: int,
                      device: str | torch.device) -> tuple[torch.device, list[Path]]:
    """Checks the arguments of :func:`corrupt_folder` before anything is written.

    Args:
        src: the source folder ``SRC/<class>/<image>``.
        out: the output root (not inside ``src``).
        batch_size: images per batch (> 0).
        device: the torch device of the corruption maths.

    Returns:
        The torch device and the source images (relative paths, see :func:`list_images`), every one of which has
        a header Pillow can read.

    Raises:
        DTNBenchError: bad batch size or device, a bad source layout, an unreadable image, OUT inside SRC.
    """
    dev = check_job_settings(batch_size, device)
    src, out = Path(src), Path(out)
    rels = list_images(src)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise DTNBenchError(f"output folder {out} must not be inside the source folder {src}")
    for rel in rels:
        _probe_image(src / rel)
    return dev, rels


@dataclass
class _Job:
    """One running :func:`corrupt_folder` job: what it writes where, and how far it has come."""

    src: Path
    out: Path
    seed: int
    jobs: list[tuple[str, int]]
    todo: dict[Path, list[tuple[str, int]]]
    """Per source image, the (corruption, severity) files still to write."""
    total: int
    done: int
    progress: Callable[[int, int], None] | None
    per: dict[str, float]
    """Seconds of corruption maths per corruption."""
    recipe: Recipe | None = None
    """The dataset's recipe; ``None``: ImageNet-C (224 px, its table)."""

    def report(self) -> None:
        """Tells the progress callback how many files are there."""
        if self.progress is not None:
            self.progress(self.done, self.total)

    def stop(self, reason: str) -> DTNBenchError:
        """The one-line error of a job that stops part way: the reason and how to continue."""
        return DTNBenchError(f"{reason}; {self.out} is incomplete ({self.done:,} of {self.total:,} files, no "
                             f"{MANIFEST_NAME}): fix or remove that file and run the same command again to continue "
                             f"(finished images are kept)")


def job_settings(source: str, seed: int, names: Sequence[str], sevs: Sequence[int], recipe: Recipe | None,
                 **more) -> dict:
    """Every setting that shapes the bytes of a corruption job, as the unfinished-job marker records them.

    ``source``, ``seed``, the corruption ``set`` (ImageNet-C or -C-bar), the ``format`` and image ``size``, the
    ``corruptions`` and ``severities``, and ``recipe``: a digest of the recipe's fields and of every chosen
    corruption's parameters at every chosen severity (so a changed severity table is a different job too); ``more``
    adds further settings (``jpeg_quality``; a new setting is one more key).
    """
    from dtn_bench.data.corruptions.filters import severity_params

    fmt = "imagenet-c" if recipe is None else recipe.name
    size = SIZE if recipe is None else recipe.size
    shape = {"recipe": None if recipe is None else {k: v for k, v in vars(recipe).items() if k != "table"},
             "params": {n: [severity_params(n, s, recipe) for s in sevs] for n in names}}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    cset = "imagenet-c" if recipe is None else recipe.corruption_set
    return {"source": source, "seed": int(seed), "set": cset, "format": fmt, "size": size,
            "corruptions": list(names), "severities": [int(s) for s in sevs], "recipe": digest, **more}


_FLAGS = {"seed": "--seed", "set": "--set", "format": "--format", "corruptions": "--corruptions",
          "severities": "--severities", "recipe": "recipe digest"}


def _setting_text(key: str, value) -> str:
    shown = "(not recorded)" if value is None else ",".join(map(str, value)) if isinstance(value, list) else value
    return f"{_FLAGS.get(key, key)} {shown}"


def _begin(out: Path, settings: dict) -> bool:
    """Starts (or continues) the job in ``out``: writes the marker, removes an earlier manifest.

    The marker :data:`PARTIAL_NAME` holds ``settings`` (:func:`job_settings`); an unfinished job is continued only
    with every one of them equal. Continuing removes the temporary files a killed write left behind.

    Returns:
        Whether an unfinished job with the same settings is being continued.

    Raises:
        DTNBenchError: ``out`` is a file, or holds an unfinished job with other settings.
    """
    from dtn_bench.results.writer import atomic_write_bytes, check_output_folder

    check_output_folder(out, "output")
    marker = out / PARTIAL_NAME
    resuming = marker.is_file()
    if resuming:
        earlier = read_json_object(marker, hint=f" (delete it to start {out} afresh)")
        differ = [k for k in dict.fromkeys([*settings, *earlier]) if earlier.get(k) != settings.get(k)]
        if len(differ) > 1 and "recipe" in differ:
            differ.remove("recipe")  # it follows from the settings named; alone, the parameter table changed
        if differ:
            there = "; ".join(f"{_setting_text(k, earlier.get(k))} there, {_setting_text(k, settings.get(k))} now"
                              for k in differ)
            raise DTNBenchError(f"{out} holds an unfinished dtn-bench corrupt job with other settings ({there}): "
                                f"run that job again to finish it, or choose another output folder (or delete {out})")
        _remove_temporary_files(out)
    atomic_write_bytes(marker, _json_bytes(settings))
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    return resuming


def _remove_temporary_files(out: Path) -> None:
    """Removes the hidden ``.<name>.<random>.tmp`` files a killed atomic write left under ``out``."""
    from dtn_bench.results.writer import is_temporary

    for folder, _, files in os.walk(out):
        for name in files:
            if is_temporary(name):
                Path(folder, name).unlink(missing_ok=True)


def _plan(src: Path, out: Path, seed: int, rels: list[Path], names: tuple[str, ...], sevs: tuple[int, ...],
          resuming: bool, progress: Callable[[int, int], None] | None) -> _Job:
    """The files to write: every (image, corruption, severity), less those a continued job already wrote."""
    jobs = [(name, sev) for name in names for sev in sevs]
    todo = {rel: [(n, s) for n, s in jobs if not (resuming and (out / n / str(s) / _output_name(rel)).is_file())]
            for rel in rels}
    total = len(rels) * len(jobs)
    skipped = total - sum(len(v) for v in todo.values())
    job = _Job(src, out, int(seed), jobs, todo, total, skipped, progress, dict.fromkeys(names, 0.0))
    if skipped:
        job.report()
    return job


def _write_image(job: _Job, target: Path, image: torch.Tensor) -> None:
    """Saves one corrupted image as JPEG (atomically) and counts it."""
    from dtn_bench.results.writer import atomic_write_bytes

    try:
        atomic_write_bytes(target, encode_jpeg(image))
    except OSError as e:
        raise job.stop(f"cannot write {target}: {e.strerror or type(e).__name__}") from None
    job.done += 1


def _corrupt_chunk(job: _Job, chunk: list[Path], dev: torch.device) -> None:
    """Loads a batch of source images and writes every file of theirs still to do."""
    try:
        size = None if job.recipe is None or job.recipe.crop else job.recipe.size
        batch = torch.stack([load_image(job.src / r, size) for r in chunk]).to(dev)
    except DTNBenchError as e:
        raise job.stop(str(e)) from None
    for name, sev in job.jobs:
        pick = [i for i, r in enumerate(chunk) if (name, sev) in job.todo[r]]
        if not pick:
            continue
        t1 = time.perf_counter()
        gens = [torch.Generator().manual_seed(image_seed(job.seed, name, sev, chunk[i].as_posix())) for i in pick]
        result = corrupt_batch(batch[pick] if len(pick) < len(chunk) else batch, name, sev, gens, job.recipe).cpu()
        job.per[name] += time.perf_counter() - t1
        for i, img in zip(pick, result, strict=True):
            _write_image(job, job.out / name / str(sev) / _output_name(chunk[i]), img)
        job.report()


def _finish(job: _Job, source: str, names: tuple[str, ...], sevs: tuple[int, ...], images: int,
            dev: torch.device) -> Path:
    """Writes the manifest (the job is complete) and removes the marker; returns the manifest's path."""
    from dtn_bench.results.env import dtn_bench_version
    from dtn_bench.results.writer import atomic_write_bytes

    manifest = {"generator": "dtn-bench corrupt", "dtn_bench_version": dtn_bench_version(), "source": source,
                "seed": job.seed, "corruptions": list(names), "severities": list(sevs), "images": images,
                "files": job.total, "jpeg_quality": JPEG_QUALITY, "size": SIZE, "device": str(dev),
                "set": "imagenet-c" if job.recipe is None else job.recipe.corruption_set}
    if job.recipe is not None:
        manifest.update(format=job.recipe.name, size=job.recipe.size)
    path = job.out / MANIFEST_NAME
    atomic_write_bytes(path, _json_bytes(manifest))
    (job.out / PARTIAL_NAME).unlink()
    return path


def corrupt_folder(src: str | Path, out: str | Path, corruptions: Sequence[str] | None = None,
                   severities: Sequence[int] = SEVERITIES, *, extra: bool = False, seed: int = 0,
                   device: str | torch.device = "cpu", batch_size: int = 32,
                   progress: Callable[[int, int], None] | None = None,
                   recipe: Recipe | None = None) -> CorruptSummary:
    """Writes ImageNet-C from an image folder: ``OUT/<corruption>/<severity>/<class>/<image>``.

    With a ``recipe`` of a folder format (Tiny-ImageNet-C, :mod:`dtn_bench.cifar_c.generate`): the same layout and
    JPEG save, the images resized to ``recipe.size`` square (:func:`load_image`) and corrupted with its table; the
    manifest also records ``format``. With the recipe of another corruption set
    (:data:`~dtn_bench.data.corruptions.cbar.IMAGENET_C_BAR`): its corruptions (``corruptions`` names some of them),
    the same crop, layout and JPEG save; the marker and the manifest record ``set``.

    Every source image gets ``Resize(256) + CenterCrop(224)``, each corruption x severity, uint8 truncation, and is
    saved as JPEG quality 85. Files are written atomically (temporary file + rename). Each output's randomness comes
    from its own generator seeded with :func:`image_seed` ``(seed, corruption, severity, relative path)``, so the
    bytes do not depend on the batch size, the order or the other images.

    Completion and continuing: the manifest :data:`MANIFEST_NAME` (source, seed, corruptions, severities, counts,
    dtn-bench version) is written at the root of OUT last, atomically, only when every file is there; a job starts by
    removing an earlier manifest and writing the marker :data:`PARTIAL_NAME` (every setting that shapes the bytes,
    :func:`job_settings`). If a job stops (an unreadable image, a full disk, a kill), OUT has the marker and no
    manifest; running the same job again (every setting equal; another is refused) continues it: files already there
    are complete (atomic writes) and are kept, leftover temporary files are removed. A new job over a
    complete OUT (manifest, no marker) writes every file again, as a first job does.

    Args:
        src: folder ``SRC/<class>/<image>`` (e.g. ImageNet val).
        out: output root (the folder ``imagenet-c --data-dir`` reads).
        corruptions: names; ``None`` for the 15 mCE corruptions (a set's recipe: all of its corruptions).
        severities: subset of 1..5.
        extra: also the 4 extra corruptions.
        seed: run seed.
        device: torch device of the corruption maths.
        batch_size: images per batch.
        progress: called as ``progress(done, total)`` with counts of files written (or kept).
        recipe: the dataset's recipe; ``None``: ImageNet-C.

    Returns:
        A :class:`CorruptSummary`.

    Raises:
        DTNBenchError: bad names, severities, source layout, unreadable images (one line, naming the file and, once
            files were written, how to continue), an unfinished job in OUT with another source or seed.
    """
    names = resolve_corruptions(corruptions, extra, recipe=recipe)
    sevs = resolve_severities(severities)
    src, out = Path(src), Path(out)
    dev, rels = check_folder_args(src, out, batch_size, device)
    source = str(src.resolve())
    resuming = _begin(out, job_settings(source, seed, names, sevs, recipe, jpeg_quality=JPEG_QUALITY))
    job = _plan(src, out, seed, rels, names, sevs, resuming, progress)
    job.recipe = recipe
    skipped = job.done
    work = [rel for rel in rels if job.todo[rel]]
    t0 = time.perf_counter()
    for start in range(0, len(work), batch_size):
        _corrupt_chunk(job, work[start : start + batch_size], dev)
    manifest = _finish(job, source, names, sevs, len(rels), dev)
    return CorruptSummary(out, len(rels), names, sevs, job.done, time.perf_counter() - t0, int(seed), str(dev),
                          job.per, skipped=skipped, manifest=manifest)


# ---------------------------------------------------------------------------------------------------------------
# speed benchmark (measurement only: rows out)

PEER = "imagecorruptions"
"""The peer that :func:`benchmark` times beside ours when it imports (the optional extra ``dtn-bench[peer]``)."""


def _package():
    """The module :mod:`dtn_bench.data.corruptions`, where ``load_peer`` and ``PEER`` are read at call time.

    So a caller (a test) may replace them there, as on the single module this package was.
    """
    from dtn_bench.data import corruptions

    return corruptions


def load_peer() -> tuple[object | None, str]:
    """The ``imagecorruptions`` module and its version, or ``(None, why not)`` when it does not import."""
    import importlib
    import importlib.metadata
    import warnings

    peer = _package().PEER
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources import warns on every setuptools that still has it
            module = importlib.import_module(peer)
    except Exception as e:  # any failure to import means "no peer", said in one line
        reason = "not installed" if isinstance(e, ModuleNotFoundError) and e.name == peer else \
            f"does not import ({type(e).__name__}: {e})"
        return None, reason
    try:
        version = importlib.metadata.version(peer)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    return module, version


def _timed(fn: Callable[[int], None], warmup: int, iters: int, per: int, dev: torch.device) -> tuple[list, list]:
    """Wall and process-CPU milliseconds per image of ``fn(i)`` (which handles ``per`` images).

    ``iters`` timed runs after ``warmup`` untimed ones.
    """
    wall, cpu = [], []
    for i in range(warmup + iters):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            wall.append((time.perf_counter() - t0) * 1e3 / per)
            cpu.append((time.process_time() - c0) * 1e3 / per)
    return wall, cpu


@dataclass
class _Peer:
    """The peer as :func:`benchmark` runs it: its module, version, images (HWC uint8) and row settings."""

    module: object
    version: str
    images: list[np.ndarray]
    settings: dict


def _synthetic_images(batch: int, seed: int, dev: torch.device) -> torch.Tensor:
    """``batch`` synthetic 224 images (uint8 ``[N, 3, 224, 224]``): smooth random colours plus noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, 3, 28, 28, generator=g)
    images = (F.interpolate(base, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1) * 255)
    return (images + 20 * torch.rand(images.shape, generator=g)).clamp(0, 255).to(torch.uint8).to(dev)


def _load_peer_run(peer: bool, images: torch.Tensor, peer_batch: int, common: dict, notes: list[str]) -> _Peer | None:
    """The peer to time beside ours, or ``None`` (with a line in ``notes`` saying why)."""
    package = _package()
    module, version = package.load_peer() if peer else (None, "not asked for (--no-peer)")
    if module is None:
        notes.append(f"{package.PEER} {version}: no peer timing, no speed ratio")
        return None
    import sys

    if "cv2" in sys.modules:  # the peer's OpenCV calls get the same thread count as ours
        sys.modules["cv2"].setNumThreads(torch.get_num_threads())
    batch = images.shape[0]
    peer_images = [im.permute(1, 2, 0).cpu().numpy().copy() for im in images[: max(1, min(peer_batch, batch))]]
    return _Peer(module, version, peer_images, dict(common, batch_size=len(peer_images), impl_version=version))


def _stat_rows(suite: str, impl: str, name: str, wall: list, cpu: list, settings: dict) -> list[dict]:
    """The rows of one timed corruption: ``time_ms`` median and min, ``cpu_time_ms`` median."""
    import statistics

    from dtn_bench.results.schema import make_row

    rows = [make_row(suite, "-", "-", "time_ms", v, corruption=name, stat=k, impl=impl, **settings)
            for k, v in (("median", statistics.median(wall)), ("min", min(wall)))]
    rows.append(make_row(suite, "-", "-", "cpu_time_ms", statistics.median(cpu), unit="ms", corruption=name,
                         stat="median", impl=impl, **settings))
    return rows


def _time_peer(run: _Peer, name: str, severity: int, seed: int, warmup: int, iters: int, suite: str,
               theirs: dict[str, tuple[float, float]], notes: list[str]) -> list[dict]:
    """Times the peer on one corruption: its rows, or none and a line in ``notes`` when it fails."""
    import statistics

    peer = _package().PEER

    def run_peer(i: int) -> None:
        for j, im in enumerate(run.images):
            np.random.seed((seed + 1000 * i + j) % 2**32)
            run.module.corrupt(im, corruption_name=name, severity=severity)

    try:
        wall, cpu = _timed(run_peer, warmup, iters, len(run.images), torch.device("cpu"))
    except Exception as e:  # the peer's failure is reported, not ours
        notes.append(f"{peer} {run.version} failed on {name}: {type(e).__name__}: {str(e).splitlines()[0]}"[:240])
        return []
    theirs[name] = (statistics.median(wall), min(wall))
    return _stat_rows(suite, peer, name, wall, cpu, run.settings)


def _pass_rows(suite: str, impl: str, times: dict[str, tuple[float, float]], settings: dict) -> list[dict]:
    """The rows of one pass over the set: ``time_ms`` (sums of the medians and minima) and ``throughput_img_s``."""
    from dtn_bench.results.schema import make_row

    total = {"median": sum(v[0] for v in times.values()), "min": sum(v[1] for v in times.values())}
    rows = [make_row(suite, "-", "-", "time_ms", v, corruption="pass", stat=k, impl=impl, **settings)
            for k, v in total.items()]
    rows.append(make_row(suite, "-", "-", "throughput_img_s", 1e3 / total["median"], corruption="pass",
                         stat="median", impl=impl, **settings))
    return rows


def benchmark(corruptions: Sequence[str], severity: int = 3, batch: int = 16, warmup: int = 1, iters: int = 3,
              device: str | torch.device = "cpu", seed: int = 0, suite: str = "bench-corrupt", peer: bool = True,
              peer_batch: int = 4, notes: list[str] | None = None) -> Iterator[tuple[str, list[dict]]]:
    """Times each corruption on synthetic 224 images, and the peer on the same images; yields ``(label, rows)``.

    Ours (``impl = "dtn-bench"``), per corruption, per image (the batch time divided by ``batch``; synchronised on
    CUDA; generator set-up included): ``time_ms`` with ``stat`` ``median`` and ``min`` over ``iters`` runs after
    ``warmup``, and ``cpu_time_ms`` (process CPU time, median; on a shared machine wall time above CPU time /
    threads means the process waited for a core). Then the pass over all ``corruptions`` (``corruption = "pass"``):
    ``time_ms`` as the sums of the medians and of the minima, ``throughput_img_s`` = source images per second through
    the whole set (``1000 / median pass``). Every row records ``threads`` (torch's intra-op threads).

    The peer (``impl = "imagecorruptions"``, ``impl_version`` its version, when ``peer`` and :func:`load_peer` finds
    it): right after ours, each corruption on the first ``peer_batch`` of the same images (HWC uint8, one
    ``corrupt()`` call per image, NumPy's global seed set per call), the same rows. A corruption the peer fails on
    gets no rows and a line in ``notes``. When it ran every corruption: its pass rows too. Without the peer,
    ``notes`` says why. The rows hold timings only: the speed ratio over the peer is derived from them at render time
    (:func:`dtn_bench.bench.corrupt.peer_speedups`).

    Nothing runs before the first row is asked for (the caller may set torch's thread count in between).

    Args:
        corruptions: names, in the order timed.
        severity: the severity timed (1..5).
        batch: images per :func:`corrupt_batch` call.
        warmup: untimed runs first.
        iters: timed runs (median and min).
        device: torch device of our maths (the peer runs on the CPU).
        seed: seed of the synthetic images and the noise.
        suite: the rows' ``suite``.
        peer: also time the peer when it imports.
        peer_batch: images the peer corrupts per timed run.
        notes: list the lines about the peer are appended to.

    Yields:
        ``(corruption, rows)`` per corruption, then ``("pass", rows)``.
    """
    import statistics

    dev = check_device("bench corrupt", device)
    notes = [] if notes is None else notes
    images = _synthetic_images(batch, seed, dev)
    common = dict(severity=severity, batch_size=batch, device_kind=dev.type, threads=torch.get_num_threads())
    run = _load_peer_run(peer, images, peer_batch, common, notes)
    if "glass_blur" in corruptions:
        prepare_compiled()
    ours: dict[str, tuple[float, float]] = {}
    theirs: dict[str, tuple[float, float]] = {}
    for name in corruptions:

        def run_ours(i: int, name: str = name) -> None:
            gens = [torch.Generator().manual_seed(seed + 1000 * i + j) for j in range(batch)]
            corrupt_batch(images, name, severity, gens)

        wall, cpu = _timed(run_ours, warmup, iters, batch, dev)
        ours[name] = (statistics.median(wall), min(wall))
        rows = _stat_rows(suite, "dtn-bench", name, wall, cpu, common)
        if run is not None:
            rows += _time_peer(run, name, severity, seed, warmup, iters, suite, theirs, notes)
        yield name, rows
    rows = _pass_rows(suite, "dtn-bench", ours, common)
    if run is not None and all(n in theirs for n in corruptions):
        rows += _pass_rows(suite, _package().PEER, theirs, run.settings)
    yield "pass", rows
