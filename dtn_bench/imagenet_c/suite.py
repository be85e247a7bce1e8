"""The ``imagenet-c`` suite's :class:`~dtn_bench.runner.Suite` object (its report; evaluation runs through
:func:`dtn_bench.imagenet_c.evaluate`, whose loop shards images under torchrun and keeps its own writer)."""

from __future__ import annotations

from dtn_bench.imagenet_c import report
from dtn_bench.imagenet_c.evaluation import SUITE, ImageNetCConfig
from dtn_bench.runner import Report, Suite
from dtn_bench.suites import register

IMAGENET_C_SUITE = register(Suite(
    SUITE, "ImageNet-C robustness: top-1 error per corruption and severity, CE, mCE and relative mCE "
    "(AlexNet-normalised), and the evaluation pipeline's images/s",
    {"top1_err": False, "top5_err": False, "ce": False, "relative_ce": False, "mce": False, "relative_mce": False,
     "mean_corruption_err": False, "throughput_img_s": True, "ratio": True},
    ImageNetCConfig, None,
    Report(report.render_table, lambda df: report.paper_table(df)[0], "ImageNet-C table",
           {"ce_bars.png": report.ce_bars, "severity.png": report.severity_lines},
           csv=lambda df: report.render_table(df, "csv")),
    command="imagenet-c",
    table_help="Combine ImageNet-C runs into the paper-style table (LN vs DTN with a DTN - LN row) and plots. Runs "
    "of different checkpoints (or autocast / resize settings) get their own rows, tagged like 'vit_t_ln @3fa2c1'; a "
    "pair measured by several identical runs is averaged and counted once."))
