"""The ``dtn-bench`` command line: a thin Typer layer over the library.

Heavy imports (torch, timm) happen inside commands so ``--help`` is instant. Every user error is a
:class:`~dtn_bench.errors.DTNBenchError`: one line on stderr, exit code 2, a traceback only with ``--debug``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dtn_bench import __version__
from dtn_bench.errors import DTNBenchError

app = typer.Typer(
    name="dtn-bench",
    help="Benchmarks for token normalisers in transformers, built around Dynamic Token Normalization (DTN).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Micro-benchmarks (what a normaliser costs).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
lra_app = typer.Typer(help="Long-Range Arena ListOps: data generation and the training suite.", no_args_is_help=True)
app.add_typer(lra_app, name="lra")

console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}

# options defined once, reused
OutOpt = Annotated[Path, typer.Option("--out", help="Results root; the run folder is OUT/<suite>/<run-id>.")]
RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="Run folder name (default: timestamp + random).")]
NormOpt = Annotated[str | None, typer.Option("--norm", help="Put this registered normaliser into the model.")]
TuneMallocOpt = Annotated[bool, typer.Option("--tune-malloc/--no-tune-malloc", help="Keep freed memory in the process "
                                             "on CPU (as jemalloc would); recorded with the results.")]
# model-shape options shared by several commands
DimOpt = Annotated[int | None, typer.Option(help="Channels.")]
HeadsOpt = Annotated[int | None, typer.Option(help="Attention heads (DTN groups).")]
DepthOpt = Annotated[int | None, typer.Option(help="Encoder blocks.")]
MlpDimOpt = Annotated[int | None, typer.Option("--mlp-dim", help="MLP hidden width.")]


def _version(value: bool) -> None:
    if value:
        console.print(f"dtn-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")]
    = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and full error details.")] = False,
) -> None:
    STATE["debug"] = debug


# ------------------------------------------------------------------------------------------------------------------
@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="models, norms or suites")],
    pattern: Annotated[str | None, typer.Argument(help="Name filter: substring or shell pattern (vit_s*).")] = None,
) -> None:
    """List registered models, norms or suites."""
    kinds = ("models", "norms", "suites")
    if what not in kinds:
        from dtn_bench.registry import unknown_name_message

        raise DTNBenchError(unknown_name_message("list", what, list(kinds)))
    if what == "models":
        from dtn_bench.models import MODELS

        table = Table(title="Models (timm.create_model names)")
        for col in ("name", "model", "heads", "dim", "norm in blocks 0-9"):
            table.add_column(col)
        entries = MODELS.list(pattern)
        for e in entries:
            m = e.meta
            table.add_row(e.name, m["label"], str(m["heads"]), str(m["dim"]), m["norm"])
    elif what == "norms":
        from dtn_bench.norms import NORMS

        table = Table(title="Normalisers (--norm NAME)")
        table.add_column("name")
        table.add_column("formula")
        entries = NORMS.list(pattern)
        for e in entries:
            table.add_row(e.name, e.meta.get("formula", e.description))
    else:
        from dtn_bench.suites import SUITES, load_presets

        table = Table(title="Suites")
        for col in ("name", "what it measures", "presets"):
            table.add_column(col)
        entries = SUITES.list(pattern)
        for e in entries:
            table.add_row(e.name, e.description, ", ".join(load_presets(e.name)))
    if not entries:
        raise DTNBenchError(f"no {what} match {pattern!r}")
    console.print(table)


EmaOpt = Annotated[bool, typer.Option("--ema/--no-ema", help="With --checkpoint: load its EMA weights when it has "
                                      "them (state_dict_ema / model_ema, as timm does; the authors' accuracies are "
                                      "the EMA weights'), or its raw ones. Recorded as `weights: ema|raw`.")]


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="Zoo model (vit_s_dtn) or any timm model name.")],
    norm: NormOpt = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Load these weights.")] = None,
    ema: EmaOpt = True,
    macs: Annotated[bool, typer.Option("--macs/--no-macs", help="Count MACs with torch's flop counter.")] = True,
) -> None:
    """Parameters, MACs and which normaliser sits where in MODEL."""
    from dtn_bench.models.info import describe

    d = describe(model, norm=norm, checkpoint=checkpoint, ema=ema, macs=macs, debug=STATE["debug"])
    table = Table(title=f"{model}" + (f" with {norm}" if norm else ""))
    table.add_column("property")
    table.add_column("value")
    table.add_row("parameters", f"{d['params']:,} ({d['params'] / 1e6:.2f} M)")
    if d.get("gmacs") is not None:
        table.add_row("GMACs (224x224, torch flop counter / 2)", f"{d['gmacs']:.3f}")
    if d.get("checkpoint"):
        ck = d["checkpoint"]
        table.add_row("checkpoint", f"{ck['path']} (sha256 {ck['sha256'][:12]})")
        table.add_row("weights", f"{ck['weights']} ({ck['key'] or 'flat state dict'})")
        err_console.print(ck["message"], markup=False, highlight=False, soft_wrap=True)
    console.print(table)
    where = Table(title="Normalisers")
    for col in ("layers", "normaliser", "details"):
        where.add_column(col)
    for layers, kind, detail in d["norms"]:
        where.add_row(layers, kind, detail)
    console.print(where)


# ------------------------------------------------------------------------------------------------------------------
def _parse_grid(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise DTNBenchError(f"--grid {text!r}: expected ROWSxCOLS like 14x14, or one number") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise DTNBenchError(f"--grid {text!r}: expected ROWSxCOLS like 14x14")
    return parts[0], parts[1]


def _csv(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(v.strip() for v in text.split(",") if v.strip())


@bench_app.command("norms")
def bench_norms(
    preset: Annotated[str, typer.Option("--preset", help="Preset of suites/bench-norms.yaml: default, quick.")]
    = "default",
    batch: Annotated[int | None, typer.Option(help="Batch of the layer benchmark.")] = None,
    grid: Annotated[str | None, typer.Option(help="Patch grid ROWSxCOLS (14x14).")] = None,
    dim: DimOpt = None,
    heads: Annotated[int | None, typer.Option(help="Heads (DTN groups).")] = None,
    norms: Annotated[str | None, typer.Option(help="Comma-separated norms (default: all registered).")] = None,
    authors: Annotated[bool, typer.Option("--authors/--no-authors", help="Time the authors' dense algorithm.")]
    = True,
    models: Annotated[str | None, typer.Option(help="Comma-separated zoo models for throughput ('' for none).")]
    = None,
    model_batch: Annotated[int | None, typer.Option("--model-batch", help="Batch of the model throughput.")] = None,
    iters: Annotated[int | None, typer.Option(help="Timed iterations per norm.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up iterations per norm.")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0: default).")] = 0,
    tune_malloc: TuneMallocOpt = True,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Random seed of inputs and parameters.")] = 0,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Time every normaliser (fwd, fwd+bwd) at one shape, DTN against the authors' algorithm, and vit_s_ln vs
    vit_s_dtn inference throughput. Writes rows, table.md/.tex and a bar plot."""
    from dtn_bench.bench import norms as nb

    cfg = nb.NormBenchConfig.from_preset(
        preset, batch=batch, dim=dim, heads=heads, model_batch=model_batch, iters=iters, warmup=warmup,
        grid=None if grid is None else _parse_grid(grid), norms=_csv(norms), models=_csv(models), authors=authors,
        threads=threads, device=device, seed=seed, tune_malloc=tune_malloc)
    run_with_progress(nb.SUITE, cfg, out, run_id)


