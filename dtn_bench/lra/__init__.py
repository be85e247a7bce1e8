"""Long-Range Arena ListOps suite: config and schedules, training / evaluation (DDP-ready), tables and curves.

Python entry point: :func:`dtn_bench.lra.train.train_run` for one ``(model, norm, seed)``, or the CLI
``dtn-bench lra listops`` for a whole preset.
"""

from __future__ import annotations

from dtn_bench.lra.config import SUITE, ListOpsConfig, linear_lr, lra_lr

__all__ = ["SUITE", "ListOpsConfig", "linear_lr", "lra_lr"]
