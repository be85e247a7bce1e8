"""``dtn-bench corrupt`` (ImageNet-C generator) and ``dtn-bench bench corrupt`` (its speed benchmark).

Registered on the app of :mod:`dtn_bench.cli.main` when that module imports this one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dtn_bench.cli.main import (
    OutOpt,
    RunIdOpt,
    _csv,
    _print_frame,
    _run_suite,
    _write_report,
    app,
    bench_app,
    console,
    err_console,
)
from dtn_bench.errors import DTNBenchError

SUITE = "bench-corrupt"

DEVIATIONS = (
    "Deviations from the released recipe: frost uses a procedural texture (plasma fractal + line-kernel "
    "crystals) instead of the authors' frost photographs; motion blur and snow use a line kernel computed like "
    "ImageMagick's MotionBlurImage (no ImageMagick); glass blur scrambles pixels in parallel instead of the serial "
    "swap sweep; elastic uses exact bilinear sampling (OpenCV quantises to 1/32 px); spatter re-implements OpenCV's "
    "Canny / distance transform / equalisation in torch. Deterministic corruptions match the recipe within 1 grey "
    "level before the JPEG save."
)


def _severities(text: str | None) -> tuple[int, ...]:
    from dtn_bench.data.corruptions import resolve_severities

    if text is None:
        return (1, 2, 3, 4, 5)
    values = _csv(text) or ()
    if not values:
        raise DTNBenchError(f"--severities {text!r}: expected comma-separated integers 1..5 like 1,3,5")
    return resolve_severities(values)


@app.command("corrupt", help="Generate ImageNet-C from an image folder SRC/<class>/<image> into "
             "OUT/<corruption>/<severity>/<class>/<image> (the layout `imagenet-c --data-dir` reads): "
             "Resize(256) + CenterCrop(224), corrupt, JPEG quality 85; seeded per image (same seed, same bytes). "
             + DEVIATIONS)
def corrupt(
    src: Annotated[Path, typer.Argument(help="Source folder SRC/<class>/<image> (e.g. ImageNet val).")],
    out: Annotated[Path, typer.Argument(help="Output root: OUT/<corruption>/<severity>/<class>/<image>.")],
    corruptions: Annotated[str | None, typer.Option("--corruptions", help="Comma-separated names "
                           "(default: the 15 mCE corruptions).")] = None,
    severities: Annotated[str | None, typer.Option("--severities", help="Comma-separated severities 1..5 "
                          "(default: all five).")] = None,
    extra: Annotated[bool, typer.Option("--extra", help="Also the 4 extras: speckle_noise, gaussian_blur, "
                     "spatter, saturate.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Run seed; each image's seed is derived from (seed, "
                    "corruption, severity, relative path).")] = 0,
    device: Annotated[str, typer.Option("--device", help="Torch device of the corruption maths: cpu, cuda.")]
    = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 32,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from dtn_bench.data.corruptions import check_folder_args, corrupt_folder, resolve_corruptions

    names = resolve_corruptions(_csv(corruptions), extra)
    sevs = _severities(severities)
    check_folder_args(src, out, batch_size, device)  # every input error before the progress bar
    with Progress(TextColumn("[bold]ImageNet-C"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("corrupt", total=None)
        summary = corrupt_folder(src, out, names, sevs, seed=seed, device=device, batch_size=batch_size,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table(title=f"ImageNet-C in {summary.out_dir} ({summary.seconds:.1f} s, device {summary.device})")
    for col in ("corruption", "severities", "files", "corruption time (s)"):
        table.add_column(col, justify="left" if col == "corruption" else "right")
    for name in summary.corruptions:
        table.add_row(name, ",".join(map(str, summary.severities)), f"{summary.images * len(summary.severities):,}",
                      f"{summary.per_corruption_s.get(name, 0.0):.2f}")
    console.print(table)
    console.print(f"{summary.files:,} files from {summary.images:,} images, seed {summary.seed}")


# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorruptBenchConfig:
    """Settings of one corruption speed benchmark."""

    corruptions: tuple[str, ...] = ()
    extra: bool = False
    severity: int = 3
    batch: int = 16
    warmup: int = 1
    iters: int = 3
    threads: int = 0
    device: str = "cpu"
    seed: int = 0
    preset: str = "default"

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for a bad field."""
        from dtn_bench.data.corruptions import _check_device, resolve_corruptions, resolve_severities

        resolve_corruptions(self.corruptions or None, self.extra)
        resolve_severities([self.severity])
        for name in ("batch", "iters"):
            if getattr(self, name) <= 0:
                raise DTNBenchError(f"bench corrupt: --{name} must be > 0, got {getattr(self, name)}")
        if self.warmup < 0 or self.threads < 0:
            raise DTNBenchError("bench corrupt: --warmup and --threads must be >= 0")
        _check_device(self.device)

    def as_dict(self) -> dict:
        return asdict(self)


