"""One suite shape and one runner.

A :class:`Suite` is a registered object: its name, what it measures (metrics with higher-is-better), a frozen config
class with ``from_preset(name, **flags)``, a measurement-only ``run(cfg, ctx)`` that yields ``(label, rows)`` as each
unit of work finishes, the row columns that mark a finished unit (its resume key) and a :class:`Report` (documents,
plots, console summaries and the settings that must agree before runs combine).

:func:`run_suite` runs any suite: it owns the :class:`~dtn_bench.results.writer.RunWriter` (rows appended as they
come, so a killed run keeps what it finished), resume (finished units are given to the suite in ``ctx.done``),
rank-0 writing under torchrun (every rank runs the suite; only rank 0 writes) and the final render from the rows.
Rows hold measurements; derived figures (mCE, ratios, slopes) are computed by the report at render time.

A suite may plan before it measures (``Suite.plan``: every check, the model loaded, the files hashed): the plan's
``provenance`` (what it found: checkpoint and weights SHA-256, subset-list digests, resolved paths) is recorded in
``config.json`` beside the config the user gave, and the run key hashes both (:func:`run_key`). The suite's ``run``
then gets the plan instead of the config.

Events: a suite tells its caller what happens through typed events (:mod:`dtn_bench.events`), ``ctx.emit(event)``;
the runner adds :class:`~dtn_bench.events.Started`, :class:`~dtn_bench.events.UnitDone` and
:class:`~dtn_bench.events.Rendered`, and passes rank 0's events to ``on_event(event)``.

Data flow: flags -> ``Config.from_preset`` -> ``run_suite`` -> ``suite.run`` -> rows -> writer -> ``suite.report``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dtn_bench.errors import DTNBenchError
from dtn_bench.events import Event, Handler, Rendered, Started, UnitDone, ignore

Rows = list[dict]
__all__ = ["EMPTY_OK", "ConsoleTable", "Event", "Handler", "PresetConfig", "Report", "RunContext", "RunResult", "Suite",
           "run_key", "run_suite", "write_report"]


def run_key(config: Mapping[str, Any], provenance: Mapping[str, Any], ignored: Iterable[str] = ()) -> str:
    """SHA-256 (hex) of ``{"config": config, "provenance": provenance}`` without the ``ignored`` keys.

    ``config``: the settings the user gave; ``provenance``: what the plan found (hashes of checkpoints, weights and
    subset lists; resolved paths). Both key the run explicitly, so a run folder never mixes other settings or files.
    """
    import hashlib
    import json

    skip = set(ignored)
    keyed = {"config": {k: v for k, v in config.items() if k not in skip},
             "provenance": {k: v for k, v in provenance.items() if k not in skip}}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()


EMPTY_OK = "an empty list is a value"
"""Marks a tuple field where an empty list means something (``models: Annotated[tuple[str, ...], EMPTY_OK]``: no
models); elsewhere an empty list given in a preset or a flag is an error, not "the default"."""


class PresetConfig:
    """Mixin for a suite's frozen config dataclass: one precedence, dataclass defaults < preset < flags given.

    A subclass sets ``SUITE`` (the preset file ``suites/<SUITE>.yaml``) and may define ``validate()``. Every value
    from a preset or a flag is checked against its field's annotation first (:func:`typed_value`), so a quoted
    ``"no"`` is not a true bool and ``nan`` is not a clipping norm.
    """

    SUITE: str = ""

    @classmethod
    def from_preset(cls, name: str | None, **flags: Any):
        """The preset ``name`` (``None``: dataclass defaults) with the given flags (not ``None``) over it, validated.

        Lists become tuples; an unknown field (in the preset or the flags) or a value of the wrong type is a one-line
        error naming the preset file, the preset and the field (or the flag).
        """
        from dtn_bench.suites import load_preset

        values: dict[str, Any] = dict(load_preset(cls.SUITE, name)) if name is not None else {}
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise DTNBenchError(f"suites/{cls.SUITE}.yaml preset {name!r}: unknown fields {unknown}")
        values = cls._typed(values, lambda k: f"suites/{cls.SUITE}.yaml preset {name!r}: {k}")
        if "preset" in known and name is not None:
            values["preset"] = name
        values.update(cls.typed_flags(**flags))
        cfg = cls(**values)
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate()
        return cfg

    @classmethod
    def typed_flags(cls, **flags: Any) -> dict[str, Any]:
        """The flags given (not ``None``) checked against the field annotations (lists as tuples).

        Raises:
            DTNBenchError: an unknown setting, or a value of the wrong type (naming the flag).
        """
        given = {k: v for k, v in flags.items() if v is not None}
        unknown = sorted(set(given) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise DTNBenchError(f"{cls.SUITE}: unknown settings {unknown}")
        return cls._typed(given, lambda k: f"{cls.SUITE}: --{k.replace('_', '-')}")

    @classmethod
    def _typed(cls, values: dict[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
        import typing

        hints = typing.get_type_hints(cls, include_extras=True)
        out = {}
        for key, value in values.items():
            try:
                out[key] = typed_value(hints[key], value)
            except TypeError as e:
                raise DTNBenchError(f"{where(key)} {_shown(value)}: {e}") from None
        return out

    @classmethod
    def recorded(cls, out: str | Path, run_id: str | None):
        """The config a run folder ``<out>/<SUITE>/<run_id>`` recorded (``config.json``), to continue it.

        Raises:
            DTNBenchError: no run id, no such run folder, or a ``config.json`` that is unreadable or not of ``cls``.
        """
        from dtn_bench.checks import read_json_object

        if run_id is None:
            raise DTNBenchError(f"{cls.SUITE}: --resume needs the run id of the run to continue")
        folder = Path(out) / cls.SUITE / run_id
        if not folder.is_dir():
            raise DTNBenchError(f"--resume {run_id}: no run folder {folder}")
        stored = read_json_object(folder / "config.json", hint=" (the run cannot be resumed)")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
        except TypeError as e:
            raise DTNBenchError(f"--resume {run_id}: {folder / 'config.json'} is not a {cls.SUITE} config "
                                f"({e})") from None

    def as_dict(self) -> dict[str, Any]:
        """The config as a plain dict (what ``config.json`` holds)."""
        from dataclasses import asdict

        return asdict(self)  # type: ignore[call-overload]


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return repr(",".join(map(str, value))) if value else "'' (an empty list)"
    return repr(value) if isinstance(value, str) or value is None else str(value)


def _kind(annotation: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a text"}[annotation]


def typed_value(annotation: Any, value: Any) -> Any:
    """``value`` as a config field annotated ``annotation`` holds it, or a ``TypeError`` saying what was expected.

    ``bool`` takes only ``True`` / ``False`` (not ``"no"``, not 0); ``int`` an integer (not a bool, not ``64.5``);
    ``float`` a finite number (not ``nan``, not a text); ``str`` a text; ``X | None`` also ``None``;
    ``tuple[X, ...]`` a non-empty list or tuple of ``X`` (not a bare value, not a text; empty where the annotation
    is ``Annotated[..., EMPTY_OK]``); ``tuple[X, Y]`` exactly that many. Other annotations take any value.
    """
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        if EMPTY_OK in annotation.__metadata__ and isinstance(value, (list, tuple)) and not value:
            return ()
        return typed_value(args[0], value)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        return typed_value(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        return _typed_tuple(args, value)
    check = _SCALARS.get(annotation)
    if check is None:
        return value
    if value is None:
        raise TypeError(f"expected {_kind(annotation)}, got nothing")
    return check(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, *np_bool_types()))


def _as_bool(value: Any) -> bool:
    if not _is_bool(value):
        raise TypeError("expected true or false")
    return bool(value)


def _as_int(value: Any) -> int:
    import numbers

    if not isinstance(value, numbers.Integral) or _is_bool(value):
        raise TypeError("expected an integer")
    return int(value)


def _as_float(value: Any) -> float:
    import math
    import numbers

    if isinstance(value, str) and _looks_like_float(value):
        raise TypeError("expected a number, got a text (YAML reads 1e-3 without a point as text: write 1.0e-3)")
    if not isinstance(value, numbers.Real) or _is_bool(value) or not math.isfinite(value):
        raise TypeError("expected a finite number")
    return float(value)


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a text")
    return value


_SCALARS: dict[type, Callable[[Any], Any]] = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def _typed_tuple(args: tuple, value: Any) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise TypeError("expected a list" if value is not None else "expected a list, got nothing")
    if not value:
        raise TypeError("expected one value at least (leave it out for the default)")
    if len(args) == 2 and args[1] is Ellipsis:
        items = [(args[0], v) for v in value]
    elif args:
        if len(value) != len(args):
            raise TypeError(f"expected {len(args)} values")
        items = list(zip(args, value, strict=True))
    else:
        return tuple(value)
    out = []
    for annotation, item in items:
        try:
            out.append(typed_value(annotation, item))
        except TypeError as e:
            raise TypeError(f"item {_shown(item)}: {e}") from None
    return tuple(out)


def np_bool_types() -> tuple[type, ...]:
    """NumPy's bool scalar type, when NumPy is loaded (a numpy bool is a bool, not an integer)."""
    import sys

    np = sys.modules.get("numpy")
    return (np.bool_,) if np is not None else ()


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ConsoleTable:
    """A summary table for the console, already formatted: a title, column names and rows of cell strings."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: tuple[bool, ...] = ()

    @classmethod
    def from_frame(cls, df, title: str, index_label: str) -> ConsoleTable:
        """A wide frame (index + columns): the index left-aligned, the columns right-aligned, floats with 2 decimals."""
        cells = tuple((str(name), *(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r)) for name, r in
                      df.iterrows())
        return cls(title, (index_label, *map(str, df.columns)), cells, (False,) + (True,) * len(df.columns))


@dataclass(frozen=True)
class Report:
    """How a suite's rows become documents, plots and console summaries (rendering only, nothing measured).

    Attributes:
        render: ``render(rows, "md" | "tex")`` -> the document.
        main: ``main(rows)`` -> the suite's paper-style table (the CSV document; its emptiness is an error in
            ``dtn-bench table``).
        main_name: what ``main`` shows (for that error).
        plots: file name -> ``plot(rows)`` returning a matplotlib figure.
        settings: ``(columns, within)`` pairs: each column must hold one value within each group of ``within``
            before runs combine.
        check: a further check ``check(rows, runs)`` before runs combine (raises :class:`DTNBenchError`).
        csv: ``csv(rows)`` -> the CSV text where the suite writes its own (default: ``main`` at 9 decimals).
        console: ``console(rows)`` -> the :class:`ConsoleTable` s (and lines, ``str``) printed after a run.
        run_documents: the documents a run folder gets (``dtn-bench table --out`` writes all three).
        options: render options ``render``, ``main`` and ``csv`` accept as keywords (e.g. ``ci``: the interval
            method), offered by ``dtn-bench table <suite>`` and passed through :meth:`documents`; the defaults of
            those keywords are what a run folder gets.
        runs: ``render`` and ``csv`` also take ``runs=`` (the run folders of the rows: a run's own folder, or those
            given to ``dtn-bench table``), for per-unit data the runs keep beside their rows (per-image bits).
    """

    render: Callable[[Any, str], str]
    main: Callable[[Any], Any]
    main_name: str
    plots: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    settings: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    check: Callable[[Any, list[Path]], None] | None = None
    csv: Callable[[Any], str] | None = None
    console: Callable[[Any], list[ConsoleTable]] | None = None
    run_documents: tuple[str, ...] = ("table.md", "table.tex")
    options: tuple[str, ...] = ()
    runs: bool = False

    def check_combinable(self, df, runs: Iterable[Path], command: str) -> None:
        """One-line error when the rows of the runs differ in a setting that must agree."""
        from dtn_bench.results.tables import check_same_settings

        for columns, within in self.settings:
            check_same_settings(df, command, columns, within)
        if self.check is not None:
            self.check(df, list(runs))

    def documents(self, df, names: Iterable[str] = ("table.md", "table.tex", "table.csv"),
                  runs: Iterable[Path] = (), **options: Any) -> dict[str, str]:
        """``{file name: text}`` of the documents ``names`` rendered from ``df`` with the render ``options``.

        ``runs``: the run folders of the rows, passed on when the report takes them (:attr:`runs`).
        """
        from dtn_bench.results.tables import to_csv

        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise DTNBenchError(f"this report takes no option {', '.join(unknown)}")
        if self.runs:
            options = {**options, "runs": tuple(runs)}
        out: dict[str, str] = {}
        for name in names:
            if name == "table.csv":
                out[name] = self.csv(df, **options) if self.csv is not None else to_csv(self.main(df, **options))
            else:
                out[name] = self.render(df, name.rsplit(".", 1)[1], **options)
        return out

    def figures(self, df) -> dict[str, bytes]:
        """``{file name: PNG bytes}`` of every plot (figures closed after)."""
        from dtn_bench.plots import _plt

        plt = _plt()
        out = {}
        for name, plot in self.plots.items():
            fig = plot(df)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
            plt.close(fig)
            out[name] = buf.getvalue()
        return out


@dataclass
class RunContext:
    """What a running suite gets from the runner.

    Attributes:
        done: resume keys (tuples of the suite's ``resume_key`` columns) already in the run folder.
        emit: ``emit(event)``: a typed event (:mod:`dtn_bench.events`: notes, warnings, progress, units) for the
            caller; a no-op on ranks other than 0.
        rank: this process's rank (0 without torchrun); world: the number of processes.
        dist: the :class:`~dtn_bench.distributed.DistContext` (device, collectives) when the suite asked for one
            (``Suite.distributed``), else ``None``.
        run_dir: the run folder (the same path on every rank; only rank 0 writes rows into it), for what a suite
            keeps beside its rows (training checkpoints, per-image bits).
    """

    done: set[tuple] = field(default_factory=set)
    emit: Handler = ignore
    rank: int = 0
    world: int = 1
    dist: Any = None
    run_dir: Path | None = None

    def is_done(self, *key: Any) -> bool:
        """Whether the unit with this resume key is finished (values as the rows hold them)."""
        return tuple(key) in self.done


@dataclass(frozen=True)
class Suite:
    """A registered benchmark.

    Attributes:
        name: the suite name (rows' ``suite`` column, the run folder's parent).
        description: one line, for ``dtn-bench list suites``.
        metrics: metric -> higher is better.
        config: the frozen config class (a :class:`PresetConfig`).
        run: ``run(cfg, ctx)`` -> iterable of ``(label, rows)``; measurement only.
        report: the :class:`Report`.
        command: the ``dtn-bench table <command>`` name (``""``: no table command; the report still renders the run
            folder).
        resume_key: the row columns that mark a finished unit (``()``: the suite does not resume).
        steps: ``steps(cfg)`` -> how many items ``run`` yields (for a progress bar), or ``None``.
        resume_ignored: config keys that may differ when a run is resumed.
        env: ``env(cfg, world)`` -> extra entries for ``env.json`` and the config (e.g. the world size), or ``None``.
        device: ``device(cfg, rank)`` -> the device the rows' provenance names, or ``None`` (``cfg.device``).
        table_help: the help of ``dtn-bench table <command>``.
        distributed: the runner opens the process context (``init_distributed(cfg.device)``) and hands it to the
            suite as ``ctx.dist``; without torchrun a suite that does not ask for it runs without one.
        plan: ``plan(cfg)`` -> the suite's plan (every check before any work; its ``provenance`` dict is recorded
            and keyed, its ``messages()`` are emitted), which ``run`` then gets instead of the config; ``None``: the
            suite runs from its config.
    """

    name: str
    description: str
    metrics: Mapping[str, bool]
    config: type
    run: Callable[[Any, RunContext], Iterable[tuple[str, Rows]]]
    report: Report
    command: str = ""
    resume_key: tuple[str, ...] = ()
    steps: Callable[[Any], int] | None = None
    resume_ignored: tuple[str, ...] = ()
    env: Callable[[Any, int], dict] | None = None
    device: Callable[[Any, int], str] | None = None
    table_help: str = ""
    distributed: bool = False
    plan: Callable[[Any], Any] | None = None

    @property
    def higher_is_better(self) -> dict[str, bool]:
        """Metric -> whether a higher value is better."""
        return dict(self.metrics)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_suite` returns: the run folder (``None`` on ranks other than 0) and its rows."""

    path: Path | None
    rows: Any


