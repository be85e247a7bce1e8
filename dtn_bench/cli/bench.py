"""``dtn-bench bench norms``, ``bench seq-norms`` and ``bench lra-scaling``: what a normaliser costs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.options import (
    DepthOpt,
    DeviceOpt,
    DimOpt,
    FlushDenormalOpt,
    HeadsOpt,
    ItersOpt,
    MlpDimOpt,
    OutOpt,
    PlacementOpt,
    RunIdOpt,
    SeedOpt,
    ThreadsOpt,
    TuneMallocOpt,
    WarmupOpt,
    csv_list,
    parse_grid,
    parse_ints,
)
from dtn_bench.cli.output import run_with_progress

bench = typer.Typer()


@bench.command("norms")
def bench_norms(
    preset: Annotated[str, typer.Option("--preset", help="Preset of suites/bench-norms.yaml: default, quick.")]
    = "default",
    batch_size: Annotated[int | None, typer.Option("--batch-size", "--batch", help="Batch of the layer benchmark.")]
    = None,
    grid: Annotated[str | None, typer.Option(help="Patch grid ROWSxCOLS (14x14).")] = None,
    dim: DimOpt = None,
    heads: Annotated[int | None, typer.Option(help="Heads (DTN groups).")] = None,
    norms: Annotated[str | None, typer.Option(help="Comma-separated norms (default: all registered).")] = None,
    authors: Annotated[bool, typer.Option("--authors/--no-authors", help="Time the authors' dense algorithm.")]
    = True,
    models: Annotated[str | None, typer.Option(help="Comma-separated zoo models for throughput ('' for none).")]
    = None,
    model_batch: Annotated[int | None, typer.Option("--model-batch", help="Batch of the model throughput.")] = None,
    placement: PlacementOpt = None,
    iters: ItersOpt = None,
    warmup: WarmupOpt = None,
    threads: ThreadsOpt = None,
    tune_malloc: TuneMallocOpt = True,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Time every normaliser (fwd, fwd+bwd) at one shape, DTN against the authors' algorithm, and ViT throughput.

    The throughput is vit_s_ln vs vit_s_dtn inference. Writes rows, table.md/.tex and a bar plot.
    """
    from dtn_bench.bench import norms as nb

    cfg = nb.NormBenchConfig.from_preset(
        preset, batch=batch_size, dim=dim, heads=heads, model_batch=model_batch, iters=iters, warmup=warmup,
        grid=None if grid is None else parse_grid(grid), norms=csv_list(norms, "--norms"),
        models=csv_list(models, "--models", empty_ok=True),
        authors=authors, threads=threads, device=device, seed=seed, tune_malloc=tune_malloc, placement=placement)
    run_with_progress(nb.SUITE, cfg, out, run_id)


@bench.command("lra-scaling")
def bench_lra_scaling(
    preset: Annotated[str, typer.Option("--preset", help="Preset of suites/bench-lra-scaling.yaml: default, quick.")]
    = "default",
    lengths: Annotated[str | None, typer.Option(help="Comma-separated sequence lengths (512,1024,2048,4096).")]
    = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated attentions: transformer,bigbird,reformer.")]
    = None,
    norms: Annotated[str | None, typer.Option(help="Comma-separated normalisers (layernorm,dtn).")] = None,
    placement: PlacementOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "--batch", help="Sequences per training step.")]
    = None,
    dim: DimOpt = None,
    heads: HeadsOpt = None,
    depth: DepthOpt = None,
    mlp_dim: MlpDimOpt = None,
    iters: ItersOpt = None,
    warmup: WarmupOpt = None,
    bucket_size: Annotated[int | None, typer.Option("--bucket-size", help="Reformer tokens per LSH bucket.")]
    = None,
    tune_malloc: TuneMallocOpt = True,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Time one LRA encoder training step (and count its tensor allocations) against the sequence length.

    Measured per attention x normaliser, with log-log slopes. Writes rows, table.md/.tex and scaling.png.
    """
    from dtn_bench.bench import scaling as sb

    cfg = sb.ScalingBenchConfig.from_preset(
        preset, batch=batch_size, dim=dim, heads=heads, depth=depth, mlp_dim=mlp_dim, iters=iters, warmup=warmup,
        bucket_size=bucket_size, lengths=None if lengths is None else parse_ints(lengths, "--lengths", "512,1024",
                                                                                   "positive integers"),
        models=csv_list(models, "--models"), norms=csv_list(norms, "--norms"), device=device, seed=seed,
        tune_malloc=tune_malloc, placement=placement)
    run_with_progress(sb.SUITE, cfg, out, run_id)


@bench.command("seq-norms")
def bench_seq_norms(
    preset: Annotated[str, typer.Option("--preset", help="Preset of suites/bench-seq-norms.yaml: default, quick.")]
    = "default",
    shapes: Annotated[str | None, typer.Option(help="Comma-separated lra-listops presets whose shape is timed "
                                               "(quick,lra).")] = None,
    batches: Annotated[str | None, typer.Option(help="Comma-separated batch per shape (32,2).")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated attentions: transformer,bigbird,reformer.")]
    = None,
    norms: Annotated[str | None, typer.Option(help="Comma-separated normalisers (layernorm,dtn).")] = None,
    cases: Annotated[str | None, typer.Option(help="Comma-separated cases: layer (one norm layer fwd+bwd), step "
                                              "(one ListOps training step).")] = None,
    placement: PlacementOpt = None,
    repeats: Annotated[int | None, typer.Option(help="Interleaved repetitions (the ratio's spread is over them).")]
    = None,
    iters: ItersOpt = None,
    warmup: WarmupOpt = None,
    threads: ThreadsOpt = None,
    tune_malloc: TuneMallocOpt = True,
    flush_denormal: FlushDenormalOpt = True,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
) -> None:
    """Time a padding-masked 1-D norm layer and one ListOps training step per attention, LN against DTN.

    At the lra-listops quick and lra shapes, with the preset's generated lengths and padding mask; LN and DTN
    interleaved in every repetition. Writes rows, table.md/.tex (ratios with min-median-max) and seq_norms.png.
    """
    from dtn_bench.bench import seq_norms as sn

    cfg = sn.SeqNormBenchConfig.from_preset(
        preset, shapes=csv_list(shapes, "--shapes"), models=csv_list(models, "--models"),
        norms=csv_list(norms, "--norms"), cases=csv_list(cases, "--cases"),
        batches=None if batches is None else parse_ints(batches, "--batches", "32,2", "positive integers"),
        repeats=repeats, iters=iters, warmup=warmup, threads=threads, device=device, seed=seed,
        tune_malloc=tune_malloc, flush_denormal=flush_denormal, placement=placement)
    run_with_progress(sn.SUITE, cfg, out, run_id)
