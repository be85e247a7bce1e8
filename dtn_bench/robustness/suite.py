"""The ``robustness`` suite: its :class:`~dtn_bench.runner.Suite`, the stages of a study, :func:`robustness`.

A study is a model family x normalisers x seeds. For each ``(norm, seed)`` two stages run, and one stage is shared:

- ``corrupt-data`` (once, ``norm`` ``-``, ``seed`` -1): the clean test split as arrays and, without ``--corrupt-dir``,
  the corruption set generated from it (:func:`dtn_bench.robustness.data.write_test_set`);
- ``train``: the preset's recipe through :func:`dtn_bench.train.train` into ``<run>/train/<norm>-seed<seed>`` (a
  killed run continues from its last checkpoint), or the manifest's checkpoint (``--checkpoints``); its rows are the
  training run's per-epoch rows (from the checkpoint's records for a manifest entry);
- ``evaluate``: the checkpoint's (EMA) weights on the clean split and every (corruption, severity) pair
  (:func:`dtn_bench.robustness.evaluate.evaluate`, a run folder ``<run>/<cifar-c | imagenet-c>/<norm>-seed<seed>``
  with per-image bits).

The resume key is ``(norm, seed, stage)``: a stage whose rows are in the run folder is skipped, an interrupted one
continues (training from its checkpoint, evaluation from its finished pairs, generation from its finished files).
Every check happens before the run folder exists (:func:`make_plan`). With ``workers > 1`` (the CPU, one process)
the stages run side by side in :class:`dtn_bench.workers.SideBySide` processes: the data and the trainings first,
then the evaluations. Under torchrun every process runs every stage (DDP training, sharded evaluation; rank 0
generates the data and writes).

Rows (``suite`` robustness; ``stage`` and ``seed`` on every row): the training rows (``epoch``, ``split``,
``weights``, ``layer``: ``top1_acc``, ``loss``, ``lr``, diagnostics ...), the evaluation rows (``corruption``,
``severity``: ``top1_err``, ``n_images``; ``data``, ``corrupt_data`` generated | released, ``evaluation``: the
evaluation's folder in the run folder) and each stage's ``stage_seconds`` (the wall time of the invocation that
finished it). Derived figures (errors, differences, intervals) come from :mod:`dtn_bench.robustness.report`.

Events (``on_event(event)``, rank 0; :mod:`dtn_bench.events`), besides the runner's:
:class:`~dtn_bench.events.StudySettings` (world, device, run_id, workers, todo),
:class:`~dtn_bench.events.StageStart` / :class:`~dtn_bench.events.StageProgress` (completed, total) /
:class:`~dtn_bench.events.StageDone` (summary) with ``norm``, ``seed``, ``stage``; :class:`~dtn_bench.events.Warn`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dtn_bench.errors import DTNBenchError
from dtn_bench.events import (
    Event,
    Handler,
    Pending,
    Progress,
    StageDone,
    StageProgress,
    StageStart,
    StudySettings,
    TrainEpoch,
    TrainStart,
    TrainStep,
    UnitResult,
    Warn,
)
from dtn_bench.results.schema import make_row
from dtn_bench.robustness import report
from dtn_bench.robustness.config import HOW_KEYS, SUITE, RobustnessConfig
from dtn_bench.robustness.data import TestSet
from dtn_bench.robustness.manifest import Entry
from dtn_bench.runner import RunContext, RunResult, Suite, run_suite
from dtn_bench.suites import register

RESUME_KEY = ("norm", "seed", "stage")
DATA_UNIT = ("-", -1, "corrupt-data")
STAGES = ("corrupt-data", "train", "evaluate")
PROVENANCE = ("run_id", "timestamp", "git_sha", "dtn_bench_version", "torch_version", "timm_version", "device")


@dataclass(frozen=True)
class Plan:
    """A checked study: the config, the test set, and the manifest's entries (``None``: train each run)."""

    cfg: RobustnessConfig
    test: TestSet
    entries: dict[tuple[str, int], Entry] | None
    warnings: tuple[str, ...] = ()

    @property
    def runs(self) -> list[tuple[str, int]]:
        """Every ``(norm, seed)``, norms first."""
        return [(n, s) for n in self.cfg.norms for s in self.cfg.seeds]


