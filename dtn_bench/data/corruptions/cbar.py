"""ImageNet-C-bar (Mintun et al., NeurIPS 2021) as a corruption set of ``dtn-bench corrupt``, and the other sets.

Source (facts only; every line here is written anew): github.com/facebookresearch/augmentation-corruption, commit
``ba4d5a5e``, ``imagenet_c_bar/``: ``corrupt.py`` (the corruption classes), ``imagenet_c_bar.csv`` (their level at
each of the 5 severities: :data:`LEVELS`), ``make_imagenet_c_bar.py`` (the recipe) and the repository README (the
released layout). The functions: :mod:`dtn_bench.data.corruptions.cbar_noise` and
:mod:`dtn_bench.data.corruptions.cbar_shapes`; their parameters per severity: ``docs/imagenet_c_bar_parameters.md``
(:func:`parameter_document`; a test keeps the two equal).

Recipe (as ``make_imagenet_c_bar.py`` runs it): ``Resize(256)`` + ``CenterCrop(224)`` of each ImageNet val image
(torchvision on the PIL image), the corruption on the uint8 array with ``im_size = 224``, ``np.uint8`` of its clipped
result, saved with ``quality=85, optimize=True`` under the source's file name. The script names its severity folders
by the level (``caustic_refraction/2.35/``); the preprocessed release the README links
(``dl.fbaipublicfiles.com/inc_bar/imagenet_c_bar.tar.gz``) and this generator use the ImageNet-C layout
``<corruption>/<severity 1..5>/<wnid>/<image>`` (:data:`RELEASED_LEVEL_FOLDERS` maps the script's names).

Seeding: the script seeds NumPy's global generator once (``np.random.seed(--seed)``, default 0) and draws each
image's parameters from NumPy inside the DataLoader's worker processes (10 by default; some corruptions then seed a
``RandomState`` from a draw), whose NumPy state depends on the worker, the PyTorch version and the start method: an
image's draws cannot be reproduced from the seed alone. Here, as for ImageNet-C, every output image has its own torch
generator seeded with :func:`~dtn_bench.data.corruptions.image_seed` ``(seed, corruption, severity, relative path)``
and draws its parameters from it in a fixed order: same seed, same bytes, at any batch size; not the released bytes.

Deviations (the formulas are the recipe's; see each function):

* the maths is float64 throughout; the recipe's NumPy 1.19 evaluates some terms at lower precision (the float32 copy
  of the image in ``perlin_noise`` and between the stars of ``sparkles``), so a pixel can differ by one grey level
  from a float64 evaluation of the same formulas;
* ``perlin_noise``: a ``(0, 0)`` gradient draw (chance about 1e-3 per image), which the recipe normalises to NaN and
  writes as black patches, is a zero gradient;
* ``cocentric_sine_waves``: the ring width is drawn from ``(0, S/10]``, not ``[0, S/10)`` (the recipe divides by it).

ImageNet-3DCC (Kar et al., CVPR 2022) is evaluation-only here: most of its corruptions need a depth map per image
(the authors predict them with a depth network), so ``--set imagenet-3dcc`` is refused with a pointer to the release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dtn_bench.checks import did_you_mean
from dtn_bench.data.corruptions import cbar_noise as noise
from dtn_bench.data.corruptions import cbar_shapes as shapes
from dtn_bench.data.corruptions.filters import SIZE, Recipe
from dtn_bench.errors import DTNBenchError
from dtn_bench.registry import Registry

__all__ = [
    "CBAR_CORRUPTIONS",
    "CBAR_FNS",
    "EVALUATION_ONLY",
    "IMAGENET_C_BAR",
    "LEVELS",
    "RELEASED_LEVEL_FOLDERS",
    "SETS",
    "SOURCE",
    "parameter_document",
    "parameter_table",
    "resolve_set",
    "resolve_set_corruptions",
    "sample_parameters",
]

SOURCE = ("facebookresearch/augmentation-corruption imagenet_c_bar/ (commit ba4d5a5e): corrupt.py, "
          "imagenet_c_bar.csv, make_imagenet_c_bar.py")
"""Where the facts come from."""

CBAR_CORRUPTIONS: tuple[str, ...] = (
    "blue_noise_sample", "brownish_noise", "caustic_refraction", "checkerboard_cutout", "cocentric_sine_waves",
    "inverse_sparkles", "perlin_noise", "plasma_noise", "single_frequency_greyscale", "sparkles",
)
"""The 10 corruptions of ImageNet-C-bar, in the order of the release's README (the folder names of its layout)."""

