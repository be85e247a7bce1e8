"""The ``imagenet-c`` and ``bench-imagenet-c-pipeline`` suites: their :class:`~dtn_bench.runner.Suite` objects.

Both run through :func:`~dtn_bench.runner.run_suite` (rank-0 writing, resume, the final render) as planned suites:
the runner plans from the config (``Suite.plan``: every check, before any run folder exists), records the plan's
provenance beside the config and hands the plan to ``run``. The one-call Python functions on top,
:func:`dtn_bench.imagenet_c.evaluate` and :func:`dtn_bench.imagenet_c.benchmark_pipeline`, plan themselves (to report
the plan's messages first) and hand the plan to :func:`~dtn_bench.runner.run_suite`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dtn_bench.distributed import resolve_device
from dtn_bench.imagenet_c import bench, paired, report
from dtn_bench.imagenet_c.evaluation import RESUME_IGNORED, SUITE, ImageNetCConfig, measure, plan
from dtn_bench.runner import Report, Suite
from dtn_bench.suites import register

RESUME_KEY = ("corruption", "severity")
"""What marks a finished pair (the clean set is ``("clean", 0)``)."""


def steps(cfg: ImageNetCConfig) -> int:
    """The units ``run`` yields: every pair, and the clean set when there is one."""
    clean = cfg.clean_dir is not None or cfg.clean_error is not None
    return len(cfg.corruptions) * len(cfg.severities) + int(clean)


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
    ImageNetCConfig, measure,
    ImageNetCReport(report.render_table, lambda df: report.paper_table(df)[0], "ImageNet-C table",
                    {"ce_bars.png": report.ce_bars, "severity.png": report.severity_lines},
                    csv=lambda df: report.render_table(df, "csv"), comparison=paired.documents,
                    comparison_options=("n_boot", "mcnemar")),
    command="imagenet-c", resume_key=RESUME_KEY, steps=steps, resume_ignored=RESUME_IGNORED, env=_world,
    device=lambda cfg, rank: str(resolve_device(cfg.device)), distributed=True, plan=plan,
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
    bench.PipelineConfig, bench.run_plan,
    Report(bench.render, bench.table, "pipeline images/s"),
    command="imagenet-c-pipeline", steps=lambda cfg: 1, device=lambda cfg, rank: str(resolve_device(cfg.device)),
    distributed=True, plan=bench.pipeline_plan,
    table_help="ImageNet-C pipeline benchmark: images/s end to end and model only, and their ratio, one row per "
    "model, data, batch size, workers, autocast and decoder."))
