"""ImageNet-C on the evaluation engine: its config, its plan (the ImageNet-C description's units) and its rows.

Flow: :class:`ImageNetCConfig` (the settings given) -> :func:`plan` (model, weights, layout, classes, input size,
subset: every problem a one-line :class:`~dtn_bench.errors.DTNBenchError` raised here; what it finds is the plan's
``provenance``) -> :func:`measure` (the ``imagenet-c`` suite's ``run``: the engine's loop,
:mod:`dtn_bench.shifts.measure`, over the (corruption, severity) pairs) under :func:`~dtn_bench.runner.run_suite`,
which writes the rows (rank 0), resumes (finished pairs come in ``ctx.done``) and renders the report. Rows hold
measurements only; CE, mCE and relative mCE are computed by the report. Sharding, the per-image bits and the
accuracy routine are the engine's (:mod:`dtn_bench.shifts.loop`).

A run is keyed on the settings given and on what the plan found (:func:`dtn_bench.runner.run_key`): the weights'
SHA-256 (``checkpoint_sha256``; ``random init (seed N)`` without a checkpoint, the model then built under
``torch.manual_seed(seed)`` on every rank), which weights (``ema`` / ``raw`` / ``pretrained``), the subset list's
SHA-256, the data's label and resolved folders. The default run id contains the key, and a resumed run whose
settings or provenance differ is refused, so results of different settings never mix. ``weights_source`` /
``weights_sha256`` say where the weights came from in every row: ``checkpoint:PATH``, timm's pretrained release
(``--pretrained``: ``timm:<architecture>.<tag>``) or a local file through timm's loader (``--pretrained-file``:
``file:PATH``).

The number of processes is recorded as ``world_size`` in ``config.json`` (the session that made the folder) and
``env.json`` (the latest session); it is not part of the run key: the sharding is exact, so no number depends on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dtn_bench.distributed import check_device_amp, default_device
from dtn_bench.errors import DTNBenchError
from dtn_bench.imagenet_c import data as D
from dtn_bench.metrics import (
    CORRUPTIONS,
    ROBUSTBENCH_SUBSET_LABEL,
    ROBUSTBENCH_SUBSET_SHA256,
    SEVERITIES,
    subset_list_sha256,
)
from dtn_bench.results.schema import make_row
from dtn_bench.runner import PresetConfig, run_key
from dtn_bench.shifts import plan as P
from dtn_bench.shifts.measure import Filing
from dtn_bench.shifts.measure import measure as measure_units
from dtn_bench.shifts.sets import AS_RELEASED, IMAGENET_C_RECIPE, SETS

SUITE = "imagenet-c"
DEMO_LABEL = "demo data - not ImageNet-C"
RELEASED_LABEL = "ImageNet-C"
CLEAN = "clean"
RESUME_IGNORED = ("resume", "run_id", "debug", "batch_size", "workers", "strict", "checkpoint", "ema",
                  "pretrained_file", "weights_source", "data_dir", "clean_dir")
"""Config keys that may differ when a run is resumed (they do not change any number; a file's path does not, its
SHA-256 and the resolved data folders, which the plan records and the run key hashes, do)."""
random_init_label = P.random_init_label
model_classes = P.model_classes
imagenet_wnids = D.imagenet_wnids


def default_workers() -> int:
    """DataLoader workers: half the CPU cores, 1 to 8."""
    return min(8, max(1, (os.cpu_count() or 2) // 2))


def check_data_label(label: str | None) -> None:
    """A one-line error for a ``--data-label`` that is empty or spans lines (``None``: not given, fine)."""
    if label is not None and (not label.strip() or "\n" in label):
        raise DTNBenchError(f"--data-label {label!r}: give a non-empty one-line label")


def check_count(name: str, value: int | None, low: int = 0, op: str = ">") -> None:
    """``--name must be > low, got value`` (``op`` ``>=``: at least ``low``) unless ``value`` is ``None``."""
    if value is not None and (value < low if op == ">=" else value <= low):
        raise DTNBenchError(f"--{name.replace('_', '-')} must be {op} {low}, got {value}")


@dataclass(frozen=True)
class ImageNetCConfig(P.ModelSettings, PresetConfig):
    """Settings of one ImageNet-C evaluation, as given (what the plan finds is its provenance, beside it).

    ``ImageNetCConfig.from_preset(None, **flags)`` builds one from the flags that were given (there are no presets:
    the defaults below decide the rest).

    The model and weights settings (``model``, ``norm``, ``checkpoint``, ``ema``, ``pretrained``, ``pretrained_file``,
    ``num_classes``, ``placement``) are :class:`~dtn_bench.shifts.plan.ModelSettings`'.

    Attributes:
        data_dir: the ImageNet-C folder.
        clean_dir: clean ImageNet val folder (``<val>/<wnid>/<image>``), evaluated as pair ``("clean", 0)``.
        clean_error: the model's clean top-1 error (a fraction) when no ``clean_dir`` is given.
        corruptions: corruption names, canonical order.
        severities: severities 1..5.
        subset: evaluate a class-stratified sample of this many images per pair
            (:func:`~dtn_bench.shifts.layout.stratified_subset`).
        subset_file: evaluate the images listed in this file; its SHA-256 keys the run.
        subset_seed: seed of the ``subset`` sample.
        batch_size: images per batch.
        workers: DataLoader worker processes (0: decode in the main process; default :func:`default_workers`).
        device: ``auto``, ``cpu`` or ``cuda`` (under torchrun each rank takes ``cuda:LOCAL_RANK``; default
            :func:`~dtn_bench.distributed.default_device`).
        amp: ``None`` or ``"bf16"`` (autocast).
        strict: an unreadable image is fatal instead of counted.
        allow_resize: resize images whose size is not the model's input size (changes results; off by default).
        data_label: what the data is, shown in every row and table; ``None``: found by :func:`plan`
            (:func:`~.data.data_label`: data made by ``dtn-bench corrupt`` says so, else ``ImageNet-C``).
        demo: the data was made by ``--demo``.
        seed: seed of the demo data and demo model, and of the random weights when there is no checkpoint.
    """

    SUITE = SUITE

    data_dir: str | None = None
    clean_dir: str | None = None
    clean_error: float | None = None
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    subset: int | None = None
    subset_file: str | None = None
    subset_seed: int = 0
    batch_size: int = 64
    workers: int = field(default_factory=default_workers)
    device: str = field(default_factory=default_device)
    amp: str | None = None
    strict: bool = False
    allow_resize: bool = False
    data_label: str | None = None
    demo: bool = False
    seed: int = 0

    def validate(self) -> None:
        """One-line errors for settings that cannot work together (the weights, the data, the counts, the device)."""
        self.check_weights()
        if self.data_dir is None:
            raise DTNBenchError(f"no --data-dir given. {D.DOWNLOAD_HINT}")
        check_data_label(self.data_label)
        if self.clean_dir is not None and self.clean_error is not None:
            raise DTNBenchError("give either --clean-dir or --clean-error, not both")
        if self.subset is not None and self.subset_file is not None:
            raise DTNBenchError("give either --subset or --subset-file, not both")
        # the messages name the flag alone (no command prefix), as this command's errors always have
        check_count("subset", self.subset)
        if self.clean_error is not None and not 0.0 <= self.clean_error <= 1.0:
            raise DTNBenchError(f"--clean-error {self.clean_error} is not a fraction in [0, 1]")
        check_count("batch_size", self.batch_size)
        check_count("workers", self.workers, 0, ">=")
        check_count("num_classes", self.num_classes)
        check_device_amp(self.device, self.amp)

    def run_key(self, provenance: dict[str, Any] | None = None) -> str:
        """SHA-256 (hex) of every setting and every plan finding that can change a number."""
        return run_key(self.as_dict(), provenance or {}, RESUME_IGNORED)

    def default_run_id(self, provenance: dict[str, Any] | None = None) -> str:
        """``<model>[-<norm>][-<placement>][-demo]-<first 10 hex of the run key>``: same settings, same folder.

        The placement is in the id when it is not ``pre``.
        """
        parts = P.run_id_parts(self) + (["demo"] if self.demo else [])
        return "-".join(parts + [self.run_key(provenance)[:10]])

    def subset_label(self, provenance: dict[str, Any] | None = None) -> str:
        """What images of each pair are evaluated: ``full``, a stratified subset, or a subset file (with its hash)."""
        if self.subset is not None:
            return f"subset {self.subset}/pair, class-stratified (seed {self.subset_seed})"
        if self.subset_file is not None:
            if (provenance or {}).get("subset_list_sha256") == ROBUSTBENCH_SUBSET_SHA256:
                return f"{ROBUSTBENCH_SUBSET_LABEL} ({Path(self.subset_file).name})"
            digest = (provenance or {}).get("subset_file_sha256")
            return f"subset file {Path(self.subset_file).name}" + (f" sha256 {digest[:8]}" if digest else "")
        return "full"

    def data_name(self, provenance: dict[str, Any] | None = None) -> str:
        """The data label with the subset, as shown in tables (e.g. ``ImageNet-C (subset 5000/pair, ...)``)."""
        label = self.data_label or (provenance or {}).get("data_label_found") or RELEASED_LABEL
        subset = self.subset_label(provenance)
        return label if subset == "full" else f"{label} ({subset})"


def build_model(cfg: ImageNetCConfig, *, debug: bool = False) -> tuple[torch.nn.Module, dict[str, str]]:
    """The model of ``cfg`` in eval mode with its weights loaded, and their provenance entries (``weights``, ...).

    See :func:`dtn_bench.shifts.plan.build_model`.
    """
    model, weights = P.build_model(cfg.model_spec(), debug=debug)
    return model, weights.provenance()


def model_input(model: torch.nn.Module) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """(input height/width, mean, std) of a timm model (:func:`dtn_bench.shifts.plan.model_input`)."""
    given = P.model_input(model)
    return given.size, given.mean, given.std


def check_classes(data_classes: tuple[str, ...], n_model: int, model_name: str, root: Path) -> P.LabelSpace:
    """The data's wnids against the model: same count; with 1,000 outputs, exactly the ImageNet-1k wnids."""
    space = P.label_space(SETS[SUITE], data_classes, n_model, model_name, root)
    missing = [w for w in space.folders if w not in set(data_classes)]
    if missing:
        raise DTNBenchError(f"ImageNet-C data under {root} lacks {len(missing)} of the 1000 ImageNet-1k classes "
                            f"(e.g. {', '.join(missing[:3])})")
    return space


