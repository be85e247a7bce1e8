"""Norm benchmark: what each normaliser costs at one token shape, and what DTN costs a whole ViT.

Per normaliser (every registered one, plus ``dtn_authors``: the authors' dense algorithm with its per-sample
``[B, T, T, 3]`` position tensor, :class:`dtn_bench.norms.dtn_dense.AuthorsDTN`) it times the forward pass (eval,
``torch.inference_mode``) and forward + backward (train mode, gradient of a fixed random upstream gradient), median
over ``iters`` after ``warmup``. Then the model-level inference throughput of ``vit_s_ln`` and ``vit_s_dtn`` (eval,
inference mode, fp32, eager).

Measurement only: rows out (measured numbers only), nothing printed. Beside the median and the minimum, every timed
repetition is a row of its own (``stat = "rep"``, ``repetition`` = 0, 1, ... in the order timed): a layer's time in ms,
a model's throughput of that repetition (``model_batch`` over its time). DTN's speed-up over the authors' algorithm and
the ``vit_s_dtn / vit_s_ln`` throughput ratio are derived at render time from those rows
(:func:`dtn_bench.bench.report.speedups`, :func:`~dtn_bench.bench.report.throughput_ratios`), with their spread over
the paired repetitions (:func:`dtn_bench.bench.report.paired_ratio_spread`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import torch

from dtn_bench.checks import check_positive
from dtn_bench.distributed import check_device
from dtn_bench.errors import DTNBenchError
from dtn_bench.results.schema import make_row
from dtn_bench.runner import EMPTY_OK, ConsoleTable, PresetConfig, Report, Suite, run_suite
from dtn_bench.suites import register
from dtn_bench.timing import keep_freed_memory, time_ms

SUITE = "bench-norms"
AUTHORS = "dtn_authors"


@dataclass(frozen=True)
class NormBenchConfig(PresetConfig):
    """Settings of one norm benchmark run (preset ``default`` = ViT-S layer shape)."""

    SUITE = SUITE

    batch: int = 64
    grid: tuple[int, int] = (14, 14)
    dim: int = 384
    heads: int = 6
    norms: tuple[str, ...] = ()  # empty: every registered norm
    authors: bool = True
    warmup: int = 2
    iters: int = 5
    authors_iters: int = 2
    models: Annotated[tuple[str, ...], EMPTY_OK] = ("vit_s_ln", "vit_s_dtn")  # empty: the layers only
    placement: str = "pre"  # of the models (a single layer has none)
    model_batch: int = 32
    model_warmup: int = 1
    model_iters: int = 3
    threads: int = 0  # 0: torch's default
    tune_malloc: bool = True
    device: str = "cpu"
    seed: int = 0
    preset: str = "default"

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for any bad field (names checked against the registries too)."""
        check_positive("bench norms", **{name: getattr(self, name) for name in (
            "batch", "dim", "heads", "iters", "model_batch", "model_iters", "authors_iters")})
        if self.threads < 0:
            raise DTNBenchError(f"bench norms: --threads must be >= 0, got {self.threads}")
        if self.warmup < 0 or self.model_warmup < 0:
            raise DTNBenchError("bench norms: warm-up counts must be >= 0")
        if min(self.grid) <= 0:
            raise DTNBenchError(f"bench norms: --grid must be positive, got {self.grid}")
        if self.dim % self.heads:
            raise DTNBenchError(f"bench norms: --dim {self.dim} is not divisible by --heads {self.heads}")
        if self.authors and self.grid[0] != self.grid[1]:
            raise DTNBenchError("bench norms: the authors' algorithm needs a square --grid (or --no-authors)")
        check_device("bench norms", self.device)
        from dtn_bench.placement import check_placement

        check_placement(self.placement, "bench norms: --placement")
        norm_names(self)  # unknown norm names fail before any work
        from dtn_bench.models import MODELS

        for m in self.models:
            MODELS.get(m)



tune_malloc = keep_freed_memory  # the name earlier versions used


def _build(name: str, cfg: NormBenchConfig, device: torch.device) -> torch.nn.Module:
    from dtn_bench.norms import build_norm
    from dtn_bench.norms.dtn_dense import AuthorsDTN

    if name == AUTHORS:
        return AuthorsDTN(cfg.dim, cfg.heads, side=cfg.grid[0]).to(device)
    return build_norm(name, cfg.dim, num_heads=cfg.heads, grid_size=cfg.grid, device=device)


