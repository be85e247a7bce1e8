"""Norm benchmark: what each normaliser costs at one token shape, and what DTN costs a whole ViT.

Per normaliser (every registered one, plus ``dtn_authors``: the authors' dense algorithm with its per-sample
``[B, T, T, 3]`` position tensor, :class:`dtn_bench.norms.dtn.dense.AuthorsDTN`) it times the forward pass (eval,
``torch.inference_mode``) and forward + backward (train mode, gradient of a fixed random upstream gradient), median
over ``iters`` after ``warmup``. Then the model-level inference throughput of ``vit_s_ln`` and ``vit_s_dtn`` (eval,
inference mode, fp32, eager). Two more cases:

* ``loaded``: the same models' inference throughput on a machine loaded on purpose: ``load`` busy-loop processes
  (:func:`dtn_bench.timing.background_load`, one core's worth of work each, at the benchmark's priority) run from
  before the warm-up to the end of the case, and the models are timed in ``load_repeats`` interleaved repetitions
  (:func:`dtn_bench.timing.interleaved_ms`, ABBA order) so that each repetition of DTN pairs with one of LN taken
  under the same load. The rows record ``load`` (0 for every other row).
* ``train``: images/s of full training steps (``zero_grad``, forward, cross-entropy, backward, AdamW step from
  timm's optimizer factory) of each ``train_models`` family (``vit_cifar_t``: 32 px, ``vit_s``: 224 px; built as
  ``<family>_ln`` with the normaliser of blocks 0-9 replaced) at its batch of ``train_batches``, for every normaliser
  of the run (``norms``; the authors' dense algorithm, a layer only, excluded), in ``train_repeats`` interleaved
  repetitions of ``train_iters`` steps after ``train_warmup`` steps: one row per repetition (``train_img_s``).

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
    load: int = 0  # busy-loop processes of the loaded case (0: no loaded case)
    load_repeats: int = 3
    # families of the train case: vit_cifar_t, vit_s, ... (empty: no train case)
    train_models: Annotated[tuple[str, ...], EMPTY_OK] = ()
    train_batches: Annotated[tuple[int, ...], EMPTY_OK] = ()  # one per family
    train_warmup: int = 1
    train_repeats: int = 3
    train_iters: int = 1
    threads: int = 0  # 0: torch's default
    tune_malloc: bool = True
    device: str = "cpu"
    seed: int = 0
    preset: str = "default"

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for any bad field (names checked against the registries too)."""
        check_positive("bench norms", **{name: getattr(self, name) for name in (
            "batch", "dim", "heads", "iters", "model_batch", "model_iters", "authors_iters", "load_repeats",
            "train_repeats", "train_iters")})
        if self.threads < 0:
            raise DTNBenchError(f"bench norms: --threads must be >= 0, got {self.threads}")
        if self.warmup < 0 or self.model_warmup < 0 or self.train_warmup < 0:
            raise DTNBenchError("bench norms: warm-up counts must be >= 0")
        if self.load < 0:
            raise DTNBenchError(f"bench norms: --load must be >= 0 (busy-loop processes), got {self.load}")
        self._check_train()
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

    def _check_train(self) -> None:
        """The train case: known families (``<family>_ln`` a registered model), one positive batch per family.

        No family: no train case (the batches are not used).
        """
        from dtn_bench.checks import unknown_name_message
        from dtn_bench.models.small import SMALL_MODELS
        from dtn_bench.models.vit import MODELS

        if not self.train_models:
            return
        if len(self.train_batches) != len(self.train_models):
            raise DTNBenchError(f"bench norms: {len(self.train_batches)} --train-batches for {len(self.train_models)} "
                                "--train-models (give one batch per family)")
        if any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in self.train_batches):
            raise DTNBenchError(f"bench norms: --train-batches must be positive integers, got "
                                f"{list(self.train_batches)}")
        families = sorted({n[:-3] for n in (*MODELS.names(), *SMALL_MODELS.names()) if n.endswith("_ln")})
        for family in self.train_models:
            if family not in families:
                raise DTNBenchError(f"bench norms: {unknown_name_message('--train-models family', family, families)}")
        if len(set(self.train_models)) != len(self.train_models):
            raise DTNBenchError(f"bench norms: --train-models repeats a family: {', '.join(self.train_models)}")



tune_malloc = keep_freed_memory  # the name earlier versions used


