"""``dtn-bench robustness``: train a model family with each normaliser over seeds, evaluate under corruption, compare.

The options are parsed into a :class:`~dtn_bench.robustness.config.RobustnessConfig` (the preset of
``suites/robustness.yaml`` with the flags over it; training settings as ``--set key=value``, fields of the train
recipe), run with :func:`dtn_bench.robustness.robustness`, and what the suite emits is shown: the settings, a bar per
stage being worked on (several side by side with ``--workers``), a line per finished stage, the table, the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.options import (
    AssignmentsArg,
    DeviceOpt,
    EmaOpt,
    OutOpt,
    RunIdOpt,
    SetOpt,
    csv_list,
    parse_ints,
    parse_severities,
)
from dtn_bench.cli.output import ProgressView, console, print_tables, say_rows_are_kept
from dtn_bench.errors import DTNBenchError

app = typer.Typer()


@app.command("robustness", context_settings={"allow_interspersed_args": True})
def robustness_command(
    assignments: AssignmentsArg = None,
    preset: Annotated[str | None, typer.Option("--preset", help="A preset of suites/robustness.yaml: quick (2-core "
                                               "CPU, built-in digits), cifar10, cifar100, tiny-imagenet, imagenet "
                                               "(default: quick; with --resume: the run's own).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="The model family: a model whose normaliser each of "
                                              "--norms replaces (vit_cifar_t_ln, vit_tiny_t_ln, vit_s_ln).")] = None,
    norms: Annotated[str | None, typer.Option("--norms", help="Comma-separated registered normalisers (default: "
                                              "layernorm,dtn,dyt and derf when registered); LayerNorm is the "
                                              "reference.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Comma-separated training seeds (default 0,1,2).")]
    = None,
    settings: SetOpt = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="The train recipe of suites/train.yaml (default: the "
                                               "preset's).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The training set (CIFAR python pickles, "
                                                  "Tiny-ImageNet-200, ImageNet train/ and val/); its test split is "
                                                  "the clean test set. Not for the quick preset's built-in digits.")]
    = None,
    corrupt_dir: Annotated[Path | None, typer.Option("--corrupt-dir", help="The released corruption set (CIFAR-10-C "
                                                     "/ CIFAR-100-C arrays, Tiny-ImageNet-C or ImageNet-C folders) or "
                                                     "one dtn-bench corrupt wrote; default: generated from the test "
                                                     "split into the run folder (labelled generated).")] = None,
    checkpoints: Annotated[Path | None, typer.Option("--checkpoints", help="A manifest of finished runs, one "
                                                     "'norm, seed, path' per line (a dtn-bench train run folder or a "
                                                     "checkpoint): evaluated instead of trained, every entry checked "
                                                     "first. Its norms and seeds are the default --norms / --seeds.")]
    = None,
    corruptions: Annotated[str | None, typer.Option("--corruptions", help="Comma-separated corruption names "
                                                    "(default: the 15).")] = None,
    severities: Annotated[str | None, typer.Option("--severities", help="Comma-separated severities 1..5 (default: "
                                                   "all five).")] = None,
    gen_seed: Annotated[int | None, typer.Option("--gen-seed", help="Seed of a generated corruption set.")] = None,
    ema: Annotated[bool | None, EmaOpt.__metadata__[0]] = None,
    eval_batch: Annotated[int | None, typer.Option("--eval-batch", help="Images per evaluation batch.")] = None,
    device: DeviceOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", help=(
        "CPU, one process: stages run side by side, each in its own process with threads / N torch threads (0: one "
        "per thread; quick preset: 0; 1: one after another)."))] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue the run RUN_ID: finished (norm, seed, "
                                               "stage) units are kept, interrupted ones continue (its recorded "
                                               "settings; only --workers, --device, --eval-batch may differ).")]
    = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Does a normaliser make a ViT more robust? Train each normaliser over seeds, evaluate clean and corrupted.

    Rows, the paper-style table (clean error, mean corruption error / mCE, each family; each normaliser minus
    LayerNorm over seeds and over images with 95% intervals), learning curves, error by severity and the normaliser
    diagnostics in the run folder. Several GPUs: torchrun --nproc_per_node N -m dtn_bench robustness ...
    """
    from dtn_bench.fields import parse_assignments
    from dtn_bench.robustness.suite import resolve
    from dtn_bench.train.config import TrainConfig

    if resume is not None and run_id is not None and run_id != resume:
        raise DTNBenchError(f"--resume {resume} and --run-id {run_id} name different runs")
    train_settings = parse_assignments(TrainConfig, [*(settings or []), *(assignments or [])])
    flags = dict(
        model=model, norms=csv_list(norms), seeds=None if seeds is None else parse_ints(seeds, "--seeds", "0,1,2"),
        recipe=recipe, train_settings=train_settings or None,
        data_dir=None if data_dir is None else str(data_dir.expanduser().resolve()),
        corrupt_dir=None if corrupt_dir is None else str(corrupt_dir.expanduser().resolve()),
        checkpoints=None if checkpoints is None else str(checkpoints.expanduser().resolve()),
        corruptions=csv_list(corruptions), severities=parse_severities(severities), gen_seed=gen_seed, ema=ema,
        eval_batch=eval_batch, device=device, workers=workers)
    if resume is None:
        cfg = resolve(preset or "quick", flags)
        _run(cfg, out, run_id, False, {})
    else:
        _run(preset, out, resume, True, flags)


def _run(cfg, out: Path, run_id: str | None, resume: bool, flags: dict) -> None:
    from dtn_bench.robustness import robustness
    from dtn_bench.robustness.report import console as tables

    view = _StudyView()
    try:
        with view:
            result = robustness(cfg, out=out, run_id=run_id, resume=resume, on_event=view, **flags)
    except KeyboardInterrupt:
        if view.run_id is not None:  # the one line main() prints on Ctrl-C
            say_rows_are_kept(f"interrupted: continue with dtn-bench robustness --resume {view.run_id}")
        raise
    if result.path is not None:
        print_tables(tables(result.rows, [result.path]))
        console.print(f"results: {result.path}", soft_wrap=True)


class _StudyView(ProgressView):
    """What ``dtn-bench robustness`` shows of the suite's events, on the base progress view.

    The settings line, a bar per stage being worked on (several with ``--workers``; its status where the base view
    shows a rate), a line per finished stage; warnings and notes as the base view shows them.
    """

    def __init__(self):
        super().__init__("robustness")
        self.run_id: str | None = None

    def on_study_settings(self, e) -> None:
        self.run_id = e.run_id
        side = f", {e.workers} side by side" if e.workers > 1 else ""
        console.print(f"robustness run {e.run_id}: {e.todo} stage(s) to do on {e.world} process(es), {e.device}{side}",
                      highlight=False)

    def on_stage_start(self, e) -> None:
        from dtn_bench.robustness.suite import unit_label

        label = unit_label(e.norm, e.seed, e.stage)
        self.task(label, label, None)

    def on_stage_progress(self, e) -> None:
        from dtn_bench.robustness.suite import unit_label

        task = self.tasks.get(unit_label(e.norm, e.seed, e.stage))
        if task is not None:
            self.bar.update(task, completed=e.completed, total=e.total, rate=e.status)

    def on_stage_done(self, e) -> None:
        from dtn_bench.robustness.suite import unit_label

        label = unit_label(e.norm, e.seed, e.stage)
        self.close(label)
        console.print(f"{label}: {e.summary}", highlight=False, soft_wrap=True)
