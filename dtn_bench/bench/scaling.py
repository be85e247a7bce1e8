"""LRA scaling benchmark: how the time and memory of one training step grow with the sequence length.

For every attention (``transformer``, ``bigbird``, ``reformer``) x normaliser x length it builds an
:class:`~dtn_bench.sequence.encoder.LRAEncoder` (vocab 18, 10 classes, CLS pooling, sinusoidal positions, dropout 0)
and times ONE training step: forward on random token ids ``[batch, length]`` (ids 1..17, the last ~10% of every
sequence padding id 0), cross-entropy on random labels, backward, ``AdamW`` step. Median (and min) over ``iters``
after ``warmup`` steps.

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

After all lengths of a (model, norm) pair: ``loglog_slope_time`` and ``loglog_slope_alloc``, the least-squares slope
of ``log(median time)`` (``log(alloc_mib)``) against ``log(length)`` over the measured lengths in
``[slope_min, slope_max]`` (default 1024..4096); when fewer than two measured lengths lie in that range, over all
measured lengths. The rows record the lengths used (``length_min``, ``length_max``, ``points``). A slope of 1 is
linear, 2 quadratic.

Measurement only: rows out, nothing printed (``dtn_bench.cli`` renders, from the rows, with :func:`render_report`
and :func:`loglog_plot`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from dtn_bench.errors import DTNBenchError
from dtn_bench.results.schema import make_row
from dtn_bench.runner import ConsoleTable, PresetConfig, Report, Suite, run_suite
from dtn_bench.suites import register

SUITE = "bench-lra-scaling"
VOCAB = 18
CLASSES = 10
PAD_FRACTION = 0.1
MODELS = ("transformer", "bigbird", "reformer")


@dataclass(frozen=True)
class ScalingBenchConfig(PresetConfig):
    """Settings of one LRA scaling run (preset ``default`` = the PyTorch de-facto LRA size at 512..4096 tokens)."""

    SUITE = SUITE

    lengths: tuple[int, ...] = (512, 1024, 2048, 4096)
    models: tuple[str, ...] = MODELS
    norms: tuple[str, ...] = ("layernorm", "dtn")
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
        if not self.lengths:
            raise DTNBenchError("bench lra-scaling: --lengths is empty")
        for v in self.lengths:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise DTNBenchError(f"bench lra-scaling: --lengths must be positive integers, got {v!r}")
        for name in ("batch", "dim", "heads", "depth", "mlp_dim", "iters", "bucket_size"):
            if getattr(self, name) <= 0:
                raise DTNBenchError(f"bench lra-scaling: --{name.replace('_', '-')} must be > 0, "
                                    f"got {getattr(self, name)}")
        if self.warmup < 0:
            raise DTNBenchError(f"bench lra-scaling: --warmup must be >= 0, got {self.warmup}")
        if self.dim % self.heads:
            raise DTNBenchError(f"bench lra-scaling: --dim {self.dim} is not divisible by --heads {self.heads}")
        if not self.models or not self.norms:
            raise DTNBenchError("bench lra-scaling: --models and --norms must each name at least one")
        from dtn_bench.norms import NORMS
        from dtn_bench.sequence.encoder import ATTENTIONS

        for m in self.models:
            ATTENTIONS.get(m)
        for n in self.norms:
            NORMS.get(n)
        from dtn_bench.distributed import check_device

        check_device("bench lra-scaling", self.device)


def reformer_buckets(length: int, bucket_size: int) -> int:
    """``max(2, 2 * round(T / (2 * bucket_size)))`` with ``T = length + 1`` (CLS): chunks of ~``bucket_size``."""
    return max(2, 2 * round((length + 1) / (2 * bucket_size)))


def loglog_slope(lengths: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(lengths)`` (``c * L^a`` gives ``a``); NaN below 2 points."""
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
    """The measured lengths a slope is fitted over: those in ``[lo, hi]``, or all when fewer than two are."""
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
    """The encoder measured for ``(model, norm, length)``."""
    from dtn_bench.sequence.encoder import LRAEncoder

    kw = {"n_buckets": reformer_buckets(length, cfg.bucket_size)} if model == "reformer" else None
    torch.manual_seed(cfg.seed)
    return LRAEncoder(VOCAB, CLASSES, dim=cfg.dim, heads=cfg.heads, depth=cfg.depth, mlp_dim=cfg.mlp_dim,
                      max_len=length, attention=model, norm=norm, pooling="cls", positions="sinusoidal",
                      dropout=0.0, attn_dropout=0.0, attention_kwargs=kw)


def bench_one(model: str, norm: str, length: int, cfg: ScalingBenchConfig, malloc_tuned: bool = False) -> list[dict]:
    """Rows of one ``(model, norm, length)``: median/min step time, ``alloc_mib`` (and ``peak_mem_mib`` on CUDA)."""
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
                    malloc_tuned=malloc_tuned)
    if model == "reformer":
        settings["n_buckets"] = reformer_buckets(length, cfg.bucket_size)
    rows = [make_row(SUITE, model, norm, "time_ms", statistics.median(ts), stat="median", **settings),
            make_row(SUITE, model, norm, "time_ms", min(ts), stat="min", **settings),
            make_row(SUITE, model, norm, "alloc_mib", tracker.mib, unit="MiB", stat="total", **settings)]
    if peak is not None:
        rows.append(make_row(SUITE, model, norm, "peak_mem_mib", peak, stat="max", **settings))
    return rows


