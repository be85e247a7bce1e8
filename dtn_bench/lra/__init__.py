"""Long-Range Arena ListOps suite: config and schedules, training / evaluation (DDP-ready), tables and curves.

Python entry points: :func:`listops` (:func:`dtn_bench.lra.suite.listops`) runs a whole preset as
``dtn-bench lra listops`` does (``listops("quick", steps=200)``); :func:`dtn_bench.lra.train.train_run` trains one
``(model, norm, seed)``.
"""

from __future__ import annotations

from dtn_bench.lra.config import SUITE, ListOpsConfig, linear_lr, lra_lr
from dtn_bench.lra.suite import listops

__all__ = ["SUITE", "ListOpsConfig", "linear_lr", "listops", "lra_lr"]