def print_tables(tables) -> None:
    """Print a suite's :class:`~dtn_bench.runner.ConsoleTable` s."""
    for t in tables:
        table = Table(title=t.title)
        for i, col in enumerate(t.columns):
            table.add_column(col, justify="right" if t.right and t.right[i] else "left")
        for r in t.rows:
            table.add_row(*r)
        console.print(table)


def run_with_progress(suite_name: str, cfg, out: Path, run_id: str | None, resume: bool = False) -> None:
    """Run a suite through :func:`dtn_bench.runner.run_suite` under a progress bar, then print its summaries, the
    configurations it skipped and the run folder."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from dtn_bench.runner import run_suite
    from dtn_bench.suites import get_suite

    suite = get_suite(suite_name)
    skipped: list[str] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(suite.name, total=suite.steps(cfg) if suite.steps else None)

        def on_event(kind: str, **info) -> None:
            if kind == "step":
                progress.update(task, advance=1, description=f"{suite.name}: {info['label']}")
                if not info["rows"] and info["label"].endswith("skipped"):
                    skipped.append(info["label"])

        result = run_suite(suite, cfg, out=out, run_id=run_id, resume=resume, on_event=on_event)
    if result.rows is None or result.rows.empty:
        err_console.print("[yellow]warning:[/yellow] no configuration produced rows; no tables written")
    elif suite.report.console is not None:
        print_tables(suite.report.console(result.rows))
    for label in skipped:
        err_console.print(f"[yellow]warning:[/yellow] {label}", highlight=False, soft_wrap=True)
    console.print(f"results: {result.path}")


def _preset_config(suite: str, preset_name: str, cls, overrides: dict, **fixed):
    """The suite's preset with the CLI flags that were given (not None) merged over it, as a validated ``cls``."""
    from dtn_bench.suites import load_preset

    fields = load_preset(suite, preset_name)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    unknown = set(fields) - set(cls.__dataclass_fields__)
    if unknown:
        raise DTNBenchError(f"suites/{suite}.yaml preset {preset_name!r}: unknown fields {sorted(unknown)}")
    cfg = cls(**fields, **fixed)
    cfg.validate()
    return cfg