def slope_rows(rows: list[dict], model: str, norm: str, cfg: ScalingBenchConfig) -> list[dict]:
    """``loglog_slope_time`` (median times) and ``loglog_slope_alloc`` of one (model, norm) from its rows."""
    out = []
    for metric, stat, name in (("time_ms", "median", "loglog_slope_time"), ("alloc_mib", "total", "loglog_slope_alloc"),
                               ("peak_mem_mib", "max", "loglog_slope_peak_mem")):
        pts = {r["length"]: r["value"] for r in rows
               if r["model"] == model and r["norm"] == norm and r["metric"] == metric and r["stat"] == stat}
        if not pts:
            continue
        use = slope_lengths(list(pts), cfg.slope_min, cfg.slope_max)
        value = loglog_slope(use, [pts[v] for v in use])
        out.append(make_row(SUITE, model, norm, name, value, unit="x", stat="slope", length_min=use[0],
                            length_max=use[-1], points=len(use), batch=cfg.batch, dim=cfg.dim, heads=cfg.heads,
                            depth=cfg.depth, preset=cfg.preset))
    return out


def run(cfg: ScalingBenchConfig) -> Iterator[tuple[str, list[dict]]]:
    """Run the benchmark; yields ``(label, rows)`` as each measurement finishes (for append-as-you-go)."""
    from dtn_bench.timing import keep_freed_memory as tune_malloc

    cfg.validate()
    # glibc returns large freed blocks (the long sequences' activations) to the kernel and faults them in afresh on
    # every step, which inflates CPU times at long lengths only (dtn_bench.timing.keep_freed_memory); recorded in rows
    tuned = tune_malloc() if cfg.tune_malloc and torch.device(cfg.device).type == "cpu" else False
    for model in cfg.models:
        for norm in cfg.norms:
            pair_rows: list[dict] = []
            for length in cfg.lengths:
                rows = bench_one(model, norm, length, cfg, tuned)
                pair_rows += rows
                yield f"{model} {norm} {length}", rows
            yield f"{model} {norm} slope", slope_rows(pair_rows, model, norm, cfg)


def steps(cfg: ScalingBenchConfig) -> int:
    """How many ``(label, rows)`` items :func:`run` yields (for a progress bar)."""
    return len(cfg.models) * len(cfg.norms) * (len(cfg.lengths) + 1)


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
    """Rows = model / norm, columns = lengths, median step time (ms)."""
    return _per_length(df[(df["metric"] == "time_ms") & (df["stat"] == "median")])


def alloc_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = model / norm, columns = lengths, ``alloc_mib`` per step."""
    return _per_length(df[df["metric"] == "alloc_mib"])


def slope_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = model / norm; the log-log slopes of time and memory, and the lengths they were fitted over."""
    t = df[df["stat"] == "slope"] if "stat" in df.columns else df.iloc[0:0]
    if t.empty:
        return pd.DataFrame()
    t = _label(t)
    names = {"loglog_slope_time": "time slope", "loglog_slope_alloc": "alloc slope",
             "loglog_slope_peak_mem": "peak mem slope"}
    out: dict[str, dict] = {}
    for _, r in t.iterrows():
        row = out.setdefault(r["model / norm"], {})
        row[names.get(r["metric"], r["metric"])] = r["value"]
        row["lengths"] = f"{int(r['length_min'])}-{int(r['length_max'])}"
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "model / norm"
    cols = [c for c in ("time slope", "alloc slope", "peak mem slope", "lengths") if c in table.columns]
    return table[cols]


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = model / norm; the median step time (ms) at each length, then the log-log slopes and their lengths, each
    column labelled with its quantity (the table ``dtn-bench table lra-scaling --format csv`` writes)."""
    times = time_table(df)
    if times.empty:
        return pd.DataFrame()
    out = times.rename(columns={c: f"step ms (median), length {c}" for c in times.columns})
    slopes = slope_table(df)
    if not slopes.empty:
        slopes = slopes.rename(columns={"time slope": "log-log slope of step time",
                                        "alloc slope": "log-log slope of alloc_mib",
                                        "peak mem slope": "log-log slope of peak_mem_mib",
                                        "lengths": "slopes fitted over lengths"})
        out = out.join(slopes.reindex(out.index))
    return out


def render_report(df: pd.DataFrame, fmt: str = "md") -> str:
    """The time, memory and slope tables in one document (Markdown or LaTeX)."""
    from dtn_bench.results.tables import render_document

    return render_document([("Training-step time (ms, median) per sequence length", time_table(df)),
                            ("Tensor allocations per training step (MiB, alloc_mib) per length", alloc_table(df)),
                            ("Log-log slopes (1: linear, 2: quadratic)", slope_table(df))], fmt)


def loglog_plot(df: pd.DataFrame):
    """Median step time against length on log-log axes: one line per model x norm, LayerNorm solid, DTN dashed."""
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


SCALING_SETTINGS = ("device", "batch", "dim", "heads", "depth", "mlp_dim", "malloc_tuned")
"""Row columns that must agree before runs combine (and ``n_buckets`` per model and length, slope ranges per pair)."""


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
           settings=((SCALING_SETTINGS, ()), (("n_buckets",), ("model", "length")),
                     (("length_min", "length_max"), ("model", "norm", "metric"))), console=_console),
    command="lra-scaling", steps=lambda cfg: steps(cfg),
    table_help="LRA length scaling: time and memory per length and the log-log slopes. The runs must share device "
    "and model shape."))


def benchmark(preset: str = "default", *, out: str = "results", run_id: str | None = None, **settings):
    """Run ``bench lra-scaling`` from Python: the preset with ``settings`` over it; returns the ``RunResult``."""
    cfg = ScalingBenchConfig.from_preset(preset, **settings)
    return run_suite(SCALING_SUITE, cfg, out=out, run_id=run_id)
