"""What a suite tells its caller while it runs: small frozen dataclasses, one per kind of event.

A suite emits events through ``ctx.emit(event)`` (:class:`dtn_bench.runner.RunContext`); the runner adds its own
(:class:`Started`, :class:`UnitDone`, :class:`Rendered`) and hands every event of rank 0 to the caller's
``on_event(event)``. Measurement code never prints: the CLI renders events (one base progress view,
:class:`dtn_bench.cli.output.ProgressView`), a Python caller may collect them. Each class has a ``kind`` (a short
name, stable across versions) and :meth:`Event.fields` (its values as a dict).

- messages: :class:`Note` (something the caller should report), :class:`Warn` (something that may make the numbers
  mean less than they seem);
- progress: :class:`Progress` (a task's items advanced; ``task`` names the bar), :class:`Estimate` (the time a run
  will take, from its first batches), :class:`TrainingPlanned` and :class:`TrainingProgress` (an ``lra`` training
  run's start, step or evaluation), :class:`DataLoaded`, :class:`TrainStart`, :class:`TrainStep` and
  :class:`TrainEpoch` (``dtn-bench train``'s data, start, step and epoch);
- units: :class:`Started` (units to do and already done), :class:`Pending` (what the measurement has left),
  :class:`UnitResult` (an evaluation unit scored), :class:`Trained` (a training run finished), :class:`UnitDone`
  (a unit's rows are written), :class:`Finished` (the measurement's totals), :class:`Rendered` (documents written);
- :class:`RunSettings`: what a run is about to do (processes, device, run id);
- ``robustness``: :class:`StudySettings`, and per (normaliser, seed, stage) :class:`StageStart`,
  :class:`StageProgress`, :class:`StageDone` (sent from worker processes too: plain, picklable data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """Base of every event: ``kind`` names the class of event."""

    kind: ClassVar[str] = "event"

    def fields(self) -> dict[str, Any]:
        """The event's values by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


Handler = Callable[[Event], None]


# ------------------------------------------------------------------------------------------------------ messages
@dataclass(frozen=True)
class Note(Event):
    """Something the caller should report (which weights were loaded, sequences truncated, ...)."""

    kind: ClassVar[str] = "note"
    text: str


@dataclass(frozen=True)
class Warn(Event):
    """Something that makes the numbers mean less than they seem (random weights, a partial data copy, ...)."""

    kind: ClassVar[str] = "warning"
    text: str


# ------------------------------------------------------------------------------------------------------ progress
@dataclass(frozen=True)
class Progress(Event):
    """Progress of one task: ``advance`` items more, or ``completed`` of ``total``; ``done`` closes the task.

    Attributes:
        task: what is progressing (``images``, ``data``, ``layout``, ``demo images``), one bar per task.
        advance: items done since the last event of this task.
        completed: items done so far (``None``: count the advances).
        total: items in all (``None``: unknown, or unchanged).
        status: a short line about the current item (``fog/3 err 0.412``).
        done: the task is over (its bar goes).
    """

    kind: ClassVar[str] = "progress"
    task: str
    advance: int = 0
    completed: int | None = None
    total: int | None = None
    status: str = ""
    done: bool = False


@dataclass(frozen=True)
class Estimate(Event):
    """How long the run will take, from its first timed batches."""

    kind: ClassVar[str] = "estimate"
    seconds: float
    img_s: float
    images: int


@dataclass(frozen=True)
class TrainingProgress(Event):
    """Where one training run (``model``, ``norm``, ``seed``) is: at ``step`` of ``steps``, with its latest figures.

    Subclasses say what happened: :class:`TrainingStart`, :class:`TrainingStep`, :class:`TrainingEval`.
    """

    kind: ClassVar[str] = "training"
    phase: ClassVar[str] = ""
    model: str
    norm: str
    seed: int
    step: int
    steps: int
    loss: float | None = None
    acc: float | None = None
    tokens_s: float | None = None
    lr: float | None = None
    val_acc: float | None = None
    resumed_from: int | None = None

    @staticmethod
    def from_info(phase: str, info: Mapping[str, Any]) -> TrainingProgress:
        """The event of a training loop's ``phase`` (``start``, ``step``, ``eval``) from its ``info`` dict.

        Keys the event has no field for are left out.
        """
        cls = {c.phase: c for c in (TrainingStart, TrainingStep, TrainingEval)}[phase]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in info.items() if k in names})


@dataclass(frozen=True)
class TrainingStart(TrainingProgress):
    """A training run starts (``step``: where it resumes; ``resumed_from``: the checkpoint's step, if any)."""

    kind: ClassVar[str] = "run_start"
    phase: ClassVar[str] = "start"


@dataclass(frozen=True)
class TrainingStep(TrainingProgress):
    """A training run took a step (``loss``, ``acc``: the running window's; ``tokens_s``, ``lr``)."""

    kind: ClassVar[str] = "run_step"
    phase: ClassVar[str] = "step"


@dataclass(frozen=True)
class TrainingEval(TrainingProgress):
    """A training run was evaluated on the validation split (``val_acc``)."""

    kind: ClassVar[str] = "run_eval"
    phase: ClassVar[str] = "eval"