def _write_report(writer, render_report, plot, plot_name: str):
    """table.md, table.tex and the plot of a run, rendered from its rows; returns the rows."""
    df = writer.rows()
    writer.write_text("table.md", render_report(df, "md"))
    writer.write_text("table.tex", render_report(df, "tex"))
    writer.savefig(plot(df), plot_name)
    return df


def _run_suite(suite: str, cfg, items, total: int, out: Path, run_id: str | None, render) -> None:
    """Append rows as they come, with a progress bar, then render tables and plots from the rows."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from dtn_bench.results.writer import RunWriter

    writer = RunWriter(out, suite, cfg.as_dict(), run_id=run_id, device=getattr(cfg, "device", None))
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(suite, total=total)
        for label, rows in items:
            writer.append(rows)
            progress.update(task, advance=1, description=f"{suite}: {label}")
    render(writer)
    console.print(f"results: {writer.path}")


def _parse_ints(text: str, flag: str, example: str, what: str = "integers") -> tuple[int, ...]:
    """``"1,64,256"`` -> ``(1, 64, 256)``; anything else (or nothing) is a one-line error naming ``flag``."""
    message = f"{flag} {text!r}: expected comma-separated {what} like {example}"
    try:
        values = tuple(int(v) for v in text.split(","))  # int() takes surrounding spaces; "1,,2" and "1," fail
    except ValueError:
        raise DTNBenchError(message) from None
    return values


def _print_frame(df, title: str, index_label: str) -> None:
    """A wide table (index + columns) on the console; floats with 2 decimals."""
    from dtn_bench.runner import ConsoleTable

    print_tables([ConsoleTable.from_frame(df, title, index_label)])


@bench_app.command("lra-scaling")
def bench_lra_scaling(
    preset: Annotated[str, typer.Option("--preset", help="Preset of suites/bench-lra-scaling.yaml: default, quick.")]
    = "default",
    lengths: Annotated[str | None, typer.Option(help="Comma-separated sequence lengths (512,1024,2048,4096).")]
    = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated attentions: transformer,bigbird,reformer.")]
    = None,
    norms: Annotated[str | None, typer.Option(help="Comma-separated normalisers (layernorm,dtn).")] = None,
    batch: Annotated[int | None, typer.Option(help="Sequences per training step.")] = None,
    dim: DimOpt = None,
    heads: HeadsOpt = None,
    depth: DepthOpt = None,
    mlp_dim: MlpDimOpt = None,
    iters: Annotated[int | None, typer.Option(help="Timed training steps per point.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up training steps per point.")] = None,
    bucket_size: Annotated[int | None, typer.Option("--bucket-size", help="Reformer tokens per LSH bucket.")]
    = None,
    tune_malloc: TuneMallocOpt = True,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Random seed of inputs and parameters.")] = 0,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Time one LRA encoder training step (and count its tensor allocations) against the sequence length, per
    attention x normaliser, with log-log slopes. Writes rows, table.md/.tex and scaling.png."""
    from dtn_bench.bench import scaling as sb

    cfg = sb.ScalingBenchConfig.from_preset(
        preset, batch=batch, dim=dim, heads=heads, depth=depth, mlp_dim=mlp_dim, iters=iters, warmup=warmup,
        bucket_size=bucket_size, lengths=None if lengths is None else _parse_ints(lengths, "--lengths", "512,1024",
                                                                                   "positive integers"),
        models=_csv(models), norms=_csv(norms), device=device, seed=seed, tune_malloc=tune_malloc)
    run_with_progress(sb.SUITE, cfg, out, run_id)


