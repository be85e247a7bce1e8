"""One training run from timm's pieces: optimizer and scheduler factories, transforms, Mixup, losses, EMA, AMP.

:func:`build` makes the run (``torch.manual_seed(seed)`` first, so the model's initial weights are the same on every
process), :func:`epochs` trains it and yields an :class:`EpochRecord` per epoch. Each epoch:

1. the sampler is set to the epoch (timm's ``RepeatAugSampler`` for repeated augmentation, else
   :class:`GlobalBatchSampler`: a seeded permutation per epoch cut into global batches, each split into equal
   contiguous parts over the processes, so a step sees the same images whatever the number of processes);
2. every update: mixup / cutmix (timm ``Mixup``), the forward under autocast (``precision``), the loss (timm's
   ``SoftTargetCrossEntropy`` with mixup, ``LabelSmoothingCrossEntropy`` with smoothing), its mean over the processes
   checked finite (a NaN or infinite loss stops the run before the update, with a one-line message naming the last
   good checkpoint), backward (timm's ``NativeScaler`` for fp16), gradient clipping, the step, the EMA update
   (``ModelEmaV3``, ``step`` = updates so far, as timm's ``train.py``) and, with ``sched_on_updates``, the scheduler;
3. validation top-1 / top-5 / loss of the raw and the EMA weights (images sharded over the processes, exact sums),
   the normaliser diagnostics (:mod:`dtn_bench.train.diagnostics`), the scheduler's epoch step;
4. the checkpoint ``last.pth.tar`` (and ``model_best.pth.tar`` when the metric improved), written atomically by rank 0
   in the layout of timm's ``CheckpointSaver``: ``epoch``, ``arch``, ``state_dict``, ``optimizer``, ``version``,
   ``args``, ``state_dict_ema``, ``metric`` (the EMA weights' top-1 when there is an EMA, as the DTN authors' run
   records it), ``amp_scaler``; for resuming also ``scheduler``, every process's random states (torch, CUDA, numpy,
   Python), the epochs' records and the run's settings.

A run continues from ``last.pth.tar`` when there is one: model, EMA, optimizer, scheduler, scaler and random states
are restored and the sampler is set from the epoch, so the resumed run goes on exactly where the uninterrupted one
was (bit-identical weights on the CPU with the same settings). A checkpoint written by other settings is refused.

Measurement only: progress goes to ``on_event(event)`` as typed events (:class:`~dtn_bench.events.TrainStart`,
:class:`~dtn_bench.events.TrainStep`, :class:`~dtn_bench.events.TrainEpoch`).
"""

from __future__ import annotations

import argparse
import io
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dtn_bench.distributed import DistContext
from dtn_bench.errors import DTNBenchError
from dtn_bench.events import Handler, TrainEpoch, TrainStart, TrainStep, ignore
from dtn_bench.train.config import TrainConfig
from dtn_bench.train.data import ImageSet, TrainData

CHECKPOINT_VERSION = 2  # timm's CheckpointSaver writes 2
LAST, BEST = "last.pth.tar", "model_best.pth.tar"
SHUFFLE_SEED_STRIDE = 100_003
"""The sampler of epoch ``e`` is seeded with ``seed * SHUFFLE_SEED_STRIDE + e`` (timm / DeiT seed it with the epoch
alone, the same order for every seed)."""


# ------------------------------------------------------------------------------------------------------------------
class GlobalBatchSampler(torch.utils.data.Sampler):
    """This process's share of every global batch: a seeded permutation per epoch, cut into ``batch``-sized steps.

    Step ``t`` of epoch ``e`` is ``perm_e[t * batch : (t + 1) * batch]`` (``perm_e = randperm(n)`` from
    ``set_epoch(e)``'s seed); process ``r`` of ``W`` takes its ``r``-th contiguous ``batch / W``. The last partial
    batch of an epoch is dropped.
    """

    def __init__(self, n: int, batch: int, world: int = 1, rank: int = 0):
        """A sampler over ``n`` items for ``world`` processes."""
        self.n, self.batch, self.world, self.rank = n, batch, world, rank
        self.local = batch // world
        self.steps = n // batch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order is drawn (its seed)."""
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        for t in range(self.steps):
            start = t * self.batch + self.rank * self.local
            yield from perm[start : start + self.local]

    def __len__(self) -> int:
        return self.steps * self.local


def make_sampler(cfg: TrainConfig, dataset, world: int, rank: int):
    """Timm's ``RepeatAugSampler`` with ``repeated_aug``, else a :class:`GlobalBatchSampler`."""
    if cfg.repeated_aug:
        from timm.data.distributed_sampler import RepeatAugSampler

        return RepeatAugSampler(dataset, num_replicas=world, rank=rank, shuffle=True, num_repeats=cfg.aug_repeats)
    return GlobalBatchSampler(len(dataset), cfg.batch, world, rank)


