"""The ``lra-listops`` suite's :class:`~dtn_bench.runner.Suite` object (its report; training runs through
:func:`dtn_bench.lra.train` with its own DDP-aware writer)."""

from __future__ import annotations

import json
from pathlib import Path

from dtn_bench.errors import DTNBenchError
from dtn_bench.lra import report
from dtn_bench.lra.config import SUITE, ListOpsConfig
from dtn_bench.runner import Report, Suite
from dtn_bench.suites import register

LISTOPS_ROW_SETTINGS = ("preset", "max_len", "data")
"""ListOps row columns that must agree (with the training length, the ``step`` of the last checkpoint)."""
LISTOPS_NOT_TRAINING = ("models", "norms", "seeds", "device")
"""``config.json`` fields of a ListOps run that may differ between combined runs (all others must agree)."""


def _config_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check_listops(df, runs: list[Path]) -> None:
    """ListOps: the same training length in the rows, and the same training settings in the runs' ``config.json``
    (every field but :data:`LISTOPS_NOT_TRAINING`; a field added after a run was recorded counts as its default,
    other fields some configs lack are not compared)."""
    from dtn_bench.lra.config import with_defaults
    from dtn_bench.results.io import _rows_files, read_rows
    from dtn_bench.results.tables import check_same_settings

    if "checkpoint" in df.columns and "step" in df.columns:
        last = df[df["checkpoint"] == "last"].rename(columns={"step": "training steps"})
        check_same_settings(last, "table listops", ["training steps"])
    configs, seen = [], set()
    for path in runs:
        for file in _rows_files(Path(path)):
            config_file = file.parent / "config.json"
            key = config_file.resolve()
            if key in seen or not config_file.is_file():
                continue
            seen.add(key)
            rows = read_rows(file)
            if "suite" not in rows.columns or not (rows["suite"] == SUITE).any():
                continue
            try:
                config = json.loads(config_file.read_text())
            except (OSError, ValueError) as e:
                raise DTNBenchError(f"{config_file}: cannot read the run's config ({e})") from None
            if not isinstance(config, dict):
                raise DTNBenchError(f"{config_file}: the run's config is not a JSON object")
            configs.append(with_defaults(config))
    common = [k for k in dict.fromkeys(k for c in configs for k in c)
              if k not in LISTOPS_NOT_TRAINING and all(k in c for c in configs)]
    for key in common:
        values = list(dict.fromkeys(_config_text(c[key]) for c in configs))
        if len(values) > 1:
            raise DTNBenchError(f"table listops: the runs differ in {key} ({', '.join(values)}); render them "
                                "separately")


LISTOPS_SUITE = register(Suite(
    SUITE, "Long-Range Arena ListOps: train and test Transformer, BigBird and Reformer with each normaliser "
    "(accuracy, loss, learning curves, tokens/s, memory)",
    {"accuracy": True, "loss": False, "tokens_s": True, "train_time_s": False, "params": False,
     "peak_mem_mib": False, "peak_rss_mib": False},
    ListOpsConfig, None,
    Report(report.render_report, lambda df: report.paper_table(df, "last"), "test accuracy of a last checkpoint",
           {"curves.png": report.curves_plot}, settings=((LISTOPS_ROW_SETTINGS, ()),), check=check_listops),
    command="listops",
    table_help="ListOps: rows Transformer / BigBird / Reformer, LN, DTN, DTN - LN and the published numbers (mean ± "
    "std over the seeds of all runs given; the runs must share every other training setting), and the learning "
    "curves."))