# ------------------------------------------------------------------------------------------------------------------
@lra_app.command("generate")
def lra_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder for basic_train.tsv, basic_val.tsv, basic_test.tsv.")],
    train: Annotated[int, typer.Option("--train", help="Training samples.")] = 96_000,
    val: Annotated[int, typer.Option("--val", help="Validation samples.")] = 2_000,
    test: Annotated[int, typer.Option("--test", help="Test samples.")] = 2_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same arguments, same bytes).")] = 0,
    min_length: Annotated[int, typer.Option("--min-length", help="Keep trees longer than this (tokens).")] = 500,
    max_length: Annotated[int, typer.Option("--max-length", help="Keep trees shorter than this (tokens).")] = 2_000,
    max_depth: Annotated[int, typer.Option("--max-depth", help="Tree depth limit (root at depth 1).")] = 10,
    max_args: Annotated[int, typer.Option("--max-args", help="Most children of an operator (fewest: 2).")] = 10,
    workers: Annotated[int, typer.Option("--workers", help="Processes (the output does not depend on it).")] = 2,
) -> None:
    """Generate ListOps data (LRA spec, seeded and deterministic, deduplicated across splits)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    from dtn_bench.data.listops import SPLITS, check_generate_args, generate

    check_generate_args(train, val, test, seed, min_length, max_length, max_depth, max_args)

    class _Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} samples/s" if task.speed else "- samples/s")

    with Progress(TextColumn("[bold]ListOps"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("generate", total=train + val + test)
        summary = generate(out, train=train, val=val, test=test, seed=seed, min_length=min_length,
                           max_length=max_length, max_depth=max_depth, max_args=max_args, workers=workers,
                           progress=lambda done, total: bar.update(task, completed=done))

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

@lra_app.command("listops")
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
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str | None, typer.Option(help="auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16 "
                                                  "(default: the preset's; lra presets: fp32, as the official "
                                                  "code).")] = None,
    procs: Annotated[int | None, typer.Option("--procs", help="Expected number of processes (checked against "
                                              "torchrun's WORLD_SIZE); launch several with torchrun "
                                              "--nproc_per_node N -m dtn_bench lra listops ...")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue the run RUN_ID (finished runs are kept, "
                                               "the interrupted one continues from its last checkpoint).")] = None,
    tune_malloc: TuneMallocOpt = True,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Train and test the LRA ListOps models with each normaliser: rows, paper-style table (Markdown, LaTeX) and
    learning curves in the run folder."""
    from dtn_bench.distributed import init_distributed, world_size_from_env
    from dtn_bench.lra import config as lc

    world = world_size_from_env()
    if procs is not None and procs != world:
        how = f"torchrun --nproc_per_node {procs} -m dtn_bench lra listops ..." if procs > 1 else "without torchrun"
        raise DTNBenchError(f"--procs {procs} but this job has {world} process(es) (WORLD_SIZE): launch it with {how}")
    if resume is not None and run_id is not None and run_id != resume:
        raise DTNBenchError(f"--resume {resume} and --run-id {run_id} name different runs")
    overrides = dict(models=_csv(models), norms=_csv(norms), max_len=max_len, len_policy=len_policy, steps=steps,
                     batch=batch, lr=lr, schedule=schedule, warmup=warmup, weight_decay=weight_decay,
                     clip_grad=clip_grad, eval_every=eval_every, val_limit=val_limit, dim=dim, heads=heads, depth=depth,
                     mlp_dim=mlp_dim, pooling=pooling, dropout=dropout, lra_quirks=lra_quirks,
                     attn_dropout=attn_dropout, sparse_attn_dropout=sparse_attn_dropout, bigbird_random=bigbird_random,
                     bigbird_block=bigbird_block,
                     gelu=gelu, ln_eps=ln_eps, init=init, lr_step_origin=lr_step_origin, shuffle=shuffle,
                     shuffle_buffer=None if shuffle_buffer is None else _parse_ints(shuffle_buffer, "--shuffle-buffer",
                                                                                    "10000,1024", "sizes"),
                     precision=precision, gen_train=train_samples,
                     seeds=None if seeds is None else _parse_ints(seeds, "--seeds", "0,1,2"),
                     data_dir=None if data_dir is None else str(data_dir.expanduser().resolve()))
    cfg = _preset_config(lc.SUITE, preset, lc.ListOpsConfig, overrides, device=device, world_size=world,
                         preset=preset)
    if cfg.data_dir is not None:
        from dtn_bench.data.listops import SPLITS, split_path

        for split in SPLITS:
            split_path(cfg.data_dir, split)
    if resume is not None:
        _check_resumable(out / lc.SUITE / resume, world)
    ctx = init_distributed(cfg.device)
    try:
        from dtn_bench.timing import keep_freed_memory

        tuned = keep_freed_memory() if tune_malloc and ctx.device.type == "cpu" else False
        _lra_listops(cfg, ctx, out, resume or run_id, resume is not None, tuned)
    finally:
        ctx.close()


