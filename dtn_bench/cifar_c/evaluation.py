"""CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C on the evaluation engine: config, plan (the units), rows.

Flow: :class:`CifarCConfig` (the settings given) -> :func:`plan` (dataset, model, weights, layout, array shapes and
dtypes, labels, input size; every problem a one-line :class:`~dtn_bench.errors.DTNBenchError`; what it finds is the
plan's provenance) -> :func:`measure` (the ``cifar-c`` suite's ``run``: the engine's loop over the (corruption,
severity) pairs) under :func:`~dtn_bench.runner.run_suite`, which writes the rows (rank 0), resumes (finished pairs
arrive in ``ctx.done``) and renders the report.

Images are fed as released (no resize, no crop), scaled to ``[0, 1]`` and normalised with the model's mean / std
(``model.pretrained_cfg``, as timm resolves it), in the order of the arrays (or the sorted files). Sharding, top-1 /
top-5 and the per-image bits are the engine's (:mod:`dtn_bench.shifts.loop`); an unreadable or wrong-sized
Tiny-ImageNet-C file stops every rank with one message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dtn_bench.cifar_c import data as D
from dtn_bench.distributed import check_device_amp, default_device
from dtn_bench.errors import DTNBenchError
from dtn_bench.imagenet_c.evaluation import check_count, check_data_label
from dtn_bench.metrics import CORRUPTIONS, SEVERITIES
from dtn_bench.runner import PresetConfig, run_key
from dtn_bench.shifts import plan as P
from dtn_bench.shifts.loader import ArraySource
from dtn_bench.shifts.measure import Filing
from dtn_bench.shifts.measure import measure as measure_units
from dtn_bench.shifts.sets import AS_RELEASED

SUITE = "cifar-c"
CLEAN = "clean"
RESUME_IGNORED = ("batch_size", "checkpoint", "ema", "device", "data_dir", "clean_images", "clean_labels")
"""Config keys that may differ when a run is resumed (they change no number; the resolved data paths are keyed in the
provenance)."""


@dataclass(frozen=True)
class CifarCConfig(PresetConfig):
    """Settings of one CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C evaluation, as given.

    Attributes:
        model: small model (``vit_cifar_t_dtn``), zoo model or timm model name.
        dataset: ``cifar10``, ``cifar100`` or ``tiny-imagenet`` (:data:`~dtn_bench.cifar_c.data.DATASETS`).
        norm: registered normaliser put into the model.
        placement: where the normalisers sit in every block, ``pre`` / ``post`` / ``peri``
            (:mod:`dtn_bench.placement`); in rows, run key and run id (the id only when not ``pre``).
        checkpoint: weights file; its SHA-256 keys the run.
        ema: take the checkpoint's EMA weights when it has them.
        num_classes: classifier outputs (default: the dataset's, 10 / 100 / 200).
        data_dir: the data folder (``<corruption>.npy`` + ``labels.npy``, or Tiny-ImageNet-C's folders).
        clean_images: clean test images, ``uint8 [N, H, W, 3]`` ``.npy`` (evaluated as pair ``("clean", 0)``).
        clean_labels: their labels, ``[N]`` integers ``.npy``.
        corruptions: corruption names (default the 15; CIFAR-C also has the 4 extras).
        severities: severities 1..5.
        batch_size: images per batch.
        device: ``auto``, ``cpu`` or ``cuda`` (under torchrun each rank takes ``cuda:LOCAL_RANK``).
        amp: ``None`` or ``"bf16"``.
        data_label: what the data is called in rows and tables (default: the dataset's name).
        seed: seed of the random weights when there is no checkpoint.
    """

    SUITE = SUITE

    model: str = "vit_cifar_t_ln"
    dataset: str = "cifar10"
    norm: str | None = None
    placement: str = "pre"
    checkpoint: str | None = None
    ema: bool = True
    num_classes: int | None = None
    data_dir: str | None = None
    clean_images: str | None = None
    clean_labels: str | None = None
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    batch_size: int = 256
    device: str = field(default_factory=default_device)
    amp: str | None = None
    data_label: str | None = None
    seed: int = 0

    def validate(self) -> None:
        """One-line errors for settings that cannot work together."""
        from dtn_bench.placement import check_placement

        D.dataset_spec(self.dataset)
        check_placement(self.placement)
        if self.data_dir is None:
            raise DTNBenchError(f"no --data-dir given. {D.download_hint(self.dataset)}")
        if (self.clean_images is None) != (self.clean_labels is None):
            raise DTNBenchError("give --clean-images and --clean-labels together")
        check_data_label(self.data_label)
        check_count("batch_size", self.batch_size)
        check_count("num_classes", self.num_classes)
        check_device_amp(self.device, self.amp)

    def run_key(self, provenance: dict[str, Any] | None = None) -> str:
        """SHA-256 (hex) of every setting and plan finding that can change a number."""
        return run_key(self.as_dict(), provenance or {}, RESUME_IGNORED)

    def default_run_id(self, provenance: dict[str, Any] | None = None) -> str:
        """``<model>[-<norm>][-<placement>]-<dataset>-<first 10 hex of the run key>``: same settings, same folder.

        The placement is in the id when it is not ``pre``.
        """
        parts = P.run_id_parts(self) + [self.dataset]
        return "-".join(parts + [self.run_key(provenance)[:10]])

    @property
    def data_name(self) -> str:
        """The data as tables show it."""
        return self.data_label or D.dataset_spec(self.dataset).label


def build_model(cfg: CifarCConfig, classes: int, *, debug: bool = False) -> tuple[torch.nn.Module, dict[str, str]]:
    """The model of ``cfg`` with ``classes`` outputs in eval mode, weights loaded, and their provenance entries."""
    model, weights = P.build_model(P.ModelSpec(cfg.model, cfg.norm, cfg.checkpoint, cfg.ema, num_classes=classes,
                                               placement=cfg.placement, seed=cfg.seed), debug=debug)
    return model, weights.provenance()


def _size_error(label: str, size: int):
    def message(where: str, hw: tuple[int, int]) -> str:
        return f"{where} is {hw[0]}x{hw[1]}, expected {size}x{size} ({label} as released)"

    return message


def plan(cfg: CifarCConfig, *, debug: bool = False) -> P.Plan:
    """Check everything before any work: settings, model, checkpoint, data layout, arrays, labels, input size.

    Returns:
        The engine's :class:`~dtn_bench.shifts.plan.Plan`; its provenance holds the weights' SHA-256 and the resolved
        data paths.
    """
    from dtn_bench.distributed import resolve_device
    from dtn_bench.imagenet_c.data import resolve_corruptions, resolve_severities

    cfg.validate()
    spec = D.dataset_spec(cfg.dataset)
    corruptions = resolve_corruptions(cfg.corruptions)
    severities = resolve_severities(cfg.severities)
    model, weights = P.build_model(P.ModelSpec(cfg.model, cfg.norm, cfg.checkpoint, cfg.ema,
                                               num_classes=cfg.num_classes or spec.num_classes,
                                               placement=cfg.placement, seed=cfg.seed),
                                   debug=debug)
    n_model = P.model_classes(model)
    given = P.model_input(model)
    if given.size != (spec.size, spec.size):
        raise DTNBenchError(f"{cfg.model} takes {given.size[0]}x{given.size[1]} images but {spec.label} is "
                            f"{spec.size}x{spec.size} (evaluated as released, no resize): use a {spec.size} px model")
    root = Path(cfg.data_dir).resolve()
    provenance = {**weights.provenance(), "data_path": str(root),
                  "clean_path": str(Path(cfg.clean_images).resolve()) if cfg.clean_images else None}
    units = _clean_unit(cfg, n_model)
    if spec.layout == "arrays":
        arrays = D.check_arrays(root, corruptions, cfg.dataset, n_model)
        n = arrays.per_severity
        units += [P.Unit(spec.name, spec.classes, c, s, ArraySource(arrays.files[c], (s - 1) * n, n),
                         arrays.labels[(s - 1) * n:s * n], label=f"{c}/{s}") for c in corruptions for s in severities]
    else:
        layout = D.scan_folders(root, corruptions, severities, cfg.dataset)
        space = P.label_space(spec, layout.classes, n_model, cfg.model, root)
        units += [P.folder_unit(spec, space, layout.folders[(c, s)], layout.files[(c, s)], AS_RELEASED, corruption=c,
                                severity=s) for c in corruptions for s in severities]
    loop = P.LoopSettings(cfg.batch_size, 0, resolve_device(cfg.device), cfg.amp, strict=True,
                          strict_reason=f"{spec.label} as released")
    return P.Plan(cfg, provenance, model, cfg.model, cfg.norm or P.own_norm(cfg.model), units, given, loop,
                  list(weights.warnings), list(weights.notes), _size_error(spec.label, spec.size))


def _clean_unit(cfg: CifarCConfig, classes: int) -> list[P.Unit]:
    if cfg.clean_images is None:
        return []
    spec = D.dataset_spec(cfg.dataset)
    images, labels = D.load_clean(cfg.clean_images, cfg.clean_labels, cfg.dataset, classes)
    return [P.Unit(spec.name, spec.classes, CLEAN, 0, ArraySource(images.resolve(), 0, len(labels)),
                   np.asarray(labels), label=f"{CLEAN}/0")]


def row_settings(cfg: CifarCConfig, provenance: dict[str, Any]) -> dict[str, Any]:
    """The setting columns every row of the run holds."""
    return dict(dataset=cfg.dataset, data=cfg.data_name, checkpoint_sha256=provenance["checkpoint_sha256"],
                weights=provenance["weights"], amp=cfg.amp or "fp32", placement=cfg.placement)


FILING = Filing(key=lambda u: (u.corruption, u.severity), metrics=("n_images", "top1_err", "top5_err",
                                                                   "throughput_img_s"))
"""How cifar-c files a pair: resume key ``(corruption, severity)``; no unreadable count (an unreadable file is
fatal)."""


def measure(p: P.Plan, ctx) -> Iterator[tuple[str, list[dict]]]:
    """The ``cifar-c`` suite's measurement: ``(label, rows)`` per finished pair, in plan order.

    Pairs in ``ctx.done`` are skipped; every rank evaluates its shard of every pending pair and yields the summed
    rows (the runner writes rank 0's); rank 0 keeps each pair's per-image bits in the run folder.

    Yields:
        ``("<corruption>/<severity>", rows)``: ``n_images``, ``top1_err``, ``top5_err`` (models with >= 5 classes) and
        ``throughput_img_s`` of the pair.
    """
    yield from measure_units(SUITE, p, ctx, row_settings(p.config, p.provenance), FILING)
