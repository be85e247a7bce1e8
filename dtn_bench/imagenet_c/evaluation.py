"""ImageNet-C evaluation: plan (every check before any work), then a sharded evaluation loop that measures only.

Flow: :class:`ImageNetCConfig` -> :func:`plan` (model, checkpoint, layout, classes, input size, subset; every
problem is a one-line :class:`~dtn_bench.errors.DTNBenchError` raised here) -> :func:`measure` (the ``imagenet-c``
suite's ``run``: ``(label, rows)`` per (corruption, severity) pair as each finishes) under
:func:`~dtn_bench.runner.run_suite`, which writes the rows (rank 0), resumes (finished pairs come in ``ctx.done``)
and renders the report. Rows hold measurements only; CE, mCE and relative mCE are computed by the report.

Sharding (``torchrun``): rank ``r`` of ``W`` takes images ``r, r + W, r + 2W, ...`` of every pair - no padding, so
no image is counted twice or dropped. Each rank counts images, top-1 / top-5 hits and unreadable files per pair as
int64; the counts are summed with ``all_reduce`` in pair order (every rank reduces pair ``p`` once all its local
images of ``p`` are done, so the collectives line up). A rank that hits a fatal problem (wrong image size, or an
unreadable image under ``--strict``) raises a flag in the next reduction, so every rank stops with the same message.

Per-image correctness: each rank also keeps one top-1 bit per image of its shard; when a pair is summed, the shards'
bits are gathered (``all_gather``, packed one bit per image) and interleaved back into the pair's image order
(rank ``r``'s bits are images ``r, r + W, ...``), and rank 0 writes them into the run folder
(:mod:`dtn_bench.imagenet_c.correctness`) before the pair's rows, for paired comparisons of models.

A run is keyed on the model, the checkpoint's SHA-256 and every setting that can change a number
(:meth:`ImageNetCConfig.run_key`): the default run id contains the key, and a resumed run whose config differs is
refused, so results of different settings never mix. Without a checkpoint the model is built under a fixed seed
(``seed``; every rank and every process gets the same weights) and ``checkpoint_sha256`` says
``random init (seed N)``, so random weights are keyed, labelled in rows and tables, and announced with a warning.
``weights_source`` / ``weights_sha256`` say where the weights came from in every row: ``checkpoint:PATH``, timm's
pretrained release (``--pretrained``: ``timm:<architecture>.<tag>``) or a local file through timm's loader
(``--pretrained-file``: ``file:PATH``), with the file's SHA-256 (also in ``checkpoint_sha256``, which keys the run).

The number of processes is recorded as ``world_size`` in ``config.json`` (the session that made the folder) and
``env.json`` (the latest session); it is not part of the run key: the sharding is exact, so no number depends on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dtn_bench.distributed import DistContext
from dtn_bench.errors import DTNBenchError
from dtn_bench.imagenet_c import data as D
from dtn_bench.imagenet_c.correctness import write_pair
from dtn_bench.metrics import CORRUPTIONS, SEVERITIES, topk_correct
from dtn_bench.results.schema import make_row
from dtn_bench.runner import PresetConfig
from dtn_bench.stats import pack_bits, unpack_bits

SUITE = "imagenet-c"
DEMO_LABEL = "demo data - not ImageNet-C"
RELEASED_LABEL = "ImageNet-C"
CLEAN = "clean"
RESUME_IGNORED = ("resume", "run_id", "debug", "batch_size", "workers", "strict", "checkpoint", "ema",
                  "pretrained_file", "weights_source")
"""Config keys that may differ when a run is resumed (they do not change any number; a file's path does not, its
SHA-256, which is keyed, does)."""
PAIR_METRICS = ("top1_err", "top5_err", "n_images", "n_unreadable", "throughput_img_s")
COUNT_UNIT = "images"
RANDOM_INIT = "random init"


def random_init_label(seed: int) -> str:
    """What ``checkpoint_sha256`` holds for a model without a checkpoint: ``random init (seed N)``."""
    return f"{RANDOM_INIT} (seed {int(seed)})"


def random_init_warning(seed: int) -> str:
    """The warning of a run without a checkpoint (one line)."""
    return f"no --checkpoint: randomly initialised weights (seed {int(seed)}); errors will be near chance"


def default_workers() -> int:
    """DataLoader workers: half the CPU cores, 1 to 8."""
    return min(8, max(1, (os.cpu_count() or 2) // 2))


def check_data_label(label: str | None) -> None:
    """A one-line error for a ``--data-label`` that is empty or spans lines (``None``: not given, fine)."""
    if label is not None and (not label.strip() or "\n" in label):
        raise DTNBenchError(f"--data-label {label!r}: give a non-empty one-line label")


def check_count(name: str, value: int | None, low: int = 0, op: str = ">") -> None:
    """``--name must be > low, got value`` (``op`` ``>=``: at least ``low``) unless ``value`` is ``None``."""
    if value is not None and (value < low if op == ">=" else value <= low):
        raise DTNBenchError(f"--{name.replace('_', '-')} must be {op} {low}, got {value}")


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ImageNetCConfig(PresetConfig):
    """Settings of one ImageNet-C evaluation (what the run is keyed on, plus how to run it).

    ``ImageNetCConfig.from_preset(None, **flags)`` builds one from the flags that were given (there are no presets:
    the defaults below decide the rest).

    Attributes:
        model: zoo model (``vit_s_dtn``) or timm model name.
        norm: registered normaliser put into the model (``--norm``).
        placement: where the normalisers sit in every block, ``pre`` / ``post`` / ``peri`` (``--placement``,
            :mod:`dtn_bench.placement`); in rows, run key and run id (the id only when not ``pre``).
        checkpoint: weights file; its SHA-256 keys the run.
        checkpoint_sha256: filled in by :func:`plan`: the file's SHA-256, or ``random init (seed N)`` without a
            checkpoint (the weights are then built under ``torch.manual_seed(seed)``).
        ema: take the checkpoint's EMA weights when it has them (timm's ``CheckpointSaver`` files; the authors'
            accuracies are the EMA weights'); ``False`` (``--no-ema``) takes the raw ones.
        weights: filled in by :func:`plan`: which set was loaded, ``ema`` or ``raw`` (``none`` without a
            checkpoint, ``pretrained`` for timm's pretrained weights); it keys the run (``ema`` does not: asking for
            EMA of a file without any loads the same).
        pretrained: load timm's pretrained weights of a stock timm model (``--pretrained``;
            :mod:`dtn_bench.models.pretrained`), before any ``norm`` conversion.
        pretrained_file: a local weights file loaded through timm's pretrained loader (``--pretrained-file``; its
            SHA-256 keys the run).
        weights_source: filled in by :func:`plan`: ``timm:<architecture>.<tag>``, ``file:PATH``,
            ``checkpoint:PATH`` or ``random init (seed N)``.
        weights_sha256: filled in by :func:`plan`: the weights file's SHA-256 (``none`` for random weights); for
            pretrained weights it is also ``checkpoint_sha256``, which tables tell runs' weights apart by.
        num_classes: build the classifier with this many outputs (models trained on other label sets, tests).
        data_dir: the ImageNet-C folder.
        clean_dir: clean ImageNet val folder (``<val>/<wnid>/<image>``), evaluated as pair ``("clean", 0)``.
        clean_error: the model's clean top-1 error (a fraction) when no ``clean_dir`` is given.
        corruptions: corruption names, canonical order.
        severities: severities 1..5.
        subset: evaluate a class-stratified sample of this many images per pair (:func:`~.data.stratified_subset`).
        subset_file: evaluate the images listed in this file; ``subset_file_sha256`` keys the run.
        subset_seed: seed of the ``subset`` sample.
        batch_size: images per batch.
        workers: DataLoader worker processes (0: decode in the main process; default :func:`default_workers`).
        device: ``cpu`` or ``cuda`` (under torchrun each rank takes ``cuda:LOCAL_RANK``; default
            :func:`default_device`).
        amp: ``None`` or ``"bf16"`` (autocast).
        strict: an unreadable image is fatal instead of counted.
        allow_resize: resize images whose size is not the model's input size (changes results; off by default).
        data_label: what the data is, shown in every row and table; ``None``: found by :func:`plan`
            (:func:`~.data.data_label`: data made by ``dtn-bench corrupt`` says so, else ``ImageNet-C``).
        demo: the data was made by ``--demo``.
        seed: seed of the demo data and demo model, and of the random weights when there is no checkpoint.
    """

    SUITE = SUITE

    model: str
    norm: str | None = None
    placement: str = "pre"
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    ema: bool = True
    weights: str | None = None
    pretrained: bool = False
    pretrained_file: str | None = None
    weights_source: str | None = None
    weights_sha256: str | None = None
    num_classes: int | None = None
    data_dir: str | None = None
    clean_dir: str | None = None
    clean_error: float | None = None
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    subset: int | None = None
    subset_file: str | None = None
    subset_file_sha256: str | None = None
    subset_seed: int = 0
    batch_size: int = 64
    workers: int = field(default_factory=default_workers)
    device: str = field(default_factory=default_device)
    amp: str | None = None
    strict: bool = False
    allow_resize: bool = False
    data_label: str | None = None
    demo: bool = False
    seed: int = 0

    def validate(self) -> None:
        """One-line errors for settings that cannot work together (the weights, the data, the counts, the device)."""
        from dtn_bench.models.pretrained import check_request
        from dtn_bench.placement import check_placement

        check_placement(self.placement)
        check_request(self.model, pretrained=self.pretrained, pretrained_file=self.pretrained_file,
                      checkpoint=self.checkpoint, ema=self.ema)
        self._validate_data()
        self._validate_counts()
        self._validate_device()

    def _validate_data(self) -> None:
        if self.data_dir is None:
            raise DTNBenchError(f"no --data-dir given. {D.DOWNLOAD_HINT}")
        check_data_label(self.data_label)
        if self.clean_dir is not None and self.clean_error is not None:
            raise DTNBenchError("give either --clean-dir or --clean-error, not both")
        if self.subset is not None and self.subset_file is not None:
            raise DTNBenchError("give either --subset or --subset-file, not both")

    def _validate_counts(self) -> None:
        # the messages name the flag alone (no command prefix), as this command's errors always have
        check_count("subset", self.subset)
        if self.clean_error is not None and not 0.0 <= self.clean_error <= 1.0:
            raise DTNBenchError(f"--clean-error {self.clean_error} is not a fraction in [0, 1]")
        check_count("batch_size", self.batch_size)
        check_count("workers", self.workers, 0, ">=")
        check_count("num_classes", self.num_classes)

    def _validate_device(self) -> None:
        check_device_amp(self.device, self.amp)

    def run_key(self) -> str:
        """SHA-256 (hex) of every setting that can change a number (model, checkpoint hash, data, subset, ...)."""
        keyed = {k: v for k, v in self.as_dict().items() if k not in RESUME_IGNORED}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()

    def default_run_id(self) -> str:
        """``<model>[-<norm>][-<placement>][-demo]-<first 10 hex of the run key>`` (placement when not ``pre``)."""
        parts = [self.model] + ([self.norm] if self.norm else []) + ([self.placement] if self.placement != "pre"
                                                                       else []) + (["demo"] if self.demo else [])
        return "-".join(parts + [self.run_key()[:10]])

    @property
    def subset_label(self) -> str:
        """What images of each pair are evaluated: ``full``, a stratified subset, or a subset file (with its hash)."""
        if self.subset is not None:
            return f"subset {self.subset}/pair, class-stratified (seed {self.subset_seed})"
        if self.subset_file is not None:
            digest = f" sha256 {self.subset_file_sha256[:8]}" if self.subset_file_sha256 else ""
            return f"subset file {Path(self.subset_file).name}{digest}"
        return "full"

    @property
    def data_name(self) -> str:
        """The data label with the subset, as shown in tables (e.g. ``ImageNet-C (subset 5000/pair, ...)``)."""
        label = self.data_label or RELEASED_LABEL
        return label if self.subset_label == "full" else f"{label} ({self.subset_label})"


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Group:
    """One (corruption, severity) pair, or the clean set as ``("clean", 0)``, with its image paths."""

    corruption: str
    severity: int
    paths: list[str]
    root: Path
    clean: bool = False


@dataclass
class Plan:
    """Everything :func:`measure` needs, checked (by :func:`plan`)."""

    config: ImageNetCConfig
    model: torch.nn.Module
    norm_label: str
    classes: tuple[str, ...]
    groups: list[Group]
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def images(self) -> int:
        """Images over all pairs of the plan."""
        return sum(len(g.paths) for g in self.groups)


def build_model(cfg: ImageNetCConfig, *, debug: bool = False) -> tuple[torch.nn.Module, dict | None]:
    """The model of ``cfg`` in eval mode, with its weights loaded (``(model, weights info or None)``).

    The model is always built under ``torch.manual_seed(cfg.seed)`` (the caller's random state is restored after), so
    without a checkpoint every process - each torchrun rank, a resumed run - gets the same random weights (and a
    converted pretrained model the same init of its new parameters). The info is :func:`~dtn_bench.checkpoint.
    load_checkpoint`'s for a checkpoint; for timm's pretrained weights ``{"source", "sha256", "weights":
    "pretrained", "message", "notes"}`` (``notes``: what the ``norm`` conversion carried over).
    """
    from dtn_bench.models import create

    kwargs = {} if cfg.num_classes is None else {"num_classes": cfg.num_classes}
    pretrained = cfg.pretrained or cfg.pretrained_file is not None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = create(cfg.model, norm=cfg.norm, placement=cfg.placement, pretrained=pretrained,
                           pretrained_file=cfg.pretrained_file,
                           debug=debug, **kwargs)
    except TypeError as e:
        raise DTNBenchError(f"cannot build model {cfg.model}: {e}") from e
    info = None
    if cfg.checkpoint is not None:
        from dtn_bench.checkpoint import load_checkpoint

        info = load_checkpoint(model, cfg.checkpoint, ema=cfg.ema, debug=debug)
        info["source"] = f"checkpoint:{cfg.checkpoint}"
    elif pretrained:
        from dtn_bench.models.vit import conversion_note

        w = model.pretrained_weights
        note = conversion_note(model, pretrained=True)
        info = {"source": w.source, "sha256": w.sha256, "weights": "pretrained", "message": w.message,
                "notes": [note] if note else []}
    return model.eval(), info


def model_classes(model: torch.nn.Module) -> int:
    """Number of outputs of a classifier (timm's ``num_classes``, else the head's ``out_features``)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Linear):
        return head.out_features
    raise DTNBenchError(f"cannot tell how many classes {type(model).__name__} predicts")