def run_name(norm: str, seed: int) -> str:
    """The folder name of one run's training and evaluation: ``dtn-seed0``."""
    return f"{norm}-seed{seed}"


def unit_label(norm: str, seed: int, stage: str) -> str:
    """How events and the console name a unit: ``dtn/seed 0/train``, ``corrupt-data``."""
    return stage if stage == "corrupt-data" else f"{norm}/seed {seed}/{stage}"


# ------------------------------------------------------------------------------------------------------------------
# before any work
def make_plan(cfg: RobustnessConfig) -> Plan:
    """Every check before a run folder exists: settings, data, corruption set, each run's recipe, or the manifest.

    Raises:
        DTNBenchError: the first problem (one line).
    """
    from dtn_bench.robustness.data import plan_test_set
    from dtn_bench.robustness.evaluate import check_supported

    cfg.validate()
    test = plan_test_set(cfg)
    check_supported(test, cfg.train_settings)
    if cfg.checkpoints is not None:
        return _manifest_plan(cfg, test)
    _check_training(cfg, test)
    return Plan(cfg, test, None)


def _manifest_plan(cfg: RobustnessConfig, test: TestSet) -> Plan:
    from dtn_bench.robustness.manifest import read_manifest

    found = read_manifest(cfg.checkpoints, model=cfg.model, dataset=cfg.dataset, classes=test.classes,
                          size=test.target.size, ema=cfg.ema)
    entries = {(e.norm, e.seed): e for e in found}
    missing = [f"{n} seed {s}" for n in cfg.norms for s in cfg.seeds if (n, s) not in entries]
    if missing:
        raise DTNBenchError(f"--checkpoints {cfg.checkpoints}: no entry for {', '.join(missing[:4])}"
                            f"{' ...' if len(missing) > 4 else ''} (--norms / --seeds ask for it)")
    warnings = tuple(f"{cfg.checkpoints} line {e.line}: {e.norm} seed {e.seed} is an unfinished run ({len(e.history)} "
                     f"of {e.epochs} epochs)" for e in entries.values() if e.unfinished)
    return Plan(cfg, test, entries, warnings)


def _check_training(cfg: RobustnessConfig, test: TestSet) -> None:
    """Each run's training config resolves, the data fits a batch, the model builds and takes the set's size."""
    import torch

    from dtn_bench.shifts.plan import model_input
    from dtn_bench.train.loop import build_model, check_fits
    from dtn_bench.train.suite import _device, load

    for norm in cfg.norms:
        tcfg = cfg.train_config(norm, cfg.seeds[0])
        tcfg.check_device(torch.device(_device(tcfg)))
        data = load(tcfg)
        check_fits(tcfg, data)
        size = model_input(build_model(tcfg, data.classes)).size
        if size != (test.target.size, test.target.size):
            raise DTNBenchError(f"robustness: {cfg.model} with these settings takes {size[0]}x{size[1]} images but "
                                f"{test.target.label} is {test.target.size}x{test.target.size} (evaluated as "
                                f"released, no resize): --set img_size={test.target.size}")


def check_resume(out: str | Path, run_id: str | None, given: dict[str, Any]) -> RobustnessConfig:
    """The recorded config of the run ``run_id`` with the how-to-run settings of ``given`` over it.

    Raises:
        DTNBenchError: no run id, no such run, an unreadable ``config.json``, or a setting of ``given`` (not ``None``)
            that differs from the recorded one and is not one of :data:`HOW_KEYS` (the first one named).
    """
    from dtn_bench.checks import read_json_object

    if run_id is None:
        raise DTNBenchError("robustness: --resume needs the run id of the run to continue")
    folder = Path(out) / SUITE / run_id
    if not folder.is_dir():
        raise DTNBenchError(f"--resume {run_id}: no run folder {folder}")
    stored = read_json_object(folder / "config.json", hint=" (the run cannot be resumed)")
    try:
        recorded = RobustnessConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
    except TypeError as e:
        raise DTNBenchError(f"--resume {run_id}: {folder / 'config.json'} is not a robustness config ({e})") from None
    how = {}
    for key, value in given.items():
        if value is None:
            continue
        if key in HOW_KEYS:
            how[key] = value
            continue
        old = recorded.as_dict().get(key)
        new = tuple(value) if isinstance(value, list) else value
        if key == "train_settings":
            new = {**recorded.train_settings, **value}
        if _plain(old) != _plain(new):
            raise DTNBenchError(f"--resume {run_id}: the run was made with {key}={_show(old)}, this command gives "
                                f"{key}={_show(new)}; resume it with its own settings (--resume alone)")
    return replace(recorded, **how)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