LEVELS: dict[str, tuple[float, ...]] = {
    "blue_noise_sample": (0.8, 1.6, 2.4, 4.0, 5.6),
    "brownish_noise": (1.0, 2.0, 3.0, 4.0, 5.0),
    "caustic_refraction": (2.35, 3.2, 4.9, 6.6, 9.15),
    "checkerboard_cutout": (2.0, 3.0, 4.0, 5.0, 6.0),
    "cocentric_sine_waves": (3.0, 5.0, 8.0, 9.0, 10.0),
    "inverse_sparkles": (1.0, 2.0, 4.0, 9.0, 10.0),
    "perlin_noise": (4.6, 5.2, 5.8, 7.6, 8.8),
    "plasma_noise": (4.75, 7.0, 8.5, 9.25, 10.0),
    "single_frequency_greyscale": (1.0, 1.5, 2.0, 4.5, 5.0),
    "sparkles": (1.0, 2.0, 3.0, 5.0, 6.0),
}
"""The level ``l`` (0..10 scale) of each corruption at severities 1..5: ``imagenet_c_bar.csv``."""

RELEASED_LEVEL_FOLDERS: dict[str, tuple[str, ...]] = {
    name: tuple(f"{level:.2f}" for level in levels) for name, levels in LEVELS.items()}
"""The severity folder names ``make_imagenet_c_bar.py`` writes (``"{:.2f}".format(level)``), severity 1 first."""

# name -> (module function, fixed, draw, what the level sets, as the docs table prints it)
_PARTS: dict[str, tuple[Callable, Callable, Callable, str]] = {
    "blue_noise_sample": (noise.blue_noise_sample, noise.blue_sample_fixed, noise.blue_sample_draw,
                          "threshold = 3 l / 10 - 2.5"),
    "brownish_noise": (noise.brownish_noise, noise.brownish_fixed, noise.brownish_draw, "intensity = 64 l / 10"),
    "caustic_refraction": (shapes.caustic_refraction, shapes.caustic_fixed, shapes.caustic_draw,
                           "lens_scale = 0.5 S l / 10, lighting = 2 l / 10"),
    "checkerboard_cutout": (shapes.checkerboard_cutout, shapes.checkerboard_fixed, shapes.checkerboard_draw,
                            "fraction = l / 10"),
    "cocentric_sine_waves": (noise.cocentric_sine_waves, noise.cocentric_fixed, noise.cocentric_draw,
                             "intensity = 128 l / 10"),
    "inverse_sparkles": (shapes.inverse_sparkles, shapes.inverse_sparkles_fixed, shapes.inverse_sparkles_draw,
                         "exponent = (100 - amount) / 50, amount = 100 - 65 l / 10"),
    "perlin_noise": (noise.perlin_noise, noise.perlin_fixed, noise.perlin_draw, "alpha = 0.5 l / 10"),
    "plasma_noise": (noise.plasma_noise, noise.plasma_fixed, noise.plasma_draw, "intensity = 64 l / 10"),
    "single_frequency_greyscale": (noise.single_frequency_greyscale, noise.single_frequency_fixed,
                                   noise.single_frequency_draw, "intensity = 196 l / 10"),
    "sparkles": (shapes.sparkles, shapes.sparkles_fixed, shapes.sparkles_draw, "radius = 0.1 S l / 10"),
}

_SHOWN = {  # the fixed parameters the docs table prints per severity (the others do not depend on the level)
    "caustic_refraction": ("lens_scale", "lighting"), "inverse_sparkles": ("exponent",),
    "perlin_noise": ("alpha",), "sparkles": ("radius",), "checkerboard_cutout": ("fraction",),
    "blue_noise_sample": ("threshold",),
}

CBAR_FNS = Registry("ImageNet-C-bar corruption")
"""name -> ``fn(x, severity, gens, recipe)``; meta ``params`` (the levels), ``fixed``, ``draw``, ``formula`` and
``stochastic`` (all ten are)."""
for _name in CBAR_CORRUPTIONS:
    _fn, _fixed, _draw, _formula = _PARTS[_name]
    CBAR_FNS.register(_name, params=LEVELS[_name], fixed=_fixed, draw=_draw, formula=_formula,
                      stochastic=True)(_fn)
del _name, _fn, _fixed, _draw, _formula

IMAGENET_C_BAR = Recipe("imagenet-c-bar", SIZE, LEVELS, functions=CBAR_FNS, crop=True)
"""ImageNet-C-bar: its 10 corruptions and levels at 224 px, sources cropped as ImageNet-C's."""

SETS: dict[str, Recipe | None] = {"imagenet-c": None, "imagenet-c-bar": IMAGENET_C_BAR}
"""``dtn-bench corrupt --set`` -> its recipe (``None``: ImageNet-C, whose ``--format`` picks the recipe)."""

EVALUATION_ONLY: dict[str, str] = {
    "imagenet-3dcc": (
        "ImageNet-3DCC (Kar et al., CVPR 2022) is evaluation-only: most of its corruptions need a depth map per image "
        "(the authors predicted them with a depth network), which dtn-bench does not make; download the released "
        "ImageNet-3DCC (https://datasets.epfl.ch/3dcc/index.html, github EPFL-VILAB/3DCommonCorruptions) and evaluate "
        "that folder"),
}
"""Sets ``dtn-bench corrupt`` refuses to make, with why and where the released data are."""