def _build(name: str, cfg: NormBenchConfig, device: torch.device) -> torch.nn.Module:
    from dtn_bench.norms import build_norm
    from dtn_bench.norms.dtn.dense import AuthorsDTN

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
                    malloc_tuned=malloc_tuned, load=0)
    rows = []
    for pass_, ts in (("fwd", fwd), ("fwd_bwd", fb)):
        rows.append(make_row(SUITE, "layer", name, "time_ms", statistics.median(ts), stat="median", **{"pass": pass_},
                             **settings))
        rows.append(make_row(SUITE, "layer", name, "time_ms", min(ts), stat="min", **{"pass": pass_}, **settings))
        rows += [make_row(SUITE, "layer", name, "time_ms", t, stat="rep", repetition=k, **{"pass": pass_}, **settings)
                 for k, t in enumerate(ts)]
    return rows


def _throughput_rows(model: str, norm: str, images: int, ts: list[float], **settings) -> list[dict]:
    """``throughput_img_s`` rows of one model from its times ``ts`` (ms per call of ``images`` images).

    ``stat`` ``median`` (from the median time), ``best`` (from the fastest), then ``rep`` with ``repetition`` 0, 1, ...
    (from each timed repetition, in the order timed).
    """
    return [
        make_row(SUITE, model, norm, "throughput_img_s", images / (statistics.median(ts) / 1e3), stat="median",
                 **settings),
        make_row(SUITE, model, norm, "throughput_img_s", images / (min(ts) / 1e3), stat="best", **settings),
        *(make_row(SUITE, model, norm, "throughput_img_s", images / (t / 1e3), stat="rep", repetition=k, **settings)
          for k, t in enumerate(ts)),
    ]


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
                    mode="eager", preset=cfg.preset, malloc_tuned=malloc_tuned, load=0,
                    placement=cfg.placement)
    return _throughput_rows(name, entry.meta.get("norm", ""), cfg.model_batch, ts, **settings)


def bench_loaded(cfg: NormBenchConfig, malloc_tuned: bool = False) -> list[dict]:
    """Inference throughput of every model of ``cfg.models`` with ``cfg.load`` busy-loop processes running.

    The models are timed in ``load_repeats`` interleaved repetitions of ``model_iters`` calls each (ABBA order, after
    ``model_warmup`` calls of each), all under the load (:func:`dtn_bench.timing.background_load`, started before
    the warm-up, stopped after the last repetition).

    Args:
        cfg: the settings.
        malloc_tuned: whether the process keeps freed memory (recorded in the rows).

    Returns:
        ``throughput_img_s`` rows with ``load = cfg.load`` and ``case = "loaded"``: ``stat`` ``median``, ``best``,
        then ``rep`` with ``repetition`` 0, 1, ... (repetition ``k`` of every model from the same round).
    """
    from dtn_bench.models import MODELS, create
    from dtn_bench.timing import background_load, interleaved_ms

    device = torch.device(cfg.device)
    models = [create(name, placement=cfg.placement).to(device).eval() for name in cfg.models]
    x = torch.randn(cfg.model_batch, 3, 224, 224, generator=torch.Generator().manual_seed(cfg.seed)).to(device)

    def unit(model: torch.nn.Module):
        def call() -> None:
            with torch.inference_mode():
                model(x)

        return call

    with background_load(cfg.load):
        times = interleaved_ms([unit(m) for m in models], cfg.model_warmup, cfg.load_repeats, cfg.model_iters, device)
    settings = dict(batch=cfg.model_batch, iters=cfg.model_iters, warmup=cfg.model_warmup, repeats=cfg.load_repeats,
                    dtype="float32", mode="eager", preset=cfg.preset, malloc_tuned=malloc_tuned, load=cfg.load,
                    case="loaded", threads=torch.get_num_threads(), placement=cfg.placement)
    rows = []
    for name, ts in zip(cfg.models, times, strict=True):
        rows += _throughput_rows(name, MODELS.get(name).meta.get("norm", ""), cfg.model_batch, ts, **settings)
    return rows


def train_unit(family: str, norm: str, batch: int, seed: int, device: torch.device, placement: str = "pre"):
    """One training step of ``<family>_ln`` with ``norm`` in blocks 0-9 at ``placement``, and the image size.

    The batch is fixed and random.

    The step: ``zero_grad``, forward, cross-entropy against random labels, backward, an AdamW step (timm's
    ``create_optimizer_v2``: lr 1e-3, weight decay 0.05, none on norms and biases).
    """
    from timm.optim import create_optimizer_v2

    from dtn_bench.models.small import create

    torch.manual_seed(seed)
    model = create(f"{family}_ln", norm=norm, placement=placement).to(device).train()
    size = tuple(model.patch_embed.img_size)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *size, generator=gen).to(device)
    y = torch.randint(0, model.num_classes, (batch,), generator=gen).to(device)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step, size


def train_norms(cfg: NormBenchConfig) -> list[str]:
    """The normalisers of the train case: the run's (:func:`norm_names`) but the authors' layer-only algorithm."""
    return [n for n in norm_names(cfg) if n != AUTHORS]


