"""``dtn-bench robustness``: does a normaliser make a ViT more robust? The vision counterpart of ``lra listops``.

One call from Python, the CLI on top::

    from dtn_bench.robustness import robustness
    result = robustness("quick")
    result.path  # results/robustness/<run id>: rows, table.md / .tex, curves.png, severity.png, diagnostics.png

A model family x normalisers x seeds is trained with a recipe of ``dtn-bench train`` (or taken from a manifest of
finished checkpoints), evaluated clean and on the matching corruption set (released, or generated from the test
split by ``dtn-bench corrupt``), and each normaliser is compared with LayerNorm over seeds and over images.

Modules:
    config: :class:`RobustnessConfig`, what each training set is tested on.
    manifest: ``--checkpoints MANIFEST``, every entry checked first.
    data: the test set: clean arrays and the corruption set (the ``corrupt-data`` stage).
    evaluate: the one adapter to the evaluations (clean and corrupted top-1, per-image bits).
    suite: the stages, resume per (norm, seed, stage), workers side by side, :func:`robustness`.
    report: the table (differences over seeds and over images) and the plots, from the rows.
"""

from __future__ import annotations

from typing import Any

__all__ = ["robustness"]


def robustness(*args: Any, **kwargs: Any):
    """:func:`dtn_bench.robustness.suite.robustness` (imported on first use)."""
    from dtn_bench.robustness.suite import robustness as _run

    return _run(*args, **kwargs)
