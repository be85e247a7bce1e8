"""Sequence-norm benchmark: what a padding-masked 1-D normaliser costs in LRA ListOps training, LN against DTN.

Shapes are ``lra-listops`` presets (``quick``: dim 64, 2 heads, 2 layers, 201 tokens with CLS; ``lra``: dim 512,
8 heads, 4 layers, 2001 tokens), each with a batch of its own (a small one for ``lra`` on the CPU). A shape's batch is
generated ListOps (:func:`dtn_bench.data.listops.generate`, the preset's ``gen_min_length`` / ``gen_max_length``,
seed ``seed``) padded to the preset's ``max_len``, so the padding mask is the one training sees. Two cases per shape:

* ``layer``: forward + backward of one norm layer (train mode) on ``x [batch, max_len + 1, dim]`` (standard normal)
  with the batch's mask (CLS first, True), the gradient of a fixed random upstream gradient; the layer is built as
  the encoder builds its norm slots (:func:`dtn_bench.sequence.encoder.norm_slot`: ``eps = ln_eps``
  for LayerNorm).
* ``step`` (per attention): one training step of the ListOps classifier exactly as ``lra listops`` builds and
  trains it (:func:`dtn_bench.lra.train.build_model` from the preset, AdamW with the preset's betas, eps and weight
  decay at the preset's peak learning rate): ``zero_grad``, forward, cross-entropy, backward, ``step``.

Timing: ``warmup`` untimed calls of every unit, then ``repeats`` repetitions; in each repetition every normaliser of a
(shape, case, attention) runs ``iters`` calls back to back, the order reversed every other repetition (ABBA), so
both normalisers see the same drift of a shared, noisy machine. A row holds one repetition: ``time_ms`` (mean ms per
call) and ``tokens_s`` (real, non-padding tokens per second, as ``lra listops`` counts them). The DTN / LN
throughput ratio is not a row: the report pairs the repetitions, ``t_LN[r] / t_DTN[r]``, and shows their median,
min and max.

Measurement only: rows out, nothing printed.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from dtn_bench.checks import check_positive
from dtn_bench.errors import DTNBenchError
from dtn_bench.results.schema import make_row
from dtn_bench.results.tables import placement_label
from dtn_bench.runner import ConsoleTable, PresetConfig, Report, RunContext, Suite, run_suite
from dtn_bench.suites import register

SUITE = "bench-seq-norms"
MODELS = ("transformer", "bigbird", "reformer")
CASES = ("layer", "step")
BASELINE = "layernorm"
LAYER = "layer"  # the model column of the layer case


@dataclass(frozen=True)
class SeqNormBenchConfig(PresetConfig):
    """Settings of one sequence-norm benchmark run (preset ``default``: the ``quick`` and ``lra`` shapes).

    ``shapes`` are ``lra-listops`` presets; ``batches`` gives each its batch (empty: the presets' own).
    """

    SUITE = SUITE

    shapes: tuple[str, ...] = ("quick", "lra")
    batches: tuple[int, ...] = (32, 2)
    models: tuple[str, ...] = MODELS
    norms: tuple[str, ...] = (BASELINE, "dtn")
    cases: tuple[str, ...] = CASES
    placement: str = "pre"  # of the step case's models (a single layer has none)
    warmup: int = 2
    repeats: int = 7
    iters: int = 3
    threads: int = 0  # 0: torch's default
    tune_malloc: bool = True
    flush_denormal: bool = True  # as lra listops trains (ListOpsConfig.flush_denormal)
    device: str = "cpu"
    seed: int = 0
    preset: str = "default"

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for any bad field (names checked against the registries and presets)."""
        from dtn_bench.distributed import check_device

        self._check_lists()
        self._check_numbers()
        self._check_names()
        from dtn_bench.placement import check_placement

        check_placement(self.placement, "bench seq-norms: --placement")
        check_device("bench seq-norms", self.device)

    def _check_lists(self) -> None:
        """Check that the lists are non-empty where needed, repeat no value and name known cases."""
        for name in ("shapes", "norms", "cases"):
            if not getattr(self, name):
                raise DTNBenchError(f"bench seq-norms: --{name} is empty")
        if "step" in self.cases and not self.models:
            raise DTNBenchError("bench seq-norms: --models is empty (the step case needs an attention)")
        for name in ("shapes", "norms", "cases", "models"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise DTNBenchError(f"bench seq-norms: --{name} repeats a value: {', '.join(map(str, values))}")
        for c in self.cases:
            if c not in CASES:
                raise DTNBenchError(f"bench seq-norms: unknown case {c!r}: choose {' or '.join(CASES)}")

    def _check_numbers(self) -> None:
        """Check the batches (one positive integer per shape, or none) and the repeat, iteration and thread counts."""
        if self.batches and len(self.batches) != len(self.shapes):
            raise DTNBenchError(f"bench seq-norms: {len(self.batches)} batches for {len(self.shapes)} shapes "
                                "(give one per shape, or none for the presets' own)")
        if any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in self.batches):
            raise DTNBenchError(f"bench seq-norms: --batches must be positive integers, got {list(self.batches)}")
        check_positive("bench seq-norms", repeats=self.repeats, iters=self.iters)
        if self.warmup < 0 or self.threads < 0:
            raise DTNBenchError("bench seq-norms: --warmup and --threads must be >= 0")

    def _check_names(self) -> None:
        """Check the norms, attentions and shapes against their registries and the ``lra-listops`` presets."""
        from dtn_bench.norms import NORMS
        from dtn_bench.sequence.encoder import ATTENTIONS
        from dtn_bench.suites import load_preset

        for n in self.norms:
            NORMS.get(n)
        for m in self.models:
            ATTENTIONS.get(m)
        for s in self.shapes:
            load_preset("lra-listops", s)

    def shape_batches(self) -> list[tuple[str, int | None]]:
        """``(shape, batch)`` pairs (``None``: the preset's batch)."""
        return list(zip(self.shapes, self.batches or (None,) * len(self.shapes), strict=True))


# ------------------------------------------------------------------------------------------------------------ measure
def listops_config(shape: str, batch: int | None, device: str, placement: str = "pre"):
    """The :class:`~dtn_bench.lra.config.ListOpsConfig` of ``lra-listops`` preset ``shape``, batch and placement set."""
    from dtn_bench.lra.config import ListOpsConfig
    from dtn_bench.suites import load_preset

    values = {k: tuple(v) if isinstance(v, list) else v for k, v in load_preset("lra-listops", shape).items()}
    values.update(preset=shape, device=device, placement=placement)
    if batch is not None:
        values["batch"] = batch
    return ListOpsConfig(**values)


def listops_batch(lcfg, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [batch, max_len], labels [batch])``: the first ``batch`` generated samples of the preset's lengths."""
    from dtn_bench.data.listops import generate, load_split

    with tempfile.TemporaryDirectory() as folder:
        generate(folder, train=lcfg.batch, val=0, test=0, seed=seed, min_length=lcfg.gen_min_length,
                 max_length=min(lcfg.gen_max_length, lcfg.max_len + 1), max_depth=lcfg.gen_max_depth,
                 max_args=lcfg.gen_max_args, workers=1)
        split = load_split(folder, "train", lcfg.max_len)
    n = lcfg.batch
    return torch.from_numpy(split.ids[:n]).long(), torch.from_numpy(split.labels[:n]).long()


def layer_unit(norm: str, lcfg, ids: torch.Tensor, seed: int, device: torch.device) -> Callable[[], None]:
    """One forward + backward of the norm layer on the batch's token shape and mask (with CLS)."""
    from dtn_bench.sequence.encoder import norm_slot

    torch.manual_seed(seed)
    layer = norm_slot(norm, lcfg.dim, lcfg.heads, lcfg.ln_eps, "attn").to(device).train()
    B, L = ids.shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L + 1, lcfg.dim, generator=gen).to(device).requires_grad_(True)
    g = torch.randn(B, L + 1, lcfg.dim, generator=gen).to(device)
    mask = torch.cat([torch.ones(B, 1, dtype=torch.bool), ids != 0], dim=1).to(device)

    def call() -> None:
        x.grad = None
        layer(x, mask).backward(g)

    return call