def norm_names(cfg: NormBenchConfig) -> list[str]:
    """The normalisers a config measures, the authors' anchor last.

    Args:
        cfg: the settings (``norms`` empty: every registered normaliser).

    Returns:
        The names, in the order measured.

    Raises:
        DTNBenchError: an unknown name (with the closest ones).
    """
    from dtn_bench.norms import NORMS

    names = list(cfg.norms) or NORMS.names()
    for n in names:
        if n != AUTHORS:
            NORMS.get(n)
    if cfg.authors and AUTHORS not in names:
        names.append(AUTHORS)
    return names


def bench_norm(name: str, cfg: NormBenchConfig, malloc_tuned: bool = False) -> list[dict]:
    """Rows for one normaliser: forward and forward+backward times, median, min and each repetition.

    Args:
        name: a registered normaliser, or ``dtn_authors`` (the authors' dense algorithm: ``authors_iters`` timed
            runs, at most one warm-up).
        cfg: the settings (layer shape, repetitions, device, seed).
        malloc_tuned: whether the process keeps freed memory (recorded in the rows).

    Returns:
        ``time_ms`` rows for ``pass`` ``fwd`` and ``fwd_bwd``: ``stat`` ``median``, ``min``, then ``rep`` with
        ``repetition`` 0, 1, ... (one row per timed call, in the order timed).
    """
    device = torch.device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    T = cfg.grid[0] * cfg.grid[1]
    x = torch.randn(cfg.batch, T, cfg.dim, generator=gen).to(device)
    g = torch.randn(cfg.batch, T, cfg.dim, generator=gen).to(device)
    mod = _build(name, cfg, device)
    iters = cfg.authors_iters if name == AUTHORS else cfg.iters
    warm = min(cfg.warmup, 1) if name == AUTHORS else cfg.warmup

    mod.eval()
    with torch.inference_mode():
        fwd = time_ms(lambda: mod(x), warm, iters, device)
    mod.train()
    xg = x.clone().requires_grad_(True)

    def step():
        mod(xg).backward(g)

    fb = time_ms(step, warm, iters, device)
    settings = dict(batch=cfg.batch, tokens=T, dim=cfg.dim, heads=cfg.heads, grid=f"{cfg.grid[0]}x{cfg.grid[1]}",
                    iters=iters, warmup=warm, dtype="float32", preset=cfg.preset,
                    malloc_tuned=malloc_tuned)
    rows = []
    for pass_, ts in (("fwd", fwd), ("fwd_bwd", fb)):
        rows.append(make_row(SUITE, "layer", name, "time_ms", statistics.median(ts), stat="median", **{"pass": pass_},
                             **settings))
        rows.append(make_row(SUITE, "layer", name, "time_ms", min(ts), stat="min", **{"pass": pass_}, **settings))
        rows += [make_row(SUITE, "layer", name, "time_ms", t, stat="rep", repetition=k, **{"pass": pass_}, **settings)
                 for k, t in enumerate(ts)]
    return rows


