"""``dtn-bench lra generate`` (ListOps data) and ``dtn-bench lra listops`` (the training suite).

``lra listops`` parses its options into a :class:`~dtn_bench.lra.config.ListOpsConfig` (``from_preset``), runs it
with :func:`dtn_bench.lra.listops` (the suite's runner) and shows what the suite emits: the settings table, the data
and training progress bars, a line per finished run, the paper-style table and the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dtn_bench.cli.options import (
    DepthOpt,
    DeviceOpt,
    DimOpt,
    FlushDenormalOpt,
    HeadsOpt,
    MlpDimOpt,
    OutOpt,
    PlacementOpt,
    RunIdOpt,
    TuneMallocOpt,
    csv_list,
    parse_ints,
)
from dtn_bench.cli.output import ProgressView, console, err_console, print_tables, say_rows_are_kept
from dtn_bench.data.listops import LRA_SPEC
from dtn_bench.errors import DTNBenchError

app = typer.Typer(help="Long-Range Arena ListOps: data generation and the training suite.", no_args_is_help=True)


@app.command("generate")
def lra_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder for basic_train.tsv, basic_val.tsv, basic_test.tsv.")],
    train: Annotated[int, typer.Option("--train", help="Training samples.")] = LRA_SPEC.train,
    val: Annotated[int, typer.Option("--val", help="Validation samples.")] = LRA_SPEC.val,
    test: Annotated[int, typer.Option("--test", help="Test samples.")] = LRA_SPEC.test,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same arguments, same bytes).")] = LRA_SPEC.seed,
    min_length: Annotated[int, typer.Option("--min-length", help="Keep trees longer than this (tokens).")]
    = LRA_SPEC.min_length,
    max_length: Annotated[int, typer.Option("--max-length", help="Keep trees shorter than this (tokens).")]
    = LRA_SPEC.max_length,
    max_depth: Annotated[int, typer.Option("--max-depth", help="Tree depth limit (root at depth 1).")]
    = LRA_SPEC.max_depth,
    max_args: Annotated[int, typer.Option("--max-args", help="Most children of an operator (fewest: 2).")]
    = LRA_SPEC.max_args,
    workers: Annotated[int, typer.Option("--workers", help="Processes (the output does not depend on it).")] = 2,
) -> None:
    """Generate ListOps data (LRA spec, seeded and deterministic, deduplicated across splits)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    from dtn_bench.data.listops import ListOpsSpec, generate

    spec = ListOpsSpec(train=train, val=val, test=test, seed=seed, min_length=min_length, max_length=max_length,
                       max_depth=max_depth, max_args=max_args).checked()

    class _Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} samples/s" if task.speed else "- samples/s")

    with Progress(TextColumn("[bold]ListOps"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("generate", total=spec.total)
        summary = generate(out, spec, workers=workers, progress=lambda done, total: bar.update(task, completed=done))
    _print_generation(summary)


def _print_generation(summary) -> None:
    """The splits' sizes and lengths, the label distribution and the majority-class share of generated data."""
    from dtn_bench.data.listops import SPLITS

    table = Table(title=f"ListOps data in {summary.out_dir} ({summary.seconds:.1f} s)")
    for col in ("split", "samples", "length min", "median", "mean", "max", "file"):
        table.add_column(col, justify="left" if col in ("split", "file") else "right")
    for split in (*SPLITS, "all"):
        st = summary.length_stats[split]
        count = sum(summary.label_counts[split])
        cells = [f"{st[k]:.0f}" if count else "-" for k in ("min", "median")]
        cells += [f"{st['mean']:.1f}" if count else "-", f"{st['max']:.0f}" if count else "-"]
        table.add_row(split, f"{count:,}", *cells, summary.files[split].name if split in summary.files else "")
    console.print(table)
    labels = Table(title="Label distribution (all splits)")
    counts = summary.label_counts["all"]
    total = max(sum(counts), 1)
    for digit in range(10):
        labels.add_column(str(digit), justify="right")
    labels.add_row(*(f"{c / total:.1%}" for c in counts))
    console.print(labels)
    console.print(f"majority-class share: {summary.majority_share:.1%} (label {counts.index(max(counts))}); "
                  f"duplicates dropped: {summary.duplicates}")


@app.command("listops")
def lra_listops(
    preset: Annotated[str, typer.Option("--preset", help="Preset of suites/lra-listops.yaml: lra, lra-paper, small, "
                                        "quick.")] = "lra",
    models: Annotated[str | None, typer.Option(help="Comma-separated: transformer,bigbird,reformer.")] = None,
    norms: Annotated[str | None, typer.Option(help="Comma-separated registered normalisers (layernorm,dtn).")]
    = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (0,1,2: mean and std in the table).")]
    = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Folder of basic_{train,val,test}.tsv (the LRA "
                                                  "release's listops-1000 or `lra generate`); default: generated "
                                                  "into the cache for the preset.")] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", help="Longest sequence (tokens, no CLS).")] = None,
    len_policy: Annotated[str | None, typer.Option("--len-policy", help="Longer sequences: error or truncate "
                                                   "(counted).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (updates).")] = None,
    batch: Annotated[int | None, typer.Option(help="Global batch (split over processes).")] = None,
    lr: Annotated[float | None, typer.Option(help="lra schedule: base factor (0.05); linear: peak rate.")] = None,
    schedule: Annotated[str | None, typer.Option(help="lra (warmup x rsqrt) or linear (warmup, linear decay).")]
    = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up steps.")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help="AdamW decoupled weight decay.")]
    = None,
    clip_grad: Annotated[float | None, typer.Option("--clip-grad", help="Clip the gradient norm (0: off).")] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every", help="Validate and checkpoint every N steps.")]
    = None,
    val_limit: Annotated[int | None, typer.Option("--val-limit", help="Validation samples used during training "
                                                  "(final evaluations use all).")] = None,
    dim: DimOpt = None,
    heads: HeadsOpt = None,
    depth: DepthOpt = None,
    mlp_dim: MlpDimOpt = None,
    pooling: Annotated[str | None, typer.Option(help="cls or mean.")] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout (embedding, residual, MLP).")] = None,
    attn_dropout: Annotated[float | None, typer.Option("--attn-dropout", help="Attention-probability dropout.")]
    = None,
    sparse_attn_dropout: Annotated[bool | None, typer.Option(
        "--sparse-attn-dropout/--no-sparse-attn-dropout", help="Apply --attn-dropout in BigBird and the Reformer too "
        "(the official code has attention dropout only in the Transformer; lra presets: off).")] = None,
    lra_quirks: Annotated[bool | None, typer.Option("--lra-quirks/--no-lra-quirks", help=(
        "Reformer: the official LRA layer exactly: keys not length-normalised and logits multiplied (not divided) by "
        "sqrt(d_head); no self-mask; no padding mask; one rotation set (seed 0; torch's random values, not JAX's) "
        "shared by every head and layer; the "
        "zero filler up to a multiple of n_buckets (a whole chunk when the length is one) hashed to bucket 0 (sorted "
        "after its real tokens, before bucket 1) and attended; look-back across hash rounds; no output projection "
        "and the heads merged by "
        "reshaping [B, H, T, d] to [B, T, H*d] without a transpose. Off: the corrected layer (lra presets: on).")
    )] = None,
    bigbird_block: Annotated[int | None, typer.Option("--bigbird-block", help="BigBird block length in tokens "
                                                      "(LRA: 64).")] = None,
    bigbird_random: Annotated[str | None, typer.Option("--bigbird-random", help=(
        "BigBird's random blocks: torch (torch generator, blocks in the first 1024 tokens outside the window) or lra "
        "(the official rule and numpy draws: query blocks n-3 and n-2 draw from a shorter range; lra presets)."))]
    = None,
    gelu: Annotated[str | None, typer.Option(help="MLP GELU: exact (erf) or tanh (jax.nn.gelu's approximation, "
                                             "lra presets).")] = None,
    ln_eps: Annotated[float | None, typer.Option("--ln-eps", help="LayerNorm epsilon (1e-5; lra presets: 1e-6 as in "
                                                 "flax); other normalisers keep their own.")] = None,
    placement: PlacementOpt = None,
    init: Annotated[str | None, typer.Option(help=(
        "Initialisation: torch (PyTorch defaults, frozen zero padding embedding) or lra (xavier-uniform Q/K/V/O and "
        "MLP, MLP biases N(0, 1e-6), lecun-normal head with zero bias, trained padding embedding; lra presets)."))]
    = None,
    lr_step_origin: Annotated[int | None, typer.Option("--lr-step-origin", help=(
        "The schedule's t is step + this (step from 0): 1 (first update non-zero) or 0 (official: lr(0) = 0; lra "
        "presets)."))] = None,
    shuffle: Annotated[str | None, typer.Option(help="Training order per epoch: full (a permutation) or buffer "
                                                "(LRA's shuffle buffers, see --shuffle-buffer; lra presets).")]
    = None,
    shuffle_buffer: Annotated[str | None, typer.Option("--shuffle-buffer", help=(
        "Buffer sizes of --shuffle buffer, applied in turn (10000,1024: the official CSV reader's row buffer, then "
        "shuffle(1024)).") )] = None,
    train_samples: Annotated[int | None, typer.Option("--train-samples", help="Generated data: training samples.")]
    = None,
    device: DeviceOpt = None,
    precision: Annotated[str | None, typer.Option(help="auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16 "
                                                  "(default: the preset's; lra presets: fp32, as the official "
                                                  "code).")] = None,
    procs: Annotated[int | None, typer.Option("--procs", help="Expected number of processes (checked against "
                                              "torchrun's WORLD_SIZE); launch several with torchrun "
                                              "--nproc_per_node N -m dtn_bench lra listops ...")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue the run RUN_ID (finished runs are kept, "
                                               "the interrupted one continues from its last checkpoint).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help=(
        "CPU, one process: runs trained side by side, each in its own process with threads / N torch threads "
        "(quick preset: 2; 1: one after another)."))] = None,
    tune_malloc: TuneMallocOpt = None,
    flush_denormal: FlushDenormalOpt = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Train and test the LRA ListOps models with each normaliser.

    Rows, paper-style table (Markdown, LaTeX) and learning curves in the run folder.
    """
    from dtn_bench.distributed import world_size_from_env
    from dtn_bench.lra.config import ListOpsConfig

    world = world_size_from_env()
    if procs is not None and procs != world:
        how = f"torchrun --nproc_per_node {procs} -m dtn_bench lra listops ..." if procs > 1 else "without torchrun"
        raise DTNBenchError(f"--procs {procs} but this job has {world} process(es) (WORLD_SIZE): launch it with {how}")
    if resume is not None and run_id is not None and run_id != resume:
        raise DTNBenchError(f"--resume {resume} and --run-id {run_id} name different runs")
    cfg = ListOpsConfig.from_preset(
        preset, models=csv_list(models, "--models"), norms=csv_list(norms, "--norms"), max_len=max_len,
        len_policy=len_policy, steps=steps,
        batch=batch, lr=lr, schedule=schedule, warmup=warmup, weight_decay=weight_decay, clip_grad=clip_grad,
        eval_every=eval_every, val_limit=val_limit, dim=dim, heads=heads, depth=depth, mlp_dim=mlp_dim,
        pooling=pooling, dropout=dropout, lra_quirks=lra_quirks, attn_dropout=attn_dropout,
        sparse_attn_dropout=sparse_attn_dropout, bigbird_random=bigbird_random, bigbird_block=bigbird_block,
        gelu=gelu, ln_eps=ln_eps, init=init, placement=placement, lr_step_origin=lr_step_origin, shuffle=shuffle,
        shuffle_buffer=None if shuffle_buffer is None else parse_ints(shuffle_buffer, "--shuffle-buffer",
                                                                       "10000,1024", "sizes"),
        precision=precision, gen_train=train_samples, device=device, tune_malloc=tune_malloc, world_size=world,
        workers=workers, flush_denormal=flush_denormal,
        seeds=None if seeds is None else parse_ints(seeds, "--seeds", "0,1,2"),
        data_dir=None if data_dir is None else str(data_dir.expanduser().resolve()))
    _run_listops(cfg, out, resume or run_id, resume is not None)


def _run_listops(cfg, out: Path, run_id: str | None, resume: bool) -> None:
    """Run the suite with its progress on the console, then print the paper table and the run folder (rank 0)."""
    from dtn_bench.lra import listops
    from dtn_bench.lra.suite import LISTOPS_SUITE

    view = _ListOpsView(cfg)
    try:
        with view:
            result = listops(cfg, out=out, run_id=run_id, resume=resume, on_event=view)
    except KeyboardInterrupt:
        if view.training:  # the one line main() prints on Ctrl-C
            say_rows_are_kept(f"interrupted: rows finished so far are saved; continue with --resume {view.run_id} "
                              "(same options)")
        raise
    finally:
        view.stop_training()
    if result.path is not None:
        print_tables(LISTOPS_SUITE.report.console(result.rows))
        console.print(f"results: {result.path}")


def _settings_table(cfg, world: int, device: str, malloc_tuned: bool) -> Table:
    """Every setting of the run beside the official LRA code's value where the suite offers another."""
    from dtn_bench.lra.config import OFFICIAL

    settings = Table(title=f"lra listops, preset {cfg.preset} ({world} process(es) on {device})",
                     caption="official LRA: the official code's value where the suite offers another; * this run "
                     "differs from it")
    settings.add_column("setting")
    settings.add_column("value")
    settings.add_column("official LRA")
    for key, value in cfg.as_dict().items():
        official = ""
        if key in OFFICIAL:
            official = str(OFFICIAL[key]) + (" *" if OFFICIAL[key] != value else "")
        settings.add_row(key, str(value), official)
    settings.add_row("malloc_tuned", str(malloc_tuned), "")
    return settings


class _ListOpsView(ProgressView):
    """What ``lra listops`` shows of the suite's events (:mod:`dtn_bench.lra.suite`), on the base progress view.

    The settings table, the data bar (the base view's task ``data``), notes, the training bars (all runs, and each
    run being trained: loss, accuracy, validation accuracy, tokens/s; several with ``--workers``) and a line per
    finished run once its rows are written.
    """

    def __init__(self, cfg):
        super().__init__("ListOps data", note_prefix="note: ")
        self.cfg = cfg
        self.run_id: str | None = None
        self.training = False
        self.accuracy: dict[str, float] = {}
        self.runs = None  # the live rich Progress of the training bars
        self.overall = None
        self.current: dict[str, int] = {}  # label of a run being trained -> its bar
        self.progress: dict[str, int] = {}  # label -> steps done (finished runs keep theirs)

    def stop_training(self) -> None:
        """Stop the training bars (after the run, or when it is interrupted)."""
        if self.runs is not None:
            self.runs.stop()
            self.runs = None

    def on_settings(self, e) -> None:
        self.run_id = e.run_id
        console.print(_settings_table(self.cfg, e.world, e.device, e.malloc_tuned))

    def on_runs(self, e) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.training, self.run_id = True, e.run_id
        self.runs = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("loss {task.fields[loss]} acc {task.fields[acc]} val {task.fields[val]} "
                                        "{task.fields[tps]} tok/s"), TimeRemainingColumn(), console=err_console,
                             transient=True)
        self.runs.start()
        self.overall = self.runs.add_task("all runs" if e.workers == 1 else f"all runs ({e.workers} side by side)",
                                          total=e.total, loss="-", acc="-", val="-", tps="-")

    @staticmethod
    def _run_label(e) -> str:
        from dtn_bench.lra.suite import run_label

        return run_label(e.model, e.norm, e.seed)

    def on_run_start(self, e) -> None:
        label = self._run_label(e)
        self.current[label] = self.runs.add_task(label, total=e.steps, completed=e.step, loss="-", acc="-", val="-",
                                                 tps="-")
        self._advance(label, e.step)

    def _advance(self, label: str, step: int) -> None:
        self.progress[label] = step
        self.runs.update(self.overall, completed=sum(self.progress.values()))

    def on_run_step(self, e) -> None:
        label = self._run_label(e)
        if label not in self.current:  # a late event of a finished run
            return
        fields = dict(loss=f"{e.loss:.3f}", acc=f"{e.acc:.1%}", tps=f"{e.tokens_s:,.0f}")
        self.runs.update(self.current[label], completed=e.step, **fields)
        self._advance(label, e.step)

    def on_run_eval(self, e) -> None:
        label = self._run_label(e)
        if label in self.current:
            self.runs.update(self.current[label], val=f"{e.val_acc:.1%}")

    def on_trained(self, e) -> None:
        self.accuracy[e.label] = e.test_accuracy
        if e.label in self.current:
            self.runs.remove_task(self.current.pop(e.label))

    def on_step(self, e) -> None:
        if e.label in self.accuracy:  # the run's rows are written
            console.print(f"{e.label}: test accuracy {self.accuracy.pop(e.label):.2%} (last checkpoint)")