def resolve_set(name: str) -> Recipe | None:
    """The recipe of ``--set name`` (``None`` for ImageNet-C); one-line errors for 3DCC and unknown names."""
    if name in EVALUATION_ONLY:
        raise DTNBenchError(f"--set {name}: {EVALUATION_ONLY[name]}")
    if name not in SETS:
        hint = did_you_mean(name, [*SETS, *EVALUATION_ONLY], n=1, cutoff=0.4, show=None, sort_known=False)
        raise DTNBenchError(f"unknown --set {name!r}{hint}")
    return SETS[name]


def resolve_set_corruptions(names: Sequence[str] | None, recipe: Recipe, *, extra: bool = False) -> tuple[str, ...]:
    """The corruptions of a set to make: ``names`` checked against the set, duplicates dropped; default all of them.

    Raises:
        DTNBenchError: ``extra`` (ImageNet-C's 4 extras are not in another set), a name of ImageNet-C's, or an unknown
            name (one line, naming the set and its corruptions or the closest match).
    """
    from dtn_bench.data.corruptions import ALL_CORRUPTIONS

    known = recipe.functions.names()
    if extra:
        raise DTNBenchError(f"--extra adds ImageNet-C's 4 extra corruptions; --set {recipe.name} has none (its "
                            f"{len(known)}: {', '.join(known)})")
    chosen: list[str] = []
    for name in names or known:
        if name in ALL_CORRUPTIONS and name not in known:
            raise DTNBenchError(f"{name!r} is an ImageNet-C corruption, not one of --set {recipe.name}'s {len(known)}: "
                                f"{', '.join(known)}")
        if name not in known:
            hint = did_you_mean(name, known, n=3, cutoff=0.5, show=None, sort_known=False)
            raise DTNBenchError(f"unknown corruption {name!r} for --set {recipe.name}{hint}")
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def sample_parameters(name: str, severity: int, generator: torch.Generator, size: int = SIZE) -> dict[str, Any]:
    """Every parameter corruption ``name`` uses on one image at ``severity``: the level's and the random draws.

    The same draws, in the same order, as the corruption function makes from the same generator state: a generator
    seeded as an image's in the folder job gives that image's parameters (the recipe's ``record=True``).
    """
    from dtn_bench.data.corruptions import resolve_severities

    entry = CBAR_FNS.get(name)
    (sev,) = resolve_severities([severity])
    return {**entry.meta["fixed"](LEVELS[name][sev - 1], size), **entry.meta["draw"](generator, size)}


def _cell(value: float) -> str:
    return f"{value:.4g}"


def parameter_table(size: int = SIZE) -> str:
    """The levels per severity, with the parameters they set at image side ``size``, as a Markdown table."""
    lines = ["| corruption | what the level l sets | 1 | 2 | 3 | 4 | 5 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in CBAR_CORRUPTIONS:
        entry = CBAR_FNS.get(name)
        cells = []
        for level in LEVELS[name]:
            fixed = entry.meta["fixed"](level, size)
            shown = _SHOWN.get(name, ("intensity",))
            cells.append(f"l = {level:g}: " + ", ".join(f"{k} {_cell(fixed[k])}" for k in shown))
        lines.append(f"| {name} | {entry.meta['formula']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _random_parameters() -> str:
    """The per-image random parameters of each corruption: each ``draw``'s docstring, as Markdown."""
    rows = []
    for name in CBAR_CORRUPTIONS:
        doc = " ".join((CBAR_FNS.get(name).meta["draw"].__doc__ or "").split()).replace("``", "`")
        rows.append(f"- `{name}`: {doc}")
    return "\n".join(rows) + "\n"


def parameter_document() -> str:
    """The text of ``docs/imagenet_c_bar_parameters.md``: the levels, what they set, and the random draws."""
    head = (
        "# Severity parameters of ImageNet-C-bar\n\n"
        "What `dtn-bench corrupt --set imagenet-c-bar` applies, from `dtn_bench/data/corruptions/cbar.py` (this file\n"
        "is `dtn_bench.data.corruptions.cbar.parameter_document()`; a test keeps them equal). Source: Mintun et al.,\n"
        "NeurIPS 2021, github.com/facebookresearch/augmentation-corruption (commit ba4d5a5e), `imagenet_c_bar/`:\n"
        "the level `l` of each corruption at severities 1..5 is `imagenet_c_bar.csv`; what it sets is the\n"
        "corruption's `float_parameter(l, max) = l * max / 10` in `corrupt.py`, at image side S = 224 (ImageNet val,\n"
        "`Resize(256)` + `CenterCrop(224)`, JPEG quality 85, as `make_imagenet_c_bar.py`). Output layout:\n"
        "`<corruption>/<severity 1..5>/<wnid>/<image>`, as the preprocessed release; the script itself names the\n"
        "severity folders by the level with two decimals (`caustic_refraction/2.35`).\n\n"
        "## Levels and what they set\n\n"
    )
    draws = (
        "\n## Random parameters, drawn per image\n\n"
        "From the image's own generator, seeded with `sha256(seed|corruption|severity|relative path)`, in this\n"
        "order:\n\n"
    )
    return head + parameter_table() + draws + _random_parameters()
