"""The image-classification sets under shift, each one description on the evaluation engine.

A :class:`ShiftSet` is what RobustBench's ``BenchmarkDataset`` + loader tell its one accuracy routine: how the
release is laid out (:data:`LAYOUTS`), which labels it uses (the model's 1000 ImageNet-1k classes, a 200-class
subset of them scored through a mask, or a label set of its own), how its images go in (as released, or through the
model's own eval transform), its units (corruption x severity pairs, or one split) and how its headline metric is
normalised. The facts, with their sources:

- ImageNet-C (Hendrycks & Dietterich, ICLR 2019; https://zenodo.org/record/2235448):
  ``<corruption>/<severity 1..5>/<wnid>/*.JPEG``, 224 px, 15 (+4 extra) corruptions; mCE normalised by AlexNet's
  full-set errors (:data:`dtn_bench.metrics.ALEXNET_ERRORS`), or on RobustBench's 5,000-image subset by AlexNet's
  errors on that subset (:data:`dtn_bench.metrics.ROBUSTBENCH_ALEXNET_ACCURACY`).
- ImageNet-3DCC (Kar et al., CVPR 2022; https://datasets.epfl.ch/3dcc/): the ImageNet-C layout with RobustBench's
  12 corruptions (``robustbench/data.py``, ``CORRUPTIONS_3DCC``); RobustBench's mCE over its 5,000-image subset
  (``unaggregated_results_3d.csv``); no full-set AlexNet errors exist, so a full-set run reports the unnormalised mean.
- ImageNet-C-bar (Mintun et al., NeurIPS 2021; facebookresearch/augmentation-corruption, ``imagenet_c_bar/``):
  10 corruptions x 5 severities; its generator ``make_imagenet_c_bar.py`` names a severity folder by the severity's
  parameter value formatted ``{:.2f}`` (``imagenet_c_bar.csv``), so both those folders and ``1..5`` are read.
- ImageNet-A (Hendrycks et al., CVPR 2021; https://github.com/hendrycks/natural-adv-examples) and ImageNet-R
  (Hendrycks et al., ICCV 2021; https://github.com/hendrycks/imagenet-r): ``<wnid>/*.jpg`` over 200 wnids and a
  ``README.txt``; only the 200 classes' logits are scored (timm's ``validate.py --valid-labels`` takes
  ``output[:, valid_labels]``); the wnids are timm's ``data/_info/imagenet_{a,r}_synsets.txt``. timm's result
  tables take their ``top1_diff`` against clean val over the same 200 classes (``results/README.md``).
- ImageNet-Sketch (Wang et al., NeurIPS 2019; https://github.com/HaohanWang/ImageNet-Sketch): ``<wnid>/*`` over
  the 1000 wnids.
- ImageNet-V2 (Recht et al., ICML 2019; https://github.com/modestyachts/ImageNetV2): three variants of 10,000 images,
  ``imagenetv2-<variant>-format-val/<class index 0..999>/*.jpeg``; the label is ``int(folder name)``
  (``ImageNetV2_pytorch``: ``int(self.fnames[i].parent.name)``), not the position in a sorted listing.
- Clean ImageNet val: ``<wnid>/*.JPEG`` (torchvision's ImageFolder layout).
- CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C (Hendrycks & Dietterich 2019): arrays, or the ImageNet-C layout at 64
  px over 200 wnids (:mod:`dtn_bench.cifar_c.data`); unnormalised (no AlexNet errors exist for them).

The natural-image sets take the model's eval transform (timm's ``resolve_data_config`` + ``create_transform``: resize
by ``crop_pct``, centre crop, its interpolation; normalised with its mean and std); the corruption sets go in as
released (no resize), as RobustBench does since 2022.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

from dtn_bench.data.corruptions import cbar as _cbar
from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES

CORRUPTION_FOLDERS = "corruption folders"
"""``<root>/<corruption>/<severity>/<wnid>/<image>``."""
CLASS_FOLDERS = "class folders"
"""``<root>/<wnid>/<image>``."""
INDEX_FOLDERS = "index folders"
"""``<root>/<class index 0..999>/<image>``."""
ARRAYS = "arrays"
"""``<root>/<corruption>.npy`` (5 severities x N images) and ``<root>/labels.npy``."""
LAYOUTS = (CORRUPTION_FOLDERS, CLASS_FOLDERS, INDEX_FOLDERS, ARRAYS)

AS_RELEASED = "as released"
"""Fed as released: no resize, no crop (a size other than the model's is an error unless resizing is allowed)."""
MODEL_EVAL = "model eval transform"
"""The model's own eval transform (timm's ``resolve_data_config`` + ``create_transform``)."""
IMAGENET_C_RECIPE = "ImageNet-C recipe (resize 256/224, centre crop)"
"""How ImageNet-C was made from val: the clean set of ``dtn-bench imagenet-c --clean-dir``."""

IMAGENET_1K = "ImageNet-1k"
NO_CORRUPTION = "none"
"""The ``corruption`` of a unit of a set that is one split."""

THREEDCC_CORRUPTIONS: tuple[str, ...] = (
    "near_focus", "far_focus", "bit_error", "color_quant", "flash", "fog_3d", "h265_abr", "h265_crf", "iso_noise",
    "low_light", "xy_motion_blur", "z_motion_blur")
"""RobustBench's 12 ImageNet-3DCC corruptions (``robustbench/data.py``, ``CORRUPTIONS_3DCC``), in its order."""

C_BAR_CORRUPTIONS: tuple[str, ...] = _cbar.CBAR_CORRUPTIONS
"""ImageNet-C-bar's 10 corruptions (:mod:`dtn_bench.data.corruptions.cbar`, from ``imagenet_c_bar.csv``)."""


def c_bar_severity_folders(corruption: str) -> tuple[str, ...]:
    """The severity folder names ImageNet-C-bar's generator writes for ``corruption``: ``2.35``, ``3.20``, ..."""
    return _cbar.RELEASED_LEVEL_FOLDERS[corruption]


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (timm's ``ImageNetInfo``)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


@cache
def timm_synsets(name: str) -> tuple[str, ...]:
    """A wnid list timm ships with its data package (``timm/data/_info/<name>_synsets.txt``), e.g. ``imagenet_a``."""
    import pkgutil

    data = pkgutil.get_data("timm.data", f"_info/{name}_synsets.txt")
    if data is None:  # pragma: no cover - a broken timm install
        raise DTNBenchError(f"timm has no {name}_synsets.txt in its data package")
    return tuple(line.strip() for line in data.decode("utf-8").splitlines() if line.strip())


@dataclass(frozen=True)
class ShiftSet:
    """One set under shift: layout, label space, input transform, units and headline normalisation.

    Attributes:
        name: the set's name (``--sets``, the rows' ``set`` column), e.g. ``imagenet-a``.
        label: what tables call it, e.g. ``ImageNet-A``.
        layout: one of :data:`LAYOUTS`.
        transform: :data:`AS_RELEASED` or :data:`MODEL_EVAL`.
        classes: the label space's name (``ImageNet-1k``, ``CIFAR-10``, ...).
        wnids: the label space's wnids in label order, or ``None`` where the release defines it (CIFAR's labels, the
            sorted wnid folders of Tiny-ImageNet-C).
        subset_of_1k: the set's classes are a subset of ImageNet-1k's: a 1000-class model's other logits are masked
            out (ImageNet-A / -R), labels are positions in :attr:`wnids`.
        num_classes: size of the label space (the model's outputs it needs, unless ``subset_of_1k``).
        corruptions: every corruption the release holds (``()``: one split).
        benchmark: the corruptions the headline mean is over (ImageNet-C: the 15, never the extras).
        size: the released image size when the set is fed as released at a fixed size (CIFAR 32, Tiny 64), else
            ``None`` (the model's input size is checked).
        severity_folders: ``corruption -> folder names of severities 1..5`` where they are not ``1..5``.
        alexnet_errors: AlexNet's top-1 errors per corruption and severity on the full set (the mCE's
            normalisation), when published.
        robustbench_alexnet_errors: AlexNet's errors on RobustBench's 5,000-image subset (RobustBench's mCE).
        folders: folder names under a data root that hold the set (matched without case).
        url: where the release is.
        source: the paper.
        natural_size: whether images are of any size (natural images); for layout checks only.
    """

    name: str
    label: str
    layout: str
    transform: str
    classes: str = IMAGENET_1K
    wnids: Callable[[], tuple[str, ...]] | None = imagenet_wnids
    subset_of_1k: bool = False
    num_classes: int = 1000
    corruptions: tuple[str, ...] = ()
    benchmark: tuple[str, ...] = ()
    size: int | None = None
    severity_folders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    alexnet_errors: Mapping[str, tuple[float, ...]] | None = None
    robustbench_alexnet_errors: Mapping[str, tuple[float, ...]] | None = None
    folders: tuple[str, ...] = ()
    url: str = ""
    source: str = ""

    @property
    def split(self) -> bool:
        """Whether the set is one split (no corruptions)."""
        return not self.corruptions

    def severity_folder(self, corruption: str, severity: int) -> tuple[str, ...]:
        """The folder names severity ``severity`` of ``corruption`` may have (``3``, or C-bar's ``4.90``)."""
        named = self.severity_folders.get(corruption)
        return (str(severity),) + ((named[severity - 1],) if named else ())

    def download_hint(self) -> str:
        """Where to get the set and how it is laid out."""
        what = {CORRUPTION_FOLDERS: "<corruption>/<severity>/<wnid>/<image>", CLASS_FOLDERS: "<wnid>/<image>",
                INDEX_FOLDERS: "<class index 0..999>/<image>",
                ARRAYS: "<corruption>.npy and labels.npy"}[self.layout]
        return f"{self.label} is not bundled: download it from {self.url} so that its folder holds {what}"


def _alexnet_full() -> dict[str, tuple[float, ...]]:
    from dtn_bench.metrics import ALEXNET_ERRORS

    return dict(ALEXNET_ERRORS)


def _robustbench(kind: str) -> dict[str, tuple[float, ...]]:
    from dtn_bench.metrics import robustbench_alexnet_errors

    return robustbench_alexnet_errors(kind)


def _imagenet_a() -> tuple[str, ...]:
    return timm_synsets("imagenet_a")


def _imagenet_r() -> tuple[str, ...]:
    return timm_synsets("imagenet_r")


def _sets() -> dict[str, ShiftSet]:
    corr = dict(layout=CORRUPTION_FOLDERS, transform=AS_RELEASED)
    v2 = dict(layout=INDEX_FOLDERS, transform=MODEL_EVAL, url="https://github.com/modestyachts/ImageNetV2",
              source="Recht et al., ICML 2019")
    sets = [
        ShiftSet("imagenet-val", "ImageNet val", CLASS_FOLDERS, MODEL_EVAL, folders=("imagenet-val", "val"),
                 url="https://image-net.org/challenges/LSVRC/2012/", source="Russakovsky et al., IJCV 2015"),
        ShiftSet("imagenet-c", "ImageNet-C", corruptions=CORRUPTIONS + EXTRA_CORRUPTIONS, benchmark=CORRUPTIONS,
                 alexnet_errors=_alexnet_full(), robustbench_alexnet_errors=_robustbench("2d"),
                 folders=("imagenet-c",), url="https://zenodo.org/record/2235448",
                 source="Hendrycks & Dietterich, ICLR 2019", **corr),
        ShiftSet("imagenet-3dcc", "ImageNet-3DCC", corruptions=THREEDCC_CORRUPTIONS, benchmark=THREEDCC_CORRUPTIONS,
                 robustbench_alexnet_errors=_robustbench("3d"), folders=("imagenet-3dcc",),
                 url="https://datasets.epfl.ch/3dcc/", source="Kar et al., CVPR 2022", **corr),
        ShiftSet("imagenet-c-bar", "ImageNet-C-bar", corruptions=C_BAR_CORRUPTIONS, benchmark=C_BAR_CORRUPTIONS,
                 severity_folders={c: c_bar_severity_folders(c) for c in C_BAR_CORRUPTIONS},
                 folders=("imagenet-c-bar",), url="https://github.com/facebookresearch/augmentation-corruption",
                 source="Mintun et al., NeurIPS 2021", **corr),
        ShiftSet("imagenet-a", "ImageNet-A", CLASS_FOLDERS, MODEL_EVAL, classes="ImageNet-A 200", wnids=_imagenet_a,
                 subset_of_1k=True, num_classes=200, folders=("imagenet-a",),
                 url="https://github.com/hendrycks/natural-adv-examples", source="Hendrycks et al., CVPR 2021"),
        ShiftSet("imagenet-r", "ImageNet-R", CLASS_FOLDERS, MODEL_EVAL, classes="ImageNet-R 200", wnids=_imagenet_r,
                 subset_of_1k=True, num_classes=200, folders=("imagenet-r",),
                 url="https://github.com/hendrycks/imagenet-r", source="Hendrycks et al., ICCV 2021"),
        ShiftSet("imagenet-sketch", "ImageNet-Sketch", CLASS_FOLDERS, MODEL_EVAL,
                 folders=("imagenet-sketch", "sketch"), url="https://github.com/HaohanWang/ImageNet-Sketch",
                 source="Wang et al., NeurIPS 2019"),
        ShiftSet("imagenet-v2-matched-frequency", "ImageNet-V2 matched-frequency",
                 folders=("imagenetv2-matched-frequency-format-val", "imagenet-v2-matched-frequency"), **v2),
        ShiftSet("imagenet-v2-threshold0.7", "ImageNet-V2 threshold-0.7",
                 folders=("imagenetv2-threshold0.7-format-val", "imagenet-v2-threshold0.7"), **v2),
        ShiftSet("imagenet-v2-top-images", "ImageNet-V2 top-images",
                 folders=("imagenetv2-top-images-format-val", "imagenet-v2-top-images"), **v2),
        ShiftSet("cifar10-c", "CIFAR-10-C", ARRAYS, AS_RELEASED, classes="CIFAR-10", wnids=None, num_classes=10,
                 corruptions=CORRUPTIONS + EXTRA_CORRUPTIONS, benchmark=CORRUPTIONS, size=32,
                 folders=("cifar-10-c", "cifar10-c"), url="https://zenodo.org/record/2535967",
                 source="Hendrycks & Dietterich, ICLR 2019"),
        ShiftSet("cifar100-c", "CIFAR-100-C", ARRAYS, AS_RELEASED, classes="CIFAR-100", wnids=None, num_classes=100,
                 corruptions=CORRUPTIONS + EXTRA_CORRUPTIONS, benchmark=CORRUPTIONS, size=32,
                 folders=("cifar-100-c", "cifar100-c"), url="https://zenodo.org/record/3555552",
                 source="Hendrycks & Dietterich, ICLR 2019"),
        ShiftSet("tiny-imagenet-c", "Tiny-ImageNet-C", CORRUPTION_FOLDERS, AS_RELEASED, classes="Tiny-ImageNet",
                 wnids=None, num_classes=200, corruptions=CORRUPTIONS + EXTRA_CORRUPTIONS, benchmark=CORRUPTIONS,
                 size=64, folders=("tiny-imagenet-c",), url="https://zenodo.org/record/2536630",
                 source="Hendrycks & Dietterich, ICLR 2019"),
    ]
    return {s.name: s for s in sets}


SETS: dict[str, ShiftSet] = _sets()
"""Every set by name, in the order tables show them."""
SEVERITY_LEVELS = SEVERITIES


def get_set(name: str, flag: str = "--sets") -> ShiftSet:
    """The set ``name``; an unknown name is a one-line error with the closest names."""
    from dtn_bench.checks import unknown_name_message

    if name not in SETS:
        raise DTNBenchError(f"{flag}: {unknown_name_message('set', name, list(SETS))}")
    return SETS[name]


def resolve_sets(names) -> tuple[ShiftSet, ...]:
    """The sets named (comma-separated text or a sequence), in table order; each unknown name is an error."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    wanted = {get_set(n).name for n in names}
    return tuple(s for s in SETS.values() if s.name in wanted)