# ------------------------------------------------------------------------------------------------------------------
# the stages (module-level functions with picklable arguments: they also run in worker processes)
def _rows_of(df, **settings) -> list[dict]:
    """Rows of a nested run (train, evaluation) as this suite's: provenance dropped, ``settings`` added."""
    if df is None or df.empty:
        return []
    keep = df.drop(columns=[c for c in (*PROVENANCE, "suite") if c in df.columns])
    return [{"suite": SUITE, **{k: v for k, v in r.items() if v == v and v is not None}, **settings}
            for r in keep.to_dict("records")]


def _seconds_row(cfg: RobustnessConfig, norm: str, seed: int, stage: str, seconds: float, **settings) -> dict:
    return make_row(SUITE, cfg.model, norm, "stage_seconds", seconds, "s", stage=stage, seed=seed, **settings)


def _progress(norm: str, seed: int, stage: str):
    from dtn_bench.workers import report as emit

    def progress(completed: int, total: int | None, status: str = "") -> None:
        emit(StageProgress(norm, seed, stage, completed, total, status))

    return progress


def data_stage(cfg: RobustnessConfig, test: TestSet, run_dir: str) -> tuple[tuple, list[dict]]:
    """The ``corrupt-data`` stage (rank 0 writes, the others wait): its resume key and rows."""
    from dtn_bench.distributed import init_distributed, resolve_device
    from dtn_bench.robustness.data import write_test_set
    from dtn_bench.workers import report as emit

    emit(StageStart("-", -1, "corrupt-data"))
    dist = init_distributed(cfg.device)
    t0 = time.perf_counter()
    images = test.images
    if dist.is_main:
        device = str(resolve_device(cfg.device)).split(":")[0]
        images = write_test_set(test, Path(run_dir), device, progress=_progress("-", -1, "corrupt-data"))
    dist.barrier()
    seconds = time.perf_counter() - t0
    where = "generated" if test.generated else "released"
    settings = dict(stage="corrupt-data", seed=-1, data=test.label, corrupt_data=where)
    rows = [make_row(SUITE, cfg.model, "-", "n_images", images, "images", **settings),
            _seconds_row(cfg, "-", -1, "corrupt-data", seconds, data=test.label, corrupt_data=where)]
    emit(StageDone("-", -1, "corrupt-data",
                   f"{images:,} test images; {test.label} in {test.corrupt_path(Path(run_dir))}"))
    return DATA_UNIT, rows


def train_stage(cfg: RobustnessConfig, norm: str, seed: int, run_dir: str) -> tuple[tuple, list[dict]]:
    """The ``train`` stage of one run: the recipe through the train API (continued when its folder exists)."""
    from dtn_bench.train import train
    from dtn_bench.workers import report as emit

    emit(StageStart(norm, seed, "train"))
    name = run_name(norm, seed)
    progress = _progress(norm, seed, "train")
    steps = {"per_epoch": 1, "epochs": 1}

    def on_event(event: Event) -> None:
        if isinstance(event, TrainStart):
            steps.update(per_epoch=event.updates_per_epoch, epochs=event.epochs)
            progress(event.start_epoch * steps["per_epoch"], steps["epochs"] * steps["per_epoch"])
        elif isinstance(event, TrainStep):
            progress(event.epoch * steps["per_epoch"] + event.step, steps["epochs"] * steps["per_epoch"],
                     f"loss {event.loss:.3f}")
        elif isinstance(event, TrainEpoch):
            val = event.record["val"]
            acc = val.get("ema", val["raw"])["top1"]
            progress((event.epoch + 1) * steps["per_epoch"], steps["epochs"] * steps["per_epoch"],
                     f"epoch {event.epoch + 1}: top-1 {acc:.1%}")

    t0 = time.perf_counter()
    folder = Path(run_dir) / "train" / name
    result = train(cfg.train_config(norm, seed), out=run_dir, run_id=name, resume=folder.is_dir(), on_event=on_event)
    seconds = time.perf_counter() - t0
    source = f"train/{name}"
    rows = _rows_of(result.rows, stage="train", preset=cfg.preset, source=source)
    rows.append(_seconds_row(cfg, norm, seed, "train", seconds, source=source))
    emit(StageDone(norm, seed, "train", _train_summary(result.rows)))
    return (norm, seed, "train"), rows