def check_fits(cfg: TrainConfig, data: TrainData) -> int:
    """The number of updates per epoch; a one-line error when the training set cannot fill one batch.

    Raises:
        DTNBenchError: fewer training images (or, with repeated augmentation, sampled images per process) than a
            batch.
    """
    if len(data.train) < cfg.batch:
        raise DTNBenchError(f"train: batch {cfg.batch} is larger than the training set ({len(data.train)} images of "
                            f"{data.name}); lower it with --set batch=N")
    steps = len(make_sampler(cfg, data.train.labels, cfg.world_size, 0)) // cfg.local_batch
    if steps < 1:
        raise DTNBenchError(f"train: the repeated-augmentation sampler gives each process fewer images per epoch than "
                            f"its batch ({cfg.local_batch}); lower the batch or --set repeated_aug=false")
    return steps


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class EpochRecord:
    """What one epoch measured (plain data: it is kept in the checkpoint too).

    Attributes:
        epoch: 0-based.
        train_loss: the mean training loss (the objective: smoothed / soft targets) over its updates.
        lr: the learning rate of the epoch's last update.
        images: training images seen (all processes).
        train_seconds: time in the training updates.
        epoch_seconds: the whole epoch: training, validation, diagnostics, checkpoint.
        val: ``{"raw" | "ema": {"top1", "top5", "loss"}}`` on the validation split.
        diagnostics: ``[[layer, metric, value], ...]`` (:func:`dtn_bench.train.diagnostics.measure`).
    """

    epoch: int
    train_loss: float
    lr: float
    images: int
    train_seconds: float
    epoch_seconds: float = 0.0
    val: dict[str, dict[str, float]] = field(default_factory=dict)
    diagnostics: list[list] = field(default_factory=list)


@dataclass
class Run:
    """One run being trained: its pieces, where its checkpoints go and what it has done."""

    cfg: TrainConfig
    data: TrainData
    dist: DistContext
    model: nn.Module
    net: nn.Module
    ema: Any
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    loss_fn: nn.Module
    mixup: Any
    sampler: Any
    loader: Any
    val_loader: Any
    diag_images: torch.Tensor | None
    amp: torch.dtype | None
    folder: Path
    params: int
    total_epochs: int
    info: dict
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"metric": None, "epoch": None})
    start_epoch: int = 0

    @property
    def last_path(self) -> Path:
        """The run's ``last.pth.tar``."""
        return self.folder / LAST

    @property
    def updates_per_epoch(self) -> int:
        """Updates in one epoch."""
        return len(self.loader)


# ------------------------------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg`` (:func:`dtn_bench.models.small.create`) for ``num_classes`` classes.

    Raises:
        DTNBenchError: an unknown model or normaliser, or a zoo layout whose class token would never join.
    """
    from dtn_bench.models.small import create
    from dtn_bench.models.vit import LocalViT

    try:
        model = create(cfg.model, norm=cfg.norm, placement=cfg.placement, **cfg.model_kwargs(num_classes))
    except TypeError as e:  # a shape keyword the model does not take
        raise DTNBenchError(f"train: model {cfg.model} does not take these settings: {e}") from None
    if isinstance(model, LocalViT) and model.local_up_to_layer >= len(model.blocks):
        raise DTNBenchError(f"train: {cfg.model} has {len(model.blocks)} blocks but its class token joins before "
                            f"block {model.local_up_to_layer}, so it would never join; set local_up_to_layer < depth")
    return model


def transforms(cfg: TrainConfig, model: nn.Module) -> tuple[Any, Any, dict]:
    """Timm's training and evaluation transforms for ``model``, and its data config (size, mean, std, crop)."""
    from timm.data import create_transform, resolve_model_data_config

    dc = resolve_model_data_config(model)
    train = create_transform(dc["input_size"], is_training=True, train_crop_mode=cfg.train_crop_mode,
                             scale=cfg.scale, ratio=cfg.ratio, hflip=cfg.hflip, vflip=0.0,
                             color_jitter=cfg.color_jitter, auto_augment=cfg.aa,
                             interpolation=cfg.train_interpolation, mean=dc["mean"], std=dc["std"],
                             re_prob=cfg.reprob, re_mode=cfg.remode, re_count=cfg.recount)
    val = create_transform(dc["input_size"], is_training=False, interpolation=dc["interpolation"], mean=dc["mean"],
                           std=dc["std"], crop_pct=dc["crop_pct"])
    return train, val, dc


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    extra: dict[str, Any] = {}
    if cfg.opt_eps is not None:
        extra["eps"] = cfg.opt_eps
    if cfg.opt_betas is not None:
        extra["betas"] = tuple(cfg.opt_betas)
    return create_optimizer_v2(model, opt=cfg.opt, lr=cfg.scaled_lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum, **extra)


