"""Evaluating image classifiers under distribution shift: one engine, every set a description on it.

Every set (ImageNet-C, -3DCC, -C-bar, -A, -R, -Sketch, -V2, clean val, CIFAR-10/100-C, Tiny-ImageNet-C) is a
:class:`~dtn_bench.shifts.sets.ShiftSet`: how its layout is read and checked, its label space (a masked subset of
the model's 1000 classes where it has one), its input transform, its units (corruption x severity pairs, or one
split) and the normalisation of its headline metric. One plan (:mod:`~dtn_bench.shifts.plan`), one loader
(:mod:`~dtn_bench.shifts.loader`), one sharded loop with one accuracy routine (:mod:`~dtn_bench.shifts.loop`: top-1,
top-5, per-image bits) and one measurement (:mod:`~dtn_bench.shifts.measure`) serve ``imagenet-c``, ``cifar-c`` and
``shifts``.

One call from Python (RobustBench's ``benchmark()`` is the model)::

    from dtn_bench.shifts import evaluate
    result = evaluate("vit_s_dtn", "/data", checkpoint="vit_s_dtn.pth", sets=["imagenet-val", "imagenet-a"])
    result.table, result.path

Modules:
    sets: the descriptions, with their facts and sources.
    layout: reading and checking the releases' layouts; subsets.
    loader: image sources, decoding, each set's transform.
    plan: model and weights, label spaces and masks, units, provenance.
    loop: the sharded loop and the accuracy routine.
    measure: a suite's measurement over a plan (bits, rows, events).
    correctness: per-image top-1 bits in the run folder.
    suite: the ``shifts`` suite (one model on every set found under a data root).
    report: the ``shifts`` table and the paired comparison of models.
"""

from __future__ import annotations

from dtn_bench.events import Handler


def announce(p, on_event: Handler | None) -> None:
    """The plan's warnings and notes, on rank 0 (without ``on_event`` a warning goes to :func:`warnings.warn`)."""
    import warnings

    from dtn_bench.distributed import is_main_process
    from dtn_bench.events import Warn

    if not is_main_process():
        return
    for event in p.messages():
        if on_event is not None:
            on_event(event)
        elif isinstance(event, Warn):
            warnings.warn(event.text, stacklevel=3)


def __getattr__(name: str):
    """The one-call API (:func:`dtn_bench.shifts.suite.evaluate`), imported on first use."""
    if name in ("evaluate", "ShiftsResult", "make_config"):
        from dtn_bench.shifts import suite

        return getattr(suite, name)
    raise AttributeError(f"module 'dtn_bench.shifts' has no attribute {name!r}")