def _train_summary(df) -> str:
    if df is None or df.empty:
        return ""
    last = df[(df["metric"] == "top1_acc") & (df["epoch"] == df["epoch"].max())]
    accs = ", ".join(f"{w} {v:.2%}" for w, v in zip(last["weights"], last["value"], strict=True))
    return f"{int(df['epoch'].max()) + 1} epochs, validation top-1 {accs}"


def manifest_stage(cfg: RobustnessConfig, entry: Entry) -> tuple[tuple, list[dict]]:
    """The ``train`` stage of a manifest entry: the checkpoint's own per-epoch records as rows (none: no rows)."""
    from dtn_bench.train.config import TrainConfig
    from dtn_bench.train.suite import epoch_rows
    from dtn_bench.workers import report as emit

    emit(StageStart(entry.norm, entry.seed, "train"))
    t0 = time.perf_counter()
    rows: list[dict] = []
    if entry.settings is not None:
        tcfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.settings.items()})
        for record in entry.history:
            rows += [{**r, "suite": SUITE, "stage": "train", "preset": cfg.preset, "source": entry.checkpoint}
                     for r in epoch_rows(record, tcfg, entry.data or "-")]
    rows.append(_seconds_row(cfg, entry.norm, entry.seed, "train", time.perf_counter() - t0, source=entry.checkpoint))
    emit(StageDone(entry.norm, entry.seed, "train", f"checkpoint {entry.checkpoint}"))
    return (entry.norm, entry.seed, "train"), rows


def evaluate_stage(cfg: RobustnessConfig, test: TestSet, norm: str, seed: int, checkpoint: str,
                   run_dir: str) -> tuple[tuple, list[dict]]:
    """The ``evaluate`` stage of one run: clean and corrupted top-1 with per-image bits (the adapter)."""
    from dtn_bench.robustness.evaluate import evaluate
    from dtn_bench.workers import report as emit

    emit(StageStart(norm, seed, "evaluate"))
    progress = _progress(norm, seed, "evaluate")
    count = {"done": 0, "total": None}

    def on_event(event: Event) -> None:
        if isinstance(event, Pending):
            count["total"] = event.images
        elif isinstance(event, Progress) and event.task == "images":
            count["done"] += event.advance or 0
            progress(count["done"], count["total"])
        elif isinstance(event, UnitResult):
            progress(count["done"], count["total"], f"{event.corruption}/{event.severity} err {event.top1_err:.1%}")

    t0 = time.perf_counter()
    result = evaluate(test, checkpoint, run_dir=Path(run_dir), run_id=run_name(norm, seed), model=cfg.model,
                      norm=norm, ema=cfg.ema, batch_size=cfg.eval_batch, device=cfg.device, on_event=on_event)
    seconds = time.perf_counter() - t0
    where = "generated" if test.generated else "released"
    settings = dict(stage="evaluate", seed=seed, preset=cfg.preset, data=test.label, corruption_set=test.target.label,
                    corrupt_data=where, evaluation=str(result.folder.relative_to(run_dir)) if result.rows else "-")
    rows = [{**make_row(SUITE, cfg.model, norm, r["metric"], r["value"], r.get("unit"), **settings),
             "corruption": r["corruption"], "severity": int(r["severity"]),
             "checkpoint_sha256": r.get("checkpoint_sha256"), "weights": r.get("weights")} for r in result.rows]
    rows.append(_seconds_row(cfg, norm, seed, "evaluate", seconds, data=test.label, corrupt_data=where))
    emit(StageDone(norm, seed, "evaluate", _eval_summary(result.rows)))
    return (norm, seed, "evaluate"), rows