def _render_bench(writer) -> None:
    import pandas as pd

    from dtn_bench.plots import grouped_bars
    from dtn_bench.results.tables import pivot, render_document

    def per_image(df: pd.DataFrame) -> pd.DataFrame:
        t = df[df["metric"].isin(["time_ms", "cpu_time_ms"])].copy()
        t["column"] = t["metric"].str.replace("_ms", "") + " " + t["stat"] + " (ms)"
        return pivot(t, index="corruption", columns="column")

    def report(df: pd.DataFrame, fmt: str) -> str:
        s = df[df["corruption"] == "pass"].assign(figure=lambda d: d["metric"] + " " + d["stat"])
        return render_document([("Time per 224 x 224 image", per_image(df)),
                                ("One pass over the set", s.set_index("figure")[["value", "unit"]])], fmt)

    def plot(df: pd.DataFrame):
        t = per_image(df[df["corruption"] != "pass"])
        cols = [c for c in t.columns if c.startswith("time ")]
        return grouped_bars(t[cols], ylabel="ms per 224 image", title="Corruption cost")

    df = _write_report(writer, report, plot, "corrupt.png")
    _print_frame(per_image(df), "Corruption speed (ms per 224 x 224 image)", "corruption")
    for _, r in df[(df["corruption"] == "pass") & (df["metric"] != "time_ms")].iterrows():
        console.print(f"one pass: {r['metric']} = {r['value']:.2f} {r['unit']}")


@bench_app.command("corrupt")
def bench_corrupt(
    preset: Annotated[str, typer.Option("--preset", help="Preset of suites/bench-corrupt.yaml: default, quick.")]
    = "default",
    corruptions: Annotated[str | None, typer.Option("--corruptions", help="Comma-separated names "
                           "(default: the 15 mCE corruptions).")] = None,
    extra: Annotated[bool, typer.Option("--extra", help="Also time the 4 extras.")] = False,
    severity: Annotated[int | None, typer.Option("--severity", help="Severity timed (1..5).")] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="Images per corrupt_batch call.")] = None,
    iters: Annotated[int | None, typer.Option("--iters", help="Timed repetitions (median).")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="Untimed repetitions first.")] = None,
    threads: Annotated[int, typer.Option("--threads", help="torch threads (0: default).")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic images and the noise.")] = 0,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Time one pass of the corruptions over 224 x 224 images (ms per image, images/s for the whole set, speed-up
    over the imagecorruptions package's ~236 ms on a 2-core CPU). Corruption maths only: no decoding, no JPEG save.
    """
    import torch

    from dtn_bench.cli.main import _preset_config
    from dtn_bench.data.corruptions import benchmark, resolve_corruptions

    overrides = dict(severity=severity, batch=batch, iters=iters, warmup=warmup, corruptions=_csv(corruptions))
    cfg = _preset_config(SUITE, preset, CorruptBenchConfig, overrides, extra=extra, threads=threads, device=device,
                         seed=seed, preset=preset)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    names = resolve_corruptions(cfg.corruptions or None, cfg.extra)
    items = benchmark(names, severity=cfg.severity, batch=cfg.batch, warmup=cfg.warmup, iters=cfg.iters,
                      device=cfg.device, seed=cfg.seed, suite=SUITE)
    _run_suite(SUITE, cfg, items, len(names) + 1, out, run_id, render=_render_bench)