def _writer(suite: Suite, cfg, out, run_id, resume, world: int, provenance: Mapping[str, Any]):
    from dtn_bench.results.env import environment
    from dtn_bench.results.writer import DEFAULT_IGNORED_CONFIG_KEYS, RunWriter

    config = cfg.as_dict()
    clash = sorted(set(config) & set(provenance))
    if clash:  # the plan's findings sit beside the settings given, never over them
        raise ValueError(f"suite {suite.name}: provenance keys {clash} are also config keys")
    config = {**config, **provenance}
    env = None
    extra = suite.env(cfg, world) if suite.env is not None else {}
    if extra:
        config = {**config, **extra}
        env = {**environment(), **extra}
    device = suite.device(cfg, 0) if suite.device is not None else getattr(cfg, "device", None)
    ignored = tuple(DEFAULT_IGNORED_CONFIG_KEYS) + suite.resume_ignored + tuple(extra)
    return RunWriter(out, suite.name, config, run_id=run_id, resume=resume, device=device, ignore_keys=ignored,
                     env=env)


def run_suite(name: str | Suite, cfg, *, out: str | Path = "results", run_id: str | None = None,
              resume: bool = False, on_event: Handler | None = None, render: bool = True,
              plan: Any = None) -> RunResult:
    """Run a registered suite and write its run folder ``out/<suite>/<run id>``.

    Args:
        name: the suite (name or object).
        cfg: its config (``Suite.config`` instance).
        out: the results root.
        run_id: the run folder name (default: a fresh timestamped one, or what the config chooses when it has a
            ``default_run_id()``; a planned suite's gets the plan's provenance).
        resume: continue the run folder ``run_id``: finished units are skipped by the suite.
        on_event: ``on_event(event)`` on rank 0: :class:`~dtn_bench.events.Started`,
            :class:`~dtn_bench.events.UnitDone`, :class:`~dtn_bench.events.Rendered`, the plan's messages and
            whatever the suite emits.
        render: write the report (documents and plots) at the end.
        plan: the plan of a planned suite (``Suite.plan``) already made by the caller, who has then reported its
            messages; ``None``: the runner plans (and emits the plan's messages after ``Started``).

    Returns:
        A :class:`RunResult`.

    Raises:
        DTNBenchError: bad settings or a run folder that cannot be resumed (before any work); whatever the suite
            raises (a new run folder that got no row by then is removed).
    """
    from dtn_bench.distributed import world_size_from_env
    from dtn_bench.suites import get_suite

    suite = name if isinstance(name, Suite) else get_suite(name)
    emit = on_event or ignore
    messages = []
    if suite.plan is not None and plan is None:
        plan = suite.plan(cfg)
        messages = plan.messages()
    world = world_size_from_env()
    dist = None
    if world > 1 or suite.distributed:
        from dtn_bench.distributed import init_distributed

        dist = init_distributed(getattr(cfg, "device", "auto"))
    try:
        return _run(suite, cfg, out, run_id, resume, emit, render, dist, plan, messages)
    finally:
        if dist is not None:
            dist.close()


