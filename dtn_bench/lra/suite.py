"""The ``lra-listops`` suite: its :class:`~dtn_bench.runner.Suite`, its measurement-only ``run``, :func:`listops`.

:func:`listops` is the one-call Python function on top of the runner.

:func:`run` prepares the data, yields the majority-class baseline rows, then trains every ``(model, norm, seed)``
of the config (:func:`dtn_bench.lra.train.train_run`) and yields each finished run's rows. The runner
(:func:`dtn_bench.runner.run_suite`) opens the process context (DDP under torchrun, ``ctx.dist``), writes the rows
on rank 0 and renders the report; checkpoints live in the run folder (``<run>/checkpoints/<model>-<norm>-seed<s>``),
so a resumed run (``resume=True``) skips the finished runs (resume key ``model, norm, seed``) and continues the
interrupted one from its last checkpoint.

Progress goes to the caller as typed events (:mod:`dtn_bench.events`, ``on_event(event)``, rank 0 only), besides
the runner's own (``Started``, ``UnitDone``, ``Rendered``):

- :class:`~dtn_bench.events.RunSettings` (``world``, ``device``, ``malloc_tuned``, ``run_id``): the run starts;
- :class:`~dtn_bench.events.Progress` of task ``data`` (samples generated; ``done`` when prepared);
- :class:`~dtn_bench.events.Note`: something the caller must report (truncated sequences);
- :class:`~dtn_bench.events.TrainingPlanned` (``total``: training steps of the runs to do, ``steps`` per run,
  ``run_id``, ``workers``: runs trained side by side): training starts;
- :class:`~dtn_bench.events.TrainingStart`, :class:`~dtn_bench.events.TrainingStep`,
  :class:`~dtn_bench.events.TrainingEval`: :func:`~dtn_bench.lra.train.train_run`'s events (model, norm, seed, step,
  steps, loss, acc, tokens_s, lr, val_acc, resumed_from);
- :class:`~dtn_bench.events.Trained` (``label``, ``test_accuracy``: the last checkpoint's): a run finished; its rows
  come next.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dtn_bench.checks import read_json_object
from dtn_bench.errors import DTNBenchError
from dtn_bench.events import Handler, Note, Progress, RunSettings, Trained, TrainingPlanned, TrainingProgress, Warn
from dtn_bench.lra import report
from dtn_bench.lra.config import SUITE, ListOpsConfig
from dtn_bench.runner import ConsoleTable, Report, RunContext, RunResult, Suite, run_suite
from dtn_bench.suites import register

LISTOPS_ROW_SETTINGS = ("preset", "max_len", "data", "placement")
"""ListOps row columns that must agree (with the training length, the ``step`` of the last checkpoint)."""
LISTOPS_NOT_TRAINING = ("models", "norms", "seeds", "device", "malloc_tuned", "workers")
"""``config.json`` fields of a ListOps run that may differ between combined runs (all others must agree)."""
RESUME_KEY = ("model", "norm", "seed")
"""The row columns of one finished training run (the baseline's are ``majority-class, none, -1``)."""
BASELINE = ("majority-class", "none", -1)


def _config_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check_listops(df, runs: list[Path]) -> None:
    """Checks that ListOps runs combine: each seed measured once, the same training length, the same settings.

    A ``(model, norm, seed)`` trained by two runs (the same seed on two machines, a run folder copied) would count
    as one seed with the mean of the two, and the spread and the intervals would use too few samples: it is refused,
    naming the runs. The settings are the runs' ``config.json`` fields but :data:`LISTOPS_NOT_TRAINING`; a field
    added after a run was recorded counts as its default, other fields some configs lack are not compared.
    """
    from dtn_bench.lra.config import with_defaults
    from dtn_bench.results.tables import check_same_settings

    if "checkpoint" in df.columns and "step" in df.columns:
        last = df[df["checkpoint"] == "last"].rename(columns={"step": "training steps"})
        check_same_settings(last, "table listops", ["training steps"])
    accuracy = df[df["metric"] == "accuracy"]
    if accuracy["value"].isna().any():
        row = accuracy[accuracy["value"].isna()].iloc[0]
        raise DTNBenchError(f"table listops: {run_label(row['model'], row['norm'], row['seed'])} has an accuracy row "
                            "without a value")
    folders = _run_folders(runs)
    configs = [with_defaults(c) for _, c in folders.values() if c is not None]
    common = [k for k in dict.fromkeys(k for c in configs for k in c)
              if k not in LISTOPS_NOT_TRAINING and all(k in c for c in configs)]
    for key in common:
        values = list(dict.fromkeys(_config_text(c[key]) for c in configs))
        if len(values) > 1:
            raise DTNBenchError(f"table listops: the runs differ in {key} ({', '.join(values)}); render them "
                                "separately")
    _check_seeds_once({folder: rows for folder, (rows, _) in folders.items()})  # runs of one setting: seeds once


def _check_seeds_once(folders: dict) -> None:
    """One-line error when two run folders (``folder -> rows``) trained the same ``(model, norm, seed)``."""
    seen: dict[tuple, Path] = {}
    for folder, rows in folders.items():
        last = rows[rows["checkpoint"] == "last"] if "checkpoint" in rows.columns else rows.iloc[:0]
        for model, norm, seed in last[list(RESUME_KEY)].drop_duplicates().itertuples(index=False, name=None):
            key = (model, norm, int(seed))
            if key == BASELINE:
                continue
            if key in seen:
                raise DTNBenchError(f"table listops: {run_label(*key)} was trained by two runs ({seen[key]} and "
                                    f"{folder}); a seed counts once: leave one of them out, or train the other "
                                    "with other seeds")
            seen[key] = folder


def _run_folders(runs: list[Path]) -> dict[Path, tuple]:
    """Every ListOps rows file's folder under ``runs`` (each once) -> (its ListOps rows, its config or ``None``).

    The config is the folder's ``config.json``; ``None`` when it has none.
    """
    from dtn_bench.results.io import _rows_files, read_rows

    found: dict[Path, tuple] = {}
    for path in runs:
        for file in _rows_files(Path(path)):
            folder = file.parent
            if folder.resolve() in {f.resolve() for f in found}:
                continue
            rows = read_rows(file)
            if "suite" not in rows.columns or not (rows["suite"] == SUITE).any():
                continue
            found[folder] = (rows[rows["suite"] == SUITE], _run_config(folder / "config.json"))
    return found


def _run_config(config_file: Path) -> dict | None:
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise DTNBenchError(f"{config_file}: cannot read the run's config ({e})") from None
    if not isinstance(config, dict):
        raise DTNBenchError(f"{config_file}: the run's config is not a JSON object")
    return config


# ------------------------------------------------------------------------------------------------------------------
# before a run
def check_resumable(folder: Path, world: int) -> None:
    """The run folder exists and was made with as many processes as this job has (checked before any process group).

    Raises:
        DTNBenchError: no such folder, an unreadable ``config.json``, or another number of processes.
    """
    if not folder.is_dir():
        raise DTNBenchError(f"--resume {folder.name}: no run folder {folder}")
    try:
        made = read_json_object(folder / "config.json").get("world_size", 1)
    except DTNBenchError as e:
        raise DTNBenchError(f"--resume {folder.name}: {e}") from None
    if made != world:
        raise DTNBenchError(f"--resume {folder.name}: the run was made with {made} process(es), this job has {world}; "
                            f"resume it with the same number (torchrun --nproc_per_node {made})")


def check_data_dir(cfg: ListOpsConfig) -> None:
    """``cfg.data_dir`` (when set) holds the three split files, readable, each with a sample.

    Checked before the run folder is made (a one-line error naming the file); every line is validated when the data
    are loaded.
    """
    if cfg.data_dir is not None:
        from dtn_bench.data.listops import SPLITS, split_path

        for split in SPLITS:
            path = split_path(cfg.data_dir, split)
            try:
                with path.open("rb") as handle:
                    header, first = handle.readline(), handle.readline()
            except OSError as e:
                raise DTNBenchError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
            if header and not first:
                raise DTNBenchError(f"{path}: 0 samples (a header and no data line); lra listops needs a {split} "
                                    "sample at least")


# ------------------------------------------------------------------------------------------------------------------
# the run
def _tuned(cfg: ListOpsConfig, device) -> bool:
    """Keep freed memory (glibc) on the CPU when ``cfg.tune_malloc``; whether it took effect."""
    from dtn_bench.timing import keep_freed_memory

    return keep_freed_memory() if cfg.tune_malloc and device.type == "cpu" else False


def _device(cfg: ListOpsConfig, rank: int = 0) -> str:
    from dtn_bench.distributed import resolve_device

    return str(resolve_device(cfg.device, rank))


def _env(cfg: ListOpsConfig, world: int) -> dict[str, Any]:
    """``malloc_tuned`` for ``env.json`` (and the config), tuning rank 0's allocator as the run will."""
    import torch

    return {"malloc_tuned": _tuned(cfg, torch.device(_device(cfg)))}


def _prepare(cfg: ListOpsConfig, ctx: RunContext, dist):
    from dtn_bench.lra.train import prepare_data

    ctx.emit(Progress("data", status="ListOps data"))
    data = prepare_data(cfg, dist, progress=lambda done, total: ctx.emit(Progress("data", completed=done, total=total,
                                                                                  status="ListOps data")))
    ctx.emit(Progress("data", done=True))
    for split in (data.train, data.val, data.test):
        if split.truncated:
            ctx.emit(Note(f"{split.truncated} sequences of {split.path} were truncated to {cfg.max_len} tokens "
                          "(--len-policy truncate)"))
    return data


def run(cfg: ListOpsConfig, ctx: RunContext) -> Iterator[tuple[str, list[dict]]]:
    """Measure the suite: the baseline rows, then the rows of each ``(model, norm, seed)`` as its training finishes.

    Those in ``ctx.done`` are skipped; an interrupted one continues from its ``last.pt``.

    Args:
        cfg: the config.
        ctx: the runner's context: ``ctx.dist`` (the process context), ``ctx.run_dir`` (checkpoints), ``ctx.done``,
            ``ctx.emit`` (the events of the module docstring).

    Yields:
        ``(label, rows)``.

    Raises:
        DTNBenchError: the config's ``world_size`` is not this job's; what data loading and training raise.
    """
    from dtn_bench.distributed import DistContext
    from dtn_bench.timing import denormals_flushed

    dist = ctx.dist or DistContext()
    if cfg.world_size != dist.world:
        raise DTNBenchError(f"lra listops: the config is for {cfg.world_size} process(es) but this job has "
                            f"{dist.world} (WORLD_SIZE)")
    with denormals_flushed(cfg.flush_denormal and dist.device.type == "cpu"):  # training on the CPU
        yield from _run(cfg, ctx, dist)


def _run(cfg: ListOpsConfig, ctx: RunContext, dist) -> Iterator[tuple[str, list[dict]]]:
    from dtn_bench.lra import train as lt

    run_id = ctx.run_dir.name if ctx.run_dir is not None else None
    ctx.emit(RunSettings(world=dist.world, device=str(dist.device), run_id=run_id,
                         malloc_tuned=_tuned(cfg, dist.device)))
    data = _prepare(cfg, ctx, dist)
    if not ctx.is_done(*BASELINE):
        yield "majority-class baseline", lt.baseline_rows(cfg, data)
    todo = [r for r in lt.runs(cfg) if not ctx.is_done(*r)]
    workers = _check_workers(cfg, dist, len(todo))
    ctx.emit(TrainingPlanned(total=len(todo) * cfg.steps, steps=cfg.steps, run_id=run_id, workers=workers))
    folders = [Path(ctx.run_dir) / "checkpoints" / lt.run_key(*r) for r in todo]
    if workers > 1:
        finished = _train_side_by_side(cfg, data, todo, folders, workers, ctx)
    else:
        finished = ((lt.train_run(cfg, data, *r, folder, dist,
                                  lambda kind, info: ctx.emit(TrainingProgress.from_info(kind, info))),
                     r) for r, folder in zip(todo, folders, strict=True))
    for result, (model, norm, seed) in finished:
        label = run_label(model, norm, seed)
        ctx.emit(Trained(label=label, test_accuracy=result.final["last"]["test"][0]))
        _warn_truncation(label, result.truncation, ctx)
        yield label, lt.result_rows(result, cfg, data)


def _warn_truncation(label: str, truncation: list[tuple[str, float, float]], ctx: RunContext) -> None:
    """A ``warning`` event when a 1-D DTN layer's window truncation bound passes the fp32 tolerance (train.py)."""
    over = [(name, bound, tol) for name, bound, tol in truncation if not bound <= tol]
    if over:
        name, bound, tol = max(over, key=lambda item: item[1] / item[2])
        ctx.emit(Warn(f"{label}: the DTN window may change the trained function: truncation bound {bound:.3g} > fp32 "
                      f"tolerance {tol:.3g} in {len(over)} of {len(truncation)} DTN layers (largest in {name}); row "
                      "dtn_truncation_bound, see DTN.truncation_bound"))


def run_label(model: str, norm: str, seed: int) -> str:
    """How events and the CLI name one ``(model, norm, seed)`` run (the ``trained`` event's ``label``)."""
    return f"{model}/{norm}/seed {seed}"


def _check_workers(cfg: ListOpsConfig, dist, runs: int) -> int:
    """The number of training processes to use, at most one per run left (:func:`dtn_bench.workers.count`).

    Raises:
        DTNBenchError: ``workers > 1`` under torchrun or off the CPU.
    """
    from dtn_bench.workers import count

    return count(cfg.workers, dist, runs, f"lra listops: --workers {cfg.workers} trains runs")


# ------------------------------------------------------------------------------------------------------------------
# runs side by side (cfg.workers > 1, on the CPU): dtn_bench.workers.SideBySide, one process per run at a time
_WORKER: dict[str, Any] = {}


def _worker_setup(cfg: ListOpsConfig, data) -> None:
    """Set up a training process before any torch operation.

    Denormals flushed (the thread pool inherits it), malloc tuned, the config and the data kept for its runs.
    """
    import torch

    from dtn_bench.timing import flush_denormals

    flush_denormals(cfg.flush_denormal)
    _tuned(cfg, torch.device("cpu"))
    _WORKER.update(cfg=cfg, data=data)


def _worker_train(model: str, norm: str, seed: int, folder: str):
    """Train one run in a worker process; its events go to the parent.

    :func:`dtn_bench.workers.report` passes them on, and ends the worker at its next event (every step) once the
    parent is gone.
    """
    from dtn_bench.lra import train as lt
    from dtn_bench.workers import report

    return lt.train_run(_WORKER["cfg"], _WORKER["data"], model, norm, seed, Path(folder), None,
                        lambda kind, info: report(TrainingProgress.from_info(kind, info)))


def _train_side_by_side(cfg: ListOpsConfig, data, todo: list[tuple], folders: list[Path], workers: int,
                        ctx: RunContext) -> Iterator[tuple[Any, tuple]]:
    """Train ``todo`` in ``workers`` processes; yields ``(result, run)`` in the order of ``todo``.

    :class:`dtn_bench.workers.SideBySide`: each process gets ``max(1, threads // workers)`` of this process's torch
    threads, the workers' events are passed on from this process while it waits, and a run that fails stops the
    others (its error is raised here), as does Ctrl-C. Finished runs whose rows are not yet written keep their final
    checkpoints, so a resumed run only evaluates them again.
    """
    from dtn_bench.workers import SideBySide

    jobs = [(_worker_train, (*r, str(f))) for r, f in zip(todo, folders, strict=True)]
    with SideBySide(workers, ctx.emit, _worker_setup, (cfg, data)) as pool:
        yield from zip(pool.run(jobs), todo, strict=True)


def _console(df) -> list[ConsoleTable | str]:
    table = report.paper_table(df)
    if table.empty:
        return []
    return [ConsoleTable.from_frame(table, "ListOps test accuracy (%), last checkpoint", "model"),
            *report.difference_notes(df)]


LISTOPS_SUITE = register(Suite(
    SUITE, "Long-Range Arena ListOps: train and test Transformer, BigBird and Reformer with each normaliser "
    "(accuracy, loss, learning curves, tokens/s, memory)",
    {"accuracy": True, "loss": False, "tokens_s": True, "train_time_s": False, "params": False,
     "peak_mem_mib": False, "peak_rss_mib": False, "dtn_truncation_bound": False},
    ListOpsConfig, run,
    Report(report.render_report, lambda df, ci="t": report.paper_table(df, "last", ci),
           "test accuracy of a last checkpoint", {"curves.png": report.curves_plot},
           settings=((LISTOPS_ROW_SETTINGS, ()),), check=check_listops, console=_console, options=("ci",)),
    command="listops", resume_key=RESUME_KEY, steps=lambda cfg: 1 + len(cfg.models) * len(cfg.norms) * len(cfg.seeds),
    env=_env, device=lambda cfg, rank: _device(cfg, rank), distributed=True,
    table_help="ListOps: rows Transformer / BigBird / Reformer, LN, DTN (mean ± std over the seeds of all runs "
    "given; the runs must share every other training setting), DTN - LN paired by seed with its 95% interval "
    "(--ci: Student t or bootstrap; 'not significant' when it contains 0) and the published numbers, and the "
    "learning curves."))


# ------------------------------------------------------------------------------------------------------------------
# Python API
def listops(cfg: ListOpsConfig | str | None = "lra", *, out: str | Path = "results", run_id: str | None = None,
            resume: bool = False, on_event: Handler | None = None, **flags: Any) -> RunResult:
    """Run the ListOps suite from Python, as ``dtn-bench lra listops`` does (through ``run_suite``).

    Example::

        from dtn_bench.lra import listops

        result = listops("quick", models=("transformer",), steps=200, device="cpu", out="results")
        print(result.path, result.rows.query("metric == 'accuracy'"))

    Under ``torchrun`` every process calls it (DDP); ``result.path`` and ``result.rows`` are ``None`` on ranks other
    than 0.

    Args:
        cfg: a :class:`ListOpsConfig`, or the name of a preset of ``suites/lra-listops.yaml`` (``None``: the dataclass
            defaults).
        out: the results root; the run folder is ``out/lra-listops/<run id>``.
        run_id: the run folder's name (default: a fresh timestamped one).
        resume: continue the run ``run_id``: finished runs are kept, the interrupted one continues from its last
            checkpoint.
        on_event: ``on_event(event)`` on rank 0 (the events of this module's docstring and the runner's).
        **flags: config fields over the preset (``None``: not given), or over ``cfg`` when it is a config.
            ``world_size`` not given: this job's (torchrun's ``WORLD_SIZE``).

    Returns:
        The :class:`~dtn_bench.runner.RunResult` (run folder and rows).

    Raises:
        DTNBenchError: bad settings, a missing data folder, or a run that cannot be resumed (before any work); what
            training raises.
    """
    from dataclasses import replace

    from dtn_bench.distributed import world_size_from_env

    if flags.get("world_size") is None:
        flags["world_size"] = world_size_from_env()
    if isinstance(cfg, ListOpsConfig):
        cfg = replace(cfg, **ListOpsConfig.typed_flags(**flags))
        cfg.validate()
    else:
        cfg = ListOpsConfig.from_preset(cfg, **flags)
    check_data_dir(cfg)
    if resume:
        if run_id is None:
            raise DTNBenchError("lra listops: resume needs the run id of the run to continue")
        check_resumable(Path(out) / SUITE / run_id, cfg.world_size)
    return run_suite(LISTOPS_SUITE, cfg, out=out, run_id=run_id, resume=resume, on_event=on_event)