def loop_settings(cfg: ImageNetCConfig) -> P.LoopSettings:
    """The loop's settings of ``cfg`` (this process's device resolved)."""
    from dtn_bench.distributed import resolve_device

    return P.LoopSettings(cfg.batch_size, cfg.workers, resolve_device(cfg.device), cfg.amp, cfg.strict,
                          cfg.allow_resize)


def plan(cfg: ImageNetCConfig, *, debug: bool = False, progress: Callable[[int, int], None] | None = None) -> P.Plan:
    """Check everything before any work: settings, model and weights, layout, classes, image size, subset.

    Args:
        cfg: the settings.
        debug: list every mismatching key when a checkpoint does not fit.
        progress: called with (pairs scanned, pairs total) while the layout is read.

    Returns:
        The engine's :class:`~dtn_bench.shifts.plan.Plan`: the pairs as units, the provenance (weights' SHA-256, the
        subset list's SHA-256, the data's label, the resolved folders).
    """
    from dtn_bench.checkpoint import file_sha256

    cfg.validate()
    corruptions = D.resolve_corruptions(cfg.corruptions)
    severities = D.resolve_severities(cfg.severities)
    entries = D.read_subset_file(cfg.subset_file) if cfg.subset_file else None
    model, weights = P.build_model(cfg.model_spec(), debug=debug)
    data_path = Path(cfg.data_dir).resolve()
    provenance = {**weights.provenance(), "data_label_found": cfg.data_label or D.data_label(cfg.data_dir),
                  "data_path": str(data_path), "clean_path": str(Path(cfg.clean_dir).resolve()) if cfg.clean_dir
                  else None, "subset_file_sha256": file_sha256(cfg.subset_file) if cfg.subset_file else None,
                  "subset_list_sha256": subset_list_sha256(entries) if entries else None}
    n_model = P.model_classes(model)
    # a 1000-class model with a subset list: the copy may hold only the listed images (RobustBench's 5,000)
    partial = entries is not None and n_model == 1000
    layout = D.scan_layout(data_path, corruptions, severities, progress=progress,
                           classes=imagenet_wnids() if partial else None)
    space = check_classes(layout.classes, n_model, cfg.model, layout.root)
    given = P.model_input(model)
    select = lambda paths, where: P.scan_subset(paths, subset=cfg.subset, subset_seed=cfg.subset_seed,  # noqa: E731
                                                entries=entries, where=where)
    units: list[P.Unit] = []
    if cfg.clean_dir:
        paths = D.scan_clean(cfg.clean_dir, layout.classes, partial=partial)
        units.append(P.folder_unit(SETS[SUITE], space, Path(provenance["clean_path"]),
                                   select(paths, f"--clean-dir {cfg.clean_dir}"), IMAGENET_C_RECIPE,
                                   corruption=CLEAN, severity=0, label=f"{CLEAN}/0"))
    for c in corruptions:
        for s in severities:
            units.append(P.folder_unit(SETS[SUITE], space, layout.folders[(c, s)],
                                       select(layout.files[(c, s)], f"{c}/{s}"), AS_RELEASED, corruption=c,
                                       severity=s))
    size_error = P.released_size_error("ImageNet-C", cfg.model, given.size)
    if not cfg.allow_resize:
        P.check_first_sizes(units, given.size, size_error)
    return P.Plan(cfg, provenance, model, cfg.model, cfg.norm or P.own_norm(cfg.model), units, given,
                  loop_settings(cfg), list(weights.warnings), list(weights.notes), size_error)


