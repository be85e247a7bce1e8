"""A suite's measurement over a plan: the pending units through the loop, their bits and rows, the events.

:func:`measure` is the ``run`` of every evaluation suite (``imagenet-c``, ``cifar-c``, ``shifts``) once its plan is
made: it skips the units already in the run folder (``ctx.done``), evaluates the rest with
:func:`~dtn_bench.shifts.loop.evaluate_units`, writes each unit's per-image bits (rank 0,
:mod:`~dtn_bench.shifts.correctness`) before yielding its rows, and tells the caller through events
(:class:`~dtn_bench.events.Pending`, :class:`~dtn_bench.events.Progress`, :class:`~dtn_bench.events.Estimate`,
:class:`~dtn_bench.events.UnitResult`, :class:`~dtn_bench.events.Finished`). A suite gives what differs: the resume
key of a unit, its rows, and the identity its bits are filed under.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dtn_bench.events import Finished, Pending, UnitResult
from dtn_bench.results.schema import make_row
from dtn_bench.shifts.loop import UnitScore, evaluate_units
from dtn_bench.shifts.plan import Plan, Unit

COUNT_UNIT = "images"
METRICS = ("n_images", "n_unreadable", "top1_err", "top5_err", "throughput_img_s")
"""What a unit's rows hold: images, unreadable files, top-1 and top-5 error (5 or more classes), images/s."""


@dataclass(frozen=True)
class Filing:
    """How a suite files a unit: its resume key, its bits' identity, the rows' metrics and the name of a bad file.

    Attributes:
        key: ``key(unit)`` -> the values of the suite's resume-key columns.
        identity: ``identity(unit)`` -> extra fields of its bits (``{}``: filed as ``(corruption, severity)``).
        metrics: the metrics of :data:`METRICS` its rows hold.
        bad_name: ``bad_name(unit, name)`` -> how rows and events name an unreadable image.
        settings: ``settings(unit)`` -> the setting columns of its rows besides the suite's common ones.
    """

    key: Callable[[Unit], tuple]
    identity: Callable[[Unit], dict[str, str]] = lambda u: {}
    metrics: tuple[str, ...] = METRICS
    bad_name: Callable[[Unit, str], str] = lambda u, name: name
    settings: Callable[[Unit], dict[str, Any]] = lambda u: dict(corruption=u.corruption, severity=u.severity)


def unit_rows(suite: str, p: Plan, s: UnitScore, common: dict[str, Any], filing: Filing) -> list[dict]:
    """The rows of a scored unit: its counts, top-1 (and top-5) error and end-to-end images/s."""
    n, _, _, unreadable = s.counts
    settings = dict(**filing.settings(s.unit), **common, unreadable_files=";".join(
        filing.bad_name(s.unit, b) for b in s.names))
    values = {"n_images": (n, COUNT_UNIT), "n_unreadable": (unreadable, COUNT_UNIT), "top1_err": (s.top1_err, None),
              "top5_err": (s.top5_err, None) if s.top5 else None,
              "throughput_img_s": ((n + unreadable) / s.seconds if s.seconds > 0 else float("nan"), None)}
    return [make_row(suite, p.model_name, p.norm_label, m, values[m][0], values[m][1], **settings)
            for m in filing.metrics if values.get(m) is not None]


def measure(suite: str, p: Plan, ctx, common: dict[str, Any], filing: Filing) -> Iterator[tuple[str, list[dict]]]:
    """``(label, rows)`` per finished unit of the plan, in plan order; units in ``ctx.done`` are skipped.

    Every rank evaluates its shard of every pending unit and yields the summed rows (the runner writes rank 0's);
    rank 0 writes a unit's per-image bits into ``ctx.run_dir`` before its rows.
    """
    from dtn_bench.distributed import DistContext
    from dtn_bench.shifts.correctness import write_pair

    dist = ctx.dist if ctx.dist is not None else DistContext()
    pending = [u for u in p.units if not ctx.is_done(*filing.key(u))]
    images = sum(len(u) for u in pending)
    ctx.emit(Pending(pending=len(pending), skipped=len(p.units) - len(pending), images=images, world=dist.world))
    t0 = time.perf_counter()
    for s in evaluate_units(p, pending, dist, ctx.emit) if pending else ():
        u = s.unit
        if ctx.rank == 0 and ctx.run_dir is not None and s.correct is not None:
            write_pair(ctx.run_dir, u.corruption, u.severity, u.names, s.correct, s.names, filing.identity(u))
        yield u.label, unit_rows(suite, p, s, common, filing)
        ctx.emit(UnitResult(u.label, u.corruption, u.severity, s.top1_err, s.n, s.unreadable,
                            tuple(filing.bad_name(u, b) for b in s.names)))
    seconds = time.perf_counter() - t0
    ctx.emit(Finished(seconds=seconds, images=images, img_s=images / seconds if seconds else 0.0))
