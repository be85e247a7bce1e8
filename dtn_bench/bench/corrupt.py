"""The ``bench-corrupt`` suite (``dtn-bench bench corrupt``): how fast the ImageNet-C generator corrupts images.

Measurement: :func:`dtn_bench.data.corruptions.benchmark` times each corruption on synthetic images (ms per image)
and one pass over the set, and, when ``imagecorruptions`` imports, the same corruptions by it on the same images in
the same run; its lines about the peer (not installed, failed on a corruption) are ``note`` events. The rows hold
those timings only: the peer's speed ratio is derived at render time (:func:`peer_speedups`), with its spread over
repetitions where the rows record repetitions (``stat = "rep"``, ``repetition`` = 0, 1, ...): the ratio of the summed
times of repetition ``k``, min / median / max over ``k``. The generator's timing
(:func:`dtn_bench.data.corruptions.benchmark`) records the median and the minimum only, so the spread reads
:data:`dtn_bench.bench.report.NO_REPETITIONS`.

Report: the per-image table and the one-pass figures (``table.md`` / ``table.tex``), a bar plot (``corrupt.png``) and
the console summary (:func:`console_tables`, :func:`pass_lines`). There is no ``dtn-bench table`` command for it.

Python: :func:`benchmark` runs it in one call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from dtn_bench.checks import check_positive
from dtn_bench.errors import DTNBenchError
from dtn_bench.events import Handler, Note
from dtn_bench.results.schema import make_row
from dtn_bench.runner import ConsoleTable, PresetConfig, Report, RunContext, RunResult, Suite, run_suite
from dtn_bench.suites import register

SUITE = "bench-corrupt"
WHERE = "bench corrupt"
OURS = "dtn-bench"
"""The ``impl`` of our rows (the peer's rows name the peer)."""


@dataclass(frozen=True)
class CorruptBenchConfig(PresetConfig):
    """Settings of one corruption speed benchmark (preset ``default``: the 15 mCE corruptions at severity 3)."""

    SUITE = SUITE

    corruptions: tuple[str, ...] = ()
    """Names, in the order timed (empty: the 15 mCE corruptions, and the 4 extras with ``extra``)."""
    extra: bool = False
    severity: int = 3
    batch: int = 16
    """Images per ``corrupt_batch`` call."""
    warmup: int = 1
    iters: int = 3
    threads: int = 1
    """torch intra-op threads (0: torch's default). 1 by default: on a loaded 2-core machine 2 threads made a pass
    1.7-4x slower than 1 (README)."""
    device: str = "cpu"
    seed: int = 0
    peer: bool = True
    """Also time imagecorruptions on the same images when it imports."""
    peer_batch: int = 4
    """Images the peer corrupts per timed run (the first of ours; the peer is one image per call, and slow)."""
    preset: str = "default"

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for a bad field."""
        from dtn_bench.data.corruptions import resolve_severities
        from dtn_bench.distributed import check_device

        self.names()
        resolve_severities([self.severity])
        check_positive(WHERE, batch=self.batch, iters=self.iters, peer_batch=self.peer_batch)
        if self.warmup < 0 or self.threads < 0:
            raise DTNBenchError(f"{WHERE}: --warmup and --threads must be >= 0")
        check_device(WHERE, self.device)

    def names(self) -> tuple[str, ...]:
        """The corruptions timed, in order (one-line error for an unknown name)."""
        from dtn_bench.data.corruptions import resolve_corruptions

        return resolve_corruptions(self.corruptions or None, self.extra)


def run(cfg: CorruptBenchConfig, ctx: RunContext) -> Iterator[tuple[str, list[dict]]]:
    """Time the corruptions (and the peer) with torch set to ``cfg.threads`` threads, restored afterwards.

    Args:
        cfg: the settings.
        ctx: the runner's context; the lines about the peer go out as ``ctx.emit(Note(...))``.

    Yields:
        ``(corruption, rows)`` per corruption, then ``("pass", rows)`` (see
        :func:`dtn_bench.data.corruptions.benchmark`).
    """
    import torch

    from dtn_bench.data.corruptions import benchmark as time_corruptions

    notes: list[str] = []
    items = time_corruptions(cfg.names(), severity=cfg.severity, batch=cfg.batch, warmup=cfg.warmup, iters=cfg.iters,
                             device=cfg.device, seed=cfg.seed, suite=SUITE, peer=cfg.peer, peer_batch=cfg.peer_batch,
                             notes=notes)
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # before the first row: the rows record the thread count
    try:
        for label, rows in items:
            for note in notes:
                ctx.emit(Note(note))
            notes.clear()
            yield label, rows
    finally:
        torch.set_num_threads(before)  # the setting is process-wide; leave it as it was (in-process callers)


# ---------------------------------------------------------------------------------------------------------- render
def _impl(df: pd.DataFrame) -> pd.Series:
    return df["impl"].fillna(OURS) if "impl" in df.columns else pd.Series(OURS, index=df.index)


def _first(rows: pd.DataFrame, column: str, default):
    values = rows[column].dropna() if column in rows.columns else ()
    return values.iloc[0] if len(values) else default


def per_image_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = corruptions (then ``pass``); columns = each implementation's time statistics, in ms per image.

    Args:
        df: bench-corrupt rows.

    Returns:
        The wide table: ``time median (ms)``, ``time min (ms)``, ``cpu_time median (ms)`` for ours, the same prefixed
        with the peer's name for the peer.
    """
    from dtn_bench.results.tables import pivot

    t = df[df["metric"].isin(["time_ms", "cpu_time_ms"])].copy()
    prefix = _impl(t).map(lambda v: "" if v == OURS else f"{v} ")
    t["column"] = prefix + t["metric"].str.replace("_ms", "") + " " + t["stat"] + " (ms)"
    return pivot(t, index="corruption", columns="column")


def _peer_speedup(rows: pd.DataFrame, peer: str) -> dict | None:
    """The speed-up row of one run over one peer (``None`` when the peer timed no corruption)."""
    per = rows[(rows["metric"] == "time_ms") & (rows["stat"] == "median") & (rows["corruption"] != "pass")]
    impl = _impl(per)
    ours = dict(zip(per.loc[impl == OURS, "corruption"], per.loc[impl == OURS, "value"], strict=True))
    theirs_rows = per[impl == peer]
    theirs = dict(zip(theirs_rows["corruption"], theirs_rows["value"], strict=True))
    both = [n for n in ours if n in theirs]
    if not both:
        return None
    failed = [n for n in ours if n not in theirs]
    scope = (f"all {len(both)} corruptions" if not failed else
             f"the {len(both)} of {len(ours)} corruptions it ran ({', '.join(failed)} failed)")
    version = _first(theirs_rows, "impl_version", "unknown version")
    images = int(_first(theirs_rows, "batch_size", 0))
    mine = per[impl == OURS]
    threads = int(_first(mine, "threads", 0))
    versus = (f"{peer} {version} timed in this run on {images} of the same images, {scope}, {threads} thread(s)")
    ratio = sum(theirs[n] for n in both) / sum(ours[n] for n in both)
    settings = {c: _first(mine, c, None) for c in ("severity", "batch_size", "device_kind")}
    return make_row(SUITE, "-", "-", "speedup", ratio, corruption="pass", stat="median", impl=OURS, versus=versus,
                    **settings, threads=threads, **{SPREAD_COLUMN: _speedup_spread(rows, peer, both)})


SPREAD_COLUMN = "over repetitions"
"""The column of a speed-up's spread over repetitions (text: ``"4.18 (4.02-4.30)"`` or ``no repetitions recorded``)."""


def _speedup_spread(rows: pd.DataFrame, peer: str, corruptions: list[str]) -> str:
    """The spread of the peer's summed time over ours per repetition, over the corruptions both timed."""
    from dtn_bench.bench.report import paired_ratio_spread, repetition_rows, spread_text

    reps = repetition_rows(rows)
    reps = reps[(reps["metric"] == "time_ms") & reps["corruption"].isin(corruptions)] if len(reps) else reps
    if reps.empty:
        return spread_text(None)
    impl = _impl(reps)
    sums = []
    for side in (peer, OURS):
        mine = reps[impl == side]
        counts = mine.groupby("repetition")["corruption"].nunique()
        total = mine.groupby("repetition", as_index=False)["value"].sum()
        sums.append(total[total["repetition"].map(counts) == len(corruptions)])  # repetitions that timed them all
    return spread_text(paired_ratio_spread(*sums))


def peer_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """How many times faster ours is than each peer timed in the same run, from the measured rows.

    Per run and peer: the peer's summed median time per image over ours, over the corruptions both timed (a
    corruption the peer failed on has no peer rows); ``versus`` says what was compared (the peer's version, its
    images, the corruptions, the threads).

    Args:
        df: bench-corrupt rows.

    Returns:
        Rows like the measured ones (``corruption = "pass"``, ``metric = "speedup"``, ``impl = "dtn-bench"``,
        ``versus`` and ``over repetitions``, the spread of the per-repetition speed-ups); none without a peer.
    """
    from dtn_bench.bench.report import per_run

    out = []
    for rows in per_run(df):
        for peer in dict.fromkeys(_impl(rows)):
            if peer != OURS:
                row = _peer_speedup(rows, peer)
                out += [row] if row is not None else []
    return pd.DataFrame(out)


def _pass_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The one-pass figures: the measured ``pass`` rows, then the speed-ups over the peers."""
    measured = df[(df["corruption"] == "pass") & (df["metric"] != "speedup")]  # older runs stored speedup rows
    speedups = peer_speedups(df)
    return measured.copy() if speedups.empty else pd.concat([measured, speedups], ignore_index=True)


def pass_table(df: pd.DataFrame) -> pd.DataFrame:
    """Index = ``<impl> <metric> <stat>`` of each one-pass figure; columns ``value``, ``unit`` (and ``versus``).

    Args:
        df: bench-corrupt rows.

    Returns:
        The table (``versus`` and ``over repetitions`` only when a peer was timed).
    """
    s = _pass_rows(df)
    s["figure"] = _impl(s) + " " + s["metric"] + " " + s["stat"]
    cols = ["value", "unit"] + [c for c in ("versus", SPREAD_COLUMN) if c in s]
    return s.set_index("figure")[cols].fillna("")


def render_report(df: pd.DataFrame, fmt: str = "md") -> str:
    """The per-image table and the one-pass figures in one document (Markdown or LaTeX).

    Args:
        df: bench-corrupt rows.
        fmt: ``"md"`` or ``"tex"``.

    Returns:
        The document.
    """
    from dtn_bench.results.tables import render_document

    return render_document([("Time per 224 x 224 image", per_image_table(df)),
                            ("One pass over the set", pass_table(df))], fmt)


def bar_plot(df: pd.DataFrame):
    """Median time per 224 image of each corruption, ours beside the peer's.

    Args:
        df: bench-corrupt rows.

    Returns:
        The matplotlib figure.
    """
    from dtn_bench.plots import grouped_bars

    t = per_image_table(df[df["corruption"] != "pass"])
    cols = [c for c in t.columns if "time median" in c and "cpu_time" not in c]
    return grouped_bars(t[cols], ylabel="ms per 224 image", title="Corruption cost")


def console_tables(df: pd.DataFrame) -> list[ConsoleTable]:
    """The console summary: the median times per image (the minima are in ``table.md``), with the thread count.

    Args:
        df: bench-corrupt rows.

    Returns:
        One :class:`~dtn_bench.runner.ConsoleTable`.
    """
    threads = ", ".join(str(int(v)) for v in sorted(df["threads"].dropna().unique()))
    wide = per_image_table(df)
    return [ConsoleTable.from_frame(wide[[c for c in wide.columns if "median" in c]],
                                    f"Corruption speed (ms per 224 x 224 image, {threads} thread(s))", "corruption")]


def pass_lines(df: pd.DataFrame) -> list[str]:
    """The console lines after the summary: each one-pass figure but the times (throughput, speed-ups).

    Args:
        df: bench-corrupt rows.

    Returns:
        ``one pass, <impl>: <metric> = <value> <unit> (<versus>)`` lines.
    """
    s = _pass_rows(df)
    lines = []
    for _, r in s[s["metric"] != "time_ms"].iterrows():
        versus = f" ({r['versus']})" if isinstance(r.get("versus"), str) else ""
        spread = r.get(SPREAD_COLUMN)
        over = f"; over repetitions: {spread}" if isinstance(spread, str) else ""
        lines.append(f"one pass, {r.get('impl', OURS)}: {r['metric']} = {r['value']:.2f} {r['unit']}{versus}{over}")
    return lines


CORRUPT_SUITE = register(Suite(
    SUITE, "ImageNet-C corruption generator speed: ms per 224 image for each corruption and one "
    "15-corruption pass, images/s, and imagecorruptions timed beside it when installed",
    {"time_ms": False, "cpu_time_ms": False, "throughput_img_s": True, "speedup": True}, CorruptBenchConfig, run,
    Report(render_report, per_image_table, "corruption timings", {"corrupt.png": bar_plot},
           console=lambda df: [*console_tables(df), *pass_lines(df)]),
    steps=lambda cfg: len(cfg.names()) + 1))


def benchmark(preset: str = "default", *, out: str = "results", run_id: str | None = None,
              on_event: Handler | None = None, **settings) -> RunResult:
    """Run ``bench corrupt`` from Python: the preset with ``settings`` over it.

    Args:
        preset: a preset of ``suites/bench-corrupt.yaml`` (``default``, ``quick``).
        out: the results root (the run folder is ``out/bench-corrupt/<run id>``).
        run_id: the run folder name (default: a fresh timestamped one).
        on_event: ``on_event(event)``, as :func:`dtn_bench.runner.run_suite` calls it (:class:`~dtn_bench.events.Note`
            events carry the lines about the peer).
        **settings: :class:`CorruptBenchConfig` fields (``corruptions=("snow",)``, ``threads=2``, ...).

    Returns:
        The :class:`~dtn_bench.runner.RunResult` (run folder and rows).

    Raises:
        DTNBenchError: a bad setting (before anything is written).
    """
    cfg = CorruptBenchConfig.from_preset(preset, **settings)
    return run_suite(CORRUPT_SUITE, cfg, out=out, run_id=run_id, on_event=on_event)
