"""``dtn-bench shifts``: one model on every set under shift found under a data root, one table.

The sets and the folder names they are found by are :data:`dtn_bench.shifts.sets.SETS`; each set also has an option
``--<set>-dir`` for a folder elsewhere. ``dtn-bench table shifts RUN...`` combines runs of several models.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.options import (
    EmaOpt,
    OutOpt,
    PlacementOpt,
    PretrainedFileOpt,
    PretrainedOpt,
    RunIdOpt,
    csv_list,
    parse_severities,
)
from dtn_bench.cli.output import STATE, ProgressView, console, err_console, print_tables
from dtn_bench.errors import DTNBenchError

app = typer.Typer()

SET_NAMES = ("imagenet-val", "imagenet-c", "imagenet-3dcc", "imagenet-c-bar", "imagenet-a", "imagenet-r",
             "imagenet-sketch", "imagenet-v2-matched-frequency", "imagenet-v2-threshold0.7", "imagenet-v2-top-images",
             "cifar10-c", "cifar100-c", "tiny-imagenet-c")
"""The sets (:data:`dtn_bench.shifts.sets.SETS`, written out so ``--help`` imports nothing heavy)."""


def _dir_param(name: str) -> str:
    return "dir_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def shifts(
    model: Annotated[str, typer.Option("--model", help="Small, zoo or timm model name.")] = "vit_t_ln",
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Weights to load (its SHA-256 keys the "
                                                    "run).")] = None,
    ema: EmaOpt = True,
    pretrained: PretrainedOpt = False,
    pretrained_file: PretrainedFileOpt = None,
    norm: Annotated[str | None, typer.Option("--norm", help="Put this registered normaliser into the model.")] = None,
    placement: PlacementOpt = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Classifier outputs (default: the "
                                                    "model's; ImageNet sets need 1000).")] = None,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="The folder holding the sets, each in a "
                                                   "folder named as released (imagenet-val, imagenet-c, imagenet-a, "
                                                   "imagenetv2-matched-frequency-format-val, sketch, ...).")] = None,
    sets: Annotated[str | None, typer.Option("--sets", help="Comma-separated sets to evaluate (default: every set "
                                             "found): " + ", ".join(SET_NAMES) + ".")] = None,
    severities: Annotated[str | None, typer.Option("--severities", help="Severities of the corruption sets "
                                                   "(default 1,2,3,4,5).")] = None,
    subset: Annotated[int | None, typer.Option("--subset", help="ImageNet val's sets (val, -C, -3DCC, -C-bar): a "
                                               "class-stratified sample of N images per unit.")] = None,
    subset_file: Annotated[Path | None, typer.Option("--subset-file", help="ImageNet val's sets: the images listed "
                                                     "(wnid/name per line); RobustBench's 5,000 is recognised and "
                                                     "its mCE normalised by AlexNet on that subset.")] = None,
    subset_seed: Annotated[int, typer.Option("--subset-seed", help="Seed of the --subset sample.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 64,
    workers: Annotated[int | None, typer.Option("--workers", help="DataLoader workers (default: half the cores, at "
                                                "most 8).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (default: cuda when there is a "
                                               "GPU).")] = None,
    amp: Annotated[str | None, typer.Option("--amp", help="bf16: autocast the forward pass.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="An unreadable image is fatal (default: counted and "
                                         "named).")] = False,
    allow_resize: Annotated[bool, typer.Option("--allow-resize", help="Resize as-released images whose size is not "
                                               "the model's (changes results).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the units already finished.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Offline demo on procedural stand-ins of ImageNet val, -C, "
                                       "-V2 and -Sketch (not the releases) with a stand-in model.")] = False,
    demo_classes: Annotated[int, typer.Option("--demo-classes", help="Demo: procedural classes (2-12).")] = 10,
    demo_images: Annotated[int, typer.Option("--demo-images", help="Demo: images per class and unit.")] = 2,
    seed: Annotated[int | None, typer.Option("--seed", help="Without --checkpoint: seed of the random weights; "
                                             "demo: of the images and the stand-in model.")] = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
    **set_dirs,
) -> None:
    """Evaluate one model on every set under shift found under --data-root and print one table.

    Clean top-1 on ImageNet val, then per set its headline metric (mCE, labelled with its normalisation, or top-1)
    and the drop from clean (timm's top1_diff; ImageNet-A / -R against clean val over their 200 classes). Corruption
    sets go in as released; natural-image sets through the model's own eval transform (timm). Rows per unit, resume,
    torchrun sharding and per-image bits as imagenet-c.
    """
    from dtn_bench.distributed import is_main_process
    from dtn_bench.shifts import suite as S

    dirs = {name: str(set_dirs[_dir_param(name)]) for name in SET_NAMES if set_dirs.get(_dir_param(name))}
    settings = dict(norm=norm, placement=placement, num_classes=num_classes, severities=parse_severities(severities),
                    subset=subset, subset_file=subset_file, subset_seed=subset_seed, batch_size=batch_size,
                    workers=workers, device=device, amp=amp, strict=strict, allow_resize=allow_resize)
    main = is_main_process()
    with ProgressView("shifts", enabled=main) as view:
        if demo:
            if data_root is not None or checkpoint is not None or dirs or pretrained or pretrained_file is not None:
                raise DTNBenchError("--demo makes its own sets and model: drop --data-root, --checkpoint, "
                                    "--pretrained, --pretrained-file and the --<set>-dir options")
            from dtn_bench.shifts.demo import make_shifts_demo

            root = out / S.SUITE / ".demo-data" / f"c{demo_classes}-i{demo_images}-s{seed or 0}"
            data_root, ckpt = make_shifts_demo(root, model, norm=norm, classes=demo_classes, images=demo_images,
                                               seed=seed or 0, progress=view.counter("demo", "generating demo "
                                                                                             "images"))
            settings.update(checkpoint=ckpt, num_classes=demo_classes, demo=True, seed=seed)
        else:
            settings.update(checkpoint=checkpoint, ema=ema, pretrained=pretrained, pretrained_file=pretrained_file,
                            seed=seed if checkpoint is None else None)
        cfg = S.make_config(model, data_root, sets=csv_list(sets, "--sets"), set_dirs=dirs, **settings)
        result = S.evaluate(cfg, out=out, run_id=run_id, resume=resume, debug=STATE["debug"],
                            on_event=view if main else None)
    if result.path is None:
        return
    from dtn_bench.shifts.report import console as summaries

    print_tables(summaries(result.rows))
    if view.unreadable:
        err_console.print(f"unreadable images (counted, left out of the error): {len(view.unreadable)}",
                          highlight=False)
    view.totals()
    console.print(f"results: {result.path}", soft_wrap=True)


def _with_set_dirs(func):
    """``func`` with one ``--<set>-dir`` option per set (typer reads the options from the signature)."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    for name in SET_NAMES:
        opt = Annotated[Path | None, typer.Option(f"--{name}-dir", help=f"The {name} folder, if not under "
                                                  f"--data-root.")]
        params.append(inspect.Parameter(_dir_param(name), inspect.Parameter.KEYWORD_ONLY, annotation=opt,
                                        default=None))
        func.__annotations__[_dir_param(name)] = opt
    func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return func


app.command("shifts")(_with_set_dirs(shifts))
