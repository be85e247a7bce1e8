"""``dtn-bench profile``: parameters, GMACs, throughput, latency, peak memory and MFU per model x normaliser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.options import OutOpt, PlacementOpt, RunIdOpt, ThreadsOpt, csv_list, parse_ints
from dtn_bench.cli.output import run_with_progress
from dtn_bench.errors import DTNBenchError

app = typer.Typer()


def _parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,64,256"`` -> ``(1, 64, 256)``; a one-line error for anything else."""
    values = parse_ints(text, "--batch-sizes", "1,64,256", "positive integers")
    bad = [v for v in values if v <= 0]
    if bad:
        raise DTNBenchError(f"--batch-sizes {text!r}: batch sizes must be > 0, got {bad[0]}")
    return values


@app.command("profile")
def profile(
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated model names or patterns "
                                               "(vit_*, deit_s, pvt_v2_b2, swin_t, lra_*), each run with every "
                                               "--norms; zoo names (vit_s_ln, vit_s_dtn) bring their own norm.")]
    = None,
    norms: Annotated[str | None, typer.Option("--norms", help="Comma-separated normalisers (layernorm,dtn).")] = None,
    placement: PlacementOpt = None,
    device: Annotated[str | None, typer.Option("--device", help="cuda or cpu.")] = None,
    batch_sizes: Annotated[str | None, typer.Option("--batch-sizes", help="Comma-separated batch sizes (1,64,256).")]
    = None,
    amp: Annotated[str | None, typer.Option("--amp", help="Autocast dtype: bf16, fp16 or none.")] = None,
    channels_last: Annotated[bool | None, typer.Option("--channels-last/--no-channels-last",
                                                       help="Model and images in channels_last memory format.")]
    = None,
    compile_: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model.")] = None,
    compile_mode: Annotated[str | None, typer.Option("--compile-mode", help="torch.compile mode (with --compile): "
                                                     "default, reduce-overhead (CUDA only), max-autotune, "
                                                     "max-autotune-no-cudagraphs.")] = None,
    dtn_kernel: Annotated[str | None, typer.Option("--dtn-kernel", help="DTN inference kernel: eager (torch ops) or "
                                                   "triton (fused, CUDA inference only; equality-tested in Triton's "
                                                   "interpreter, compiled for sm_80/sm_90, never timed by us).")]
    = None,
    train: Annotated[bool | None, typer.Option("--train/--no-train", help="Time training steps (fwd + bwd + SGD) "
                                               "instead of inference.")] = None,
    preset: Annotated[str, typer.Option("--preset", help="Preset of suites/profile.yaml: default (GPU), "
                                        "gpu-all (GPU), cpu, quick.")]
    = "default",
    warmup: Annotated[int | None, typer.Option("--warmup", help="Untimed iterations before timing.")] = None,
    iters: Annotated[int | None, typer.Option("--iters", help="Timed iterations of the throughput loop.")] = None,
    latency_iters: Annotated[int | None, typer.Option("--latency-iters", help="Timed batch-1 iterations.")] = None,
    tf32: Annotated[bool | None, typer.Option("--tf32/--no-tf32", help="Allow TF32 matrix products (CUDA).")] = None,
    cudnn_benchmark: Annotated[bool | None, typer.Option("--cudnn-benchmark/--no-cudnn-benchmark",
                                                         help="torch.backends.cudnn.benchmark (CUDA).")] = None,
    isolate: Annotated[bool | None, typer.Option("--isolate/--no-isolate", help="Run each configuration in its own "
                                                 "process (default) or all in this one.")] = None,
    oom_halving: Annotated[bool | None, typer.Option("--oom-halving/--no-oom-halving",
                                                     help="On out-of-memory halve the batch and retry.")] = None,
    threads: ThreadsOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed of inputs and parameters.")] = None,
    out: OutOpt = Path("results"),
    run_id: RunIdOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run folder --run-id, skipping finished "
                                         "configurations.")] = False,
) -> None:
    """Profile models x normalisers: params, GMACs, throughput, latency, peak memory and MFU.

    GMACs come with the norms' analytic GMACs, latency is p50/p90 at batch 1, MFU is measured on GPUs only. Writes
    rows, table.md/.tex, throughput.png and latency.png. Weights change none of these, so there is no --checkpoint
    or --pretrained here: models are profiled at their init.
    """
    from dataclasses import replace

    from dtn_bench.profile import measure
    from dtn_bench.profile import models as pm

    if resume and run_id is None:
        raise DTNBenchError("profile: --resume needs the --run-id of the run to continue")
    overrides = dict(models=csv_list(models, "--models"), norms=csv_list(norms, "--norms"), placement=placement,
                     device=device,
                     batch_sizes=None if batch_sizes is None else _parse_batch_sizes(batch_sizes), amp=amp,
                     channels_last=channels_last, compile=compile_, compile_mode=compile_mode, dtn_kernel=dtn_kernel,
                     train=train,
                     warmup=warmup, iters=iters, latency_iters=latency_iters, tf32=tf32,
                     cudnn_benchmark=cudnn_benchmark, isolate=isolate, oom_halving=oom_halving, threads=threads,
                     seed=seed)
    cfg = measure.ProfileConfig.from_preset(preset, **overrides)
    if compile_mode is not None and not cfg.compile:
        raise DTNBenchError("profile: --compile-mode needs --compile")
    if not cfg.on_cuda:
        cuda_only = [flag for flag, value in (("--tf32", tf32), ("--cudnn-benchmark", cudnn_benchmark)) if value]
        if cuda_only:
            raise DTNBenchError(f"profile: {' and '.join(cuda_only)} {'needs' if len(cuda_only) == 1 else 'need'} "
                                  f"--device cuda (got --device {cfg.device})")
    cfg = replace(cfg, models=tuple(pm.expand(cfg.models)), norms=tuple(dict.fromkeys(cfg.norms)))
    run_with_progress(measure.SUITE, cfg, out, run_id, resume)