def _check_resumable(folder: Path, world: int) -> None:
    """The run folder exists and was made with as many processes as this job has (before any process group)."""
    import json

    if not folder.is_dir():
        raise DTNBenchError(f"--resume {folder.name}: no run folder {folder}")
    try:
        made = json.loads((folder / "config.json").read_text()).get("world_size", 1)
    except (OSError, ValueError) as e:
        raise DTNBenchError(f"--resume {folder.name}: cannot read {folder / 'config.json'}: {e}") from None
    if made != world:
        raise DTNBenchError(f"--resume {folder.name}: the run was made with {made} process(es), this job has {world}; "
                            f"resume it with the same number (torchrun --nproc_per_node {made})")


def _lra_listops(cfg, ctx, out: Path, run_id: str | None, resume: bool, malloc_tuned: bool = False) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from dtn_bench.lra import train as lt
    from dtn_bench.lra.config import SUITE
    from dtn_bench.results.writer import RunWriter, new_run_id

    main_rank = ctx.is_main
    if main_rank:
        from dtn_bench.lra.config import OFFICIAL

        settings = Table(title=f"lra listops, preset {cfg.preset} ({ctx.world} process(es) on {ctx.device})",
                         caption="official LRA: the official code's value where the suite offers another; * this run "
                         "differs from it")
        settings.add_column("setting")
        settings.add_column("value")
        settings.add_column("official LRA")
        values = cfg.as_dict()
        for key, value in values.items():
            official = ""
            if key in OFFICIAL:
                official = str(OFFICIAL[key]) + (" *" if OFFICIAL[key] != value else "")
            settings.add_row(key, str(value), official)
        settings.add_row("malloc_tuned", str(malloc_tuned), "")
        console.print(settings)
    with Progress(TextColumn("[bold]ListOps data"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True, disable=not main_rank) as bar:
        task = bar.add_task("generate", total=None)
        data = lt.prepare_data(cfg, ctx, progress=lambda done, total: bar.update(task, completed=done, total=total))
    for split in (data.train, data.val, data.test):
        if split.truncated:
            err_console.print(f"note: {split.truncated} sequences of {split.path} were truncated to {cfg.max_len} "
                              "tokens (--len-policy truncate)")
    run_id = ctx.broadcast(run_id or new_run_id())
    writer = None
    if main_rank:
        from dtn_bench.results.env import environment

        env = {**environment(), "malloc_tuned": malloc_tuned}
        writer = RunWriter(out, SUITE, cfg.as_dict(), run_id=run_id, resume=resume, device=str(ctx.device), env=env)
    finished = None
    if main_rank:
        df = writer.rows()
        finished = set()
        if not df.empty and "checkpoint" in df.columns:
            last = df[(df["checkpoint"] == "last") & (df["metric"] == "accuracy")]
            finished = {(m, n, int(s)) for m, n, s in zip(last["model"], last["norm"], last["seed"], strict=True)}
        if df.empty or not (df["model"] == "majority-class").any():
            writer.append(lt.baseline_rows(cfg, data))
    finished = ctx.broadcast(finished)
    todo = [r for r in lt.runs(cfg) if r not in finished]
    total_steps = len(todo) * cfg.steps
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]} acc {task.fields[acc]} val {task.fields[val]} "
                          "{task.fields[tps]} tok/s"), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True, disable=not main_rank) as bar:
        overall = bar.add_task("all runs", total=total_steps, loss="-", acc="-", val="-", tps="-")
        current = bar.add_task("", total=cfg.steps, loss="-", acc="-", val="-", tps="-")
        done_before = [0]

        def on_event(kind: str, info: dict) -> None:
            if kind == "start":
                done_before[0] = bar.tasks[overall].completed
                bar.reset(current, total=info["steps"], completed=info["step"],
                          description=f"{info['model']}/{info['norm']}/seed {info['seed']}", loss="-", acc="-",
                          val="-", tps="-")
                bar.update(overall, completed=done_before[0] + info["step"])
            elif kind == "step":
                fields = dict(loss=f"{info['loss']:.3f}", acc=f"{info['acc']:.1%}", tps=f"{info['tokens_s']:,.0f}")
                bar.update(current, completed=info["step"], **fields)
                bar.update(overall, completed=done_before[0] + info["step"])
            elif kind == "eval":
                bar.update(current, val=f"{info['val_acc']:.1%}")

        try:
            for label, rows in lt.run(cfg, data, out / SUITE / run_id, finished, ctx, on_event):
                if main_rank:
                    writer.append(rows)
                    acc = next(r["value"] for r in rows if r["metric"] == "accuracy" and r["split"] == "test"
                               and r["checkpoint"] == "last")
                    console.print(f"{label}: test accuracy {acc:.2%} (last checkpoint)")
        except KeyboardInterrupt:
            if main_rank:
                err_console.print(f"interrupted: continue with --resume {run_id} (same options)")
            raise
    if main_rank:
        _render_listops(writer)