@dataclass(frozen=True)
class TrainStart(Event):
    """``dtn-bench train``: training begins (after ``start_epoch`` finished epochs) with this model and data."""

    kind: ClassVar[str] = "train_start"
    start_epoch: int
    params: int
    input_size: tuple[int, ...]
    lr: float
    updates_per_epoch: int
    epochs: int = 0
    classes: int = 0
    data: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    crop_pct: float = 1.0
    interpolation: str = ""


@dataclass(frozen=True)
class TrainStep(Event):
    """``dtn-bench train``: an optimiser step of epoch ``epoch`` (0-based), ``step`` of ``steps``."""

    kind: ClassVar[str] = "train_step"
    epoch: int
    step: int
    steps: int
    loss: float
    lr: float
    img_s: float


@dataclass(frozen=True)
class TrainEpoch(Event):
    """``dtn-bench train``: an epoch is measured and checkpointed (``record``: its EpochRecord as a dict)."""

    kind: ClassVar[str] = "train_epoch"
    epoch: int
    record: Mapping[str, Any]


@dataclass(frozen=True)
class DataLoaded(Event):
    """The data a run trains on: its name, training and validation images, classes."""

    kind: ClassVar[str] = "data"
    name: str
    train: int
    val: int
    classes: int


@dataclass(frozen=True)
class TrainingPlanned(Event):
    """Training starts: ``total`` steps over the runs to do (``steps`` each), ``workers`` runs side by side."""

    kind: ClassVar[str] = "runs"
    total: int
    steps: int
    run_id: str | None = None
    workers: int = 1


# --------------------------------------------------------------------------------------------------------- units
@dataclass(frozen=True)
class RunSettings(Event):
    """What the run is about to do: its processes, device and run folder name."""

    kind: ClassVar[str] = "settings"
    world: int
    device: str
    run_id: str | None = None
    malloc_tuned: bool = False


@dataclass(frozen=True)
class StudySettings(Event):
    """A ``robustness`` study is about to run ``todo`` stages on ``world`` processes, ``workers`` side by side."""

    kind: ClassVar[str] = "study_settings"
    world: int
    device: str
    run_id: str | None
    workers: int
    todo: int


@dataclass(frozen=True)
class StageStart(Event):
    """A ``robustness`` stage (``corrupt-data``, ``train``, ``evaluate``) of ``(norm, seed)`` starts."""

    kind: ClassVar[str] = "stage_start"
    norm: str
    seed: int
    stage: str


@dataclass(frozen=True)
class StageProgress(Event):
    """A ``robustness`` stage has done ``completed`` of ``total`` (steps or images; ``None``: not yet known)."""

    kind: ClassVar[str] = "stage_progress"
    norm: str
    seed: int
    stage: str
    completed: int
    total: int | None
    status: str = ""


@dataclass(frozen=True)
class StageDone(Event):
    """A ``robustness`` stage finished; ``summary`` is its one line."""

    kind: ClassVar[str] = "stage_done"
    norm: str
    seed: int
    stage: str
    summary: str


@dataclass(frozen=True)
class Started(Event):
    """The runner starts: ``total`` units (``None``: unknown), ``skipped`` already in the run folder."""

    kind: ClassVar[str] = "start"
    total: int | None
    skipped: int


@dataclass(frozen=True)
class Pending(Event):
    """What a measurement has left: ``pending`` units of ``images`` images, ``skipped`` done, on ``world`` processes."""

    kind: ClassVar[str] = "pending"
    pending: int
    skipped: int
    images: int
    world: int = 1
    label: str = ""


@dataclass(frozen=True)
class UnitResult(Event):
    """An evaluation unit (a corruption x severity pair, or a split) is scored; its rows come next.

    Attributes:
        label: the unit as progress shows it (``fog/3``, ``imagenet-a``).
        corruption: its corruption (``none`` for a split; ``clean`` for ImageNet-C's clean set).
        severity: its severity (0 for a split).
        top1_err: top-1 error of its readable images.
        n_images: readable images.
        n_unreadable: unreadable files (counted, left out of the error).
        unreadable: their names.
    """

    kind: ClassVar[str] = "pair"
    label: str
    corruption: str
    severity: int
    top1_err: float
    n_images: int
    n_unreadable: int = 0
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Trained(Event):
    """A training run finished (``test_accuracy`` of its last checkpoint); its rows come next."""

    kind: ClassVar[str] = "trained"
    label: str
    test_accuracy: float


@dataclass(frozen=True)
class UnitDone(Event):
    """The runner wrote a unit's ``rows`` rows (``label``: what the suite called the unit)."""

    kind: ClassVar[str] = "step"
    label: str
    rows: int


@dataclass(frozen=True)
class Finished(Event):
    """The measurement's totals: ``images`` in ``seconds`` (``img_s`` end to end)."""

    kind: ClassVar[str] = "done"
    seconds: float
    images: int
    img_s: float


@dataclass(frozen=True)
class Rendered(Event):
    """The run folder's documents and plots are written."""

    kind: ClassVar[str] = "rendered"
    path: Path


def ignore(event: Event) -> None:
    """An ``on_event`` that drops every event."""