def _scheduler(cfg: TrainConfig, opt, updates_per_epoch: int):
    from timm.scheduler import create_scheduler_v2

    return create_scheduler_v2(opt, sched=cfg.sched, num_epochs=cfg.epochs, cooldown_epochs=cfg.cooldown_epochs,
                               min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr, warmup_epochs=cfg.warmup_epochs,
                               step_on_epochs=not cfg.sched_on_updates, updates_per_epoch=updates_per_epoch)


def _loss(cfg: TrainConfig, classes: int) -> tuple[nn.Module, Any]:
    """The training loss and the mixup function (``None`` without mixup / cutmix), as timm's ``train.py``."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.mixup_active:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode, label_smoothing=cfg.smoothing,
                      num_classes=classes)
        return SoftTargetCrossEntropy(), mixup
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing), None
    return nn.CrossEntropyLoss(), None


def _loaders(cfg: TrainConfig, data: TrainData, dist: DistContext, train_tf, val_tf):
    from torch.utils.data import DataLoader, Subset

    train_set = ImageSet(data.train, train_tf)
    sampler = make_sampler(cfg, train_set, dist.world, dist.rank)
    pin = dist.device.type == "cuda"
    loader = DataLoader(train_set, batch_size=cfg.local_batch, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, pin_memory=pin)
    val_set = Subset(ImageSet(data.val, val_tf), range(dist.rank, len(data.val), dist.world))
    val_loader = DataLoader(val_set, batch_size=cfg.eval_batch or cfg.local_batch, shuffle=False,
                            num_workers=cfg.workers, pin_memory=pin)
    return sampler, loader, val_loader


def _diag_batch(cfg: TrainConfig, data: TrainData, val_tf, device) -> torch.Tensor:
    n = min(cfg.diag_images, len(data.val))
    val = ImageSet(data.val, val_tf)
    return torch.stack([val[i][0] for i in range(n)]).to(device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(cfg: TrainConfig, data: TrainData, folder: Path, dist: DistContext | None = None) -> Run:
    """The run of ``cfg`` on ``data`` with its checkpoints in ``folder``; continued from ``folder/last.pth.tar``.

    Raises:
        DTNBenchError: GPU-only settings on the CPU, a model that cannot be built, or a checkpoint of other settings.
    """
    from timm.utils import ModelEmaV3, NativeScaler

    from dtn_bench.train.diagnostics import gated_layers

    dist = dist or DistContext()
    dev = dist.device
    cfg.check_device(dev)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)  # the initial weights: the same on every process
    model = build_model(cfg, data.classes).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_tf, val_tf, dc = transforms(cfg, model)
    opt = _optimizer(cfg, model)
    sampler, loader, val_loader = _loaders(cfg, data, dist, train_tf, val_tf)
    sched, total = _scheduler(cfg, opt, len(loader))
    loss_fn, mixup = _loss(cfg, data.classes)
    ema = ModelEmaV3(model, decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup) if cfg.model_ema else None
    amp = cfg.autocast_dtype(dev)
    scaler = NativeScaler(device=dev.type) if amp == torch.float16 else None
    net = model
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                      find_unused_parameters=bool(gated_layers(model)))
    if cfg.compile:
        net = torch.compile(net)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    diag = _diag_batch(cfg, data, val_tf, dev) if dist.is_main else None
    info = {"params": sum(p.numel() for p in model.parameters()), "input_size": tuple(dc["input_size"]),
            "mean": tuple(dc["mean"]), "std": tuple(dc["std"]), "crop_pct": dc["crop_pct"],
            "interpolation": dc["interpolation"], "lr": cfg.scaled_lr, "updates_per_epoch": len(loader),
            "epochs": total, "classes": data.classes, "data": data.name}
    run = Run(cfg, data, dist, model, net, ema, opt, sched, scaler, loss_fn, mixup, sampler, loader, val_loader, diag,
              amp, Path(folder), info["params"], total, info)
    _seed_everything(cfg.seed * 1_000_003 + 7919 * (dist.rank + 1))  # this process's augmentation and dropout
    if run.last_path.is_file():
        restore(run)
    return run


# ------------------------------------------------------------------------------------------------------------------
# checkpoints
def _rng_state(device: torch.device) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                       int(has_gauss), float(gauss)],
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def run_settings(run: Run) -> dict:
    """What a checkpoint must agree with to be continued: the training settings, the processes and the data."""
    return {**run.cfg.training_settings(), "world_size": run.dist.world, "data": run.data.name}


def read_checkpoint(path: Path) -> dict:
    """A checkpoint file of this module (timm's layout; ``argparse.Namespace`` args allowed)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise DTNBenchError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0][:300]) from None


def restore(run: Run) -> None:
    """Continue ``run`` from its ``last.pth.tar`` (refused when it was written by other settings)."""
    ck = read_checkpoint(run.last_path)
    saved = ck.get("dtn_bench", {}).get("settings")
    now = run_settings(run)
    if ck.get("version") != CHECKPOINT_VERSION or saved is None:
        raise DTNBenchError(f"{run.last_path} is not a dtn-bench training checkpoint; start a new run")
    diff = next((k for k in sorted(set(saved) | set(now)) if _plain(saved.get(k)) != _plain(now.get(k))), None)
    if diff is not None:
        raise DTNBenchError(f"{run.last_path} was written with {diff}={saved.get(diff)!r}, this run has "
                            f"{diff}={now.get(diff)!r}; continue it with the settings it was made with")
    run.model.load_state_dict(ck["state_dict"])
    if run.ema is not None:
        run.ema.module.load_state_dict(ck["state_dict_ema"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    if run.scaler is not None:
        run.scaler.load_state_dict(ck["amp_scaler"])
    rng = ck["rng"]
    _set_rng_state(rng[run.dist.rank] if run.dist.rank < len(rng) else rng[0], run.dist.device)
    run.history = [dict(h) for h in ck["history"]]
    run.best = dict(ck["best"])
    run.start_epoch = int(ck["epoch"]) + 1


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _state(run: Run, epoch: int, metric: float, rng: list) -> dict:
    cfg = run.cfg
    state = {"epoch": epoch, "arch": cfg.model, "state_dict": run.model.state_dict(),
             "optimizer": run.opt.state_dict(), "version": CHECKPOINT_VERSION,
             "args": argparse.Namespace(**cfg.as_dict()), "metric": metric}
    if run.ema is not None:
        state["state_dict_ema"] = run.ema.module.state_dict()
    if run.scaler is not None:
        state[run.scaler.state_dict_key] = run.scaler.state_dict()
    state.update(scheduler=run.sched.state_dict(), rng=rng, history=run.history, best=run.best,
                 dtn_bench={"settings": run_settings(run), "num_classes": run.data.classes,
                            "model_kwargs": cfg.model_kwargs(run.data.classes), "norm": cfg.norm,
                            "class_names": list(run.data.class_names)})
    return state


def save(run: Run, epoch: int, metric: float) -> None:
    """Write ``last.pth.tar`` (and ``model_best.pth.tar`` when ``metric`` is the best so far); all processes call it."""
    from dtn_bench.results.writer import atomic_write_bytes

    rng = run.dist.gather(_rng_state(run.dist.device))
    better = run.best["metric"] is None or metric > run.best["metric"]
    if better:
        run.best = {"metric": metric, "epoch": epoch}
    if run.dist.is_main:
        buffer = io.BytesIO()
        torch.save(_state(run, epoch, metric, rng), buffer)
        data = buffer.getvalue()
        atomic_write_bytes(run.last_path, data)
        if better:
            atomic_write_bytes(run.folder / BEST, data)
    run.dist.barrier()


# ------------------------------------------------------------------------------------------------------------------
# training
def epochs(run: Run, on_event: Handler | None = None) -> Iterator[EpochRecord]:
    """Train from ``run.start_epoch`` to the end; an :class:`EpochRecord` per finished (and checkpointed) epoch.

    Raises:
        DTNBenchError: a NaN or infinite training loss (the update is not applied; the checkpoints stay).
    """
    emit = on_event or ignore
    emit(TrainStart(start_epoch=run.start_epoch, **run.info))
    for epoch in range(run.start_epoch, run.total_epochs):
        t0 = time.perf_counter()
        record = _train_epoch(run, epoch, emit)
        record.val = {"raw": evaluate(run, run.model)}
        if run.ema is not None:
            record.val["ema"] = evaluate(run, run.ema.module)
        if run.dist.is_main:
            from dtn_bench.train.diagnostics import measure

            record.diagnostics = [[k[0], k[1], v] for k, v in measure(run.model, run.diag_images).items()]
        metric = record.val["ema" if run.ema is not None else "raw"]["top1"]
        run.sched.step(epoch + 1, metric)
        record.epoch_seconds = time.perf_counter() - t0
        run.history.append(asdict(record))
        save(run, epoch, metric)
        emit(TrainEpoch(epoch=epoch, record=asdict(record)))
        yield record


def _nan_message(run: Run, value: float, epoch: int, step: int) -> str:
    where = (f"{run.last_path} (epoch {run.history[-1]['epoch'] + 1})" if run.history
             else "none (no epoch finished yet)")
    return (f"train: the training loss is {value} at epoch {epoch + 1}, step {step + 1}; stopped before that update. "
            f"Last good checkpoint: {where}. Try a lower lr (--set lr=...) or clip_grad")


def _train_epoch(run: Run, epoch: int, emit: Handler) -> EpochRecord:
    cfg, dist, dev = run.cfg, run.dist, run.dist.device
    run.model.train()
    run.sampler.set_epoch(cfg.seed * SHUFFLE_SEED_STRIDE + epoch)
    updates = epoch * run.updates_per_epoch
    loss_sum, images, seconds = 0.0, 0, 0.0
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(run.loader):
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if run.mixup is not None:
            x, y = run.mixup(x, y)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=run.amp or torch.float32, enabled=run.amp is not None):
            loss = run.loss_fn(run.net(x), y)
        value = dist.all_sum([float(loss.detach())])[0] / dist.world
        if not math.isfinite(value):
            raise DTNBenchError(_nan_message(run, value, epoch, step))
        _update(run, loss)
        updates += 1
        if run.ema is not None:
            run.ema.update(run.model, step=updates)
        if cfg.sched_on_updates:
            run.sched.step_update(num_updates=updates)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        loss_sum += value * cfg.batch
        images += cfg.batch
        emit(TrainStep(epoch=epoch, step=step + 1, steps=run.updates_per_epoch, loss=value,
                       lr=run.opt.param_groups[0]["lr"], img_s=images / max(seconds, 1e-9)))
    return EpochRecord(epoch, loss_sum / max(images, 1), float(run.opt.param_groups[0]["lr"]), images, seconds)


def _update(run: Run, loss: torch.Tensor) -> None:
    cfg = run.cfg
    run.opt.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler(loss, run.opt, clip_grad=cfg.clip_grad, parameters=run.model.parameters())
        return
    loss.backward()
    if cfg.clip_grad is not None:
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.opt.step()


@torch.no_grad()
def evaluate(run: Run, model: nn.Module) -> dict[str, float]:
    """Top-1, top-5 (top-k with k = min(5, classes)) and mean cross-entropy of ``model`` on the validation split.

    Each process scores its shard (images ``r, r + W, ...``); the counts are summed exactly.
    """
    dist, dev = run.dist, run.dist.device
    k = min(5, run.data.classes)
    was_training = model.training
    model.eval()
    top1 = top5 = loss = 0.0
    count = 0
    try:
        for x, y in run.val_loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if run.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=run.amp or torch.float32, enabled=run.amp is not None):
                logits = model(x)
            logits = logits.float()
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            best = logits.topk(k, dim=1).indices
            top1 += float((best[:, 0] == y).sum())
            top5 += float((best == y[:, None]).any(dim=1).sum())
            count += len(y)
    finally:
        model.train(was_training)
    top1, top5, loss, count = dist.all_sum([top1, top5, loss, float(count)])
    n = max(count, 1.0)
    return {"top1": top1 / n, "top5": top5 / n, "loss": loss / n}


# ------------------------------------------------------------------------------------------------------------------
def load_trained(path: str | Path, *, ema: bool = True, device: str = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """The model a ``dtn-bench train`` checkpoint holds, rebuilt from its recorded settings, in eval mode.

    The weights go through :func:`dtn_bench.checkpoint.load_checkpoint` (the EMA set when the file has one and
    ``ema``), as the evaluation suites load them.

    Returns:
        ``(model, config, load info)``.

    Raises:
        DTNBenchError: not a ``dtn-bench train`` checkpoint, or weights that do not fit.
    """
    from dtn_bench.checkpoint import load_checkpoint

    ck = read_checkpoint(Path(path))
    extra = ck.get("dtn_bench")
    if not isinstance(extra, dict) or not hasattr(ck.get("args"), "model"):
        raise DTNBenchError(f"{path} is not a dtn-bench train checkpoint (no recorded settings)")
    stored = vars(ck["args"])
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
    model = build_model(cfg, int(extra["num_classes"]))
    info = load_checkpoint(model, path, ema=ema)
    return model.to(device).eval(), cfg, info
