"""``dtn-bench cifar-c``: evaluate a model on CIFAR-10-C, CIFAR-100-C or Tiny-ImageNet-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.options import EmaOpt, OutOpt, PlacementOpt, RunIdOpt, csv_list, parse_severities
from dtn_bench.cli.output import STATE, ProgressView, console, print_tables, say_rows_are_kept

app = typer.Typer()


@app.command("cifar-c")
def cifar_c(
    model: Annotated[str | None, typer.Option("--model", help="vit_cifar_t_ln / vit_cifar_t_dtn (32 px), vit_tiny_t_ln"
                                              " / vit_tiny_t_dtn (64 px), or a zoo / timm model name (default: the "
                                              "preset's, else vit_cifar_t_ln).")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="A preset of suites/cifar-c.yaml (cifar10, "
                                               "cifar10-extra, cifar100, tiny-imagenet, quick); flags override it.")]
    = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="CIFAR-10-C / CIFAR-100-C: <corruption>.npy and "
                                                  "labels.npy; Tiny-ImageNet-C: <corruption>/<severity>/<wnid>/"
                                                  "<image>.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="cifar10, cifar100 or tiny-imagenet (default "
                                                "cifar10).")] = None,
    norm: Annotated[str | None, typer.Option("--norm", help="Put this registered normaliser into the model.")]
    = None,
    placement: PlacementOpt = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Weights to load (its SHA-256 keys the "
                                                    "run).")] = None,
    ema: EmaOpt = True,
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Classifier outputs (default: the "
                                                    "dataset's, 10 / 100 / 200).")] = None,
    clean_images: Annotated[Path | None, typer.Option("--clean-images", help="Clean test images, uint8 [N, H, W, 3] "
                                                      ".npy, for the clean error.")] = None,
    clean_labels: Annotated[Path | None, typer.Option("--clean-labels", help="Their labels, [N] integers .npy.")]
    = None,
    corruptions: Annotated[str | None, typer.Option("--corruptions", help="Comma-separated corruption names "
                                                    "(default: the 15).")] = None,
    severities: Annotated[str | None, typer.Option("--severities", help="Comma-separated severities (default "
                                                   "1,2,3,4,5).")] = None,
    extra: Annotated[bool, typer.Option("--extra", help="Also the 4 extra corruptions (CIFAR-C holds 19; never in "
                                        "the mean corruption error).")] = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per batch (default 256).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda when there is a GPU).")]
    = None,
    amp: Annotated[str | None, typer.Option("--amp", help="bf16: autocast the forward pass.")] = None,
    data_label: Annotated[str | None, typer.Option("--data-label", help="What to call the data in rows and tables "
                                                   "(default: the dataset's name).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Without --checkpoint: seed of the random weights.")]
    = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip (corruption, severity) pairs already finished.")]
    = False,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Evaluate a model on CIFAR-10-C, CIFAR-100-C or Tiny-ImageNet-C: top-1 error per corruption and severity.

    The arrays are read memory-mapped, images fed as released with the model's mean/std; the mean corruption error
    and accuracy are unnormalised (no AlexNet baseline exists for these datasets). Rows are appended per pair
    (--resume continues); under torchrun the images of each pair are sharded across ranks.
    """
    from dtn_bench import cifar_c as cc
    from dtn_bench.cifar_c.report import console as summaries
    from dtn_bench.distributed import is_main_process

    cfg = cc.make_config(model, data_dir, preset=preset, dataset=dataset, norm=norm, placement=placement,
                         checkpoint=checkpoint, ema=ema,
                         num_classes=num_classes, clean_images=clean_images, clean_labels=clean_labels,
                         corruptions=csv_list(corruptions, "--corruptions"), severities=parse_severities(severities),
                         extra=extra,
                         batch_size=batch_size, device=device, amp=amp, data_label=data_label, seed=seed)
    main = is_main_process()
    say_rows_are_kept()
    with ProgressView(f"cifar-c ({cfg.data_name})", enabled=main) as progress:
        result = cc.evaluate_config(cfg, out=out, run_id=run_id, resume=resume, debug=STATE["debug"],
                                    on_event=progress if main else None)
    if result.path is None:
        return
    if not result.rows.empty:
        print_tables(summaries(result.rows))
    progress.totals()
    console.print(f"results: {result.path}", soft_wrap=True)
