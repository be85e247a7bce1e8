"""ImageNet-C (Hendrycks & Dietterich, ICLR 2019): evaluate a model on the released corrupted images.

One call from Python (RobustBench-style), the CLI ``dtn-bench imagenet-c`` on top::

    from dtn_bench.imagenet_c import evaluate
    result = evaluate("vit_s_dtn", "/data/ImageNet-C", checkpoint="vit_s_dtn.pth", clean_error=0.194)
    result.summary.mce, result.summary.ce["fog"], result.path

Modules:
    data: layout check, class index, subsets, decoding pipeline.
    evaluation: config, plan (every check before any work), the sharded resumable loop.
    report: summaries, the paper-style table, plots (from rows only).
    demo_data: the offline procedural demo set and its stand-in model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dtn_bench.imagenet_c.evaluation import DEMO_LABEL, SUITE, ImageNetCConfig, Plan, default_workers, plan, run
from dtn_bench.imagenet_c.report import Summary, summarize

__all__ = ["DEMO_LABEL", "SUITE", "ImageNetCConfig", "ImageNetCResult", "Plan", "Summary", "demo", "evaluate",
           "make_config", "plan", "run", "summarize"]


@dataclass
class ImageNetCResult:
    """What :func:`evaluate` returns (on rank 0; other ranks get ``path=None`` and empty rows).

    Attributes:
        path: the run folder (rows.csv/.parquet, config.json, env.json, table.md/.tex, plots).
        rows: all rows of the run.
        summary: errors per corruption and severity, CE, mCE, relative mCE, clean error.
    """

    path: Path | None
    rows: pd.DataFrame
    summary: Summary | None


def make_config(model: str = "vit_t_dtn", data_dir: str | Path | None = None, *, norm: str | None = None,
                checkpoint: str | Path | None = None, num_classes: int | None = None,
                clean_dir: str | Path | None = None, clean_error: float | None = None,
                corruptions: Sequence[str] | None = None, severities: Sequence[int] | None = None,
                extra: bool = False, subset: int | None = None, subset_file: str | Path | None = None,
                subset_seed: int = 0, batch_size: int = 64, workers: int | None = None, device: str | None = None,
                amp: str | None = None, strict: bool = False, allow_resize: bool = False,
                data_label: str = "ImageNet-C", demo: bool = False, seed: int = 0) -> ImageNetCConfig:
    """An :class:`ImageNetCConfig` with defaults filled in (corruption names checked, device picked)."""
    import torch

    from dtn_bench.imagenet_c.data import resolve_corruptions, resolve_severities

    return ImageNetCConfig(
        model=model, norm=norm, checkpoint=None if checkpoint is None else str(checkpoint), num_classes=num_classes,
        data_dir=None if data_dir is None else str(data_dir), clean_dir=None if clean_dir is None else str(clean_dir),
        clean_error=clean_error, corruptions=resolve_corruptions(corruptions, extra=extra),
        severities=resolve_severities(severities), subset=subset,
        subset_file=None if subset_file is None else str(subset_file), subset_seed=subset_seed,
        batch_size=batch_size, workers=default_workers() if workers is None else workers,
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"), amp=amp, strict=strict,
        allow_resize=allow_resize, data_label=data_label, demo=demo, seed=seed)


def evaluate(model: str = "vit_t_dtn", data_dir: str | Path | None = None, *, out: str | Path = "results",
             run_id: str | None = None, resume: bool = False, debug: bool = False, on_event=None,
             **settings) -> ImageNetCResult:
    """Evaluate ``model`` on ImageNet-C under ``data_dir`` and write a run folder; see :func:`make_config`.

    Args:
        model: zoo model (``vit_s_dtn``) or timm model name.
        data_dir: the ImageNet-C folder (``<corruption>/<severity>/<wnid>/<image>``).
        out: results root (run folder ``out/imagenet-c/<run id>``).
        run_id: run folder name (default: model, norm and a hash of the settings, so the same settings resume the
            same folder).
        resume: skip (corruption, severity) pairs already in the run folder.
        debug: full details in checkpoint errors.
        on_event: progress callback, see :func:`dtn_bench.imagenet_c.evaluation.run`.
        **settings: :func:`make_config` keywords (``checkpoint``, ``clean_dir`` / ``clean_error``, ``corruptions``,
            ``severities``, ``subset`` / ``subset_file``, ``batch_size``, ``workers``, ``device``, ``amp``, ...).

    Returns:
        An :class:`ImageNetCResult`.

    Raises:
        DTNBenchError: any problem with the input, before any work where it can be known then.
    """
    from dtn_bench.results.io import read_rows

    cfg = make_config(model, data_dir, **settings)
    p = plan(cfg, debug=debug)
    path = run(p, out=out, run_id=run_id, resume=resume, on_event=on_event)
    if path is None:
        return ImageNetCResult(None, pd.DataFrame(), None)
    rows = read_rows(path)
    return ImageNetCResult(path, rows, summarize(rows).get((p.config.model, p.norm_label, p.config.data_name)))


def demo(model: str = "vit_t_dtn", *, out: str | Path = "results", norm: str | None = None, classes: int = 10,
         images: int = 2, train_images: int = 16, corruptions: Sequence[str] | None = None,
         severities: Sequence[int] | None = None, seed: int = 0, data_root: str | Path | None = None,
         progress=None, **settings) -> ImageNetCResult:
    """The offline demo: build the procedural set through the generator, fit the stand-in model, evaluate.

    Everything is labelled ``demo data - not ImageNet-C``. See :mod:`dtn_bench.imagenet_c.demo_data`.
    """
    from dtn_bench.imagenet_c import demo_data as dm
    from dtn_bench.imagenet_c.data import resolve_corruptions, resolve_severities

    corr = resolve_corruptions(corruptions)
    sev = resolve_severities(severities)
    root = Path(data_root) if data_root else Path(out) / SUITE / ".demo-data" / f"c{classes}-i{images}-s{seed}"
    paths = dm.make_demo_data(root, classes=classes, images=images, train_images=train_images,
                              corruptions=list(corr), severities=sev, seed=seed,
                              device=settings.get("device") or "cpu", progress=progress)
    ckpt = dm.fit_demo_model(model, paths["train"], root / f"model-{model}{'-' + norm if norm else ''}.safetensors",
                             norm=norm, seed=seed)
    return evaluate(model, paths["imagenet_c"], out=out, norm=norm, checkpoint=ckpt, num_classes=classes,
                    clean_dir=paths["clean"], corruptions=corr, severities=sev, data_label=DEMO_LABEL, demo=True,
                    seed=seed, **settings)
