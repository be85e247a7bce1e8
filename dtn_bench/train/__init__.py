"""``dtn-bench train``: train a vision model with a recipe, from timm's own training pieces.

One call from Python, the CLI on top::

    from dtn_bench.train import train
    result = train("quick", model="vit_cifar_t_dtn", seed=0)
    result.path  # results/train/<run id>: rows, curves, diagnostics, checkpoints/last.pth.tar

Modules:
    config: :class:`TrainConfig`, the recipe's fields (``suites/train.yaml`` holds the recipes).
    data: ImageNet folders, CIFAR pickles, Tiny-ImageNet-200 and the built-in sets, checked before any work.
    loop: the run (model, optimizer, scheduler, EMA, AMP, DDP), epochs, checkpoints and resume.
    diagnostics: DTN gates, point-wise normalisers' alpha and saturation, read every epoch.
    suite: the registered ``train`` suite, :func:`train`.
    report: tables and plots from the rows.
"""

from __future__ import annotations

from typing import Any

from dtn_bench.train.config import TrainConfig

__all__ = ["TrainConfig", "load_trained", "train"]


def train(*args: Any, **kwargs: Any):
    """:func:`dtn_bench.train.suite.train` (imported on first use)."""
    from dtn_bench.train.suite import train as _train

    return _train(*args, **kwargs)


def load_trained(path, *, ema: bool = True, device: str = "cpu"):
    """:func:`dtn_bench.train.loop.load_trained` (imported on first use)."""
    from dtn_bench.train.loop import load_trained as _load

    return _load(path, ema=ema, device=device)
