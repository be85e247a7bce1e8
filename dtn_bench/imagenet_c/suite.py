"""The ``imagenet-c`` and ``bench-imagenet-c-pipeline`` suites: their :class:`~dtn_bench.runner.Suite` objects.

Both run through :func:`~dtn_bench.runner.run_suite` (rank-0 writing, resume, the final render); the one-call Python
functions on top are :func:`dtn_bench.imagenet_c.evaluate` and :func:`dtn_bench.imagenet_c.benchmark_pipeline`.
A suite's registered ``run`` plans from its config (every check) and then measures; those functions plan first
(so a problem is found before any run folder exists) and hand the plan to the run with :func:`with_plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dtn_bench.imagenet_c import bench, paired, report
from dtn_bench.imagenet_c.evaluation import (
    RESUME_IGNORED,
    SUITE,
    ImageNetCConfig,
    Plan,
    measure,
    plan,
    rank_device,
)
from dtn_bench.runner import Report, Suite
from dtn_bench.suites import register

RESUME_KEY = ("corruption", "severity")
"""What marks a finished pair (the clean set is ``("clean", 0)``)."""


def steps(cfg: ImageNetCConfig) -> int:
    """The units ``run`` yields: every pair, and the clean set when there is one."""
    clean = cfg.clean_dir is not None or cfg.clean_error is not None
    return len(cfg.corruptions) * len(cfg.severities) + int(clean)


def plan_then_measure(make_plan, measure_plan):
    """A registered ``run(cfg, ctx)``: ``make_plan(cfg)`` (its warnings and notes emitted), then ``measure_plan``.

    Shared by the image-corruption suites (imagenet-c, cifar-c), whose plans carry ``warnings`` and ``notes``.
    """

    def run(cfg, ctx):
        p = make_plan(cfg)
        for message in p.warnings:
            ctx.emit("warning", message=message)
        for message in p.notes:
            ctx.emit("note", message=message)
        yield from measure_plan(p, ctx)

    return run


run = plan_then_measure(plan, measure)
"""The registered ``run``: :func:`~dtn_bench.imagenet_c.evaluation.plan`, then
:func:`~dtn_bench.imagenet_c.evaluation.measure`."""


def with_plan(suite: Suite, p: Plan, measure_plan) -> Suite:
    """``suite`` whose ``run`` measures the plan ``p`` already made (``measure_plan(p, ctx)``)."""
    return replace(suite, run=lambda cfg, ctx: measure_plan(p, ctx))


@dataclass(frozen=True)
class ImageNetCReport(Report):
    """The ``imagenet-c`` report: the paper-style table from the rows, and a paired comparison from the run folders.

    Attributes:
        comparison: ``comparison(df, runs, n_boot=, mcnemar=)`` -> ``paired.md`` / ``.tex`` / ``.csv`` (and
            ``mcnemar.*``): :func:`dtn_bench.imagenet_c.paired.documents`, from the runs' per-image correctness.
        comparison_options: the ``dtn-bench table imagenet-c`` options it takes (``--n-boot``, ``--mcnemar``).
    """

    comparison: Callable[..., dict[str, str]] | None = None
    comparison_options: tuple[str, ...] = ()


def _world(cfg, world: int) -> dict:
    return {"world_size": world}


IMAGENET_C_SUITE = register(Suite(
    SUITE, "ImageNet-C robustness: top-1 error per corruption and severity, CE, mCE and relative mCE "
    "(AlexNet-normalised), and the evaluation pipeline's images/s",
    {"top1_err": False, "top5_err": False, "throughput_img_s": True},
    ImageNetCConfig, run,
    ImageNetCReport(report.render_table, lambda df: report.paper_table(df)[0], "ImageNet-C table",
                    {"ce_bars.png": report.ce_bars, "severity.png": report.severity_lines},
                    csv=lambda df: report.render_table(df, "csv"), comparison=paired.documents,
                    comparison_options=("n_boot", "mcnemar")),
    command="imagenet-c", resume_key=RESUME_KEY, steps=steps, resume_ignored=RESUME_IGNORED, env=_world,
    device=lambda cfg, rank: str(rank_device(cfg.device)), distributed=True,
    table_help="Combine ImageNet-C runs into the paper-style table (LN vs DTN with a DTN - LN row) and plots. Runs "
    "of different checkpoints (or autocast / resize settings) get their own rows, tagged like 'vit_t_ln @3fa2c1'; a "
    "pair measured by several identical runs is averaged and counted once. With two or more models, the paired "
    "bootstrap 95% interval of each one's mCE difference from the first given (over the images both runs hold, "
    "from their per-image correctness; --n-boot resamples) is printed after the table and written as "
    "paired.md/.tex/.csv; "
    "--mcnemar adds McNemar's test per corruption and severity (mcnemar.md/.tex/.csv)."))

PIPELINE_SUITE = register(Suite(
    bench.SUITE, "Is the ImageNet-C data pipeline the bottleneck? End-to-end images/s of the evaluation loop (read, "
    "decode, copy, normalise, forward) against model-only images/s, and their ratio",
    {"throughput_img_s": True, "ratio": True},
    bench.PipelineConfig, bench.run,
    Report(bench.render, bench.table, "pipeline images/s"),
    command="imagenet-c-pipeline", steps=lambda cfg: 1, device=lambda cfg, rank: str(cfg.device), distributed=True,
    table_help="ImageNet-C pipeline benchmark: images/s end to end and model only, and their ratio, one row per "
    "model, data, batch size, workers, autocast and decoder."))