def row_settings(cfg: ImageNetCConfig, provenance: dict[str, Any]) -> dict[str, Any]:
    """The setting columns every row of the run holds (data, subset, weights, autocast, resizing, placement)."""
    return dict(data=cfg.data_name(provenance), subset=cfg.subset_label(provenance),
                checkpoint_sha256=provenance["checkpoint_sha256"], weights=provenance["weights"],
                weights_source=provenance["weights_source"], weights_sha256=provenance["weights_sha256"],
                amp=cfg.amp or "fp32", allow_resize=cfg.allow_resize, placement=cfg.placement)


def _bad_name(unit: P.Unit, name: str) -> str:
    """How rows name an unreadable image: ``corruption/severity/wnid/name`` (``clean/wnid/name``)."""
    return f"{CLEAN}/{name}" if unit.corruption == CLEAN else f"{unit.corruption}/{unit.severity}/{name}"


FILING = Filing(key=lambda u: (u.corruption, u.severity), bad_name=_bad_name)
"""How imagenet-c files a pair: resume key ``(corruption, severity)``, bits under the same."""


def measure(p: P.Plan, ctx) -> Iterator[tuple[str, list[dict]]]:
    """The ``imagenet-c`` suite's measurement: ``(label, rows)`` per finished pair, in plan order.

    A given ``--clean-error`` comes first as the ``("clean", 0)`` row. Pairs in ``ctx.done`` are skipped. Every rank
    evaluates its shard of every pending pair and every rank yields the reduced rows (the runner writes rank 0's).

    Yields:
        ``("<corruption>/<severity>", rows)``: ``n_images``, ``n_unreadable``, ``top1_err``, ``top5_err`` (models
        with >= 5 classes) and ``throughput_img_s`` of the pair. Before a pair's rows are yielded, rank 0 writes its
        per-image correctness into ``ctx.run_dir`` (:func:`~dtn_bench.shifts.correctness.write_pair`).

    Events: :mod:`dtn_bench.shifts.measure`'s (pending, progress of the images, the warm-up estimate, each pair
    scored, the totals).
    """
    cfg = p.config
    common = row_settings(cfg, p.provenance)
    if cfg.clean_error is not None and not ctx.is_done(CLEAN, 0):
        yield f"{CLEAN} (given)", [make_row(SUITE, cfg.model, p.norm_label, "top1_err", cfg.clean_error,
                                            corruption=CLEAN, severity=0, source="given (--clean-error)", **common)]
    yield from measure_units(SUITE, p, ctx, common, FILING)


def pipeline_units(p: P.Plan, images: int) -> P.Plan:
    """The plan ``p`` cut to its first pair, a class-stratified sample of ``images`` of them when it has more."""
    from dtn_bench.shifts.layout import stratified_subset
    from dtn_bench.shifts.loader import FileSource

    u = p.units[0]
    if len(u) > images:
        names = stratified_subset(u.names, images)
        index = {n: i for i, n in enumerate(u.names)}
        u = replace(u, source=FileSource(u.source.root, names, u.source.transform),
                    labels=u.labels[[index[n] for n in names]])
    return replace(p, units=[u])