def model_input(model: torch.nn.Module) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """(input height/width, mean, std) of a timm model (the patch embedding's image size when it has one)."""
    from timm.data import resolve_model_data_config

    dc = resolve_model_data_config(model)
    size = tuple(int(v) for v in dc["input_size"][1:])
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None) is not None:
        size = tuple(int(v) for v in pe.img_size)
    return size, tuple(dc["mean"]), tuple(dc["std"])


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (timm's ``ImageNetInfo``)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def check_classes(data_classes: tuple[str, ...], n_model: int, model_name: str, root: Path) -> None:
    """The data's wnids against the model: same count; with 1,000 outputs, exactly the ImageNet-1k wnids."""
    if n_model == 1000:
        imagenet = imagenet_wnids()
        unknown = [w for w in data_classes if w not in set(imagenet)]
        if unknown:
            raise DTNBenchError(f"class folders under {root} are not ImageNet-1k wnids (e.g. {', '.join(unknown[:3])})"
                                f" but {model_name} has 1000 outputs; --num-classes {len(data_classes)} builds a "
                                f"classifier for these classes")
        missing = [w for w in imagenet if w not in set(data_classes)]
        if missing:
            raise DTNBenchError(f"ImageNet-C data under {root} lacks {len(missing)} of the 1000 ImageNet-1k classes "
                                f"(e.g. {', '.join(missing[:3])})")
    elif n_model != len(data_classes):
        raise DTNBenchError(f"class count mismatch: {root} has {len(data_classes)} class folders but {model_name} "
                            f"predicts {n_model} classes")


def plan(cfg: ImageNetCConfig, *, debug: bool = False, progress: Callable[[int, int], None] | None = None) -> Plan:
    """Check everything before any work: settings, model and checkpoint, layout, classes, image size, subset.

    Args:
        cfg: the settings (``checkpoint_sha256`` / ``subset_file_sha256`` are filled in here).
        debug: list every mismatching key when a checkpoint does not fit.
        progress: called with (pairs scanned, pairs total) while the layout is read.

    Returns:
        A :class:`Plan` with the config, whose hashes are filled in.
    """
    cfg.validate()
    label = cfg.data_label or D.data_label(cfg.data_dir)
    corruptions = D.resolve_corruptions(cfg.corruptions)
    severities = D.resolve_severities(cfg.severities)
    subset_entries = D.read_subset_file(cfg.subset_file) if cfg.subset_file else None
    model, info = build_model(cfg, debug=debug)
    from dtn_bench.checkpoint import file_sha256

    cfg = replace(cfg, corruptions=corruptions, severities=severities, data_label=label,
                  data_dir=str(Path(cfg.data_dir).resolve()),
                  clean_dir=str(Path(cfg.clean_dir).resolve()) if cfg.clean_dir else None,
                  checkpoint_sha256=info["sha256"] if info else random_init_label(cfg.seed),
                  weights=info["weights"] if info else "none",
                  pretrained=cfg.pretrained or cfg.pretrained_file is not None,
                  weights_source=info["source"] if info else random_init_label(cfg.seed),
                  weights_sha256=info["sha256"] if info else "none",
                  subset_file_sha256=file_sha256(cfg.subset_file) if cfg.subset_file else None)
    n_model = model_classes(model)
    # a 1000-class model with a subset list: the copy may hold only the listed images (RobustBench's 5,000)
    partial = subset_entries is not None and n_model == 1000
    layout = D.scan_layout(cfg.data_dir, corruptions, severities, progress=progress,
                           classes=imagenet_wnids() if partial else None)
    check_classes(layout.classes, n_model, cfg.model, layout.root)
    size, mean, std = model_input(model)
    groups: list[Group] = []
    if cfg.clean_dir:
        paths = D.scan_clean(cfg.clean_dir, layout.classes, partial=partial)
        groups.append(Group(CLEAN, 0, _subset(cfg, paths, subset_entries, f"--clean-dir {cfg.clean_dir}"),
                            Path(cfg.clean_dir), clean=True))
    for c in corruptions:
        for s in severities:
            paths = layout.files[(c, s)]
            groups.append(Group(c, s, _subset(cfg, paths, subset_entries, f"{c}/{s}"), layout.root / c / str(s)))
    for g in groups:
        if g.clean:
            continue
        hw = D.image_size(g.root / g.paths[0])
        if hw != (0, 0) and hw != size and not cfg.allow_resize:
            raise DTNBenchError(f"{g.root / g.paths[0]} is {hw[0]}x{hw[1]} but {cfg.model} takes {size[0]}x{size[1]}: "
                                f"ImageNet-C is evaluated as released (no resize); --allow-resize resizes the images "
                                f"to the model (this changes results)")
    norm = cfg.norm or _default_norm(cfg.model)
    warns = [] if info else [random_init_warning(cfg.seed)]
    return Plan(cfg, model, norm, layout.classes, groups, size, mean, std, warnings=warns,
                notes=[info["message"], *info.get("notes", [])] if info else [])


def _default_norm(model: str) -> str:
    from dtn_bench.models import MODELS

    return MODELS.get(model).meta["norm"] if model in MODELS else "default"


def _subset(cfg: ImageNetCConfig, paths: list[str], entries, where: str) -> list[str]:
    if cfg.subset is not None:
        return D.stratified_subset(paths, cfg.subset, cfg.subset_seed)
    if entries is not None:
        return D.apply_subset_file(paths, entries, where)
    return list(paths)


# ------------------------------------------------------------------------------------------------------------------
def check_device_amp(device: str, amp: str | None) -> None:
    """One-line errors for an ``--amp`` other than bf16, a device that is not cpu / cuda, or cuda without a GPU."""
    if amp not in (None, "bf16"):
        raise DTNBenchError(f"--amp {amp!r}: only bf16 is supported")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise DTNBenchError(f"--device {device!r}: use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DTNBenchError(f"--device {device} but no CUDA GPU is visible")


def rank_device(device: str) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` under torchrun when ``device`` is ``cuda``."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(device)


Event = Callable[..., None]


def announce(p: Plan, on_event: Event | None) -> None:
    """The plan's warnings (random weights) and notes (which checkpoint weights were loaded), on rank 0.

    Without ``on_event`` a warning goes to :func:`warnings.warn` and a note is dropped.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for message in p.warnings:
        if on_event is None:
            warnings.warn(message, stacklevel=3)
        else:
            on_event("warning", message=message)
    if on_event is not None:
        for message in p.notes:
            on_event("note", message=message)


def measure(p: Plan, ctx) -> Iterator[tuple[str, list[dict]]]:
    """The ``imagenet-c`` suite's measurement: ``(label, rows)`` per finished pair, in plan order.

    A given ``--clean-error`` comes first as the ``("clean", 0)`` row. Pairs in ``ctx.done`` are skipped. Every rank
    evaluates its shard of every pending pair and every rank yields the reduced rows (the runner writes rank 0's).

    Args:
        p: the plan from :func:`plan`.
        ctx: the :class:`~dtn_bench.runner.RunContext` (``ctx.dist``: the process context; ``ctx.emit``).

    Yields:
        ``("<corruption>/<severity>", rows)``: ``n_images``, ``n_unreadable``, ``top1_err``, ``top5_err`` (models
        with >= 5 classes) and ``throughput_img_s`` of the pair. Before a pair's rows are yielded, rank 0 writes its
        per-image correctness into ``ctx.run_dir`` (:func:`~dtn_bench.imagenet_c.correctness.write_pair`).

    Events (``ctx.emit``): ``pending`` (pending, skipped, images, world) before the first batch, ``batch``
    (images), ``estimate`` (seconds, img_s, images) after the warm-up batches, ``pair`` (corruption, severity,
    top1_err, n_images, n_unreadable, unreadable) once the pair's rows are written, ``done`` (seconds, images,
    img_s).
    """
    cfg = p.config
    common = row_settings(cfg)
    if cfg.clean_error is not None and not ctx.is_done(CLEAN, 0):
        yield f"{CLEAN} (given)", [make_row(SUITE, cfg.model, p.norm_label, "top1_err", cfg.clean_error,
                                            corruption=CLEAN, severity=0, source="given (--clean-error)", **common)]
    pending = [g for g in p.groups if not ctx.is_done(g.corruption, g.severity)]
    images = sum(len(g.paths) for g in pending)
    ctx.emit("pending", pending=len(pending), skipped=len(p.groups) - len(pending), images=images, world=ctx.world)
    t0 = time.perf_counter()
    for pair in evaluate_groups(p, pending, ctx.dist, ctx.emit) if pending else ():
        g = pair.group
        if ctx.rank == 0 and ctx.run_dir is not None and pair.correct is not None:
            write_pair(ctx.run_dir, g.corruption, g.severity, g.paths, pair.correct,
                       [n.split("/", 1 if g.clean else 2)[-1] for n in pair.names])
        rows = pair_rows(p, pair, common)
        yield f"{g.corruption}/{g.severity}", rows
        ctx.emit("pair", corruption=g.corruption, severity=g.severity, top1_err=pair.top1_err, n_images=pair.n,
                 n_unreadable=pair.unreadable, unreadable=pair.names)
    seconds = time.perf_counter() - t0
    ctx.emit("done", seconds=seconds, images=images, img_s=images / seconds if seconds else 0.0)


def row_settings(cfg: ImageNetCConfig) -> dict[str, Any]:
    """The setting columns every row of the run holds (data, subset, weights, autocast, resizing)."""
    return dict(data=cfg.data_name, subset=cfg.subset_label, checkpoint_sha256=cfg.checkpoint_sha256 or "none",
                weights=cfg.weights or "none", weights_source=cfg.weights_source or "none",
                weights_sha256=cfg.weights_sha256 or "none", amp=cfg.amp or "fp32", allow_resize=cfg.allow_resize,
                placement=cfg.placement)


@dataclass
class Pair:
    """One pair whose counts every rank has summed: what its rows say.

    Attributes:
        group: the pair.
        counts: images, top-1 hits, top-5 hits, unreadable files (over all ranks).
        names: the unreadable files (``corruption/severity/wnid/name``), sorted when several ranks found some.
        seconds: since the previous pair finished (or the loop started).
        top5: whether top-5 was counted (models with >= 5 classes).
        correct: top-1 right, one boolean per image of ``group.paths`` in that order (unreadable ones ``False``).
    """

    group: Group
    counts: tuple[int, int, int, int]
    names: list[str]
    seconds: float
    top5: bool
    correct: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Images evaluated (readable)."""
        return self.counts[0]

    @property
    def unreadable(self) -> int:
        """Files that could not be read (counted, left out of the error)."""
        return self.counts[3]

    @property
    def top1_err(self) -> float:
        """Top-1 error of the readable images (``nan`` when there are none)."""
        return 1.0 - self.counts[1] / self.n if self.n else float("nan")


def pair_rows(p: Plan, pair: Pair, common: dict[str, Any]) -> list[dict]:
    """The rows of a finished pair: its counts, top-1 (and top-5) error and end-to-end images/s."""
    cfg, (n, _, top5, unreadable) = p.config, pair.counts
    settings = dict(corruption=pair.group.corruption, severity=pair.group.severity, **common,
                    unreadable_files=";".join(pair.names))
    row = lambda metric, value, unit=None: make_row(SUITE, cfg.model, p.norm_label, metric, value, unit,  # noqa: E731
                                                    **settings)
    rows = [row("n_images", n, COUNT_UNIT), row("n_unreadable", unreadable, COUNT_UNIT), row("top1_err", pair.top1_err)]
    if pair.top5:
        rows.append(row("top5_err", 1.0 - top5 / n if n else float("nan")))
    rows.append(row("throughput_img_s", (n + unreadable) / pair.seconds if pair.seconds > 0 else float("nan")))
    return rows


# ------------------------------------------------------------------------------------------------------------------
class _Shard:
    """This rank's images of the pairs (``r, r + W, ...`` of each), its loader and its per-pair counts.

    :meth:`finished` sums the counts of each pair over the ranks once all of this rank's images of the pair are done,
    in pair order, so every rank takes part in the same collectives in the same order.
    """

    def __init__(self, p: Plan, groups: list[Group], dist: DistContext, top5: bool):
        cfg = p.config
        self.p, self.groups, self.dist, self.top5 = p, groups, dist, top5
        self.device = rank_device(cfg.device)
        class_index = {w: i for i, w in enumerate(p.classes)}
        items, self.local_total, positions = [], [], []
        for gi, g in enumerate(groups):
            shard = g.paths[dist.rank::dist.world]  # exact: no padding, nothing counted twice
            self.local_total.append(len(shard))
            items += [D.Item(str(g.root / rel), class_index[rel.split("/", 1)[0]], gi, g.clean) for rel in shard]
            positions += range(len(shard))
        self.dataset = D.ImageItems(items, p.input_size, decode=self.device.type != "cuda",
                                    allow_resize=cfg.allow_resize)
        self.group_of = torch.tensor([it.group for it in items], dtype=torch.int64)
        self.position = torch.tensor(positions, dtype=torch.int64)  # index within this rank's shard of its pair
        self.correct = [np.zeros(n, dtype=bool) for n in self.local_total]  # top-1 right, per local image
        self.counts = torch.zeros(len(groups), 4, dtype=torch.int64)  # images, top-1 hits, top-5 hits, unreadable
        self.seen = [0] * len(groups)
        self.bad: list[list[str]] = [[] for _ in groups]
        self.next = 0
        self.t_last = time.perf_counter()

    def loader(self):
        cfg, cuda = self.p.config, self.device.type == "cuda"
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers, collate_fn=D.collate,
            pin_memory=cuda, prefetch_factor=4 if cfg.workers else None, persistent_workers=False)

    def count(self, logits: torch.Tensor | None, labels, index, ok: torch.Tensor, ks: tuple[int, ...]) -> None:
        """Adds a batch: hits of the readable images (``logits`` of those), the unreadable ones by name."""
        gidx = self.group_of[index]
        if logits is not None:
            y, g_ok, pos_ok = labels[ok], gidx[ok], self.position[index][ok]
            # top-1 per image, taken as topk_correct takes it (the first of the top max(ks))
            right = logits.topk(max(ks), dim=1).indices[:, 0].eq(y)
            for gi in torch.unique(g_ok).tolist():
                m = g_ok == gi
                hits = topk_correct(logits[m], y[m], ks)
                self.counts[gi, 0] += int(m.sum())
                self.counts[gi, 1] += int(hits[0])
                self.counts[gi, 2] += int(hits[-1]) if len(ks) > 1 else 0
                self.correct[gi][pos_ok[m].numpy()] = right[m].numpy()
        for i in (~ok).nonzero().flatten().tolist():
            gi = int(gidx[i])
            self.counts[gi, 3] += 1
            self.bad[gi].append(_rel(self.groups[gi], self.dataset.items[int(index[i])].path))
        for gi in gidx.tolist():
            self.seen[gi] += 1

    def _local_done(self, gi: int) -> bool:
        return self.seen[gi] == self.local_total[gi]

    def _gathered_correct(self, gi: int) -> np.ndarray:
        """Pair ``gi``'s per-image bits of every rank, back in the pair's image order (a collective)."""
        local = self.correct[gi]
        if self.dist.world == 1:
            return local.copy()
        full = np.zeros(len(self.groups[gi].paths), dtype=bool)
        for r, (n, data) in enumerate(self.dist.gather((local.size, pack_bits(local)))):
            full[r::self.dist.world] = unpack_bits(data, n)  # rank r evaluated images r, r + W, ...
        return full

    def finished(self, fatal: str | None = None) -> Iterator[Pair]:
        """The pairs this rank has finished, summed over the ranks; with ``fatal``, stop every rank with a message."""
        while self.next < len(self.groups) and (fatal is not None or self._local_done(self.next)):
            gi = self.next
            total = self.dist.sum(torch.cat([self.counts[gi], torch.tensor([1 if fatal else 0])]).clone())
            if int(total[4]):
                messages = [m for m in self.dist.gather(fatal) if m]
                raise DTNBenchError(messages[0])
            names = self.bad[gi]
            if int(total[3]) and self.dist.world > 1:
                names = sorted(n for part in self.dist.gather(self.bad[gi]) for n in part)
            correct = self._gathered_correct(gi)
            self.next += 1
            now = time.perf_counter()
            yield Pair(self.groups[gi], tuple(int(v) for v in total[:4]), names, now - self.t_last, self.top5,
                       correct)
            self.t_last = now


class _WarmUp:
    """The estimate of the whole run from the first batches: batch 0 pays for start-up; the next 2 are timed.

    More are timed, up to 10, while under 2 s.
    """

    def __init__(self, device: torch.device, world: int, images: int, small: bool, emit: Event):
        self.device, self.world, self.images, self.small, self.emit = device, world, images, small, emit
        self.warm_images, self.t0, self.done = 0, 0.0, False

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def after(self, bi: int, n: int) -> None:
        """After batch ``bi`` of ``n`` images on this rank."""
        if bi == 0:
            self._sync()
            self.t0 = time.perf_counter()
            return
        if self.done:
            return
        self.warm_images += n
        dt = time.perf_counter() - self.t0
        if bi >= 2 and dt >= 2.0 or bi >= 10 or bi == 2 and self.small:
            self._sync()
            rate = self.warm_images * self.world / (time.perf_counter() - self.t0)
            self.emit("estimate", seconds=self.images / rate, img_s=rate, images=self.images)
            self.done = True


def evaluate_groups(p: Plan, groups: list[Group], dist: DistContext, emit: Event) -> Iterator[Pair]:
    """Evaluate this rank's shard of ``groups``; yields each pair once its counts are summed over the ranks.

    Args:
        p: the plan.
        groups: the pairs to evaluate (on every rank the same list).
        dist: the process context (``world == 1``: a single process).
        emit: ``batch`` (images, over all ranks) after every batch, ``estimate`` after the warm-up.

    Raises:
        DTNBenchError: an image of the wrong size, or an unreadable one under ``strict``, on any rank.
    """
    cfg = p.config
    device = rank_device(cfg.device)
    model = p.model.to(device)
    ks = (1, 5) if model_classes(model) >= 5 else (1,)
    shard = _Shard(p, groups, dist, top5=len(ks) > 1)
    mean = torch.tensor(p.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, device=device).view(1, -1, 1, 1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else _null()
    warm = _WarmUp(device, dist.world, sum(len(g.paths) for g in groups),
                   len(shard.dataset) <= 3 * cfg.batch_size, emit)
    yield from shard.finished()  # pairs with no local images on this rank
    for bi, (images, labels, index, status, hw) in enumerate(shard.loader()):
        if device.type == "cuda":
            images, status, hw = D.gpu_decode(images, shard.dataset, index, status, device)
        fatal = _fatal(cfg, p, shard.dataset, index, status, hw)
        if fatal is not None:
            if dist.world == 1:
                raise DTNBenchError(fatal)
            yield from shard.finished(fatal)
        ok = status == D.OK
        logits = None
        if ok.any():
            # CPU decoding: pinned batch, asynchronous copy (GPU decoding: already there)
            x = images.to(device, non_blocking=True)
            x = x[ok.to(device)].float().div_(255).sub_(mean).div_(std)
            with torch.inference_mode(), autocast:
                logits = model(x).float().cpu()
        shard.count(logits, labels, index, ok, ks)
        emit("batch", images=len(index) * dist.world)
        warm.after(bi, len(index))
        yield from shard.finished()
    yield from shard.finished()
    if shard.next != len(groups):  # cannot happen unless the loader lost items
        raise RuntimeError("ImageNet-C evaluation ended with unfinished pairs")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _rel(g: Group, path: str) -> str:
    """``corruption/severity/wnid/name`` (or ``clean/wnid/name``) of an image path."""
    rel = Path(path).relative_to(g.root).as_posix()
    return f"{CLEAN}/{rel}" if g.clean else f"{g.corruption}/{g.severity}/{rel}"


def _fatal(cfg: ImageNetCConfig, p: Plan, dataset, index, status, hw) -> str | None:
    wrong = (status == D.WRONG_SIZE).nonzero().flatten().tolist()
    if wrong:
        i = wrong[0]
        h, w = hw[i].tolist()
        return (f"{dataset.items[int(index[i])].path} is {h}x{w} but {cfg.model} takes "
                f"{p.input_size[0]}x{p.input_size[1]}: ImageNet-C is evaluated as released (no resize); "
                f"--allow-resize resizes the images to the model (this changes results)")
    if cfg.strict:
        bad = (status == D.UNREADABLE).nonzero().flatten().tolist()
        if bad:
            return (f"unreadable image {dataset.items[int(index[bad[0]])].path} (--strict; without it unreadable "
                    f"images are counted, named in the rows and left out of the error)")
    return None
