"""The plan: the model and its weights, the label space, and the units of a set, every check before any work.

A plan (:class:`Plan`) is what the one sharded loop (:mod:`dtn_bench.shifts.loop`) needs: the model in eval mode,
its input (size, mean, std, timm data config), the units (:class:`Unit`: a corruption x severity pair or a split,
with its image source, labels and logit mask) and the settings of the loop (:class:`LoopSettings`). What the plan
computes from the files - the weights' SHA-256, the data's label, resolved paths, subset-list digests, the transform
of each set - is its ``provenance``, kept beside the config the user gave (the run key hashes both).

Label spaces (:class:`LabelSpace`): a set's images are labelled by their class folder (a wnid, or a class index for
ImageNet-V2) or by its label array. With a 1000-class model, wnid folders must be ImageNet-1k wnids (label = the
ImageNet-1k index); ImageNet-A and -R hold 200 of them and only those 200 logits are scored (the mask; label = the
position among the 200, as timm's ``validate.py --valid-labels`` and Hendrycks' evaluation code score them). A model
with other outputs takes a set whose class folders it matches one to one (sorted order, as torchvision's
ImageFolder), or whose labels (CIFAR) are all below its outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dtn_bench.errors import DTNBenchError
from dtn_bench.shifts import layout as L
from dtn_bench.shifts.loader import FileSource, Source
from dtn_bench.shifts.sets import INDEX_FOLDERS, NO_CORRUPTION, ShiftSet, imagenet_wnids

RANDOM_INIT = "random init"


def random_init_label(seed: int) -> str:
    """What ``checkpoint_sha256`` holds for a model without a checkpoint: ``random init (seed N)``."""
    return f"{RANDOM_INIT} (seed {int(seed)})"


def random_init_warning(seed: int) -> str:
    """The warning of a run without a checkpoint (one line)."""
    return f"no --checkpoint: randomly initialised weights (seed {int(seed)}); errors will be near chance"


# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSettings:
    """Which model to evaluate and where its weights come from: the settings every evaluation config begins with.

    Attributes:
        model: small model, zoo model (``vit_s_dtn``) or timm model name.
        norm: a registered normaliser put into the model (``--norm``).
        checkpoint: a weights file (its SHA-256 keys the run).
        ema: take the checkpoint's EMA weights when it has them (timm's ``CheckpointSaver`` files; the authors'
            accuracies are the EMA weights'); ``False`` (``--no-ema``) takes the raw ones.
        pretrained: timm's pretrained weights of a stock timm model (``--pretrained``), before any ``norm``
            conversion.
        pretrained_file: a local weights file through timm's pretrained loader (``--pretrained-file``; its SHA-256
            keys the run).
        num_classes: classifier outputs (default: the model's).
        placement: where the normalisers sit in every block, ``pre`` / ``post`` / ``peri`` (``--placement``,
            :mod:`dtn_bench.placement`); in the rows, the run key and the run id (the id only when not ``pre``).
    """

    model: str
    norm: str | None = None
    checkpoint: str | None = None
    ema: bool = True
    pretrained: bool = False
    pretrained_file: str | None = None
    num_classes: int | None = None
    placement: str = "pre"

    def model_spec(self) -> ModelSpec:
        """The model settings with the seed the weights are built under (the config's ``seed``, else 0)."""
        from dataclasses import fields

        return ModelSpec(**{f.name: getattr(self, f.name) for f in fields(ModelSettings)},
                         seed=getattr(self, "seed", 0))

    def check_weights(self) -> None:
        """One-line errors for model settings that cannot work (a placement, pretrained with a checkpoint)."""
        from dtn_bench.models.pretrained import check_request
        from dtn_bench.placement import check_placement

        check_placement(self.placement)
        check_request(self.model, pretrained=self.pretrained, pretrained_file=self.pretrained_file,
                      checkpoint=self.checkpoint, ema=self.ema)


@dataclass(frozen=True)
class ModelSpec(ModelSettings):
    """:class:`ModelSettings` and ``seed``, under which the model is built (random weights without a checkpoint)."""

    seed: int = 0


@dataclass(frozen=True)
class Weights:
    """Where the evaluated weights came from (provenance of every row).

    Attributes:
        checkpoint_sha256: the file's SHA-256, or ``random init (seed N)``.
        weights: ``ema``, ``raw``, ``pretrained`` or ``none``.
        source: ``checkpoint:PATH``, ``timm:<architecture>.<tag>``, ``file:PATH`` or ``random init (seed N)``.
        sha256: the weights file's SHA-256 (``none`` for random weights).
        messages: what loading said (notes), and the random-weights warning.
    """

    checkpoint_sha256: str
    weights: str
    source: str
    sha256: str
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def provenance(self) -> dict[str, str]:
        """The provenance entries: ``checkpoint_sha256``, ``weights``, ``weights_source``, ``weights_sha256``."""
        return {"checkpoint_sha256": self.checkpoint_sha256, "weights": self.weights,
                "weights_source": self.source, "weights_sha256": self.sha256}


def build_model(spec: ModelSpec, *, debug: bool = False) -> tuple[torch.nn.Module, Weights]:
    """The model of ``spec`` in eval mode with its weights loaded, and where they came from.

    The model is always built under ``torch.manual_seed(spec.seed)`` (the caller's random state is restored after), so
    without a checkpoint every process - each torchrun rank, a resumed run - gets the same random weights (and a
    converted pretrained model the same init of its new parameters).
    """
    from dtn_bench.models.small import create

    kwargs: dict[str, Any] = {} if spec.num_classes is None else {"num_classes": spec.num_classes}
    pretrained = spec.pretrained or spec.pretrained_file is not None
    if pretrained:
        kwargs.update(pretrained=True, pretrained_file=spec.pretrained_file, debug=debug)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = create(spec.model, norm=spec.norm, placement=spec.placement, **kwargs)
    except TypeError as e:
        raise DTNBenchError(f"cannot build model {spec.model}: {e}") from e
    if spec.checkpoint is not None:
        from dtn_bench.checkpoint import load_checkpoint

        info = load_checkpoint(model, spec.checkpoint, ema=spec.ema, debug=debug)
        weights = Weights(info["sha256"], info["weights"], f"checkpoint:{spec.checkpoint}", info["sha256"],
                          notes=(info["message"],))
    elif pretrained:
        from dtn_bench.models.vit import conversion_note

        w = model.pretrained_weights
        note = conversion_note(model, pretrained=True)
        weights = Weights(w.sha256, "pretrained", w.source, w.sha256, notes=(w.message, *([note] if note else [])))
    else:
        label = random_init_label(spec.seed)
        weights = Weights(label, "none", label, "none", warnings=(random_init_warning(spec.seed),))
    return model.eval(), weights


def model_classes(model: torch.nn.Module) -> int:
    """Number of outputs of a classifier (timm's ``num_classes``, else the head's ``out_features``)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Linear):
        return head.out_features
    raise DTNBenchError(f"cannot tell how many classes {type(model).__name__} predicts")


@dataclass(frozen=True)
class ModelInput:
    """The model's input: size (height, width), mean, std and timm's data config (for the eval transform)."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data_config: dict


def model_input(model: torch.nn.Module) -> ModelInput:
    """The input of a timm model (the patch embedding's image size when it has one)."""
    from timm.data import resolve_model_data_config

    dc = resolve_model_data_config(model)
    size = tuple(int(v) for v in dc["input_size"][1:])
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None) is not None:
        size = tuple(int(v) for v in pe.img_size)
        dc = {**dc, "input_size": (dc["input_size"][0], *size)}
    return ModelInput(size, tuple(dc["mean"]), tuple(dc["std"]), dict(dc))


def run_id_parts(settings: Any) -> list[str]:
    """The model part of a default run id: ``model``, then ``norm`` and ``placement`` where given (not ``pre``).

    ``settings``: any config with ``model``, ``norm`` and ``placement`` fields.
    """
    return ([settings.model] + ([settings.norm] if settings.norm else [])
            + ([settings.placement] if settings.placement != "pre" else []))


def own_norm(model: str) -> str:
    """The normaliser a small or zoo model is named for (``default`` for other timm models)."""
    from dtn_bench.models.small import own_norm as _own

    return _own(model)


# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelSpace:
    """The labels a set is scored in.

    Attributes:
        name: what rows call it (``ImageNet-1k``, ``ImageNet-A 200``, ``3 classes``).
        folders: the class folder name of each label, in label order (wnids, or ``"0"``..``"999"``).
        mask: the model outputs scored, one per label (``None``: every output, label = output index).
    """

    name: str
    folders: tuple[str, ...]
    mask: tuple[int, ...] | None = None

    def index(self) -> dict[str, int]:
        """Folder name -> label."""
        return {f: i for i, f in enumerate(self.folders)}


def imagenet_space() -> LabelSpace:
    """ImageNet-1k's 1000 wnids, labels = the standard class index."""
    return LabelSpace("ImageNet-1k", imagenet_wnids())


def label_space(sset: ShiftSet, found: Sequence[str], n_model: int, model_name: str, root: Path) -> LabelSpace:
    """The label space of ``sset`` whose class folders ``found`` are under ``root``, for a model of ``n_model`` outputs.

    Raises:
        DTNBenchError: a folder outside the set's classes (ImageNet-A / -R: its 200 wnids; ImageNet-V2: an index
            0..999, not a wnid), a model without the 1000 ImageNet-1k outputs a masked set needs, or a model whose
            outputs do not match the set's classes (one line, naming the folder).
    """
    if sset.subset_of_1k:
        return _subset_space(sset, found, n_model, model_name, root)
    if sset.layout == INDEX_FOLDERS:
        return _index_space(sset, found, n_model, model_name, root)
    if n_model == 1000 and sset.wnids is not None:
        wnids = set(imagenet_wnids())
        unknown = [w for w in found if w not in wnids]
        if unknown:
            raise DTNBenchError(f"class folders under {root} are not ImageNet-1k wnids (e.g. {', '.join(unknown[:3])})"
                                f" but {model_name} has 1000 outputs; --num-classes {len(found)} builds a "
                                f"classifier for these classes")
        return imagenet_space()
    if n_model != len(found):
        raise DTNBenchError(f"class count mismatch: {sset.label} under {root} has {len(found)} class folders but the "
                            f"model predicts {n_model} classes ({model_name})")
    return LabelSpace(f"{len(found)} classes", tuple(found))


def _subset_space(sset: ShiftSet, found: Sequence[str], n_model: int, model_name: str, root: Path) -> LabelSpace:
    """ImageNet-A / -R: 200 of ImageNet-1k's wnids, scored through the mask of their 1000-class indices."""
    wnids = sset.wnids()
    if n_model != 1000:
        raise DTNBenchError(f"{model_name} predicts {n_model} classes but {sset.label} ({root}) is scored on "
                            f"{len(wnids)} of ImageNet-1k's 1000 classes: it needs a 1000-class ImageNet model")
    allowed = set(wnids)
    outside = [w for w in found if w not in allowed]
    if outside:
        raise DTNBenchError(f"{sset.label} folder {root / outside[0]} is not one of its {len(wnids)} classes (timm's "
                            f"{sset.name.replace('-', '_')}_synsets.txt; {len(outside)} such folder(s))")
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    return LabelSpace(sset.classes, tuple(wnids), tuple(index[w] for w in wnids))


def _index_space(sset: ShiftSet, found: Sequence[str], n_model: int, model_name: str, root: Path) -> LabelSpace:
    """ImageNet-V2: class folders named by class index; the label is ``int(folder)``."""
    for name in found:
        if not name.isdigit():
            kind = "by wnid" if name.startswith("n") and name[1:].isdigit() else f"{name!r}"
            raise DTNBenchError(f"{sset.label} class folder {root / name} is named {kind}; the release names class "
                                f"folders by class index 0..999 (ImageNetV2's labels are int(folder name))")
        if int(name) >= n_model or str(int(name)) != name:
            raise DTNBenchError(f"{sset.label} class folder {root / name} is not a class index 0..{n_model - 1} of "
                                f"{model_name}")
    if n_model == 1000:
        return LabelSpace("ImageNet-1k", tuple(str(i) for i in range(1000)))
    return LabelSpace(f"{n_model} classes", tuple(str(i) for i in range(n_model)))


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Unit:
    """One unit of work: a corruption x severity pair or a split, its images, their labels, the logits it scores.

    Attributes:
        set: the set's name (``imagenet-c``).
        classes: the label space's name (``ImageNet-1k``, ``ImageNet-A 200``).
        corruption: the corruption (:data:`~dtn_bench.shifts.sets.NO_CORRUPTION` for a split; ``clean`` for
            ImageNet-C's clean set).
        severity: 1..5 (0 for a split or a clean set).
        source: the images, in evaluation order.
        labels: one label per image (within the scored outputs).
        mask: the model outputs scored (``None``: all).
        label: how progress names it (``fog/3``).
    """

    set: str
    classes: str
    corruption: str
    severity: int
    source: Source
    labels: np.ndarray
    mask: tuple[int, ...] | None = None
    label: str = ""

    @property
    def names(self) -> list[str]:
        """The images' names (``wnid/name``), in evaluation order."""
        return self.source.names

    def __len__(self) -> int:
        return len(self.source)


def folder_unit(sset: ShiftSet, space: LabelSpace, root: Path, paths: Sequence[str], transform: str, *,
                corruption: str = NO_CORRUPTION, severity: int = 0, label: str = "") -> Unit:
    """A unit of image files ``root/<class folder>/<name>`` labelled through ``space``."""
    index = space.index()
    labels = np.array([index[p.split("/", 1)[0]] for p in paths], dtype=np.int64)
    return Unit(sset.name, space.name, corruption, severity, FileSource(root, paths, transform), labels, space.mask,
                label or (sset.name if corruption == NO_CORRUPTION else f"{corruption}/{severity}"))


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs (nothing here changes a number, apart from ``amp`` and ``allow_resize``).

    Attributes:
        batch_size: images per batch.
        workers: DataLoader worker processes (0: decode in the main process).
        device: the torch device of this process.
        amp: ``None`` or ``"bf16"`` (autocast).
        strict: an unreadable image is fatal instead of counted.
        allow_resize: resize as-released images whose size is not the model's (changes results).
        strict_reason: why an unreadable image is fatal, in its message.
    """

    batch_size: int = 64
    workers: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: str | None = None
    strict: bool = False
    allow_resize: bool = False
    strict_reason: str = ("--strict; without it unreadable images are counted, named in the rows and left out of the "
                          "error")


@dataclass
class Plan:
    """Everything the loop needs, checked.

    Attributes:
        config: the settings the user gave (a suite's frozen config).
        provenance: what the plan found (weights' and lists' SHA-256, data labels, resolved paths, transforms).
        model: the model in eval mode.
        model_name: its name (for messages).
        norm_label: the normaliser the rows name.
        units: the units, in evaluation order.
        input: the model's input.
        loop: the loop's settings.
        warnings: one-line warnings for the caller; notes: one-line notes.
        size_error: ``size_error(where, (h, w))`` -> the fatal message of an image of the wrong size.
    """

    config: Any
    provenance: dict[str, Any]
    model: torch.nn.Module
    model_name: str
    norm_label: str
    units: list[Unit]
    input: ModelInput
    loop: LoopSettings
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    size_error: Callable[[str, tuple[int, int]], str] | None = None

    @property
    def images(self) -> int:
        """Images over all units."""
        return sum(len(u) for u in self.units)

    def messages(self) -> list:
        """The plan's warnings and notes as events (:class:`~dtn_bench.events.Warn`, then :class:`~.events.Note`)."""
        from dtn_bench.events import Note, Warn

        return [Warn(m) for m in self.warnings] + [Note(m) for m in self.notes]


def released_size_error(label: str, model_name: str, size: tuple[int, int]) -> Callable[[str, tuple[int, int]], str]:
    """The message of an as-released image whose size is not the model's (``--allow-resize`` resizes)."""

    def message(where: str, hw: tuple[int, int]) -> str:
        return (f"{where} is {hw[0]}x{hw[1]} but {model_name} takes {size[0]}x{size[1]}: {label} is evaluated as "
                f"released (no resize); --allow-resize resizes the images to the model (this changes results)")

    return message


def check_first_sizes(units: Sequence[Unit], size: tuple[int, int], message) -> None:
    """The first image of each as-released file unit must have the model's size (read from its header)."""
    from dtn_bench.shifts.loader import FileSource, image_size
    from dtn_bench.shifts.sets import AS_RELEASED

    for u in units:
        if isinstance(u.source, FileSource) and u.source.transform == AS_RELEASED and len(u):
            where = u.source.where(0)
            hw = image_size(where)
            if hw != (0, 0) and hw != tuple(size):
                raise DTNBenchError(message(where, hw))


def check_counts(**values: int | None) -> None:
    """``--name must be > 0, got value`` for the first count that is not positive (``workers`` may be 0)."""
    for name, value in values.items():
        low, op = (0, ">=") if name == "workers" else (0, ">")
        if value is not None and (value < low if op == ">=" else value <= low):
            raise DTNBenchError(f"--{name.replace('_', '-')} must be {op} {low}, got {value}")


def scan_subset(paths: list[str], *, subset: int | None, subset_seed: int, entries: Sequence[str] | None,
                where: str) -> list[str]:
    """The images of a unit after ``--subset`` (a class-stratified sample) or a subset file's ``entries``."""
    if subset is not None:
        return L.stratified_subset(paths, subset, subset_seed)
    if entries is not None:
        return L.apply_subset_file(paths, entries, where)
    return list(paths)
