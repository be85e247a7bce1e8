"""The ``shifts`` suite: one model on every set under shift found under a data root, one table.

``dtn-bench shifts --model M --data-root ROOT [--sets ...]`` (and :func:`evaluate` from Python) finds each set under
``ROOT`` by its folder name (:attr:`~dtn_bench.shifts.sets.ShiftSet.folders`, case ignored: ``imagenet-a``,
``imagenetv2-matched-frequency-format-val``, ``sketch``, ...) or takes the folder given for it (``--<set>-dir``),
plans every set (each layout and label space checked before any work) and measures them on the engine's loop. The
units of a run (its resume key ``set, classes, corruption, severity``):

- a set of one split: ``(set, its classes, none, 0)``;
- a corruption set: ``(set, its classes, corruption, severity)`` for its benchmark corruptions present (all 5
  severities, or those asked for);
- with clean ImageNet val and ImageNet-A / -R in the run: val over the 200 classes of A (and of R), scored through
  their masks, as timm's ``results-imagenet-{a,r}-clean.csv``: the clean top-1 each set's drop is taken from.

Images of ImageNet val (val itself and the corruption sets made from it) may be a class-stratified ``subset`` per
unit or a ``subset_file``'s list (RobustBench's 5,000: detected by its content, then the corruption sets' mCE is
normalised by AlexNet's errors on that subset). The report (:mod:`dtn_bench.shifts.report`) derives the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dtn_bench.distributed import check_device_amp, default_device
from dtn_bench.errors import DTNBenchError
from dtn_bench.events import Handler
from dtn_bench.metrics import ROBUSTBENCH_SUBSET_LABEL, ROBUSTBENCH_SUBSET_SHA256, SEVERITIES, subset_list_sha256
from dtn_bench.runner import PresetConfig, Report, Suite, run_key
from dtn_bench.shifts import layout as L
from dtn_bench.shifts import plan as P
from dtn_bench.shifts.loader import ArraySource, describe_transform
from dtn_bench.shifts.measure import Filing
from dtn_bench.shifts.measure import measure as measure_units
from dtn_bench.shifts.sets import (
    ARRAYS,
    AS_RELEASED,
    CORRUPTION_FOLDERS,
    MODEL_EVAL,
    SETS,
    ShiftSet,
    get_set,
    resolve_sets,
)
from dtn_bench.suites import register

SUITE = "shifts"
RESUME_KEY = ("set", "classes", "corruption", "severity")
RESUME_IGNORED = ("batch_size", "workers", "strict", "checkpoint", "ema", "pretrained_file", "data_root", "set_dirs")
"""Config keys that may differ when a run is resumed (the folders' resolved paths are keyed in the provenance)."""
VAL = "imagenet-val"
FROM_VAL = ("imagenet-val", "imagenet-c", "imagenet-3dcc", "imagenet-c-bar")
"""The sets whose images are ImageNet val's (``subset`` / ``subset_file`` select among them)."""


def _default_workers() -> int:
    from dtn_bench.imagenet_c.evaluation import default_workers

    return default_workers()


@dataclass(frozen=True)
class ShiftsConfig(P.ModelSettings, PresetConfig):
    """Settings of one ``shifts`` run, as given (the plan's findings are its provenance).

    The model and weights settings are :class:`~dtn_bench.shifts.plan.ModelSettings`'.

    Attributes:
        data_root: the folder the sets are found under.
        sets: the sets to evaluate (``()``: every set found under ``data_root``).
        set_dirs: ``set -> folder`` for sets given by their own folder (``--<set>-dir``).
        severities: severities of the corruption sets.
        subset: a class-stratified sample of this many images per unit of ImageNet val's sets.
        subset_file: the images of ImageNet val's sets to evaluate (``wnid/name`` per line; RobustBench's 5,000).
        subset_seed: seed of the ``subset`` sample.
        batch_size: images per batch.
        workers: DataLoader worker processes.
        device: ``auto``, ``cpu`` or ``cuda``.
        amp: ``None`` or ``"bf16"``.
        strict: an unreadable image is fatal instead of counted.
        allow_resize: resize as-released images whose size is not the model's (changes results).
        demo: the data were made by ``--demo`` (labelled so in every row).
        seed: seed of the random weights without a checkpoint.
    """

    SUITE = SUITE

    data_root: str | None = None
    sets: tuple[str, ...] = ()
    set_dirs: Mapping[str, str] = field(default_factory=dict)
    severities: tuple[int, ...] = SEVERITIES
    subset: int | None = None
    subset_file: str | None = None
    subset_seed: int = 0
    batch_size: int = 64
    workers: int = field(default_factory=_default_workers)
    device: str = field(default_factory=default_device)
    amp: str | None = None
    strict: bool = False
    allow_resize: bool = False
    demo: bool = False
    seed: int = 0

    def validate(self) -> None:
        """One-line errors for settings that cannot work together."""
        self.check_weights()
        resolve_sets(self.sets)
        for name in self.set_dirs:
            get_set(name, flag=f"--{name}-dir")
        if self.data_root is None and not self.set_dirs:
            raise DTNBenchError("shifts: give --data-root (the folder holding the sets) or a --<set>-dir")
        if self.subset is not None and self.subset_file is not None:
            raise DTNBenchError("give either --subset or --subset-file, not both")
        P.check_counts(subset=self.subset, batch_size=self.batch_size, workers=self.workers,
                       num_classes=self.num_classes)
        from dtn_bench.imagenet_c.data import resolve_severities

        resolve_severities(self.severities)
        check_device_amp(self.device, self.amp)

    def default_run_id(self, provenance: dict[str, Any] | None = None) -> str:
        """``<model>[-<norm>][-<placement>][-demo]-<first 10 hex of the run key>``: same settings, same folder.

        The placement is in the id when it is not ``pre``.
        """
        parts = P.run_id_parts(self) + (["demo"] if self.demo else [])
        return "-".join(parts + [run_key(self.as_dict(), provenance or {}, RESUME_IGNORED)[:10]])


# ------------------------------------------------------------------------------------------------------------------
def find_sets(cfg: ShiftsConfig) -> list[tuple[ShiftSet, Path]]:
    """The sets of the run and their folders, in table order.

    A set's folder is its ``--<set>-dir``, else the folder under ``data_root`` named as the set is released (case
    ignored).

    Raises:
        DTNBenchError: a set asked for (``--sets``) and not found under the root, a ``--<set>-dir`` that is not a
            folder, or no set found at all.
    """
    root = Path(cfg.data_root) if cfg.data_root is not None else None
    if root is not None:
        L.check_root(root, "--data-root")
    present = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root is not None else {}
    wanted = resolve_sets(cfg.sets) if cfg.sets else tuple(SETS.values())
    found = []
    for s in wanted:
        if s.name in cfg.set_dirs:
            path = Path(cfg.set_dirs[s.name])
            L.check_root(path, f"--{s.name}-dir", s.download_hint())
            found.append((s, path))
            continue
        path = next((present[f] for f in s.folders if f in present), None)
        if path is not None:
            found.append((s, path))
        elif cfg.sets:
            where = f"under --data-root {root}" if root is not None else "(no --data-root)"
            raise DTNBenchError(f"--sets {s.name}: not found {where} (looked for a folder named "
                                f"{' or '.join(s.folders)}; or give --{s.name}-dir). {s.download_hint()}")
    extra = [(get_set(n), Path(p)) for n, p in cfg.set_dirs.items() if not any(s.name == n for s, _ in found)]
    for s, path in extra:
        L.check_root(path, f"--{s.name}-dir", s.download_hint())
    found = sorted(found + extra, key=lambda sp: list(SETS).index(sp[0].name))
    if not found:
        names = ", ".join(f for s in SETS.values() for f in s.folders[:1])
        raise DTNBenchError(f"no set found under --data-root {root}: expected folders named as the releases ({names})")
    return found


@dataclass
class _Context:
    """What planning a set needs: the config, the model, its outputs and input, the subset list."""

    cfg: ShiftsConfig
    n_model: int
    given: P.ModelInput
    entries: list[str] | None
    subset_label: str
    warnings: list[str]

    def select(self, sset: ShiftSet, paths: list[str], where: str) -> list[str]:
        """The images of a unit of ``sset`` after the subset (ImageNet val's sets only)."""
        if sset.name not in FROM_VAL:
            return list(paths)
        return P.scan_subset(paths, subset=self.cfg.subset, subset_seed=self.cfg.subset_seed, entries=self.entries,
                             where=where)


def _corruption_units(sset: ShiftSet, root: Path, c: _Context) -> list[P.Unit]:
    """The pairs of a corruption set: its benchmark corruptions present under ``root``, all severities asked for."""
    from dtn_bench.imagenet_c.data import resolve_severities

    L.check_root(root, f"{sset.label} folder")
    present = _present(sset, root, [k for k in sset.benchmark if (root / k).is_dir()], c,
                       f"{sset.benchmark[0]}/1/<wnid>/<image>; expected <corruption>/<severity>/<wnid>/<image>")
    severities = resolve_severities(c.cfg.severities)
    partial = c.entries is not None and c.n_model == 1000 and sset.wnids is not None
    layout = L.scan_layout(root, present, severities, label=sset.label, flag=f"{sset.label} folder",
                           severity_folders=sset.severity_folder, known=sset.corruptions,
                           classes=P.imagenet_space().folders if partial else None)
    space = P.label_space(sset, layout.classes, c.n_model, c.cfg.model, root)
    missing = [w for w in space.folders if w not in set(layout.classes)]
    if missing and not partial and space.mask is None:
        raise DTNBenchError(f"{sset.label} data under {root} lacks {len(missing)} of the {len(space.folders)} "
                            f"{space.name} classes (e.g. {', '.join(missing[:3])})")
    return [P.folder_unit(sset, space, layout.folders[(k, s)], c.select(sset, layout.files[(k, s)], f"{k}/{s}"),
                          AS_RELEASED, corruption=k, severity=s, label=f"{sset.name} {k}/{s}")
            for k in present for s in severities]


def _split_units(sset: ShiftSet, root: Path, c: _Context) -> tuple[list[P.Unit], P.LabelSpace, dict]:
    """The one unit of a split (class or index folders), its label space and its ``{class: names}``."""
    found = L.scan_split(root, sset.label, f"{sset.label} folder", sset.download_hint())
    space = P.label_space(sset, list(found), c.n_model, c.cfg.model, root)
    missing = [f for f in space.folders if f not in found]
    if missing and space.mask is None:
        c.warnings.append(f"{sset.label} under {root} holds {len(found)} of the {len(space.folders)} {space.name} "
                          f"classes: its top-1 is over those")
    paths = [f"{k}/{n}" for k in space.folders if k in found for n in found[k]]
    unit = P.folder_unit(sset, space, root, c.select(sset, paths, sset.label), MODEL_EVAL)
    return [unit], space, found


def _array_units(sset: ShiftSet, root: Path, c: _Context) -> list[P.Unit]:
    """The pairs of a CIFAR-C folder: its benchmark corruptions present, the severities asked for."""
    from dtn_bench.imagenet_c.data import resolve_severities

    present = _present(sset, root, [k for k in sset.benchmark if (root / f"{k}.npy").is_file()], c,
                       f"{sset.benchmark[0]}.npy and labels.npy")
    if c.given.size != (sset.size, sset.size):
        raise DTNBenchError(f"{c.cfg.model} takes {c.given.size[0]}x{c.given.size[1]} images but {sset.label} "
                            f"({root}) is {sset.size}x{sset.size} (evaluated as released, no resize)")
    arrays = L.check_arrays(root, present, label=sset.label, size=sset.size, classes=c.n_model,
                            hint=sset.download_hint(), flag=f"{sset.label} folder")
    n = arrays.per_severity
    return [P.Unit(sset.name, sset.classes, k, s, ArraySource(arrays.files[k], (s - 1) * n, n),
                   arrays.labels[(s - 1) * n:s * n], label=f"{sset.name} {k}/{s}")
            for k in present for s in resolve_severities(c.cfg.severities)]


def _present(sset: ShiftSet, root: Path, present: list[str], c: _Context, example: str) -> list[str]:
    """The benchmark corruptions found (a warning when some are missing; none is a layout error)."""
    if not present:
        raise DTNBenchError(f"wrong layout: {sset.label} folder {root} holds none of its corruptions (e.g. {example})")
    if len(present) < len(sset.benchmark):
        c.warnings.append(f"{sset.label} under {root} holds {len(present)} of its {len(sset.benchmark)} corruptions "
                          f"(missing {L.more([k for k in sset.benchmark if k not in present])}): its mean covers "
                          f"those present")
    return present


def _masked_val(val: P.Unit, found: dict, masked: Sequence[P.LabelSpace], c: _Context) -> list[P.Unit]:
    """Clean val over the classes of each masked set (ImageNet-A / -R), scored through its mask."""
    out = []
    for space in masked:
        paths = [f"{w}/{n}" for w in space.folders if w in found for n in found[w]]
        if not paths:
            continue
        names = c.select(SETS[VAL], paths, f"{SETS[VAL].label} ({space.name})")
        out.append(P.folder_unit(SETS[VAL], space, val.source.root, names, MODEL_EVAL, label=f"{VAL} ({space.name})"))
    return out


GENERATED = "generated by dtn-bench corrupt{seed} - not the released {label}"
"""The data label of a set folder that ``dtn-bench corrupt`` wrote (its manifest at the folder's root)."""


def generated_label(sset: ShiftSet, root: Path) -> str | None:
    """The label of a set ``dtn-bench corrupt`` generated under ``root``, else ``None`` (a release).

    The manifest names what was made (``format``: ``cifar10-c``, ``imagenet-c-bar``, ...; else ``set``; files written
    before either was recorded are ImageNet-C).

    Raises:
        DTNBenchError: the folder holds another set than the one it is evaluated as.
    """
    from dtn_bench.data.corruptions import MANIFEST_NAME
    from dtn_bench.imagenet_c.data import read_corrupt_manifest

    manifest = read_corrupt_manifest(root) if sset.corruptions else None
    if manifest is None:
        return None
    made = manifest.get("format") or manifest.get("set") or "imagenet-c"
    if made != sset.name:
        raise DTNBenchError(f"{sset.label} folder {root} holds {made} written by dtn-bench corrupt ({MANIFEST_NAME}), "
                            f"not {sset.label}: give it as --{made}-dir or rename the folder")
    seed = manifest.get("seed")
    return GENERATED.format(seed=f" (seed {seed})" if isinstance(seed, int) else "", label=sset.label)


def _subset_label(cfg: ShiftsConfig, entries: list[str] | None) -> str:
    if cfg.subset is not None:
        return f"subset {cfg.subset}/unit, class-stratified (seed {cfg.subset_seed})"
    if entries is not None:
        if subset_list_sha256(entries) == ROBUSTBENCH_SUBSET_SHA256:
            return ROBUSTBENCH_SUBSET_LABEL
        return f"subset file {Path(cfg.subset_file).name} sha256 {subset_list_sha256(entries)[:8]}"
    return "full"


def plan(cfg: ShiftsConfig, *, debug: bool = False) -> P.Plan:
    """Find the sets, check each one's layout and label space against the model, list their units.

    Raises:
        DTNBenchError: anything wrong with the settings, the model, the weights or a set's folder (one line naming it).
    """
    from dtn_bench.distributed import resolve_device

    cfg.validate()
    found = find_sets(cfg)
    entries = L.read_subset_file(cfg.subset_file) if cfg.subset_file else None
    model, weights = P.build_model(cfg.model_spec(), debug=debug)
    c = _Context(cfg, P.model_classes(model), P.model_input(model), entries, _subset_label(cfg, entries),
                 list(weights.warnings))
    units, masked, val, val_found, transforms = [], [], None, {}, {}
    generated = {sset.name: label for sset, root in found if (label := generated_label(sset, root)) is not None}
    for sset, root in found:
        if sset.layout == CORRUPTION_FOLDERS:
            units += _corruption_units(sset, root, c)
        elif sset.layout == ARRAYS:
            units += _array_units(sset, root, c)
        else:
            split, space, names = _split_units(sset, root, c)
            units += split
            if sset.name == VAL:
                val, val_found = split[0], names
            if space.mask is not None:
                masked.append(space)
        transforms[sset.name] = (describe_transform(c.given.data_config) if sset.transform == MODEL_EVAL
                                 else AS_RELEASED)
    if val is not None and masked:
        units += _masked_val(val, val_found, masked, c)
    size_error = P.released_size_error("this set", cfg.model, c.given.size)
    if not cfg.allow_resize:
        P.check_first_sizes(units, c.given.size, size_error)
    provenance = {**weights.provenance(), "set_folders": {s.name: str(Path(r).resolve()) for s, r in found},
                  "transforms": transforms, "generated": generated, "subset_label": c.subset_label,
                  "subset_list_sha256": subset_list_sha256(entries) if entries else None}
    loop = P.LoopSettings(cfg.batch_size, cfg.workers, resolve_device(cfg.device), cfg.amp, cfg.strict,
                          cfg.allow_resize)
    return P.Plan(cfg, provenance, model, cfg.model, cfg.norm or P.own_norm(cfg.model), units, c.given, loop,
                  c.warnings, list(weights.notes), size_error)


# ------------------------------------------------------------------------------------------------------------------
DEMO_SUFFIX = " (demo stand-in: procedural images, not the release)"


def _settings(p: P.Plan):
    """The setting columns of a unit's rows: set, classes, corruption, severity, data, transform.

    ``data`` is the set's label, with ``demo stand-in`` for the demo's sets and ``generated by dtn-bench corrupt``
    for a set that command wrote.
    """
    demo, generated = p.config.demo, p.provenance.get("generated") or {}

    def data(name: str) -> str:
        if demo:
            return SETS[name].label + DEMO_SUFFIX
        return SETS[name].label + (f" ({generated[name]})" if name in generated else "")

    def settings(u: P.Unit) -> dict[str, Any]:
        return dict(set=u.set, classes=u.classes, corruption=u.corruption, severity=u.severity, data=data(u.set),
                    transform=p.provenance["transforms"].get(u.set, AS_RELEASED))

    return settings


def row_settings(cfg: ShiftsConfig, provenance: dict[str, Any]) -> dict[str, Any]:
    """The setting columns every row of the run holds (subset, weights, autocast, resizing, placement)."""
    return dict(subset=provenance["subset_label"], checkpoint_sha256=provenance["checkpoint_sha256"],
                weights=provenance["weights"], weights_source=provenance["weights_source"],
                weights_sha256=provenance["weights_sha256"], amp=cfg.amp or "fp32", allow_resize=cfg.allow_resize,
                placement=cfg.placement)


def measure(p: P.Plan, ctx) -> Iterator[tuple[str, list[dict]]]:
    """The ``shifts`` suite's measurement: ``(label, rows)`` per finished unit (engine loop, bits, events)."""
    filing = Filing(key=lambda u: (u.set, u.classes, u.corruption, u.severity),
                    identity=lambda u: {"set": u.set, "classes": u.classes}, settings=_settings(p))
    yield from measure_units(SUITE, p, ctx, row_settings(p.config, p.provenance), filing)


def _report() -> Report:
    from dtn_bench.shifts import report

    return report.SHIFTS_REPORT


SHIFTS_SUITE = register(Suite(
    SUITE, "Image classification under distribution shift: one model on ImageNet val, -C, -3DCC, -C-bar, -A, -R, "
    "-Sketch, -V2 and CIFAR/Tiny-ImageNet-C found under a data root (top-1, top-5, the drop from clean, mCE with its "
    "normalisation)",
    {"top1_err": False, "top5_err": False, "throughput_img_s": True},
    ShiftsConfig, measure, _report(), command="shifts", resume_key=RESUME_KEY,
    steps=None, resume_ignored=RESUME_IGNORED, env=lambda cfg, world: {"world_size": world},
    device=lambda cfg, rank: str(_resolve(cfg.device)), distributed=True, plan=plan,
    table_help="Combine shifts runs into one table: per model, clean top-1 and per set its headline metric (mCE "
    "with the normalisation it used, or top-1) and the drop from clean (timm's top1_diff); with two or more models, "
    "the paired bootstrap 95% interval of each one's difference from the first given, over the images both hold "
    "(--n-boot resamples), printed after the table and written as paired.md/.tex/.csv."))


def _resolve(device: str):
    from dtn_bench.distributed import resolve_device

    return resolve_device(device)


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class ShiftsResult:
    """What :func:`evaluate` returns (on rank 0; other ranks get ``path=None`` and empty rows).

    Attributes:
        path: the run folder (rows, config.json with the plan's provenance, table.md/.tex/.csv, correct/).
        rows: all rows of the run.
        table: the ``shifts`` table of the run (:func:`dtn_bench.shifts.report.shifts_table`).
    """

    path: Path | None
    rows: pd.DataFrame
    table: pd.DataFrame | None


def make_config(model: str = "vit_t_ln", data_root: str | Path | None = None, *, sets: Sequence[str] | None = None,
                set_dirs: Mapping[str, str | Path] | None = None, **settings) -> ShiftsConfig:
    """A :class:`ShiftsConfig` from the settings given (``None``: the config's default)."""
    text = {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()}
    return ShiftsConfig.from_preset(None, model=model, data_root=None if data_root is None else str(data_root),
                                    sets=tuple(sets) if sets else None,
                                    set_dirs={k: str(v) for k, v in (set_dirs or {}).items()} or None, **text)


def evaluate(model, data_root: str | Path | None = None, *, out: str | Path = "results", run_id: str | None = None,
             resume: bool = False, debug: bool = False, on_event: Handler | None = None,
             **settings) -> ShiftsResult:
    """Evaluate one model on every set found under ``data_root`` (or named) and write a ``shifts`` run folder.

    The engine's one-call API: RobustBench's ``benchmark()`` is the model. A suite (the ``robustness`` chain) calls it
    from Python with a model name and checkpoint.

    Args:
        model: small, zoo or timm model name.
        data_root: the folder holding the sets (``imagenet-val/``, ``imagenet-c/``, ``imagenet-a/``, ...).
        out: results root (run folder ``out/shifts/<run id>``).
        run_id: run folder name (default: model, norm and a hash of the settings and provenance).
        resume: skip the units already in the run folder.
        debug: full details in checkpoint errors.
        on_event: ``on_event(event)`` on rank 0 (:mod:`dtn_bench.events`).
        **settings: :class:`ShiftsConfig` fields (``checkpoint``, ``sets``, ``set_dirs``, ``severities``,
            ``subset_file``, ``batch_size``, ``device``, ...).

    Returns:
        A :class:`ShiftsResult`.

    Raises:
        DTNBenchError: any problem with the input, before any run folder is made.
    """
    from dtn_bench.runner import run_suite
    from dtn_bench.shifts import announce
    from dtn_bench.shifts.report import shifts_table

    cfg = model if isinstance(model, ShiftsConfig) else make_config(model, data_root, **settings)
    p = plan(cfg, debug=debug)
    announce(p, on_event)
    result = run_suite(SHIFTS_SUITE, cfg, out=out, run_id=run_id, resume=resume, on_event=on_event, plan=p)
    if result.path is None:
        return ShiftsResult(None, pd.DataFrame(), None)
    return ShiftsResult(result.path, result.rows, shifts_table(result.rows))
