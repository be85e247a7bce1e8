"""``dtn-bench train``: train a vision model with a recipe; settings overridden as ``key=value``.

Every field of :class:`~dtn_bench.train.config.TrainConfig` is a setting: the recipe (``--recipe``) sets some, and
``--set key=value ...`` (or ``key=value`` words after the options) sets any, checked against the field's type. Only
the settings one changes most have their own option (``--model``, ``--norm``, ``--dataset``, ``--data-dir``,
``--seed``, ``--device``). The resolved recipe is printed before training (with where each value came from) and
recorded in the run folder's ``config.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.options import AssignmentsArg, DeviceOpt, NormOpt, OutOpt, RunIdOpt, SeedOpt, SetOpt
from dtn_bench.cli.output import ProgressView, console, print_tables, say_rows_are_kept
from dtn_bench.errors import DTNBenchError

app = typer.Typer()

@app.command("train", context_settings={"allow_interspersed_args": True})
def train_command(
    assignments: AssignmentsArg = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="A recipe of suites/train.yaml: authors, deit, "
                                               "cifar, tiny-imagenet, quick (default: quick; with --resume: the "
                                               "run's own).")] = None,
    settings: SetOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="Zoo name (vit_s_dtn), vit_cifar_t_* / vit_tiny_t_*, "
                                              "or a timm model (with --norm).")] = None,
    norm: NormOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="imagenet, cifar10, cifar100, tiny-imagenet, or the "
                                                "built-in digits / demo.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The dataset's folder (ImageNet: train/ and "
                                                  "val/ by wnid; CIFAR: the python pickles; Tiny-ImageNet-200).")]
    = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    show_recipe: Annotated[bool, typer.Option("--show-recipe", help="Print the resolved recipe and exit.")] = False,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue the run RUN_ID from its last checkpoint "
                                               "(its recorded settings; any setting given must agree).")] = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Train a vision model with a recipe from timm's training pieces.

    Rows per epoch (loss, top-1 / top-5 of the raw and EMA weights, lr, img/s, time, normaliser diagnostics), curves,
    and checkpoints in timm's CheckpointSaver layout that imagenet-c / cifar-c load with --checkpoint. Several
    processes: torchrun --nproc_per_node N -m dtn_bench train ...
    """
    from dtn_bench.distributed import world_size_from_env
    from dtn_bench.fields import parse_assignments
    from dtn_bench.train.config import TrainConfig

    if resume is not None and run_id is not None and run_id != resume:
        raise DTNBenchError(f"--resume {resume} and --run-id {run_id} name different runs")
    given = parse_assignments(TrainConfig, [*(settings or []), *(assignments or [])])
    flags = {"model": model, "norm": norm, "dataset": dataset, "seed": seed, "device": device,
             "data_dir": None if data_dir is None else str(data_dir.expanduser().resolve())}
    for key, value in flags.items():
        if value is None:
            continue
        if key in given and given[key] != value:
            raise DTNBenchError(f"--{key.replace('_', '-')} {value} and --set {key}={given[key]} disagree")
        given[key] = value
    given["world_size"] = world_size_from_env()
    cfg, sources = _resolve(recipe, given, resume, out)
    if show_recipe:
        console.print(_recipe_table(cfg, sources))
        return
    _run(cfg, sources, out, resume or run_id, resume is not None)


def _resolve(recipe: str | None, given: dict, resume: str | None, out: Path):
    """The config and the source of each setting; with ``--resume``, the run's recorded config (checked).

    With ``--resume`` and no ``--recipe`` the settings given go over the recorded ones, and any training setting they
    change is refused (one line naming it).
    """
    from dtn_bench.train.config import TrainConfig
    from dtn_bench.train.suite import check_resume, over_recorded

    if resume is None:
        return TrainConfig.resolve(recipe or "quick", given)
    if recipe is None:
        cfg = over_recorded(out, resume, given)
        return check_resume(out, resume, cfg), {k: "set" if k in given else "recorded" for k in cfg.as_dict()}
    cfg, sources = TrainConfig.resolve(recipe, given)
    return check_resume(out, resume, cfg), sources


def _recipe_table(cfg, sources: dict):
    from rich.table import Table

    from dtn_bench.fields import field_types, type_name

    types = field_types(type(cfg))
    table = Table(title=f"dtn-bench train, recipe {cfg.recipe}", caption=f"lr used: {cfg.scaled_lr:.6g} (lr, or "
                  "lr_base x batch / lr_base_size); set any with --set key=value")
    for col in ("setting", "value", "from", "type"):
        table.add_column(col)
    for key, value in cfg.as_dict().items():
        table.add_row(key, "none" if value is None else str(value), sources.get(key, "default"),
                      type_name(types[key]))
    return table


def _run(cfg, sources: dict, out: Path, run_id: str | None, resume: bool) -> None:
    from dtn_bench.train.suite import TRAIN_SUITE, train

    view = _TrainView(cfg, sources)
    try:
        with view:
            result = train(cfg, out=out, run_id=run_id, resume=resume, on_event=view)
    except KeyboardInterrupt:
        if view.run_id is not None:  # the one line main() prints on Ctrl-C
            say_rows_are_kept(f"interrupted: continue with dtn-bench train --resume {view.run_id}")
        raise
    if result.path is not None:
        print_tables(TRAIN_SUITE.report.console(result.rows))
        console.print(f"results: {result.path}", soft_wrap=True)


class _TrainView(ProgressView):
    """What ``dtn-bench train`` shows of the suite's events: the recipe, the data, a bar per epoch, a line per epoch."""

    def __init__(self, cfg, sources: dict):
        super().__init__("train", note_prefix="note: ")
        self.cfg, self.sources = cfg, sources
        self.run_id: str | None = None

    def on_settings(self, e) -> None:
        self.run_id = e.run_id
        console.print(_recipe_table(self.cfg, self.sources))
        console.print(f"{e.world} process(es) on {e.device}; run {e.run_id}", highlight=False)

    def on_data(self, e) -> None:
        console.print(f"data: {e.name}: {e.train:,} training and {e.val:,} validation images, {e.classes} classes",
                      highlight=False)

    def on_train_start(self, e) -> None:
        if e.start_epoch:
            console.print(f"resumed after epoch {e.start_epoch}")
        console.print(f"{e.params / 1e6:.2f} M parameters, input {e.input_size}, lr {e.lr:.4g}, "
                      f"{e.updates_per_epoch} updates per epoch", highlight=False)
        self.task("epoch", "epoch", e.updates_per_epoch)

    def on_train_step(self, e) -> None:
        tid = self.task("epoch", "epoch", e.steps)
        self.bar.update(tid, completed=e.step, total=e.steps, description=f"epoch {e.epoch + 1}",
                        rate=f"loss {e.loss:.3f}, {e.img_s:,.0f} img/s")

    def on_train_epoch(self, e) -> None:
        record = e.record
        val = record["val"]
        accs = ", ".join(f"top-1 {w} {v['top1']:.2%}" for w, v in val.items())
        console.print(f"epoch {record['epoch'] + 1}: loss {record['train_loss']:.4f}, {accs}, "
                      f"{record['images'] / max(record['train_seconds'], 1e-9):,.0f} img/s, "
                      f"{record['epoch_seconds']:.1f} s", highlight=False)
