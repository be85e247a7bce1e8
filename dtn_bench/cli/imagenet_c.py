"""``dtn-bench imagenet-c``, ``dtn-bench table imagenet-c RUN...`` and ``dtn-bench bench imagenet-c-pipeline``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dtn_bench.cli.options import (
    EmaOpt,
    NormOpt,
    OutOpt,
    PlacementOpt,
    PretrainedFileOpt,
    PretrainedOpt,
    RunIdOpt,
    csv_list,
    parse_severities,
)
from dtn_bench.cli.output import STATE, ProgressView, console, err_console, say_rows_are_kept
from dtn_bench.errors import DTNBenchError

app = typer.Typer()
bench = typer.Typer()

ModelOpt = Annotated[str, typer.Option("--model", help="Zoo model (vit_t_dtn) or timm model name.")]
CkptOpt = Annotated[Path | None, typer.Option("--checkpoint", help="Weights to load (its SHA-256 keys the run).")]
ClassesOpt = Annotated[int | None, typer.Option("--num-classes", help="Classifier outputs (default: the model's; "
                                                "1000 = ImageNet-1k, checked against the wnid folders).")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="ImageNet-C folder: <corruption>/<severity>/<wnid>/"
                                              "<image> (download: https://zenodo.org/record/2235448).")]
CorrOpt = Annotated[str | None, typer.Option("--corruptions", help="Comma-separated corruption names (default: the 15"
                                             " of the mCE).")]
SevOpt = Annotated[str | None, typer.Option("--severities", help="Comma-separated severities (default 1,2,3,4,5).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="DataLoader workers (default: half the cores, "
                                                "at most 8; 0 decodes in the main process).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda when there is a GPU).")]
AmpOpt = Annotated[str | None, typer.Option("--amp", help="bf16: autocast the forward pass.")]
ResizeOpt = Annotated[bool, typer.Option("--allow-resize", help="Resize images whose size is not the model's input "
                                         "size (changes results; ImageNet-C is 224 x 224).")]


def _clean_error(text: str | None) -> float | None:
    """``0.239`` or ``23.9%`` -> 0.239; a bare number above 1 is ambiguous and refused."""
    if text is None:
        return None
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise DTNBenchError(f"--clean-error {text!r}: give a fraction (0.239) or a percent (23.9%)") from None
    if not 0.0 <= value <= 1.0:
        raise DTNBenchError(f"--clean-error {text!r}: give a fraction in [0, 1] (0.239) or a percent (23.9%)")
    return value


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _error_table(s, label: str) -> Table:
    """Top-1 error (%) per corruption and severity, CE, and the mean top-5 error when it was measured."""
    from dtn_bench.metrics import CORRUPTIONS, EXTRA_CORRUPTIONS

    table = Table(title=f"ImageNet-C top-1 error (%) - {label}")
    sevs = sorted({k for e in s.errors.values() for k in e})
    top5 = bool(s.top5_errors) or s.clean_top5_error is not None
    cols = ("corruption", *(str(k) for k in sevs), "CE", *(("top-5 err (mean over sev.)",) if top5 else ()))
    for col in cols:
        table.add_column(col, justify="left" if col == "corruption" else "right")
    top5_cell = (lambda value: (_pct(value),)) if top5 else (lambda value: ())
    if s.clean_error is not None:
        table.add_row("clean", *(f"{100 * s.clean_error:.2f}" if i == 0 else "" for i in range(len(sevs))), "",
                      *top5_cell(s.clean_top5_error))
    for c in (*CORRUPTIONS, *EXTRA_CORRUPTIONS):
        if c in s.errors:
            cells = [f"{100 * s.errors[c][k]:.2f}" if k in s.errors[c] else "—" for k in sevs]
            table.add_row(c, *cells, f"{s.ce[c]:.1f}" if c in s.ce else "—",
                          *top5_cell(_mean(s.top5_errors.get(c, {}).values())))
    return table


def _means(s) -> list[str]:
    """mCE, relative mCE and the unnormalised means (over the 15 x 5, or over the pairs evaluated)."""
    from dtn_bench.metrics import CORRUPTIONS

    parts = [f"mCE {s.mce:.2f}" if s.mce is not None else "mCE — (needs all 15 corruptions x 5 severities)",
             f"relative mCE {s.relative_mce:.2f}" if s.relative_mce is not None else "relative mCE —"]
    if s.mean_corruption_error is not None:
        parts.append(f"mean corruption error (unnormalised) {100 * s.mean_corruption_error:.2f}%")
    pairs = [e for c in CORRUPTIONS for e in s.errors.get(c, {}).values()]
    if s.mean_corruption_accuracy is not None:
        parts.append(f"mean corruption accuracy (unnormalised, 15 x 5) {100 * s.mean_corruption_accuracy:.2f}%")
    elif pairs:
        parts.append(f"mean accuracy over the {len(pairs)} evaluated pair(s) of the 15 {100 * (1 - _mean(pairs)):.2f}%")
    pairs5 = [e for c in CORRUPTIONS for e in s.top5_errors.get(c, {}).values()]
    if s.mean_top5_error is not None:
        parts.append(f"mean top-5 error (unnormalised, 15 x 5) {100 * s.mean_top5_error:.2f}%")
    elif pairs5:
        parts.append(f"mean top-5 error over the {len(pairs5)} evaluated pair(s) of the 15 {100 * _mean(pairs5):.2f}%")
    return parts


def _unreadable(rows, count: int) -> str:
    names = sorted({n for v in rows.get("unreadable_files", []) if isinstance(v, str) and v for n in v.split(";")})
    return (f"unreadable images (counted, left out of the error): {count}: "
            f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")


def _summary(result, label: str, progress: ProgressView) -> None:
    """The run's summary on stdout: the error table, the means, unreadable files, images/s and the run folder."""
    s = result.summary
    if s is None:
        return
    console.print(_error_table(s, label))
    console.print("; ".join(_means(s)) + f"  [{label}]", highlight=False, soft_wrap=True, markup=False)
    if s.unreadable:
        console.print(_unreadable(result.rows, s.unreadable), highlight=False)
    if progress.done:
        d = progress.done
        console.print(f"{d.images:,} images in {d.seconds:.1f} s ({d.img_s:,.1f} img/s end-to-end)")
    console.print(f"results: {result.path}", soft_wrap=True)