def _render_listops(writer) -> None:
    from dtn_bench.lra.report import curves_plot, paper_table, render_report

    df = _write_report(writer, render_report, curves_plot, "curves.png")
    table = paper_table(df)
    if not table.empty:
        _print_frame(table, "ListOps test accuracy (%), last checkpoint", "model")
    console.print(f"results: {writer.path}")


# ------------------------------------------------------------------------------------------------------------------
# Commands that live in their own modules register themselves on `app` when imported (one line each, keep sorted).
from dtn_bench.cli import corrupt as _corrupt  # noqa: E402,F401
from dtn_bench.cli import imagenet_c as _imagenet_c  # noqa: E402,F401
from dtn_bench.cli import profile as _profile  # noqa: E402,F401
from dtn_bench.cli import suite_tables as _suite_tables  # noqa: E402,F401  (table all; suites' tables on demand)


# ------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user errors into one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rc = app(args=args, prog_name="dtn-bench", standalone_mode=False)
        if rc == 130:  # typer (standalone_mode=False) turns Ctrl-C into this return value
            raise KeyboardInterrupt
    except DTNBenchError as e:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted; rows finished so far are saved")
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click

        # typer vendors its own click (typer._click): its usage errors are not click.ClickException
        if isinstance(e, (click.ClickException, typer.TyperException)) and hasattr(e, "format_message"):
            err_console.print(f"[red]error:[/red] {e.format_message()} (dtn-bench --help for the usage)",
                              highlight=False, soft_wrap=True)
            sys.exit(getattr(e, "exit_code", 2))
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {type(e).__name__}: {e} (--debug for the traceback)", highlight=False,
                          soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
