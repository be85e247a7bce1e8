"""The ``profile`` suite: its :class:`~dtn_bench.runner.Suite` object and the one-call Python API."""

from __future__ import annotations

from pathlib import Path

from dtn_bench.profile import measure
from dtn_bench.runner import ConsoleTable, Report, RunResult, Suite, run_suite
from dtn_bench.suites import register

PROFILE_SETTINGS = ("mode", "autocast", "dtype", "channels_last", "compile_mode", "dtn_kernel", "device_name",
                    "threads", "placement")
"""Profile row columns that must agree across combined runs (the tables average over runs)."""
RESUME_KEY = ("model", "norm", "phase", "batch_size")
"""What marks a finished configuration in the rows."""


def _cell(v) -> str:
    if isinstance(v, float):
        return "—" if v != v else f"{v:.3f}" if abs(v) < 100 else f"{v:,.1f}"
    return "—" if v is None else str(v)


def _console(df) -> list[ConsoleTable]:
    from dtn_bench.profile.report import summary_table

    st = summary_table(df)
    rows = tuple((str(model), str(norm), *(_cell(v) for v in r)) for (model, norm), r in st.iterrows())
    return [ConsoleTable("Profile summary", ("model", "norm", *map(str, st.columns)), rows,
                         (False, False) + (True,) * len(st.columns))]


def _run(cfg: measure.ProfileConfig, ctx):
    return measure.run(cfg, done=ctx.done or None)


def _report() -> Report:
    from dtn_bench.profile import report

    return Report(report.render_report, report.table1, "Table 1 counts (gmacs, params_m)",
                  {"throughput.png": report.throughput_plot, "latency.png": report.latency_plot},
                  settings=((PROFILE_SETTINGS, ()),), console=_console)


PROFILE_SUITE = register(Suite(
    measure.SUITE, "per model x normaliser: params, GMACs (+ the norms' analytic GMACs), throughput, latency p50/p90 "
    "at batch 1, peak memory, MFU on GPUs; one process per configuration",
    {"params_m": False, "gmacs": False, "norm_gmacs": False, "norm_gmacs_dense": False, "throughput_img_s": True,
     "throughput_seq_s": True, "latency_ms_p50": False, "latency_ms_p90": False, "peak_mem_mib": False, "mfu": True},
    measure.ProfileConfig, _run, _report(), command="profile", resume_key=RESUME_KEY,
    steps=lambda cfg: measure.steps(cfg),
    table_help="Cost profile: the paper's Table 1 layout (measured FLOPs / params beside the published ones), DTN / "
    "LN overhead, throughput, latency, memory; throughput-vs-batch and latency plots. The runs must share mode, "
    "autocast, dtype, channels_last, compile_mode, dtn_kernel, device and threads."))


def profile(preset: str = "default", *, out: str | Path = "results", run_id: str | None = None, resume: bool = False,
            **settings) -> RunResult:
    """Profile models x normalisers from Python; returns the :class:`~dtn_bench.runner.RunResult`.

    It runs the preset with ``settings`` over it (``models``, ``norms``, ``device``, ``batch_sizes``, ...).
    """
    cfg = measure.ProfileConfig.from_preset(preset, **settings)
    return run_suite(PROFILE_SUITE, cfg, out=out, run_id=run_id, resume=resume)
