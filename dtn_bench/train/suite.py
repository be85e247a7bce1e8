"""The registered ``train`` suite and its one-call Python function :func:`train`.

One run folder ``results/train/<run id>/`` per training run: ``rows.csv`` / ``rows.parquet`` (appended every epoch),
``config.json`` (the resolved recipe), ``checkpoints/last.pth.tar`` and ``checkpoints/model_best.pth.tar`` (timm's
``CheckpointSaver`` layout), ``table.md`` / ``table.tex``, ``curves.png`` and ``diagnostics.png``.

Resume: the checkpoint is written before an epoch's rows, and it holds the records of every finished epoch, so a run
killed at any point continues from ``last.pth.tar`` and first writes the rows of any checkpointed epoch that the
rows file lacks.

Events (typed, :mod:`dtn_bench.events`; ``on_event(event)``, rank 0): ``RunSettings`` (world, device, run_id),
``DataLoaded`` (name, train, val, classes), ``TrainStart`` / ``TrainStep`` / ``TrainEpoch`` (the loop's events, see
:mod:`dtn_bench.train.loop`), and the runner's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dtn_bench.errors import DTNBenchError
from dtn_bench.events import DataLoaded, Handler, RunSettings
from dtn_bench.results.schema import make_row
from dtn_bench.runner import Report, RunContext, RunResult, Suite, run_suite
from dtn_bench.suites import register
from dtn_bench.train import report
from dtn_bench.train.config import HOW_KEYS, SUITE, TrainConfig

UNITS = {"lr": "lr", "throughput_img_s": "img/s", "train_time_s": "s", "epoch_time_s": "s", "params": "count",
         "ln_share_var": "fraction", "ln_share_mean": "fraction", "saturated_frac": "fraction"}
_DATA_CACHE: dict[tuple, Any] = {}


def norm_label(cfg: TrainConfig) -> str:
    """The normaliser the rows name: ``cfg.norm``, else the one the model is named for (``default`` for timm's)."""
    from dtn_bench.models.small import own_norm

    return cfg.norm or own_norm(cfg.model)


def load(cfg: TrainConfig):
    """The checked data of ``cfg`` (kept for the process, so the check before the run and the run read it once)."""
    from dtn_bench.train.data import load_data

    key = (cfg.dataset, cfg.data_dir)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(cfg.dataset, cfg.data_dir)
    return _DATA_CACHE[key]


def epoch_rows(record: dict, cfg: TrainConfig, data_name: str, params: int | None = None) -> list[dict]:
    """The tidy rows of one epoch's record (:class:`~dtn_bench.train.loop.EpochRecord` as a dict)."""
    common = {"recipe": cfg.recipe, "data": data_name, "seed": cfg.seed, "epoch": int(record["epoch"]),
              "placement": cfg.placement}
    model, norm = cfg.model, norm_label(cfg)

    def row(metric: str, value: float, split: str = "-", weights: str = "-", layer: str = "-") -> dict:
        return make_row(SUITE, model, norm, metric, value, UNITS.get(metric, "1") if metric not in
                        ("loss", "top1_acc", "top5_acc") else None, split=split, weights=weights, layer=layer,
                        **common)

    rows = [row("loss", record["train_loss"], "train", "raw"), row("lr", record["lr"], "train"),
            row("throughput_img_s", record["images"] / max(record["train_seconds"], 1e-12), "train"),
            row("train_time_s", record["train_seconds"], "train"), row("epoch_time_s", record["epoch_seconds"])]
    for weights, val in record["val"].items():
        rows += [row("top1_acc", val["top1"], "val", weights), row("top5_acc", val["top5"], "val", weights),
                 row("loss", val["loss"], "val", weights)]
    rows += [row(metric, value, "val", "raw", layer) for layer, metric, value in record["diagnostics"]]
    if params is not None:
        rows.append(row("params", params))
    return rows


def _check_world(cfg: TrainConfig, dist) -> None:
    if cfg.world_size != dist.world:
        raise DTNBenchError(f"train: the config is for {cfg.world_size} process(es) but this job has {dist.world} "
                            "(WORLD_SIZE)")


def run(cfg: TrainConfig, ctx: RunContext) -> Iterator[tuple[str, list[dict]]]:
    """Train ``cfg``; ``(label, rows)`` per epoch (epochs in ``ctx.done`` are not yielded again).

    Raises:
        DTNBenchError: another number of processes than the config's, a checkpoint of other settings, a NaN loss.
    """
    from dtn_bench.distributed import DistContext
    from dtn_bench.train import loop

    dist = ctx.dist or DistContext()
    _check_world(cfg, dist)
    data = load(cfg)
    loop.check_fits(cfg, data)
    ctx.emit(RunSettings(world=dist.world, device=str(dist.device),
                         run_id=ctx.run_dir.name if ctx.run_dir is not None else None))
    ctx.emit(DataLoaded(name=data.name, train=len(data.train), val=len(data.val), classes=data.classes))
    folder = Path(ctx.run_dir or ".") / "checkpoints"
    r = loop.build(cfg, data, folder, dist)
    for record in r.history:
        if not ctx.is_done(record["epoch"]):
            yield f"epoch {record['epoch'] + 1} (checkpointed)", epoch_rows(record, cfg, data.name,
                                                                           r.params if record["epoch"] == 0 else None)
    for record in loop.epochs(r, ctx.emit):
        yield f"epoch {record.epoch + 1}", epoch_rows(asdict(record), cfg, data.name,
                                                      r.params if record.epoch == 0 else None)



def _device(cfg: TrainConfig, rank: int = 0) -> str:
    from dtn_bench.distributed import resolve_device

    return str(resolve_device(cfg.device, rank))


TRAIN_SUITE = register(Suite(
    SUITE, "Train a vision model with a recipe (authors, deit, cifar, tiny-imagenet, quick) from timm's pieces: "
    "per-epoch accuracy of the raw and EMA weights, curves, normaliser diagnostics, timm-layout checkpoints",
    {"top1_acc": True, "top5_acc": True, "loss": False, "throughput_img_s": True, "train_time_s": False},
    TrainConfig, run,
    Report(report.render, report.summary_table, "training runs",
           {"curves.png": report.curves_plot, "diagnostics.png": report.diagnostics_plot},
           console=report.console),
    command="train", resume_key=("epoch",), steps=lambda cfg: cfg.epochs + cfg.cooldown_epochs,
    resume_ignored=HOW_KEYS, device=lambda cfg, rank: _device(cfg, rank), distributed=True,
    table_help="Training runs: last-epoch top-1 / top-5 of the raw and EMA weights, the best top-1, img/s, time."))


# ------------------------------------------------------------------------------------------------------------------
# before a run
def check_resume(out: str | Path, run_id: str | None, cfg: TrainConfig | None) -> TrainConfig:
    """The config of the run ``run_id`` to continue: the recorded one, which ``cfg`` (when given) must equal.

    Raises:
        DTNBenchError: no run id, no such run folder, an unreadable ``config.json``, or ``cfg`` differing from it in
            a training setting (the first one named).
    """
    from dtn_bench.checks import read_json_object

    if run_id is None:
        raise DTNBenchError("train: --resume needs the run id of the run to continue")
    folder = Path(out) / SUITE / run_id
    if not folder.is_dir():
        raise DTNBenchError(f"--resume {run_id}: no run folder {folder}")
    stored = read_json_object(folder / "config.json", hint=" (the run cannot be resumed)")
    try:
        recorded = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
    except TypeError as e:
        raise DTNBenchError(f"--resume {run_id}: {folder / 'config.json'} is not a train config ({e})") from None
    if cfg is None:
        return recorded
    old, new = recorded.training_settings(), cfg.training_settings()
    for key in old:
        if old[key] != new[key]:
            raise DTNBenchError(f"--resume {run_id}: the run was made with {key}={old[key]!r}, this command gives "
                                f"{key}={new[key]!r}; resume it with its own settings (--resume alone)")
    return cfg


def over_recorded(out: str | Path, run_id: str | None, settings: dict) -> TrainConfig:
    """The recorded config of the run ``run_id`` with ``settings`` over it (type-checked and validated)."""
    from dataclasses import replace

    from dtn_bench.fields import check_values

    cfg = replace(check_resume(out, run_id, None), **check_values(TrainConfig, settings, "train"))
    cfg.validate()
    return cfg


def prepare(cfg: TrainConfig) -> None:
    """Every check before any run folder is made: the device, the data's layout and size, the model."""
    import torch

    from dtn_bench.train import loop

    cfg.check_device(torch.device(_device(cfg)))
    data = load(cfg)
    loop.check_fits(cfg, data)
    loop.build_model(cfg, data.classes)


# ------------------------------------------------------------------------------------------------------------------
# Python API
def train(recipe: str | TrainConfig | None = "quick", *, out: str | Path = "results", run_id: str | None = None,
          resume: bool = False, on_event: Handler | None = None, **settings: Any) -> RunResult:
    """Train one model as ``dtn-bench train`` does (through ``run_suite``); under torchrun every process calls it.

    Example::

        from dtn_bench.train import train

        result = train("quick", model="vit_cifar_t_dtn", seed=1, out="results")
        print(result.path, result.rows.query("metric == 'top1_acc'"))

    Args:
        recipe: a recipe of ``suites/train.yaml``, a :class:`TrainConfig`, or ``None`` (the dataclass defaults; with
            ``resume``: the recorded config of the run, ``settings`` over it).
        out: the results root; the run folder is ``out/train/<run id>``.
        run_id: the run folder's name (default: a fresh timestamped one).
        resume: continue the run ``run_id`` from its last checkpoint.
        on_event: ``on_event(event)`` on rank 0 (this module's events and the runner's).
        **settings: :class:`TrainConfig` fields over the recipe (every item counts, ``None`` included).
            ``world_size`` not given: this job's (torchrun's ``WORLD_SIZE``).

    Returns:
        The :class:`~dtn_bench.runner.RunResult` (run folder and rows; ``None`` on ranks other than 0).

    Raises:
        DTNBenchError: bad settings, data that is missing or does not fit, a run that cannot be resumed (before any
            file is written); a NaN loss (the epochs finished so far are kept).
    """
    from dataclasses import replace

    from dtn_bench.distributed import world_size_from_env

    settings.setdefault("world_size", world_size_from_env())
    if isinstance(recipe, TrainConfig):
        cfg = replace(recipe, **settings)
        cfg.validate()
    elif resume and recipe is None:
        cfg = over_recorded(out, run_id, settings)
    else:
        cfg = TrainConfig.resolve(recipe, settings)[0]
    if resume:
        cfg = check_resume(out, run_id, cfg)
    prepare(cfg)
    return run_suite(TRAIN_SUITE, cfg, out=out, run_id=run_id, resume=resume, on_event=on_event)