def _eval_summary(rows: list[dict]) -> str:
    errs = [r["value"] for r in rows if r["metric"] == "top1_err" and r["corruption"] != "clean"]
    clean = [r["value"] for r in rows if r["metric"] == "top1_err" and r["corruption"] == "clean"]
    parts = [f"clean error {clean[0]:.2%}"] if clean else []
    if errs:
        parts.append(f"mean corruption error {sum(errs) / len(errs):.2%} over {len(errs)} pairs")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------------------------
# the run
def _checkpoint(plan: Plan, norm: str, seed: int, run_dir: Path) -> str:
    if plan.entries is not None:
        return plan.entries[(norm, seed)].checkpoint
    from dtn_bench.train.loop import LAST

    return str(run_dir / "train" / run_name(norm, seed) / "checkpoints" / LAST)


def _jobs(plan: Plan, ctx: RunContext, run_dir: Path) -> tuple[list, list]:
    """The jobs still to do: data and training first, then the evaluations."""
    cfg = plan.cfg
    first: list = []
    if not ctx.is_done(*DATA_UNIT):
        first.append((data_stage, (cfg, plan.test, str(run_dir))))
    for norm, seed in plan.runs:
        if ctx.is_done(norm, seed, "train"):
            continue
        if plan.entries is not None:
            first.append((manifest_stage, (cfg, plan.entries[(norm, seed)])))
        else:
            first.append((train_stage, (cfg, norm, seed, str(run_dir))))
    then = [(evaluate_stage, (cfg, plan.test, n, s, _checkpoint(plan, n, s, run_dir), str(run_dir)))
            for n, s in plan.runs if not ctx.is_done(n, s, "evaluate")]
    return first, then


def _workers(cfg: RobustnessConfig, dist, jobs: int) -> int:
    """Processes to run the stages in, at most one per job (the rule of ``lra listops --workers``)."""
    import torch

    alone_on_cpu = dist.world == 1 and dist.device.type == "cpu"
    if cfg.workers > 1 and not alone_on_cpu:
        where = f"{dist.world} processes (torchrun)" if dist.world > 1 else f"device {dist.device}"
        raise DTNBenchError(f"robustness: --workers {cfg.workers} runs stages side by side in one job on the CPU; this "
                            f"job runs on {where}: use --workers 1")
    workers = cfg.workers or (torch.get_num_threads() if alone_on_cpu else 1)
    return max(1, min(workers, jobs))


def measure(plan: Plan, ctx: RunContext) -> Iterator[tuple[str, list[dict]]]:
    """The study's measurement: ``(label, rows)`` per finished stage; stages in ``ctx.done`` are skipped."""
    from dtn_bench.distributed import DistContext
    from dtn_bench.workers import SideBySide, run_jobs

    cfg = plan.cfg
    dist = ctx.dist or DistContext()
    if cfg.world_size != dist.world:
        raise DTNBenchError(f"robustness: the config is for {cfg.world_size} process(es) but this job has "
                            f"{dist.world} (WORLD_SIZE)")
    run_dir = Path(ctx.run_dir)
    first, then = _jobs(plan, ctx, run_dir)
    workers = _workers(cfg, dist, max(len(first), len(then), 1))
    ctx.emit(StudySettings(dist.world, str(dist.device), run_dir.name, workers, len(first) + len(then)))
    for text in plan.warnings:
        ctx.emit(Warn(text))
    if workers == 1:
        results = (r for jobs in (first, then) for r in run_jobs(jobs, ctx.emit))
        for key, rows in results:
            yield unit_label(*key), rows
        return
    with SideBySide(workers, ctx.emit) as pool:
        for jobs in (first, then):
            for key, rows in pool.run(jobs):
                yield unit_label(*key), rows


# ------------------------------------------------------------------------------------------------------------------
def _device(cfg: RobustnessConfig, rank: int = 0) -> str:
    from dtn_bench.distributed import resolve_device

    return str(resolve_device(cfg.device, rank))