def step_unit(model: str, norm: str, lcfg, ids: torch.Tensor, labels: torch.Tensor, seed: int,
              device: torch.device) -> Callable[[], None]:
    """One ListOps training step (forward, cross-entropy, backward, AdamW) as ``lra listops`` runs it."""
    from dtn_bench.lra.train import autocast_dtype, build_model

    torch.manual_seed(seed)
    net = build_model(lcfg, model, norm).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lcfg.lr_at(lcfg.warmup), betas=(lcfg.beta1, lcfg.beta2),
                            eps=lcfg.adam_eps, weight_decay=lcfg.weight_decay)
    amp = autocast_dtype(lcfg, device)
    x, y = ids.to(device), labels.to(device)

    def call() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = net(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()

    return call


def interleaved_ms(units: Sequence[Callable[[], None]], warmup: int, repeats: int, iters: int,
                   device: torch.device) -> list[list[float]]:
    """Mean ms per call of each unit, as ``[unit][repetition]``, timed in interleaved repetitions.

    First ``warmup`` calls of each unit, then ``repeats`` repetitions in which each unit runs ``iters`` calls back to
    back, the order of the units reversed every other repetition.
    """
    from dtn_bench.timing import time_ms

    for fn in units:
        time_ms(fn, warmup, 0, device)
    out: list[list[float]] = [[] for _ in units]
    for rep in range(repeats):
        order = range(len(units)) if rep % 2 == 0 else reversed(range(len(units)))
        for i in order:
            out[i].append(sum(time_ms(units[i], 0, iters, device)) / iters)
    return out


def bench_unit(shape: str, case: str, model: str, cfg: SeqNormBenchConfig, lcfg, ids: torch.Tensor,
               labels: torch.Tensor, malloc_tuned: bool) -> list[dict]:
    """Rows of one (shape, case, model): per normaliser and repetition, ``time_ms`` and ``tokens_s``."""
    device = torch.device(cfg.device)
    if case == "layer":
        units = [layer_unit(n, lcfg, ids, cfg.seed, device) for n in cfg.norms]
    else:
        units = [step_unit(model, n, lcfg, ids, labels, cfg.seed, device) for n in cfg.norms]
    times = interleaved_ms(units, cfg.warmup, cfg.repeats, cfg.iters, device)
    tokens = int((ids != 0).sum())
    settings = dict(shape=shape, case=case, batch=int(ids.shape[0]), length=int(ids.shape[1]) + 1, tokens=tokens,
                    dim=lcfg.dim, heads=lcfg.heads, depth=lcfg.depth, mlp_dim=lcfg.mlp_dim, iters=cfg.iters,
                    warmup=cfg.warmup, repeats=cfg.repeats, dtype="float32", threads=torch.get_num_threads(),
                    malloc_tuned=malloc_tuned, preset=cfg.preset)
    if case == "step":
        settings["placement"] = lcfg.placement
    rows = []
    for norm, ts in zip(cfg.norms, times, strict=True):
        for rep, ms in enumerate(ts):
            rows.append(make_row(SUITE, model, norm, "time_ms", ms, stat="rep", repetition=rep, **settings))
            rows.append(make_row(SUITE, model, norm, "tokens_s", tokens / (ms / 1e3), stat="rep", repetition=rep,
                                 **settings))
    return rows


def units(cfg: SeqNormBenchConfig) -> list[tuple[str, str, str]]:
    """The ``(shape, case, model)`` units of a run, in order (``model`` is ``layer`` for the layer case)."""
    out = []
    for shape in cfg.shapes:
        for case in cfg.cases:
            out += [(shape, case, LAYER)] if case == "layer" else [(shape, case, m) for m in cfg.models]
    return out


def run(cfg: SeqNormBenchConfig, ctx: RunContext | None = None) -> Iterator[tuple[str, list[dict]]]:
    """Run the benchmark; yields ``(label, rows)`` as each (shape, case, model) finishes; skips finished units."""
    from dtn_bench.timing import denormals_flushed

    ctx = ctx or RunContext()
    cfg.validate()
    # set before the first torch operation of a CLI job: the thread pool inherits it
    with denormals_flushed(cfg.flush_denormal and torch.device(cfg.device).type == "cpu"):
        yield from _run(cfg, ctx)


def _run(cfg: SeqNormBenchConfig, ctx: RunContext) -> Iterator[tuple[str, list[dict]]]:
    from dtn_bench.timing import keep_freed_memory

    tuned = keep_freed_memory() if cfg.tune_malloc and torch.device(cfg.device).type == "cpu" else False
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    batches = dict(cfg.shape_batches())
    data: dict[str, tuple] = {}
    for shape, case, model in units(cfg):
        if ctx.is_done(shape, case, model):
            continue
        if shape not in data:
            lcfg = listops_config(shape, batches[shape], cfg.device, cfg.placement)
            data[shape] = (lcfg, *listops_batch(lcfg, cfg.seed))
        lcfg, ids, labels = data[shape]
        yield f"{shape} {case} {model}", bench_unit(shape, case, model, cfg, lcfg, ids, labels, tuned)


def steps(cfg: SeqNormBenchConfig) -> int:
    """How many ``(label, rows)`` items :func:`run` yields at most (for a progress bar)."""
    return len(units(cfg))


# ------------------------------------------------------------------------------------------------------------- render
def ratio_table(df: pd.DataFrame) -> pd.DataFrame:
    """The normalisers' throughput against LayerNorm, from the rows.

    Args:
        df: rows of one or more runs.

    Returns:
        One row per (shape, case, model) and normaliser other than LayerNorm: the median ms per call of LayerNorm and
        of the normaliser, and the spread (:func:`dtn_bench.stats.ratio_spread`) of the tokens/s ratio to LayerNorm,
        ``t_LN[r] / t_norm[r]``, over the repetitions ``r`` (paired within each run; several runs pooled). Empty
        without LayerNorm rows.
    """
    from dtn_bench.stats import ratio_spread

    t = df[(df["metric"] == "time_ms") & (df["stat"] == "rep")]
    if t.empty or BASELINE not in set(t["norm"]):
        return pd.DataFrame()
    runs = "run_id" in t.columns
    out = []
    for (shape, case, model), g in t.groupby(["shape", "case", "model"], sort=False):
        base = g[g["norm"] == BASELINE]
        for norm in dict.fromkeys(g["norm"]):
            if norm == BASELINE:
                continue
            other = g[g["norm"] == norm]
            num, den = [], []
            for rid in dict.fromkeys(other["run_id"]) if runs else [None]:
                b = base if rid is None else base[base["run_id"] == rid]
                o = other if rid is None else other[other["run_id"] == rid]
                b, o = b.sort_values("repetition"), o.sort_values("repetition")
                if len(b) == len(o) and len(b) and list(b["repetition"]) == list(o["repetition"]):
                    num += list(b["value"])
                    den += list(o["value"])
            if not num:
                continue
            sp = ratio_spread(num, den)
            placed = placement_label(other["placement"].iloc[0]) if "placement" in other.columns else ""
            label = f"{shape} / {model}{placed}" if case == "step" else f"{shape} / one layer"
            out.append({"shape / case": label, "norm": norm, "LN ms": statistics.median(base["value"]),
                        "ms": statistics.median(other["value"]), "tok/s ratio (median)": sp.median, "min": sp.min,
                        "max": sp.max, "reps": sp.n})
    if not out:
        return pd.DataFrame()
    return pd.DataFrame(out).set_index("shape / case")


def tokens_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = shape / case, columns = normalisers: the median tokens/s over repetitions (and runs)."""
    t = df[(df["metric"] == "tokens_s") & (df["stat"] == "rep")]
    if t.empty:
        return pd.DataFrame()
    placed = t["placement"] if "placement" in t.columns else pd.Series(None, index=t.index, dtype=object)
    t = t.assign(unit_label=[f"{s} / {m}{placement_label(p)}" if c == "step" else f"{s} / one layer"
                             for s, c, m, p in zip(t["shape"], t["case"], t["model"], placed, strict=True)])
    table = t.groupby(["unit_label", "norm"], sort=False)["value"].median().unstack("norm")
    table = table.reindex(index=list(dict.fromkeys(t["unit_label"])), columns=list(dict.fromkeys(t["norm"])))
    table.index.name = "shape / case"
    table.columns.name = None
    return table


def render_report(df: pd.DataFrame, fmt: str = "md") -> str:
    """The ratio table (with its spread) and the tokens/s table in one document (Markdown or LaTeX)."""
    from dtn_bench.results.tables import render_document

    return render_document([("Throughput ratio to LayerNorm (tokens/s, paired repetitions: median, min, max)",
                             ratio_table(df)),
                            ("Tokens/s (median over repetitions; a layer's tokens/s is fwd+bwd)", tokens_table(df))],
                           fmt)


def ratio_plot(df: pd.DataFrame):
    """Bars: median throughput ratio to LayerNorm per shape / case and normaliser, min-max whiskers, 1 marked."""
    from dtn_bench.plots import _plt

    plt = _plt()
    t = ratio_table(df)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(t.index) + 2), 4.0))
    norms = list(dict.fromkeys(t["norm"])) if not t.empty else []
    groups = list(dict.fromkeys(t.index))
    width = 0.8 / max(1, len(norms))
    for j, norm in enumerate(norms):
        s = t[t["norm"] == norm]
        xs = [groups.index(g) + (j - (len(norms) - 1) / 2) * width for g in s.index]
        med = s["tok/s ratio (median)"]
        err = [med - s["min"], s["max"] - med]
        ax.bar(xs, med, width, yerr=err, capsize=3, label=f"{norm} / {BASELINE}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right")
    ax.set_ylabel("tokens/s ratio to LayerNorm")
    ax.set_title("1-D normaliser cost in ListOps training (fwd+bwd)")
    if norms:
        ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


SEQ_NORMS_SETTINGS = ("device", "batch", "length", "tokens", "dim", "heads", "depth", "mlp_dim", "dtype", "threads",
                      "malloc_tuned", "placement")
"""Row columns that must agree within each shape before runs combine."""


def _console(df: pd.DataFrame) -> list[ConsoleTable]:
    t = ratio_table(df)
    if t.empty:
        return []
    return [ConsoleTable.from_frame(t, "Throughput ratio to LayerNorm (median, min, max over repetitions)",
                                    "shape / case")]


SEQ_NORMS_SUITE = register(Suite(
    SUITE, "1-D (padding-masked) normaliser cost in ListOps training: one layer fwd+bwd and one training step per "
    "attention, LN vs DTN, at the quick and lra shapes", {"time_ms": False, "tokens_s": True},
    SeqNormBenchConfig, lambda cfg, ctx: run(cfg, ctx),
    Report(render_report, ratio_table, "throughput ratios to LayerNorm", {"seq_norms.png": ratio_plot},
           settings=((SEQ_NORMS_SETTINGS, ("shape",)),), console=_console),
    command="seq-norms", resume_key=("shape", "case", "model"), steps=steps,
    table_help="Sequence normalisers (bench seq-norms): tokens/s of one norm layer and of one ListOps training step "
    "per attention, and each normaliser's throughput ratio to LayerNorm with its spread over repetitions. The runs "
    "must share device and shapes."))


def benchmark(preset: str = "default", *, out: str | Path = "results", run_id: str | None = None,
              resume: bool = False, **settings):
    """Run ``bench seq-norms`` from Python: the preset with ``settings`` over it; returns the :class:`RunResult`."""
    cfg = SeqNormBenchConfig.from_preset(preset, **settings)
    return run_suite(SEQ_NORMS_SUITE, cfg, out=out, run_id=run_id, resume=resume)