def _run(suite: Suite, cfg, out, run_id, resume, emit: Handler, render: bool, dist, plan, messages) -> RunResult:
    """Every rank runs the suite (on its shard); rank 0 alone writes (its errors and done keys are broadcast)."""
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    share = dist.broadcast if dist is not None and dist.world > 1 else (lambda obj: obj)
    provenance = dict(plan.provenance) if plan is not None else {}
    if run_id is None and hasattr(cfg, "default_run_id"):
        run_id = cfg.default_run_id(provenance) if plan is not None else cfg.default_run_id()
    writer, error, done, run_dir = None, None, set(), None
    if rank == 0:
        try:
            writer = _writer(suite, cfg, out, run_id, resume, world, provenance)
            done = writer.done_keys(suite.resume_key) if resume and suite.resume_key else set()
            run_dir = writer.path
        except DTNBenchError as e:
            error = str(e)
    error, done, run_dir = share((error, set(done), run_dir))
    if error:
        raise DTNBenchError(error)
    ctx = RunContext(done=done, emit=emit if rank == 0 else ignore, rank=rank, world=world, dist=dist,
                     run_dir=run_dir)
    ctx.emit(Started(total=suite.steps(cfg) if suite.steps is not None else None, skipped=len(done)))
    for message in messages:
        ctx.emit(message)
    _measure(suite, plan if plan is not None else cfg, ctx, writer, emit)
    if writer is None:
        return RunResult(None, None)
    if render:
        write_report(suite, writer)
        emit(Rendered(path=writer.path))
    return RunResult(writer.path, writer.rows())


def _measure(suite: Suite, what, ctx: RunContext, writer, emit: Handler) -> None:
    """Runs the suite on ``what`` (its plan, or its config), appending its rows as they come (rank 0).

    A new run folder without a row goes on failure.
    """
    try:
        for label, rows in suite.run(what, ctx):
            if writer is not None:
                writer.append(rows)
                emit(UnitDone(label=label, rows=len(rows)))
    except BaseException:
        if writer is not None:
            writer.discard()  # a run that failed before its first row leaves no folder behind
        raise


def write_report(suite: Suite, writer) -> None:
    """The run folder's documents and plots, rendered from its rows (nothing when it has none)."""
    df = writer.rows()
    if df.empty:
        return
    for name, text in suite.report.documents(df, suite.report.run_documents, runs=[writer.path]).items():
        writer.write_text(name, text)
    for name, png in suite.report.figures(df).items():
        writer.write_bytes(name, png)
