"""LRA scaling benchmark: how the time and memory of one training step grow with the sequence length.

For every attention (``transformer``, ``bigbird``, ``reformer``) x normaliser x length it builds an
:class:`~dtn_bench.sequence.encoder.LRAEncoder` (vocab 18, 10 classes, CLS pooling, sinusoidal positions, dropout 0)
and times ONE training step: forward on random token ids ``[batch, length]`` (ids 1..17, the last ~10% of every
sequence padding id 0), cross-entropy on random labels, backward, ``AdamW`` step. Median (and min) over ``iters``
after ``warmup`` steps, and each timed step as a row of its own (``stat = "rep"``, ``repetition`` = 0, 1, ... in the
order timed).

Memory, per step (one extra, untimed step):

* ``alloc_mib`` (every device): the total size in MiB of the new tensor storages that ATen operators allocate during
  the step (forward, loss, backward, optimiser step), counted with a
  :class:`torch.utils._python_dispatch.TorchDispatchMode`. An operator output counts when its storage is not the
  storage of one of the operator's inputs (so views and in-place results are not counted). It is a cumulative sum of
  allocations, NOT a peak of live memory: temporaries freed within the step count too. It follows the activation
  and temporary memory of the step and so its growth with the length (a ``[T, T]`` score tensor shows up as
  quadratic growth); parameters, optimiser state created before the step and allocator caching are not in it.
  Buffers internal to a fused kernel are not operator outputs and are not counted: the Transformer's attention is
  :func:`torch.nn.functional.scaled_dot_product_attention`, whose fused (flash) kernels never return a ``[T, T]``
  score tensor, so its ``alloc_mib`` can grow linearly although its time grows quadratically.
* ``peak_mem_mib`` (CUDA only): ``torch.cuda.max_memory_allocated`` over the timed steps, in MiB.

Reformer: :class:`~dtn_bench.sequence.attention.LSHAttention` is linear in the length only for a fixed chunk length,
so here ``n_buckets = max(2, 2 * round(T / (2 * bucket_size)))`` with ``T = length + 1`` (the CLS token included) and
``bucket_size`` a config field (default 64): chunks of about ``bucket_size`` tokens at every length (LRA's fixed 10
buckets would make it quadratic).

Derived at render time, from the rows of each run (:func:`slopes`): ``loglog_slope_time`` and ``loglog_slope_alloc``
(``loglog_slope_peak_mem`` on CUDA) of every (model, norm) pair, the least-squares slope of ``log(median time)``
(``log(alloc_mib)``) against ``log(length)`` over the measured lengths in ``[slope_min, slope_max]`` (default
1024..4096, a config field that every row records); when fewer than two measured lengths lie in that range, over all
measured lengths. The slope tables name the lengths used (``length_min``, ``length_max``, ``points``). A slope of 1 is
linear, 2 quadratic. Beside the time slope, its spread over repetitions: the slope of repetition ``k``'s times fitted
the same way, min / median / max over ``k`` (:func:`dtn_bench.stats.spread`). And every normaliser's step time over
LayerNorm's per model and length (:func:`ratio_table`), the ratio of the median times with the spread of the
per-repetition ratios (repetition ``k`` over LayerNorm's repetition ``k`` in the same run,
:func:`dtn_bench.bench.report.paired_ratio_spread`). Rows of runs that kept no repetitions show
:data:`dtn_bench.bench.report.NO_REPETITIONS`.

Measurement only: rows out (measured numbers only), nothing printed (``dtn_bench.cli`` renders, from the rows, with
:func:`render_report` and :func:`loglog_plot`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from dtn_bench.checks import check_positive
from dtn_bench.errors import DTNBenchError
from dtn_bench.results.schema import make_row
from dtn_bench.runner import ConsoleTable, PresetConfig, Report, Suite, run_suite
from dtn_bench.suites import register

SUITE = "bench-lra-scaling"
VOCAB = 18
CLASSES = 10
PAD_FRACTION = 0.1
MODELS = ("transformer", "bigbird", "reformer")
WHERE = "bench lra-scaling"
COMMAND = "lra-scaling"
SLOPES = (("time_ms", "median", "loglog_slope_time"), ("alloc_mib", "total", "loglog_slope_alloc"),
          ("peak_mem_mib", "max", "loglog_slope_peak_mem"))
"""The slopes :func:`slopes` fits: (measured metric, its statistic, the slope's name)."""


@dataclass(frozen=True)
class ScalingBenchConfig(PresetConfig):
    """Settings of one LRA scaling run (preset ``default`` = the PyTorch de-facto LRA size at 512..4096 tokens)."""

    SUITE = SUITE

    lengths: tuple[int, ...] = (512, 1024, 2048, 4096)
    models: tuple[str, ...] = MODELS
    norms: tuple[str, ...] = ("layernorm", "dtn")
    placement: str = "pre"
    batch: int = 2
    dim: int = 64
    heads: int = 2
    depth: int = 2
    mlp_dim: int = 128
    warmup: int = 1
    iters: int = 2
    bucket_size: int = 64
    tune_malloc: bool = True
    slope_min: int = 1024
    slope_max: int = 4096
    device: str = "cpu"
    seed: int = 0
    preset: str = "default"

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for any bad field (names checked against the registries too)."""
        self._check_lengths()
        check_positive(WHERE, **{name: getattr(self, name) for name in (
            "batch", "dim", "heads", "depth", "mlp_dim", "iters", "bucket_size")})
        if self.warmup < 0:
            raise DTNBenchError(f"{WHERE}: --warmup must be >= 0, got {self.warmup}")
        if self.dim % self.heads:
            raise DTNBenchError(f"{WHERE}: --dim {self.dim} is not divisible by --heads {self.heads}")
        self._check_names()
        from dtn_bench.distributed import check_device
        from dtn_bench.placement import check_placement

        check_placement(self.placement, f"{WHERE}: --placement")
        check_device(WHERE, self.device)

    def _check_lengths(self) -> None:
        if not self.lengths:
            raise DTNBenchError(f"{WHERE}: --lengths is empty")
        for v in self.lengths:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise DTNBenchError(f"{WHERE}: --lengths must be positive integers, got {v!r}")

    def _check_names(self) -> None:
        if not self.models or not self.norms:
            raise DTNBenchError(f"{WHERE}: --models and --norms must each name at least one")
        from dtn_bench.norms import NORMS
        from dtn_bench.sequence.encoder import ATTENTIONS

        for m in self.models:
            ATTENTIONS.get(m)
        for n in self.norms:
            NORMS.get(n)


def reformer_buckets(length: int, bucket_size: int) -> int:
    """The Reformer's LSH bucket count at one length, so that chunks hold about ``bucket_size`` tokens.

    Args:
        length: the sequence length (the CLS token comes on top: ``T = length + 1``).
        bucket_size: tokens per bucket wanted.

    Returns:
        ``max(2, 2 * round(T / (2 * bucket_size)))`` (even, at least 2).
    """
    return max(2, 2 * round((length + 1) / (2 * bucket_size)))


def loglog_slope(lengths: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(lengths)`` (``c * L^a`` gives ``a``).

    Args:
        lengths: the x values (points with ``x <= 0`` or ``y <= 0`` are left out).
        values: the y values, as many.

    Returns:
        The slope; NaN with fewer than two points or a single distinct length.
    """
    pts = [(math.log(x), math.log(y)) for x, y in zip(lengths, values, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return float("nan")
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def slope_lengths(lengths: Sequence[int], lo: int, hi: int) -> list[int]:
    """The measured lengths a slope is fitted over: those in ``[lo, hi]``, or all when fewer than two are.

    Args:
        lengths: the measured lengths (repeats allowed).
        lo: the fit range's lower end.
        hi: its upper end.

    Returns:
        The distinct lengths used, sorted.
    """
    inside = sorted(v for v in set(lengths) if lo <= v <= hi)
    return inside if len(inside) >= 2 else sorted(set(lengths))


class AllocTracker:
    """Sums the bytes of new tensor storages that ATen operators allocate while active (see the module docstring)."""

    def __init__(self):
        self.bytes = 0

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                seen = set()
                for t in torch.utils._pytree.tree_leaves((args, kwargs)):
                    if isinstance(t, torch.Tensor):
                        seen.add(_storage_key(t))
                for t in torch.utils._pytree.tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        key = _storage_key(t)
                        if key not in seen:
                            seen.add(key)
                            tracker.bytes += t.untyped_storage().nbytes()
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)

    @property
    def mib(self) -> float:
        """The bytes counted so far, in MiB."""
        return self.bytes / 2**20


def _storage_key(t: torch.Tensor) -> tuple:
    try:
        return (t.device.type, t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return ("id", id(t))


def _batch(cfg: ScalingBenchConfig, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(cfg.seed + length)
    tokens = torch.randint(1, VOCAB, (cfg.batch, length), generator=gen)
    pad = min(length - 1, round(PAD_FRACTION * length))
    if pad > 0:
        tokens[:, length - pad:] = 0
    labels = torch.randint(0, CLASSES, (cfg.batch,), generator=gen)
    return tokens.to(device), labels.to(device)


def build_model(model: str, norm: str, length: int, cfg: ScalingBenchConfig) -> torch.nn.Module:
    """The encoder measured for ``(model, norm, length)``.

    Args:
        model: the attention (``transformer``, ``bigbird``, ``reformer``).
        norm: a registered normaliser.
        length: the sequence length (the Reformer's bucket count follows it, :func:`reformer_buckets`).
        cfg: the model shape and seed.

    Returns:
        The :class:`~dtn_bench.sequence.encoder.LRAEncoder` (seeded with ``cfg.seed``, on the CPU).
    """
    from dtn_bench.sequence.encoder import LRAEncoder

    kw = {"n_buckets": reformer_buckets(length, cfg.bucket_size)} if model == "reformer" else None
    torch.manual_seed(cfg.seed)
    return LRAEncoder(VOCAB, CLASSES, dim=cfg.dim, heads=cfg.heads, depth=cfg.depth, mlp_dim=cfg.mlp_dim,
                      max_len=length, attention=model, norm=norm, pooling="cls", positions="sinusoidal",
                      dropout=0.0, attn_dropout=0.0, attention_kwargs=kw, placement=cfg.placement)


def bench_one(model: str, norm: str, length: int, cfg: ScalingBenchConfig, malloc_tuned: bool = False) -> list[dict]:
    """Rows of one ``(model, norm, length)``: step times, ``alloc_mib`` (and ``peak_mem_mib`` on CUDA).

    Args:
        model: the attention.
        norm: a registered normaliser.
        length: the sequence length.
        cfg: the settings; every row records the shape, the repetitions and the slope fit range.
        malloc_tuned: whether the process keeps freed memory (recorded in the rows).

    Returns:
        The rows: ``time_ms`` ``stat`` ``median``, ``min``, ``alloc_mib``, (``peak_mem_mib``), then ``time_ms``
        ``stat`` ``rep`` with ``repetition`` 0, 1, ... per timed step (Reformer's record ``n_buckets``).
    """
    from dtn_bench.timing import time_ms

    device = torch.device(cfg.device)
    net = build_model(model, norm, length, cfg).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    tokens, labels = _batch(cfg, length, device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(tokens), labels)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    ts = time_ms(step, cfg.warmup, cfg.iters, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    with AllocTracker() as tracker:
        step()
    settings = dict(length=length, batch=cfg.batch, dim=cfg.dim, heads=cfg.heads, depth=cfg.depth,
                    mlp_dim=cfg.mlp_dim, iters=cfg.iters, warmup=cfg.warmup, preset=cfg.preset,
                    malloc_tuned=malloc_tuned, slope_min=cfg.slope_min, slope_max=cfg.slope_max,
                    placement=cfg.placement)
    if model == "reformer":
        settings["n_buckets"] = reformer_buckets(length, cfg.bucket_size)
    rows = [make_row(SUITE, model, norm, "time_ms", statistics.median(ts), stat="median", **settings),
            make_row(SUITE, model, norm, "time_ms", min(ts), stat="min", **settings),
            make_row(SUITE, model, norm, "alloc_mib", tracker.mib, unit="MiB", stat="total", **settings)]
    if peak is not None:
        rows.append(make_row(SUITE, model, norm, "peak_mem_mib", peak, stat="max", **settings))
    rows += [make_row(SUITE, model, norm, "time_ms", t, stat="rep", repetition=k, **settings) for k, t in enumerate(ts)]
    return rows


def run(cfg: ScalingBenchConfig) -> Iterator[tuple[str, list[dict]]]:
    """Run the benchmark: every (model, norm, length) in turn.

    Args:
        cfg: the settings (validated again here).

    Yields:
        ``("<model> <norm> <length>", rows)`` as each measurement finishes (for append-as-you-go).
    """
    from dtn_bench.timing import keep_freed_memory as tune_malloc

    cfg.validate()
    # glibc returns large freed blocks (the long sequences' activations) to the kernel and faults them in afresh on
    # every step, which inflates CPU times at long lengths only (dtn_bench.timing.keep_freed_memory); recorded in rows
    tuned = tune_malloc() if cfg.tune_malloc and torch.device(cfg.device).type == "cpu" else False
    for model in cfg.models:
        for norm in cfg.norms:
            for length in cfg.lengths:
                yield f"{model} {norm} {length}", bench_one(model, norm, length, cfg, tuned)


def steps(cfg: ScalingBenchConfig) -> int:
    """How many ``(label, rows)`` items :func:`run` yields (for a progress bar).

    Args:
        cfg: the settings.

    Returns:
        One item per (model, norm, length).
    """
    return len(cfg.models) * len(cfg.norms) * len(cfg.lengths)


# ---------------------------------------------------------------------------------------------------------- render
def _label(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["model / norm"] = df["model"].astype(str) + " / " + df["norm"].astype(str)
    return df


def _per_length(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows = model / norm, columns = lengths, the value of the given rows."""
    from dtn_bench.results.tables import pivot

    if rows.empty:
        return pd.DataFrame()
    t = _label(rows)
    t["length"] = t["length"].astype(int)
    return pivot(t, index="model / norm", columns="length")


def time_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = model / norm, columns = lengths, median step time (ms).

    Args:
        df: bench-lra-scaling rows (several runs: the mean of a repeated cell).

    Returns:
        The wide table (empty without timings).
    """
    return _per_length(df[(df["metric"] == "time_ms") & (df["stat"] == "median")])


def alloc_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = model / norm, columns = lengths, ``alloc_mib`` per step.

    Args:
        df: bench-lra-scaling rows (several runs: the mean of a repeated cell).

    Returns:
        The wide table (empty without allocation rows).
    """
    return _per_length(df[df["metric"] == "alloc_mib"])


def _fit_range(rows: pd.DataFrame) -> tuple[float, float]:
    """The ``[slope_min, slope_max]`` the rows record (the config's defaults where they record none)."""
    ends = []
    for column, default in (("slope_min", ScalingBenchConfig.slope_min), ("slope_max", ScalingBenchConfig.slope_max)):
        given = rows[column].dropna() if column in rows.columns else ()
        ends.append(float(given.iloc[0]) if len(given) else default)
    return ends[0], ends[1]


def slopes(df: pd.DataFrame) -> pd.DataFrame:
    """The log-log slopes of every (model, norm) pair of every run, computed from the measured rows.

    Per run (:func:`dtn_bench.bench.report.per_run`), pair (in the order measured) and quantity of :data:`SLOPES`
    (median time, ``alloc_mib``, ``peak_mem_mib``): :func:`loglog_slope` over the lengths :func:`slope_lengths` picks
    within the run's ``[slope_min, slope_max]``.

    Args:
        df: bench-lra-scaling rows (one or more runs).

    Returns:
        Columns ``model``, ``norm``, ``metric`` (the slope's name), ``value``, ``length_min``, ``length_max``,
        ``points`` (the lengths fitted over) and ``spread`` (time slope: the :class:`~dtn_bench.stats.Spread` of
        the slopes of each repetition's times, :func:`repetition_slope_spread`; ``None`` otherwise and without
        repetitions).
    """
    from dtn_bench.bench.report import per_run

    columns = ["model", "norm", "metric", "value", "length_min", "length_max", "points", "spread"]
    if not {"model", "norm", "metric", "stat", "length", "value"} <= set(df.columns):
        return pd.DataFrame(columns=columns)
    out = []
    for rows in per_run(df):
        measured = rows[rows["metric"].isin([metric for metric, _, _ in SLOPES])]
        for (model, norm), pair in measured.groupby(["model", "norm"], sort=False):
            lo, hi = _fit_range(pair)
            for metric, stat, name in SLOPES:
                pts = pair[(pair["metric"] == metric) & (pair["stat"] == stat)]
                if pts.empty:
                    continue
                values = dict(zip(pts["length"], pts["value"], strict=True))
                use = slope_lengths(list(values), lo, hi)
                out.append({"model": model, "norm": norm, "metric": name,
                            "value": loglog_slope(use, [values[v] for v in use]), "length_min": use[0],
                            "length_max": use[-1], "points": len(use),
                            "spread": repetition_slope_spread(pair, use) if metric == "time_ms" else None})
    return pd.DataFrame(out, columns=columns)


def repetition_slope_spread(pair: pd.DataFrame, lengths: Sequence[int]):
    """Spread of the time slope over repetitions: the slope of repetition ``k``'s step times over ``lengths``.

    Args:
        pair: the rows of one (model, norm) of one run.
        lengths: the lengths the slope is fitted over (:func:`slope_lengths`).

    Returns:
        The :class:`~dtn_bench.stats.Spread` (:func:`dtn_bench.stats.spread`) over the repetitions timed at every
        one of ``lengths``; ``None`` when the rows hold no repetitions.
    """
    from dtn_bench.bench.report import repetition_rows
    from dtn_bench.stats import spread

    reps = repetition_rows(pair)
    reps = reps[reps["metric"] == "time_ms"]
    if reps.empty:
        return None
    by_rep: dict[int, dict[int, float]] = {}
    for length, k, value in zip(reps["length"], reps["repetition"], reps["value"], strict=True):
        by_rep.setdefault(int(k), {})[int(length)] = float(value)
    fitted = [loglog_slope(lengths, [times[v] for v in lengths]) for times in by_rep.values()
              if all(v in times for v in lengths)]
    fitted = [v for v in fitted if not math.isnan(v)]
    return spread(fitted) if fitted else None


def slope_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = model / norm; the log-log slopes of time and memory, and the lengths they were fitted over.

    Args:
        df: bench-lra-scaling rows; with several runs, a pair's slopes are those of the last run that measured it.

    Returns:
        Columns ``time slope``, ``time slope over repetitions`` (:func:`repetition_slope_spread`, median (min-max),
        or :data:`~dtn_bench.bench.report.NO_REPETITIONS`), ``alloc slope`` (``peak mem slope`` on CUDA),
        ``lengths`` (empty without slopes).
    """
    from dtn_bench.bench.report import spread_text

    t = slopes(df)
    if t.empty:
        return pd.DataFrame()
    t = _label(t)
    names = {"loglog_slope_time": "time slope", "loglog_slope_alloc": "alloc slope",
             "loglog_slope_peak_mem": "peak mem slope"}
    out: dict[str, dict] = {}
    for _, r in t.iterrows():
        row = out.setdefault(r["model / norm"], {})
        row[names.get(r["metric"], r["metric"])] = r["value"]
        if r["metric"] == "loglog_slope_time":
            row[REPS_COLUMN] = spread_text(r["spread"])
        row["lengths"] = f"{int(r['length_min'])}-{int(r['length_max'])}"
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "model / norm"
    cols = [c for c in ("time slope", REPS_COLUMN, "alloc slope", "peak mem slope", "lengths") if c in table.columns]
    return table[cols]


REPS_COLUMN = "time slope over repetitions"
BASELINE = "layernorm"


def ratio_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every normaliser's step time over LayerNorm's, per model and length, with its spread over repetitions.

    Args:
        df: bench-lra-scaling rows (several runs: the mean of a repeated median; repetitions paired within each run
            and pooled).

    Returns:
        Index (``model / norm``, ``length``); columns ``step time / LN`` (the ratio of the median times) and ``over
        repetitions`` (:func:`dtn_bench.bench.report.paired_ratio_spread`, median (min-max), or
        :data:`~dtn_bench.bench.report.NO_REPETITIONS`). Empty without LayerNorm or another normaliser.
    """
    from dtn_bench.bench.report import paired_ratio_spread, repetition_rows, spread_text

    t = df[(df["metric"] == "time_ms") & (df["stat"] == "median")]
    if t.empty or BASELINE not in set(t["norm"]):
        return pd.DataFrame()
    medians = t.groupby(["model", "norm", "length"], sort=False)["value"].mean()
    reps = repetition_rows(df)
    reps = reps[reps["metric"] == "time_ms"]
    out, index = [], []
    for (model, norm, length), value in medians.items():
        base = medians.get((model, BASELINE, length))
        if norm == BASELINE or base is None:
            continue
        pick = (reps["model"] == model) & (reps["length"] == length)
        s = paired_ratio_spread(reps[pick & (reps["norm"] == norm)], reps[pick & (reps["norm"] == BASELINE)])
        out.append({"step time / LN": value / base, "over repetitions": spread_text(s)})
        index.append((f"{model} / {norm}", int(length)))
    if not out:
        return pd.DataFrame()
    return pd.DataFrame(out, index=pd.MultiIndex.from_tuples(index, names=["model / norm", "length"]))


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = model / norm; the median step time (ms) at each length, then the log-log slopes and their lengths.

    Each column is labelled with its quantity: this is the table ``dtn-bench table lra-scaling --format csv`` writes.

    Args:
        df: bench-lra-scaling rows (several runs: the mean of a repeated cell).

    Returns:
        The table (empty without timings).
    """
    times = time_table(df)
    if times.empty:
        return pd.DataFrame()
    out = times.rename(columns={c: f"step ms (median), length {c}" for c in times.columns})
    slopes = slope_table(df)
    if not slopes.empty:
        slopes = slopes.rename(columns={"time slope": "log-log slope of step time",
                                        REPS_COLUMN: "log-log slope of step time over repetitions",
                                        "alloc slope": "log-log slope of alloc_mib",
                                        "peak mem slope": "log-log slope of peak_mem_mib",
                                        "lengths": "slopes fitted over lengths"})
        out = out.join(slopes.reindex(out.index))
    return out


def render_report(df: pd.DataFrame, fmt: str = "md") -> str:
    """The time, memory and slope tables in one document.

    Args:
        df: bench-lra-scaling rows.
        fmt: ``"md"`` or ``"tex"``.

    Returns:
        The document.
    """
    from dtn_bench.results.tables import render_document

    return render_document([("Training-step time (ms, median) per sequence length", time_table(df)),
                            ("Tensor allocations per training step (MiB, alloc_mib) per length", alloc_table(df)),
                            ("Log-log slopes (1: linear, 2: quadratic; over repetitions: median (min-max) of the "
                             "time slope of each repetition)", slope_table(df)),
                            ("Training-step time over LayerNorm's (ratio of the medians; over repetitions: median "
                             "(min-max) of repetition k over LayerNorm's repetition k)", ratio_table(df))], fmt)


def loglog_plot(df: pd.DataFrame):
    """Median step time against length on log-log axes: one line per model x norm, LayerNorm solid, DTN dashed.

    Args:
        df: bench-lra-scaling rows.

    Returns:
        The matplotlib figure.
    """
    from dtn_bench.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    t = df[(df["metric"] == "time_ms") & (df["stat"] == "median")]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = list(dict.fromkeys(t["model"]))
    norms = list(dict.fromkeys(t["norm"]))
    styles = ["-", "--", ":", "-."]
    for i, model in enumerate(models):
        for j, norm in enumerate(norms):
            s = t[(t["model"] == model) & (t["norm"] == norm)].sort_values("length")
            if s.empty:
                continue
            style = "--" if norm == "dtn" else "-" if norm == "layernorm" else styles[j % len(styles)]
            ax.plot(s["length"].astype(float), s["value"], style, marker="o", color=colours[i % len(colours)],
                    label=f"{model} / {norm}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length (tokens, log)")
    ax.set_ylabel("training step (ms, log)")
    ax.set_title("LRA encoder: training-step time vs length")
    ax.grid(which="both", alpha=0.3)
    if models:
        ax.legend()
    fig.tight_layout()
    return fig


SCALING_SETTINGS = ("device", "batch", "dim", "heads", "depth", "mlp_dim", "malloc_tuned", "placement")
"""Row columns that must agree before runs combine (and ``n_buckets`` per model and length, slope ranges per pair)."""


def _check_slope_ranges(df: pd.DataFrame, runs) -> None:
    """Runs combine only when each pair's slopes were fitted over the same lengths (one-line error otherwise)."""
    from dtn_bench.results.tables import check_same_settings

    check_same_settings(slopes(df), f"table {COMMAND}", ("length_min", "length_max"), ("model", "norm", "metric"))


def _console(df: pd.DataFrame) -> list[ConsoleTable]:
    st = slope_table(df)
    if st.empty:
        return []
    return [ConsoleTable.from_frame(st, "Log-log slopes (1: linear, 2: quadratic)", "model / norm")]


SCALING_SUITE = register(Suite(
    SUITE, "time and tensor allocations of one LRA encoder training step vs sequence length (transformer, bigbird, "
    "reformer x LN, DTN) and their log-log slopes",
    {"time_ms": False, "alloc_mib": False, "peak_mem_mib": False, "loglog_slope_time": False,
     "loglog_slope_alloc": False, "loglog_slope_peak_mem": False},
    ScalingBenchConfig, lambda cfg, ctx: run(cfg),
    Report(render_report, summary_table, "training-step times (time_ms, median)", {"scaling.png": loglog_plot},
           settings=((SCALING_SETTINGS, ()), (("n_buckets",), ("model", "length"))), check=_check_slope_ranges,
           console=_console),
    command=COMMAND, steps=lambda cfg: steps(cfg),
    table_help="LRA length scaling: time and memory per length and the log-log slopes. The runs must share device "
    "and model shape."))


def benchmark(preset: str = "default", *, out: str = "results", run_id: str | None = None, **settings):
    """Run ``bench lra-scaling`` from Python: the preset with ``settings`` over it.

    Args:
        preset: a preset of ``suites/bench-lra-scaling.yaml`` (``default``, ``quick``).
        out: the results root (the run folder is ``out/bench-lra-scaling/<run id>``).
        run_id: the run folder name (default: a fresh timestamped one).
        **settings: :class:`ScalingBenchConfig` fields (``lengths=(256, 512)``, ``slope_min=256``, ...).

    Returns:
        The :class:`~dtn_bench.runner.RunResult` (run folder and rows).

    Raises:
        DTNBenchError: a bad setting (before anything is written).
    """
    cfg = ScalingBenchConfig.from_preset(preset, **settings)
    return run_suite(SCALING_SUITE, cfg, out=out, run_id=run_id)
