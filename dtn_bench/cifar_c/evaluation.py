"""CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C evaluation: plan (every check first), then a sharded loop.

Flow: :class:`CifarCConfig` -> :func:`plan` (dataset, model, checkpoint, layout, array shapes and dtypes, labels,
input size; every problem a one-line :class:`~dtn_bench.errors.DTNBenchError`) -> :func:`measure` (the ``cifar-c``
suite's ``run``: ``(label, rows)`` per (corruption, severity) pair) under :func:`~dtn_bench.runner.run_suite`, which
writes the rows (rank 0), resumes (finished pairs arrive in ``ctx.done``) and renders the report.

Images are fed as released (no resize, no crop), scaled to ``[0, 1]`` and normalised with the model's mean / std
(``model.pretrained_cfg``, as timm resolves it), in the order of the arrays (or the sorted files).

Sharding (``torchrun``), as ImageNet-C's: rank ``r`` of ``W`` takes images ``r, r + W, r + 2W, ...`` of every pair -
no padding, nothing counted twice or dropped. Each rank counts its images and top-1 hits as int64; the counts of a
pair are summed with ``all_reduce`` once every rank has finished the pair (all ranks walk the pairs in the same
order, so the collectives line up). A rank that meets a fatal problem (an unreadable or wrong-sized Tiny-ImageNet-C
file) raises a flag in that reduction, so every rank stops with the same message.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dtn_bench.cifar_c import data as D
from dtn_bench.errors import DTNBenchError
from dtn_bench.imagenet_c.evaluation import (
    check_count,
    check_data_label,
    check_device_amp,
    default_device,
    model_classes,
    model_input,
    random_init_label,
    random_init_warning,
    rank_device,
)
from dtn_bench.metrics import CORRUPTIONS, SEVERITIES
from dtn_bench.results.schema import make_row
from dtn_bench.runner import PresetConfig

SUITE = "cifar-c"
CLEAN = "clean"
COUNT_UNIT = "images"
RESUME_IGNORED = ("batch_size", "checkpoint", "ema", "device")
"""Config keys that may differ when a run is resumed (they change no number)."""


@dataclass(frozen=True)
class CifarCConfig(PresetConfig):
    """Settings of one CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C evaluation.

    Attributes:
        model: small model (``vit_cifar_t_dtn``), zoo model or timm model name.
        dataset: ``cifar10``, ``cifar100`` or ``tiny-imagenet`` (:data:`~dtn_bench.cifar_c.data.DATASETS`).
        norm: registered normaliser put into the model.
        checkpoint: weights file; its SHA-256 keys the run.
        checkpoint_sha256: filled in by :func:`plan` (``random init (seed N)`` without a checkpoint).
        ema: take the checkpoint's EMA weights when it has them.
        weights: filled in by :func:`plan`: ``ema``, ``raw`` or ``none``.
        num_classes: classifier outputs (default: the dataset's, 10 / 100 / 200).
        data_dir: the data folder (``<corruption>.npy`` + ``labels.npy``, or Tiny-ImageNet-C's folders).
        clean_images: clean test images, ``uint8 [N, H, W, 3]`` ``.npy`` (evaluated as pair ``("clean", 0)``).
        clean_labels: their labels, ``[N]`` integers ``.npy``.
        corruptions: corruption names (default the 15; CIFAR-C also has the 4 extras).
        severities: severities 1..5.
        batch_size: images per batch.
        device: ``cpu`` or ``cuda`` (under torchrun each rank takes ``cuda:LOCAL_RANK``).
        amp: ``None`` or ``"bf16"``.
        data_label: what the data is called in rows and tables (default: the dataset's name).
        seed: seed of the random weights when there is no checkpoint.
    """

    SUITE = SUITE

    model: str = "vit_cifar_t_ln"
    dataset: str = "cifar10"
    norm: str | None = None
    placement: str = "pre"
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    ema: bool = True
    weights: str | None = None
    num_classes: int | None = None
    data_dir: str | None = None
    clean_images: str | None = None
    clean_labels: str | None = None
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    batch_size: int = 256
    device: str = field(default_factory=default_device)
    amp: str | None = None
    data_label: str | None = None
    seed: int = 0

    def validate(self) -> None:
        """One-line errors for settings that cannot work together."""
        from dtn_bench.placement import check_placement

        D.dataset_spec(self.dataset)
        check_placement(self.placement)
        if self.data_dir is None:
            raise DTNBenchError(f"no --data-dir given. {D.download_hint(self.dataset)}")
        if (self.clean_images is None) != (self.clean_labels is None):
            raise DTNBenchError("give --clean-images and --clean-labels together")
        check_data_label(self.data_label)
        check_count("batch_size", self.batch_size)
        check_count("num_classes", self.num_classes)
        check_device_amp(self.device, self.amp)

    def run_key(self) -> str:
        """SHA-256 (hex) of every setting that can change a number."""
        keyed = {k: v for k, v in self.as_dict().items() if k not in RESUME_IGNORED}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()

    def default_run_id(self) -> str:
        """``<model>[-<norm>][-<placement>]-<dataset>-<first 10 hex of the run key>`` (placement when not ``pre``)."""
        parts = [self.model] + ([self.norm] if self.norm else []) + ([self.placement] if self.placement != "pre"
                                                                       else []) + [self.dataset]
        return "-".join(parts + [self.run_key()[:10]])

    @property
    def data_name(self) -> str:
        """The data as tables show it."""
        return self.data_label or D.DATASETS[self.dataset].label


@dataclass
class Group:
    """One (corruption, severity) pair, or the clean set as ``("clean", 0)``, with its images."""

    corruption: str
    severity: int
    source: D.Source


@dataclass
class Plan:
    """Everything :func:`measure` needs, checked by :func:`plan`."""

    config: CifarCConfig
    model: torch.nn.Module
    norm_label: str
    groups: list[Group]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_model(cfg: CifarCConfig, classes: int, *, debug: bool = False) -> tuple[torch.nn.Module, dict | None]:
    """The model in eval mode, built under ``torch.manual_seed(cfg.seed)``, its checkpoint loaded."""
    from dtn_bench.models.small import create

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = create(cfg.model, norm=cfg.norm, placement=cfg.placement, num_classes=classes)
    except TypeError as e:
        raise DTNBenchError(f"cannot build model {cfg.model}: {e}") from e
    info = None
    if cfg.checkpoint is not None:
        from dtn_bench.checkpoint import load_checkpoint

        info = load_checkpoint(model, cfg.checkpoint, ema=cfg.ema, debug=debug)
    return model.eval(), info


def plan(cfg: CifarCConfig, *, debug: bool = False) -> Plan:
    """Check everything before any work: settings, model, checkpoint, data layout, arrays, labels, input size.

    Returns:
        A :class:`Plan` whose config has the checkpoint hash, the weights and the resolved corruption list.
    """
    from dtn_bench.imagenet_c.data import resolve_corruptions, resolve_severities
    from dtn_bench.models.small import own_norm

    cfg.validate()
    spec = D.DATASETS[cfg.dataset]
    corruptions = resolve_corruptions(cfg.corruptions)
    severities = resolve_severities(cfg.severities)
    model, info = build_model(cfg, cfg.num_classes or spec.classes, debug=debug)
    n_model = model_classes(model)
    size, mean, std = model_input(model)
    if size != (spec.size, spec.size):
        raise DTNBenchError(f"{cfg.model} takes {size[0]}x{size[1]} images but {spec.label} is {spec.size}x{spec.size}"
                            f" (evaluated as released, no resize): use a {spec.size} px model")
    cfg = replace(cfg, corruptions=corruptions, severities=severities, data_dir=str(Path(cfg.data_dir).resolve()),
                  checkpoint_sha256=info["sha256"] if info else random_init_label(cfg.seed),
                  weights=info["weights"] if info else "none")
    groups = _clean_group(cfg, n_model)
    if spec.layout == "npy":
        arrays = D.check_arrays(cfg.data_dir, corruptions, cfg.dataset, n_model)
        n = arrays.per_severity
        groups += [Group(c, s, D.ArraySource(arrays.images[c], arrays.labels, (s - 1) * n, n))
                   for c in corruptions for s in severities]
    else:
        _, sources = D.folder_sources(cfg.data_dir, corruptions, severities, cfg.dataset, n_model)
        groups += [Group(c, s, sources[(c, s)]) for c in corruptions for s in severities]
    return Plan(cfg, model, cfg.norm or own_norm(cfg.model), groups, mean, std,
                warnings=[] if info else [random_init_warning(cfg.seed)],
                notes=[info["message"]] if info else [])


def _clean_group(cfg: CifarCConfig, classes: int) -> list[Group]:
    if cfg.clean_images is None:
        return []
    images, labels = D.load_clean(cfg.clean_images, cfg.clean_labels, cfg.dataset, classes)
    return [Group(CLEAN, 0, D.ArraySource(images, labels, 0, len(labels)))]


def row_settings(cfg: CifarCConfig) -> dict[str, Any]:
    """The setting columns every row of the run holds."""
    return dict(dataset=cfg.dataset, data=cfg.data_name, checkpoint_sha256=cfg.checkpoint_sha256 or "none",
                weights=cfg.weights or "none", amp=cfg.amp or "fp32", placement=cfg.placement)


def measure(p: Plan, ctx) -> Iterator[tuple[str, list[dict]]]:
    """The ``cifar-c`` suite's measurement: ``(label, rows)`` per finished pair, in plan order.

    Pairs in ``ctx.done`` are skipped; every rank evaluates its shard of every pending pair and yields the summed
    rows (the runner writes rank 0's).

    Yields:
        ``("<corruption>/<severity>", rows)``: ``n_images``, ``top1_err`` and ``throughput_img_s`` of the pair.

    Events (``ctx.emit``): ``pending`` (pending, skipped, images, world), ``batch`` (images, over all ranks),
    ``pair`` (corruption, severity, top1_err, n_images), ``done`` (seconds, images, img_s).
    """
    from dtn_bench.distributed import DistContext

    cfg = p.config
    dist = ctx.dist if ctx.dist is not None else DistContext()
    device = rank_device(cfg.device)
    model = p.model.to(device)
    mean = torch.tensor(p.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, device=device).view(1, -1, 1, 1)
    common = row_settings(cfg)
    pending = [g for g in p.groups if not ctx.is_done(g.corruption, g.severity)]
    images = sum(len(g.source) for g in pending)
    ctx.emit("pending", pending=len(pending), skipped=len(p.groups) - len(pending), images=images, world=dist.world)
    t0 = time.perf_counter()
    for g in pending:
        t = time.perf_counter()
        n, hits = _pair_counts(g, model, mean, std, device, cfg, dist, ctx.emit)
        err = 1.0 - hits / n if n else float("nan")
        seconds = time.perf_counter() - t
        settings = dict(corruption=g.corruption, severity=g.severity, **common)
        yield f"{g.corruption}/{g.severity}", [
            make_row(SUITE, cfg.model, p.norm_label, "n_images", n, COUNT_UNIT, **settings),
            make_row(SUITE, cfg.model, p.norm_label, "top1_err", err, **settings),
            make_row(SUITE, cfg.model, p.norm_label, "throughput_img_s", n / seconds if seconds > 0 else float("nan"),
                     **settings)]
        ctx.emit("pair", corruption=g.corruption, severity=g.severity, top1_err=err, n_images=n)
    seconds = time.perf_counter() - t0
    ctx.emit("done", seconds=seconds, images=images, img_s=images / seconds if seconds else 0.0)


def _pair_counts(g: Group, model, mean, std, device, cfg: CifarCConfig, dist, emit) -> tuple[int, int]:
    """(images, top-1 hits) of pair ``g`` over all ranks; a fatal problem on any rank stops every rank."""
    index = np.arange(dist.rank, len(g.source), dist.world)  # exact: no padding, nothing counted twice
    counts = torch.zeros(3, dtype=torch.int64)  # images, hits, fatal flag
    fatal = None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
    for b in range(0, len(index), cfg.batch_size):
        chunk = index[b:b + cfg.batch_size]
        try:
            batch = g.source.read(chunk)
        except DTNBenchError as e:
            fatal, counts[2] = str(e), 1
            break
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
        y = torch.from_numpy(g.source.labels[chunk]).to(device)
        with torch.inference_mode(), autocast:
            pred = model(x).float().argmax(dim=1)
        counts[0] += len(chunk)
        counts[1] += int(pred.eq(y).sum())
        emit("batch", images=len(chunk) * dist.world)
    total = dist.sum(counts.clone())
    if int(total[2]):
        raise DTNBenchError(next(m for m in dist.gather(fatal) if m))
    return int(total[0]), int(total[1])