def bench_model(name: str, cfg: NormBenchConfig, malloc_tuned: bool = False) -> list[dict]:
    """Inference throughput of one zoo model (eval, inference mode, fp32, eager).

    Args:
        name: a registered model.
        cfg: the settings (``model_batch``, ``model_warmup``, ``model_iters``, device, seed).
        malloc_tuned: whether the process keeps freed memory (recorded in the rows).

    Returns:
        ``throughput_img_s`` rows: ``stat`` ``median`` (from the median time), ``best`` (from the fastest), then
        ``rep`` with ``repetition`` 0, 1, ... (from each timed call's time, in the order timed).
    """
    from dtn_bench.models import MODELS, create

    device = torch.device(cfg.device)
    entry = MODELS.get(name)
    model = create(name, placement=cfg.placement).to(device).eval()
    x = torch.randn(cfg.model_batch, 3, 224, 224, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    with torch.inference_mode():
        ts = time_ms(lambda: model(x), cfg.model_warmup, cfg.model_iters, device)
    settings = dict(batch=cfg.model_batch, iters=cfg.model_iters, warmup=cfg.model_warmup, dtype="float32",
                    mode="eager", preset=cfg.preset, malloc_tuned=malloc_tuned, placement=cfg.placement)
    norm = entry.meta.get("norm", "")
    return [
        make_row(SUITE, name, norm, "throughput_img_s", cfg.model_batch / (statistics.median(ts) / 1e3),
                 stat="median", **settings),
        make_row(SUITE, name, norm, "throughput_img_s", cfg.model_batch / (min(ts) / 1e3), stat="best", **settings),
        *(make_row(SUITE, name, norm, "throughput_img_s", cfg.model_batch / (t / 1e3), stat="rep", repetition=k,
                   **settings) for k, t in enumerate(ts)),
    ]


def run(cfg: NormBenchConfig) -> Iterator[tuple[str, list[dict]]]:
    """Run the benchmark: every normaliser's layer timings, then every model's throughput.

    Args:
        cfg: the settings (validated again here).

    Yields:
        ``(label, rows)`` as each measurement finishes (for append-as-you-go): ``norm <name>`` per normaliser, then
        ``model <name>`` per model.
    """
    cfg.validate()
    tuned = tune_malloc() if cfg.tune_malloc and torch.device(cfg.device).type == "cpu" else False
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    for name in norm_names(cfg):
        yield f"norm {name}", bench_norm(name, cfg, tuned)
    for name in cfg.models:
        yield f"model {name}", bench_model(name, cfg, tuned)


def steps(cfg: NormBenchConfig) -> int:
    """How many ``(label, rows)`` items :func:`run` yields (for a progress bar).

    Args:
        cfg: the settings.

    Returns:
        One item per normaliser and per model.
    """
    return len(norm_names(cfg)) + len(cfg.models)


NORMS_SETTINGS = ("device", "batch", "tokens", "dim", "heads", "grid", "dtype", "mode", "malloc_tuned", "placement")
"""Row columns that must agree within each ``model`` before runs combine (the layer rows, each whole model)."""


def _console(df) -> list[ConsoleTable]:
    from dtn_bench.bench.report import SUMMARY_SPREAD, summary_table

    st = summary_table(df)
    if st.empty:
        return []
    return [ConsoleTable("Summary", ("figure", "value", SUMMARY_SPREAD),
                         tuple((str(name), f"{r['value']:.2f} {r['unit']}", str(r[SUMMARY_SPREAD]))
                               for name, r in st.iterrows()),
                         (False, True, True))]


def _report() -> Report:
    from dtn_bench.bench import report

    return Report(report.render_report, report.comparison_table, "normaliser comparison",
                  {"norms.png": report.bar_plot}, settings=((NORMS_SETTINGS, ("model",)),), console=_console)


NORMS_SUITE = register(Suite(
    SUITE, "time of each normaliser (fwd, fwd+bwd) at one shape, DTN vs the authors' algorithm, and vit_s_ln vs "
    "vit_s_dtn throughput", {"time_ms": False, "speedup": True, "throughput_img_s": True, "ratio": True},
    NormBenchConfig, lambda cfg, ctx: run(cfg), _report(), command="norms", steps=lambda cfg: steps(cfg),
    table_help="Normaliser comparison (bench norms): time per layer of every normaliser, DTN vs the authors' "
    "algorithm, and the paper's normaliser comparison (published top-1 beside our layer cost). The runs must share "
    "device and shapes."))


def benchmark(preset: str = "default", *, out: str = "results", run_id: str | None = None, **settings):
    """Run ``bench norms`` from Python: the preset with ``settings`` over it.

    Args:
        preset: a preset of ``suites/bench-norms.yaml`` (``default``, ``quick``).
        out: the results root (the run folder is ``out/bench-norms/<run id>``).
        run_id: the run folder name (default: a fresh timestamped one).
        **settings: :class:`NormBenchConfig` fields (``norms=("layernorm", "dtn")``, ``batch=32``, ...).

    Returns:
        The :class:`~dtn_bench.runner.RunResult` (run folder and rows).

    Raises:
        DTNBenchError: a bad setting (before anything is written).
    """
    cfg = NormBenchConfig.from_preset(preset, **settings)
    return run_suite(NORMS_SUITE, cfg, out=out, run_id=run_id)