ROBUSTNESS_SUITE = register(Suite(
    SUITE, "Does a normaliser make a ViT more robust? Train a model family with each normaliser over seeds (or take "
    "finished checkpoints), evaluate clean and on the matching corruption set (CIFAR-10/100-C, Tiny-ImageNet-C, "
    "ImageNet-C; generated when not given), paired differences from LayerNorm over seeds and over images",
    {"top1_err": False, "top1_acc": True, "loss": False, "stage_seconds": False},
    RobustnessConfig, lambda cfg, ctx: measure(make_plan(cfg), ctx),
    report.REPORT, command="robustness", resume_key=RESUME_KEY,
    steps=lambda cfg: 1 + 2 * len(cfg.norms) * len(cfg.seeds), resume_ignored=HOW_KEYS,
    device=lambda cfg, rank: _device(cfg, rank), distributed=True,
    table_help="Robustness: per normaliser the clean error, the mean corruption error (mCE on ImageNet-C) and each "
    "corruption family's error (mean ± std over seeds), and each normaliser minus LayerNorm paired over seeds "
    "(Student t 95%) and over images (paired bootstrap 95%, from the runs' per-image bits); 'not significant' when "
    "the interval holds 0. Plots: learning curves, error by severity, normaliser diagnostics."))


# ------------------------------------------------------------------------------------------------------------------
# Python API
def robustness(preset: str | RobustnessConfig | None = None, *, out: str | Path = "results",
               run_id: str | None = None, resume: bool = False, on_event: Handler | None = None,
               **settings: Any) -> RunResult:
    """Run a robustness study as ``dtn-bench robustness`` does (through ``run_suite``).

    Example::

        from dtn_bench.robustness import robustness

        result = robustness("quick", norms=("layernorm", "dtn"), seeds=(0, 1), out="results")
        print(result.path, result.rows.query("stage == 'evaluate' and metric == 'top1_err'"))

    Args:
        preset: a preset of ``suites/robustness.yaml``, a :class:`RobustnessConfig`, or ``None`` (``quick``; with
            ``resume``: the recorded config).
        out: the results root; the run folder is ``out/robustness/<run id>``.
        run_id: the run folder's name (default: a fresh timestamped one).
        resume: continue the run ``run_id``: finished stages are kept, interrupted ones continue.
        on_event: ``on_event(kind, **info)`` on rank 0 (the module docstring's events and the runner's).
        **settings: :class:`RobustnessConfig` fields over the preset (``None``: not given); ``train_settings`` is
            merged over the preset's. With ``checkpoints`` and no ``norms`` / ``seeds``, the manifest's. With
            ``resume``, only the how-to-run settings (workers, device, eval_batch) may differ from the recorded ones.

    Returns:
        The :class:`~dtn_bench.runner.RunResult` (run folder and rows; ``None`` on ranks other than 0).

    Raises:
        DTNBenchError: bad settings or data, a manifest entry that is missing or does not fit, a run that cannot be
            resumed (all before any file is written); what training and evaluation raise.
    """
    from dtn_bench.distributed import world_size_from_env

    settings.setdefault("world_size", world_size_from_env())
    if resume:
        cfg = check_resume(out, run_id, {**settings, **({"preset": preset} if isinstance(preset, str) else {})})
    elif isinstance(preset, RobustnessConfig):
        cfg = replace(preset, **{k: v for k, v in settings.items() if v is not None})
    else:
        cfg = resolve(preset or "quick", settings)
    cfg.validate()
    plan = make_plan(cfg)
    suite = replace(ROBUSTNESS_SUITE, run=lambda c, ctx: measure(plan, ctx))
    return run_suite(suite, cfg, out=out, run_id=run_id, resume=resume, on_event=on_event)


def resolve(preset: str | None, settings: dict[str, Any]) -> RobustnessConfig:
    """The config of ``preset`` with ``settings`` over it (``train_settings`` merged; a manifest's norms and seeds)."""
    from dtn_bench.suites import load_preset

    given = {k: v for k, v in settings.items() if v is not None}
    if "train_settings" in given and preset is not None:
        base = load_preset(SUITE, preset).get("train_settings") or {}
        given["train_settings"] = {**base, **given["train_settings"]}
    if given.get("checkpoints") is not None and ("norms" not in given or "seeds" not in given):
        from dtn_bench.robustness.manifest import parse

        lines = parse(given["checkpoints"])
        given.setdefault("norms", tuple(dict.fromkeys(n for _, n, _, _ in lines)))
        given.setdefault("seeds", tuple(dict.fromkeys(s for _, _, s, _ in lines)))
    return RobustnessConfig.from_preset(preset, **given)
