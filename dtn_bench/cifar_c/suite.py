"""The ``cifar-c`` suite: its :class:`~dtn_bench.runner.Suite` object (CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C).

It runs through :func:`~dtn_bench.runner.run_suite` (rank-0 writing, resume, the final render) as a planned suite
(``Suite.plan``: every check before a run folder exists; the plan's provenance is recorded and keyed); the one-call
Python function on top is :func:`dtn_bench.cifar_c.evaluate`.
"""

from __future__ import annotations

from dtn_bench.cifar_c import report
from dtn_bench.cifar_c.evaluation import RESUME_IGNORED, SUITE, CifarCConfig, measure, plan
from dtn_bench.distributed import resolve_device
from dtn_bench.runner import Report, Suite
from dtn_bench.suites import register

RESUME_KEY = ("corruption", "severity")
"""What marks a finished pair (the clean set is ``("clean", 0)``)."""


def steps(cfg: CifarCConfig) -> int:
    """The units ``run`` yields: every pair, and the clean set when there is one."""
    return len(cfg.corruptions) * len(cfg.severities) + int(cfg.clean_images is not None)


CIFAR_C_SUITE = register(Suite(
    SUITE, "CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C robustness: top-1 error per corruption and severity, mean "
    "corruption error and accuracy (unnormalised: no AlexNet baseline exists for these)",
    {"top1_err": False, "throughput_img_s": True},
    CifarCConfig, measure,
    Report(report.render, report.summary_table, "CIFAR-C summary table", console=report.console),
    command="cifar-c", resume_key=RESUME_KEY, steps=steps, resume_ignored=RESUME_IGNORED,
    env=lambda cfg, world: {"world_size": world}, device=lambda cfg, rank: str(resolve_device(cfg.device)),
    distributed=True, plan=plan,
    table_help="Combine cifar-c runs (CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C) into one summary table: clean and "
    "mean corruption error / accuracy (unnormalised) and the mean error of each corruption, one row per model and "
    "data."))