@app.command("imagenet-c")
def imagenet_c(
    model: ModelOpt,
    data_dir: DataOpt = None,
    norm: NormOpt = None,
    placement: PlacementOpt = None,
    checkpoint: CkptOpt = None,
    ema: EmaOpt = True,
    pretrained: PretrainedOpt = False,
    pretrained_file: PretrainedFileOpt = None,
    num_classes: ClassesOpt = None,
    clean_dir: Annotated[Path | None, typer.Option("--clean-dir", help="Clean ImageNet val (<val>/<wnid>/<image>) "
                                                   "for the clean error (resized 256 / cropped 224 like ImageNet-C)."
                                                   )] = None,
    clean_error: Annotated[str | None, typer.Option("--clean-error", help="The model's clean top-1 error: 0.239 or "
                                                    "23.9%.")] = None,
    corruptions: CorrOpt = None,
    severities: SevOpt = None,
    extra: Annotated[bool, typer.Option("--extra", help="Also the 4 extra corruptions (own CE, never in the mCE): "
                                        "added to --corruptions when both are given, as `dtn-bench corrupt` does.")]
    = False,
    subset: Annotated[int | None, typer.Option("--subset", help="Class-stratified deterministic sample of N images "
                                               "per pair.")] = None,
    subset_file: Annotated[Path | None, typer.Option("--subset-file", help="Evaluate the images listed in FILE "
                                                     "(wnid/name or name per line; e.g. RobustBench's 5,000).")]
    = None,
    subset_seed: Annotated[int, typer.Option("--subset-seed", help="Seed of the --subset sample.")] = 0,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    amp: AmpOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="An unreadable image is fatal (default: counted and "
                                         "named).")] = False,
    allow_resize: ResizeOpt = False,
    data_label: Annotated[str | None, typer.Option("--data-label", help="What to call the data in rows, tables and "
                                                   "plots (default: ImageNet-C, or 'generated by dtn-bench corrupt "
                                                   "(seed N) - not the released ImageNet-C' for a folder written by "
                                                   "`dtn-bench corrupt`).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip (corruption, severity) pairs already finished.")]
    = False,
    demo: Annotated[bool, typer.Option("--demo", help="Offline demo on procedural images made by the corruption "
                                       "generator (not ImageNet-C).")] = False,
    demo_classes: Annotated[int, typer.Option("--demo-classes", help="Demo: procedural classes (2-12).")] = 10,
    demo_images: Annotated[int, typer.Option("--demo-images", help="Demo: evaluated images per class.")] = 2,
    demo_train_images: Annotated[int, typer.Option("--demo-train-images", help="Demo: images per class the "
                                                   "stand-in model's head is fitted on.")] = 16,
    seed: Annotated[int | None, typer.Option("--seed", help="Demo: seed of the images and the stand-in model. "
                                             "Without --checkpoint: seed of the random initial weights (default "
                                             "0).")] = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Evaluate a model on ImageNet-C: top-1 error per corruption and severity, CE, mCE, relative mCE.

    Images are fed as released (224 x 224, no resize, no crop) with the model's mean/std; rows are appended per
    (corruption, severity) as they finish (--resume continues); runs under torchrun shard images across ranks.
    Without --checkpoint the weights are random (built under --seed, the same in every process) and a warning says
    so; the rows and tables say 'random init (seed N)'. --pretrained / --pretrained-file load timm's pretrained
    weights of a stock timm model instead (recorded as weights_source and weights_sha256).
    """
    from dtn_bench import imagenet_c as ic
    from dtn_bench.distributed import is_main_process

    settings = dict(norm=norm, placement=placement, corruptions=csv_list(corruptions, "--corruptions"),
                    severities=parse_severities(severities), extra=extra, subset=subset, subset_file=subset_file,
                    subset_seed=subset_seed, batch_size=batch_size,
                    workers=workers, device=device, amp=amp, strict=strict, allow_resize=allow_resize)
    if demo:
        if data_dir is not None or checkpoint is not None or clean_dir is not None or clean_error is not None \
                or data_label is not None or pretrained or pretrained_file is not None:
            raise DTNBenchError("--demo makes its own data, model and clean set and labels them: drop --data-dir, "
                                "--checkpoint, --pretrained, --pretrained-file, --clean-dir, --clean-error and "
                                "--data-label")
        label = ic.DEMO_LABEL
    else:
        label = _data_label_of(data_dir, data_label)
    main = is_main_process()
    if main:
        err_console.print(label, style="bold", highlight=False, soft_wrap=True)
    say_rows_are_kept()
    with ProgressView(f"imagenet-c ({label})", enabled=main) as progress:
        hook = progress if main else None
        if demo:
            result = ic.demo(model, out=out, classes=demo_classes, images=demo_images,
                             train_images=demo_train_images, seed=seed, run_id=run_id,
                             resume=resume, debug=STATE["debug"], on_event=hook,
                             progress=progress.counter("demo", f"generating demo images ({label})") if hook
                             else None, **settings)
        else:
            cfg = ic.make_config(model, data_dir, checkpoint=checkpoint, ema=ema, pretrained=pretrained,
                                 pretrained_file=pretrained_file, num_classes=num_classes,
                                 clean_dir=clean_dir, clean_error=_clean_error(clean_error), data_label=data_label,
                                 seed=seed if checkpoint is None else None, **settings)  # seed: random weights only
            result = ic.evaluate_config(cfg, out=out, run_id=run_id, resume=resume, debug=STATE["debug"],
                                        on_event=hook)
    if result.path is not None:
        _summary(result, label if result.summary is None else _data_label(result), progress)


def _data_label_of(data_dir: Path | None, data_label: str | None) -> str:
    """What the data are called: ``--data-label``, else found from the folder (one-line errors before any work)."""
    from dtn_bench.imagenet_c import data as D
    from dtn_bench.imagenet_c.evaluation import check_data_label

    if data_dir is None:
        raise DTNBenchError(f"no --data-dir given. {D.DOWNLOAD_HINT}")
    check_data_label(data_label)
    return data_label or D.data_label(data_dir)


def _data_label(result) -> str:
    data = result.rows["data"].dropna().unique() if "data" in result.rows.columns else []
    return "; ".join(map(str, data)) or "ImageNet-C"


@bench.command("imagenet-c-pipeline")
def bench_imagenet_c_pipeline(
    model: ModelOpt = "vit_t_ln",
    data_dir: DataOpt = None,
    num_classes: ClassesOpt = None,
    images: Annotated[int, typer.Option("--images", help="Images of the first pair pushed through the pipeline.")]
    = 256,
    corruptions: CorrOpt = None,
    severities: SevOpt = None,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    amp: AmpOpt = None,
    allow_resize: ResizeOpt = False,
    demo: Annotated[bool, typer.Option("--demo", help="Use the demo images (made if needed) instead of --data-dir.")]
    = False,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """End-to-end images/s of the ImageNet-C loop (read, decode, copy, normalise, forward) vs model-only images/s."""
    from dtn_bench import imagenet_c as ic
    from dtn_bench.imagenet_c.bench import PipelineConfig
    from dtn_bench.imagenet_c.evaluation import check_count

    check_count("images", images)
    if demo:
        data_dir, num_classes, corruptions, severities = _pipeline_demo_data(out, images), 10, "fog", "3"
        label = ic.DEMO_LABEL
    elif data_dir is None:
        from dtn_bench.imagenet_c.data import DOWNLOAD_HINT

        raise DTNBenchError(f"no --data-dir given (or use --demo). {DOWNLOAD_HINT}")
    else:
        from dtn_bench.imagenet_c.data import data_label

        label = data_label(data_dir)
    corr, sevs = csv_list(corruptions, "--corruptions"), parse_severities(severities)
    cfg = PipelineConfig.from_preset(
        None, model=model, data_dir=str(data_dir), num_classes=num_classes, corruption=corr[0] if corr else None,
        severity=sevs[0] if sevs else None, images=images, batch_size=batch_size, workers=workers, device=device,
        amp=amp, allow_resize=allow_resize, data_label=label)
    status = err_console.status("")

    def on_event(event) -> None:
        if event.kind == "progress" and event.task == "timing":
            status.update(event.status)
            status.start()

    say_rows_are_kept()
    try:
        result = ic.benchmark_pipeline_config(cfg, out=out, run_id=run_id, debug=STATE["debug"], on_event=on_event)
    finally:
        status.stop()
    if result.path is not None:
        _pipeline_summary(cfg, result)


def _pipeline_demo_data(out: Path, images: int) -> Path:
    """The demo images of the pipeline benchmark (made if needed): 10 classes, one pair (fog/3)."""
    from dtn_bench import imagenet_c as ic
    from dtn_bench.imagenet_c.demo_data import make_demo_data

    per_class = max(1, -(-images // 10))
    root = out / ic.SUITE / ".demo-data" / f"bench-c10-i{per_class}"
    with ProgressView(ic.DEMO_LABEL) as progress:
        paths = make_demo_data(root, classes=10, images=per_class, train_images=1, corruptions=["fog"],
                               severities=(3,), progress=progress.counter("demo", f"generating demo images "
                                                                                  f"({ic.DEMO_LABEL})"))
    return paths["imagenet_c"]


def _pipeline_summary(cfg, result) -> None:
    """The benchmark's images/s on stdout, then the run folder."""
    table = Table(title=f"ImageNet-C pipeline: {cfg.model}, batch {cfg.batch_size}, {cfg.workers} worker(s), "
                        f"{cfg.device} [{cfg.data_label}]")
    for col in ("pipeline", "images/s"):
        table.add_column(col, justify="right" if col != "pipeline" else "left")
    for r in result.rows.to_dict("records"):
        value = f"{r['value']:,.1f}" if r["metric"] == "throughput_img_s" else f"{r['value']:.2f}x"
        table.add_row(r["pipeline"], value)
    console.print(table)
    console.print(f"results: {result.path}")