def bench_train(family: str, batch: int, cfg: NormBenchConfig, malloc_tuned: bool = False) -> list[dict]:
    """Training-step throughput of one model family with every normaliser of :func:`train_norms`, interleaved.

    Args:
        family: a zoo or small-model family (``vit_cifar_t``, ``vit_s``): ``<family>_ln`` is a registered model.
        batch: images per step.
        cfg: the settings (``train_warmup``, ``train_repeats``, ``train_iters``, device, seed).
        malloc_tuned: whether the process keeps freed memory (recorded in the rows).

    Returns:
        ``train_img_s`` rows (``model`` = the family, ``norm``, ``case = "train"``, ``stat = "rep"``, ``repetition``
        0, 1, ...): ``batch`` over the mean time of the repetition's ``train_iters`` steps. Repetition ``k`` of every
        normaliser comes from the same round.
    """
    from dtn_bench.timing import interleaved_ms

    device = torch.device(cfg.device)
    norms = train_norms(cfg)
    units, size = [], None
    for norm in norms:
        step, size = train_unit(family, norm, batch, cfg.seed, device, cfg.placement)
        units.append(step)
    times = interleaved_ms(units, cfg.train_warmup, cfg.train_repeats, cfg.train_iters, device)
    settings = dict(batch=batch, img_size=f"{size[0]}x{size[1]}", iters=cfg.train_iters, warmup=cfg.train_warmup,
                    repeats=cfg.train_repeats, dtype="float32", mode="eager", preset=cfg.preset,
                    malloc_tuned=malloc_tuned, load=0, case="train", threads=torch.get_num_threads(),
                    placement=cfg.placement)
    return [make_row(SUITE, family, norm, "train_img_s", batch / (ms / 1e3), stat="rep", repetition=k, **settings)
            for norm, ts in zip(norms, times, strict=True) for k, ms in enumerate(ts)]


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
    if cfg.load and cfg.models:
        yield f"models under load {cfg.load}", bench_loaded(cfg, tuned)
    for family, batch in zip(cfg.train_models, cfg.train_batches[: len(cfg.train_models)], strict=True):
        yield f"train {family}", bench_train(family, batch, cfg, tuned)


def steps(cfg: NormBenchConfig) -> int:
    """How many ``(label, rows)`` items :func:`run` yields (for a progress bar).

    Args:
        cfg: the settings.

    Returns:
        One item per normaliser and per model, one for the loaded case, one per train family.
    """
    return len(norm_names(cfg)) + len(cfg.models) + int(bool(cfg.load and cfg.models)) + len(cfg.train_models)


NORMS_SETTINGS = ("device", "batch", "tokens", "dim", "heads", "grid", "dtype", "mode", "malloc_tuned", "img_size",
                  "placement")
"""Row columns that must agree within each ``model`` and ``load`` before runs combine (the layer rows, each whole
model; a model measured under load and without it, or trained, are separate groups)."""


def _console(df) -> list[ConsoleTable]:
    from dtn_bench.bench.report import SUMMARY_SPREAD, summary_table, train_table

    st, tt = summary_table(df), train_table(df)
    tables = []
    if not st.empty:
        tables.append(ConsoleTable("Summary", ("figure", "value", SUMMARY_SPREAD),
                                   tuple((str(name), f"{r['value']:.2f} {r['unit']}", str(r[SUMMARY_SPREAD]))
                                         for name, r in st.iterrows()),
                                   (False, True, True)))
    if not tt.empty:
        tables.append(ConsoleTable.from_frame(tt, "Training step (images/s, median (min-max) over repetitions)",
                                              "model"))
    return tables


def _report() -> Report:
    from dtn_bench.bench import report

    return Report(report.render_report, report.comparison_table, "normaliser comparison",
                  {"norms.png": report.bar_plot}, settings=((NORMS_SETTINGS, ("model", "load")),),
                  console=_console)


NORMS_SUITE = register(Suite(
    SUITE, "time of each normaliser (fwd, fwd+bwd) at one shape, DTN vs the authors' algorithm, vit_s_ln vs "
    "vit_s_dtn throughput (idle and under a background load), and training-step images/s per normaliser",
    {"time_ms": False, "speedup": True, "throughput_img_s": True, "ratio": True, "train_img_s": True},
    NormBenchConfig, lambda cfg, ctx: run(cfg), _report(), command="norms", steps=lambda cfg: steps(cfg),
    table_help="Normaliser comparison (bench norms): time per layer of every normaliser, DTN vs the authors' "
    "algorithm, model throughput (idle and under load), training-step images/s, and the paper's normaliser "
    "comparison (published top-1 beside our layer cost). The runs must share device and shapes."))


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
