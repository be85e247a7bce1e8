"""CIFAR-10-C, CIFAR-100-C and Tiny-ImageNet-C (Hendrycks & Dietterich, ICLR 2019): evaluate a model on them.

One call from Python, the CLI ``dtn-bench cifar-c`` on top::

    from dtn_bench.cifar_c import evaluate
    result = evaluate("vit_cifar_t_dtn", "/data/CIFAR-10-C", dataset="cifar10", checkpoint="ckpt.pth")
    result.summary.mean_corruption_error, result.summary.errors["fog"][5], result.path

The numbers are unnormalised (no AlexNet errors exist for these datasets, so no CE / mCE): per-pair top-1 error,
the mean corruption error and accuracy over the 15 x 5 pairs, the clean error when a clean array is given.

Modules:
    data: the datasets, layout checks (``<corruption>.npy`` + ``labels.npy``, or Tiny-ImageNet-C's folders),
        memory-mapped sources.
    evaluation: config, plan (every check before any work), the sharded measurement loop.
    suite: the registered ``cifar-c`` suite.
    report: summaries and tables (from rows only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dtn_bench.cifar_c.evaluation import SUITE, CifarCConfig, plan
from dtn_bench.cifar_c.report import Summary, summarize
from dtn_bench.shifts.plan import Plan

__all__ = ["SUITE", "CifarCConfig", "CifarCResult", "Plan", "Summary", "evaluate", "evaluate_config", "make_config",
           "plan", "summarize"]


@dataclass
class CifarCResult:
    """What :func:`evaluate` returns (on rank 0; other ranks get ``path=None`` and empty rows).

    Attributes:
        path: the run folder (rows.csv/.parquet, config.json, env.json, table.md/.tex).
        rows: all rows of the run.
        summary: per-pair errors, per-corruption means, mean corruption error / accuracy, clean error.
    """

    path: Path | None
    rows: pd.DataFrame
    summary: Summary | None


def make_config(model: str | None = None, data_dir: str | Path | None = None, *, preset: str | None = None,
                dataset: str | None = None,
                norm: str | None = None, placement: str | None = None, checkpoint: str | Path | None = None,
                ema: bool | None = None,
                num_classes: int | None = None, clean_images: str | Path | None = None,
                clean_labels: str | Path | None = None, corruptions: Sequence[str] | None = None,
                severities: Sequence[int] | None = None, extra: bool = False, batch_size: int | None = None,
                device: str | None = None, amp: str | None = None, data_label: str | None = None,
                seed: int | None = None) -> CifarCConfig:
    """A :class:`CifarCConfig`: the ``preset`` (``suites/cifar-c.yaml``) with the settings given over it.

    ``None``: the preset's value, else the config's default (model ``vit_cifar_t_ln``, dataset ``cifar10``).
    Corruption names are checked; ``extra`` adds the 4 extra corruptions (CIFAR-10-C / CIFAR-100-C hold 19).
    """
    from dtn_bench.imagenet_c.data import resolve_corruptions, resolve_severities

    text = lambda v: None if v is None else str(v)  # noqa: E731
    if corruptions or extra:
        corruptions = resolve_corruptions(corruptions, extra=extra)
    return CifarCConfig.from_preset(
        preset, model=model, dataset=dataset, norm=norm, placement=placement, checkpoint=text(checkpoint), ema=ema,
        num_classes=num_classes, data_dir=text(data_dir), clean_images=text(clean_images),
        clean_labels=text(clean_labels), corruptions=corruptions or None,
        severities=resolve_severities(severities) if severities else None, batch_size=batch_size, device=device,
        amp=amp, data_label=data_label, seed=seed)


def evaluate_config(cfg: CifarCConfig, *, out: str | Path = "results", run_id: str | None = None,
                    resume: bool = False, debug: bool = False, on_event=None) -> CifarCResult:
    """Evaluate the config ``cfg`` through :func:`~dtn_bench.runner.run_suite` (see :func:`evaluate`)."""
    from dtn_bench.cifar_c.suite import CIFAR_C_SUITE
    from dtn_bench.runner import run_suite
    from dtn_bench.shifts import announce

    p = plan(cfg, debug=debug)
    announce(p, on_event)
    result = run_suite(CIFAR_C_SUITE, cfg, out=out, run_id=run_id, resume=resume, on_event=on_event, plan=p)
    if result.path is None:
        return CifarCResult(None, pd.DataFrame(), None)
    own = (cfg.model, p.norm_label, cfg.data_name)
    summary = next((s for k, s in summarize(result.rows).items() if k[:3] == own), None)
    return CifarCResult(result.path, result.rows, summary)


def evaluate(model: str | None = None, data_dir: str | Path | None = None, *, out: str | Path = "results",
             run_id: str | None = None, resume: bool = False, debug: bool = False, on_event=None,
             **settings) -> CifarCResult:
    """Evaluate ``model`` on CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C under ``data_dir``; write a run folder.

    Args:
        model: small model (``vit_cifar_t_dtn``, ``vit_tiny_t_ln``), zoo or timm model name (default: the preset's,
            else ``vit_cifar_t_ln``).
        data_dir: the data folder.
        out: results root (run folder ``out/cifar-c/<run id>``).
        run_id: run folder name (default: model, dataset and a hash of the settings: the same settings resume it).
        resume: skip (corruption, severity) pairs already in the run folder.
        debug: full details in checkpoint errors.
        on_event: ``on_event(event)`` on rank 0 (typed events, :mod:`dtn_bench.events`): the plan's warnings and
            notes, the runner's, and the measurement's (:mod:`dtn_bench.shifts.measure`).
        **settings: :func:`make_config` keywords (``preset``, ``dataset``, ``checkpoint``, ``num_classes``,
            ``clean_images`` / ``clean_labels``, ``corruptions``, ``severities``, ``extra``, ``batch_size``,
            ``device``, ``amp``, ...).

    Returns:
        A :class:`CifarCResult`.

    Raises:
        DTNBenchError: any problem with the input, before any run folder is made.
    """
    return evaluate_config(make_config(model, data_dir, **settings), out=out, run_id=run_id, resume=resume,
                           debug=debug, on_event=on_event)
