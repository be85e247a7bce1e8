"""ImageNet-C evaluation: plan (every check before any work), then a sharded, resumable evaluation loop.

Flow: :class:`ImageNetCConfig` -> :func:`plan` (model, checkpoint, layout, classes, input size, subset; every
problem is a one-line :class:`~dtn_bench.errors.DTNBenchError` raised here) -> :func:`run` (rows per
(corruption, severity) pair, appended by rank 0 as each pair finishes).

Sharding (``torchrun``): rank ``r`` of ``W`` takes images ``r, r + W, r + 2W, ...`` of every pair - no padding, so
no image is counted twice or dropped. Each rank counts images, top-1 / top-5 hits and unreadable files per pair as
int64; the counts are summed with ``all_reduce`` in pair order (every rank reduces pair ``p`` once all its local
images of ``p`` are done, so the collectives line up). A rank that hits a fatal problem (wrong image size, or an
unreadable image under ``--strict``) raises a flag in the next reduction, so every rank stops with the same message.

A run is keyed on the model, the checkpoint's SHA-256 and every setting that can change a number
(:meth:`ImageNetCConfig.run_key`): the default run id contains the key, and a resumed run whose config differs is
refused, so results of different settings never mix. Without a checkpoint the model is built under a fixed seed
(``seed``; every rank and every process gets the same weights) and ``checkpoint_sha256`` says
``random init (seed N)``, so random weights are keyed, labelled in rows and tables, and announced with a warning.

The number of processes is recorded as ``world_size`` in ``config.json`` (the session that made the folder) and
``env.json`` (the latest session); it is not part of the run key: the sharding is exact, so no number depends on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dtn_bench.distributed import DistContext, init_distributed
from dtn_bench.errors import DTNBenchError
from dtn_bench.imagenet_c import data as D
from dtn_bench.metrics import CORRUPTIONS, SEVERITIES, topk_correct
from dtn_bench.results.schema import make_row

SUITE = "imagenet-c"
DEMO_LABEL = "demo data - not ImageNet-C"
RELEASED_LABEL = "ImageNet-C"
CLEAN = "clean"
RESUME_IGNORED = ("resume", "run_id", "debug", "batch_size", "workers", "strict", "checkpoint", "ema")
"""Config keys that may differ when a run is resumed (they do not change any number)."""
PAIR_METRICS = ("top1_err", "top5_err", "n_images", "n_unreadable", "throughput_img_s")
SUMMARY_METRICS = ("ce", "relative_ce", "mce", "relative_mce", "mean_corruption_err")
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


@dataclass(frozen=True)
class ImageNetCConfig:
    """Settings of one ImageNet-C evaluation (what the run is keyed on, plus how to run it).

    Attributes:
        model: zoo model (``vit_s_dtn``) or timm model name.
        norm: registered normaliser put into the model (``--norm``).
        checkpoint: weights file; its SHA-256 keys the run.
        checkpoint_sha256: filled in by :func:`plan`: the file's SHA-256, or ``random init (seed N)`` without a
            checkpoint (the weights are then built under ``torch.manual_seed(seed)``).
        ema: take the checkpoint's EMA weights when it has them (timm's ``CheckpointSaver`` files; the authors'
            accuracies are the EMA weights'); ``False`` (``--no-ema``) takes the raw ones.
        weights: filled in by :func:`plan`: which set was loaded, ``ema`` or ``raw`` (``none`` without a
            checkpoint); it keys the run (``ema`` does not: asking for EMA of a file without any loads the same).
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
        workers: DataLoader worker processes (0: decode in the main process).
        device: ``cpu`` or ``cuda`` (under torchrun each rank takes ``cuda:LOCAL_RANK``).
        amp: ``None`` or ``"bf16"`` (autocast).
        strict: an unreadable image is fatal instead of counted.
        allow_resize: resize images whose size is not the model's input size (changes results; off by default).
        data_label: what the data is, shown in every row and table; ``None``: found by :func:`plan`
            (:func:`~.data.data_label`: data made by ``dtn-bench corrupt`` says so, else ``ImageNet-C``).
        demo: the data was made by ``--demo``.
        seed: seed of the demo data and demo model, and of the random weights when there is no checkpoint.
    """

    model: str
    norm: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    ema: bool = True
    weights: str | None = None
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
    workers: int = 0
    device: str = "cpu"
    amp: str | None = None
    strict: bool = False
    allow_resize: bool = False
    data_label: str | None = None
    demo: bool = False
    seed: int = 0

    def validate(self) -> None:
        """One-line errors for settings that cannot work together."""
        if self.data_dir is None:
            raise DTNBenchError(f"no --data-dir given. {D.DOWNLOAD_HINT}")
        if self.data_label is not None and (not self.data_label.strip() or "\n" in self.data_label):
            raise DTNBenchError(f"--data-label {self.data_label!r}: give a non-empty one-line label")
        if self.clean_dir is not None and self.clean_error is not None:
            raise DTNBenchError("give either --clean-dir or --clean-error, not both")
        if self.subset is not None and self.subset_file is not None:
            raise DTNBenchError("give either --subset or --subset-file, not both")
        if self.subset is not None and self.subset <= 0:
            raise DTNBenchError(f"--subset must be > 0, got {self.subset}")
        if self.clean_error is not None and not 0.0 <= self.clean_error <= 1.0:
            raise DTNBenchError(f"--clean-error {self.clean_error} is not a fraction in [0, 1]")
        if self.batch_size <= 0:
            raise DTNBenchError(f"--batch-size must be > 0, got {self.batch_size}")
        if self.workers < 0:
            raise DTNBenchError(f"--workers must be >= 0, got {self.workers}")
        if self.num_classes is not None and self.num_classes <= 0:
            raise DTNBenchError(f"--num-classes must be > 0, got {self.num_classes}")
        if self.amp not in (None, "bf16"):
            raise DTNBenchError(f"--amp {self.amp!r}: only bf16 is supported")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise DTNBenchError(f"--device {self.device!r}: use cpu or cuda")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise DTNBenchError(f"--device {self.device} but no CUDA GPU is visible")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_key(self) -> str:
        """SHA-256 (hex) of every setting that can change a number (model, checkpoint hash, data, subset, ...)."""
        keyed = {k: v for k, v in self.as_dict().items() if k not in RESUME_IGNORED}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()

    def default_run_id(self) -> str:
        """``<model>[-<norm>][-demo]-<first 10 hex of the run key>``: the same settings resume the same folder."""
        parts = [self.model] + ([self.norm] if self.norm else []) + (["demo"] if self.demo else [])
        return "-".join(parts + [self.run_key()[:10]])

    @property
    def subset_label(self) -> str:
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
    """Everything :func:`run` needs, checked."""

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
        return sum(len(g.paths) for g in self.groups)


def build_model(cfg: ImageNetCConfig, *, debug: bool = False) -> tuple[torch.nn.Module, dict | None]:
    """The model of ``cfg`` in eval mode, with its checkpoint loaded (``(model, checkpoint info or None)``).

    The model is always built under ``torch.manual_seed(cfg.seed)`` (the caller's random state is restored after), so
    without a checkpoint every process - each torchrun rank, a resumed run - gets the same random weights.
    """
    from dtn_bench.models import create

    kwargs = {} if cfg.num_classes is None else {"num_classes": cfg.num_classes}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = create(cfg.model, norm=cfg.norm, **kwargs)
    except TypeError as e:
        raise DTNBenchError(f"cannot build model {cfg.model}: {e}") from e
    info = None
    if cfg.checkpoint is not None:
        from dtn_bench.checkpoint import load_checkpoint

        info = load_checkpoint(model, cfg.checkpoint, ema=cfg.ema, debug=debug)
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
    from dataclasses import replace

    from dtn_bench.checkpoint import file_sha256

    cfg = replace(cfg, corruptions=corruptions, severities=severities, data_label=label,
                  data_dir=str(Path(cfg.data_dir).resolve()),
                  clean_dir=str(Path(cfg.clean_dir).resolve()) if cfg.clean_dir else None,
                  checkpoint_sha256=info["sha256"] if info else random_init_label(cfg.seed),
                  weights=info["weights"] if info else "none",
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
                notes=[info["message"]] if info else [])


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
def rank_device(device: str) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` under torchrun when ``device`` is ``cuda``."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(device)


Event = Callable[..., None]


def run(p: Plan, *, out: str | Path = "results", run_id: str | None = None, resume: bool = False,
        on_event: Event | None = None) -> Path | None:
    """Evaluate every pending pair of ``p``; rank 0 appends rows per pair as each finishes.

    Args:
        p: the plan from :func:`plan`.
        out: results root; the run folder is ``out/imagenet-c/<run id>``.
        run_id: run folder name; default :meth:`ImageNetCConfig.default_run_id`.
        resume: skip pairs whose rows the run folder already holds (its config must match).
        on_event: called on rank 0 as ``on_event(kind, **info)`` with kinds ``warning`` (message; without
            ``on_event`` it goes to :func:`warnings.warn`), ``note`` (message: which checkpoint weights were
            loaded), ``start`` (pending, skipped, images),
            ``estimate`` (seconds, img_s, images), ``batch`` (images), ``pair`` (corruption, severity, top1_err,
            n_images, n_unreadable, unreadable) and ``done`` (seconds, images, img_s).

    Returns:
        The run folder on rank 0, ``None`` on other ranks.
    """
    cfg = p.config
    dist = init_distributed(cfg.device)
    try:
        if dist.rank == 0:
            for message in p.warnings:
                if on_event is None:
                    warnings.warn(message, stacklevel=2)
                else:
                    on_event("warning", message=message)
            if on_event is not None:
                for message in p.notes:
                    on_event("note", message=message)
        return _run(p, dist, out, run_id or cfg.default_run_id(), resume, on_event or (lambda kind, **info: None))
    finally:
        dist.close()


def _run(p: Plan, dist: DistContext, out, run_id: str, resume: bool, emit: Event) -> Path | None:
    from dtn_bench.results.env import environment
    from dtn_bench.results.writer import RunWriter

    cfg = p.config
    writer, error = None, None
    if dist.rank == 0:
        try:
            writer = RunWriter(out, SUITE, {**cfg.as_dict(), "world_size": dist.world}, run_id=run_id, resume=resume,
                               device=str(rank_device(cfg.device)), ignore_keys=RESUME_IGNORED + ("world_size",),
                               env={**environment(), "world_size": dist.world})
            done = writer.done_keys(["corruption", "severity"])
        except DTNBenchError as e:
            error, done = str(e), set()
    else:
        done = set()
    error, done = dist.broadcast((error, done))
    if error:
        raise DTNBenchError(error)
    pending = [g for g in p.groups if (g.corruption, g.severity) not in done]
    common = dict(data=cfg.data_name, subset=cfg.subset_label, checkpoint_sha256=cfg.checkpoint_sha256 or "none",
                  weights=cfg.weights or "none", amp=cfg.amp or "fp32", allow_resize=cfg.allow_resize)
    if writer is not None and cfg.clean_error is not None and (CLEAN, 0) not in done:
        writer.append([make_row(SUITE, cfg.model, p.norm_label, "top1_err", cfg.clean_error, corruption=CLEAN,
                                severity=0, source="given (--clean-error)", **common)])
    emit("start", pending=len(pending), skipped=len(p.groups) - len(pending), images=sum(len(g.paths) for g in pending),
         world=dist.world)
    t0 = time.perf_counter()
    stats = _evaluate_groups(p, pending, dist, emit, writer, common) if pending else {"images": 0}
    seconds = time.perf_counter() - t0
    if writer is None:
        return None
    _append_summary(writer, cfg, p.norm_label, common)
    from dtn_bench.imagenet_c.report import write_report

    write_report(writer)
    emit("done", seconds=seconds, images=stats["images"], img_s=stats["images"] / seconds if seconds else 0.0)
    return writer.path


def _evaluate_groups(p: Plan, groups: list[Group], dist: DistContext, emit: Event, writer, common: dict) -> dict:
    cfg = p.config
    device = rank_device(cfg.device)
    model = p.model.to(device)
    gpu_decode = device.type == "cuda"
    items, local_total = [], []
    class_index = {w: i for i, w in enumerate(p.classes)}
    for gi, g in enumerate(groups):
        shard = g.paths[dist.rank::dist.world]  # exact: no padding, nothing counted twice
        local_total.append(len(shard))
        items += [D.Item(str(g.root / rel), class_index[rel.split("/", 1)[0]], gi, g.clean) for rel in shard]
    dataset = D.ImageItems(items, p.input_size, decode=not gpu_decode, allow_resize=cfg.allow_resize)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers, collate_fn=D.collate,
        pin_memory=device.type == "cuda", prefetch_factor=4 if cfg.workers else None,
        persistent_workers=False)
    mean = torch.tensor(p.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, device=device).view(1, -1, 1, 1)
    n_classes = model_classes(model)
    ks = (1, 5) if n_classes >= 5 else (1,)
    counts = torch.zeros(len(groups), 4, dtype=torch.int64)  # images, top-1 hits, top-5 hits, unreadable
    seen = [0] * len(groups)
    bad: list[list[str]] = [[] for _ in groups]
    state = {"next": 0, "t_last": time.perf_counter(), "images": 0}
    group_of = torch.tensor([it.group for it in items], dtype=torch.int64)
    world_images = sum(len(g.paths) for g in groups)

    def reduce_ready(fatal: str | None = None) -> None:
        while state["next"] < len(groups) and (fatal is not None or seen[state["next"]] == local_total[state["next"]]):
            gi = state["next"]
            row = torch.cat([counts[gi], torch.tensor([1 if fatal else 0])])
            total = dist.sum(row.clone())
            if int(total[4]):
                messages = [m for m in dist.gather(fatal) if m]
                raise DTNBenchError(messages[0])
            names = bad[gi]
            if int(total[3]) and dist.world > 1:
                names = sorted(n for part in dist.gather(bad[gi]) for n in part)
            state["next"] += 1
            now = time.perf_counter()
            if writer is not None:
                _append_pair(writer, p, groups[gi], total, names, now - state["t_last"], ks, common, emit)
            state["t_last"] = now

    reduce_ready()  # pairs with no local images on this rank
    t_start, warm_images, warm_t0, estimated = time.perf_counter(), 0, None, False
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else _null()
    for bi, (images, labels, index, status, hw) in enumerate(loader):
        if gpu_decode:
            images, status, hw = D.gpu_decode(images, dataset, index, status, device)
        fatal = _fatal(cfg, p, dataset, index, status, hw)
        if fatal is not None:
            if dist.world == 1:
                raise DTNBenchError(fatal)
            reduce_ready(fatal)
        gidx = group_of[index]
        ok = status == D.OK
        if ok.any():
            # CPU decoding: pinned batch, asynchronous copy (GPU decoding: already there)
            x = images.to(device, non_blocking=True)
            x = x[ok.to(device)].float().div_(255).sub_(mean).div_(std)
            with torch.inference_mode(), autocast:
                logits = model(x).float().cpu()
            y, g_ok = labels[ok], gidx[ok]
            for gi in torch.unique(g_ok).tolist():
                m = g_ok == gi
                hits = topk_correct(logits[m], y[m], ks)
                counts[gi, 0] += int(m.sum())
                counts[gi, 1] += int(hits[0])
                counts[gi, 2] += int(hits[-1]) if len(ks) > 1 else 0
        for i in (~ok).nonzero().flatten().tolist():
            gi = int(gidx[i])
            counts[gi, 3] += 1
            bad[gi].append(_rel(groups[gi], dataset.items[int(index[i])].path))
        for gi in gidx.tolist():
            seen[gi] += 1
        n = len(index)
        state["images"] += n
        emit("batch", images=n * dist.world)
        # warm-up estimate: batch 0 pays for start-up; time the next 2 batches (more, up to 10, while under 2 s)
        if bi == 0:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            warm_t0 = time.perf_counter()
        elif not estimated:
            warm_images += n
            dt = time.perf_counter() - warm_t0
            if bi >= 2 and dt >= 2.0 or bi >= 10 or bi == 2 and len(dataset) <= 3 * cfg.batch_size:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = time.perf_counter() - warm_t0
                rate = warm_images * dist.world / dt
                emit("estimate", seconds=world_images / rate, img_s=rate, images=world_images)
                estimated = True
        reduce_ready()
    reduce_ready()
    if state["next"] != len(groups):  # cannot happen unless the loader lost items
        raise RuntimeError("ImageNet-C evaluation ended with unfinished pairs")
    return {"images": world_images, "seconds": time.perf_counter() - t_start}


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


def _append_pair(writer, p: Plan, g: Group, total: torch.Tensor, names: list[str], seconds: float, ks, common,
                 emit: Event) -> None:
    cfg = p.config
    n, top1, top5, unreadable = (int(v) for v in total[:4])
    settings = dict(corruption=g.corruption, severity=g.severity, **common,
                    unreadable_files=";".join(names))
    row = lambda metric, value, unit=None: make_row(SUITE, cfg.model, p.norm_label, metric, value, unit,  # noqa: E731
                                                    **settings)
    rows = [row("n_images", n, COUNT_UNIT), row("n_unreadable", unreadable, COUNT_UNIT)]
    err1 = 1.0 - top1 / n if n else float("nan")
    rows.append(row("top1_err", err1))
    if len(ks) > 1:
        rows.append(row("top5_err", 1.0 - top5 / n if n else float("nan")))
    rows.append(row("throughput_img_s", (n + unreadable) / seconds if seconds > 0 else float("nan")))
    writer.append(rows)
    emit("pair", corruption=g.corruption, severity=g.severity, top1_err=err1, n_images=n, n_unreadable=unreadable,
         unreadable=names)


def _append_summary(writer, cfg: ImageNetCConfig, norm: str, common: dict) -> None:
    """Summary rows: CE per corruption (all 5 severities), relative CE, mCE / relative mCE / mean error (all 15)."""
    from dtn_bench.imagenet_c.report import summarize

    df = writer.rows()
    if df.empty or df["metric"].isin(SUMMARY_METRICS).any():
        return
    s = next((v for k, v in summarize(df).items() if k[:3] == (cfg.model, norm, cfg.data_name)), None)
    if s is None:
        return
    rows = []
    for c, v in s.ce.items():
        rows.append(make_row(SUITE, cfg.model, norm, "ce", v, corruption=c, **common))
    for c, v in s.relative_ce.items():
        rows.append(make_row(SUITE, cfg.model, norm, "relative_ce", v, corruption=c, **common))
    for metric, v in (("mce", s.mce), ("relative_mce", s.relative_mce),
                      ("mean_corruption_err", s.mean_corruption_error)):
        if v is not None:
            rows.append(make_row(SUITE, cfg.model, norm, metric, v, "%" if metric != "mean_corruption_err"
                                 else "fraction", corruption="all", **common))
    writer.append(rows)
