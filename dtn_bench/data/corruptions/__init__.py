"""ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019), re-implemented as batched torch functions.

Clean-room implementation of the 19 corruptions of ``make_imagenet_c.py`` from their published parameter tables
(the 15 of the mCE plus the 4 extras), vectorised over a batch ``[N, 3, 224, 224]`` and running on CPU or GPU, and
a folder generator that writes the released layout ``OUT/<corruption>/<severity>/<class>/<image>``.

Recipe (as released): ``Resize(256)`` (bilinear, on the PIL image) + ``CenterCrop(224)``, corrupt, truncate to
uint8 (``np.uint8`` of the float result), save JPEG quality 85 (``optimize=True``).

Conventions: a corruption function receives ``x`` = image / 255 as float32 ``[N, 3, H, W]`` in ``[0, 1]``, the
severity (1..5) and one :class:`torch.Generator` per image, and returns the corrupted image on the 0..255 scale
(float); :func:`corrupt_batch` clamps to ``[0, 255]`` and truncates to uint8. Random numbers are drawn on the CPU
from the image's own generator, in a fixed order, so an image's result depends only on its generator's seed (not
on the batch it is in). :func:`corrupt_folder` seeds each image's generator from ``sha256(seed, corruption,
severity, relative path)``: same seed, same bytes, whatever the batch size (FFTs and dense matrix products run one
image at a time so that their last bits do not depend on the batch). CPU and GPU float maths differ in the last
bits, so a truncation can differ by one grey level between devices. Output names keep the source's name; a
non-JPEG source ``x.png`` is written as ``x.jpg`` (the content is always JPEG).

Deviations from the released code (numbers with these corruptions are not bit-comparable to the released data;
the released data were made without a seed, so nothing is bit-exact anyway):

* ``frost``: the recipe blends a random 224 crop of one of five frost photographs, which are not redistributable.
  Here the texture's structure is procedural (:func:`frost_texture`: a plasma fractal for cloudy ice plus needle
  crystals, crosses of line kernels at random angles), and its statistics are the photographs': each image picks one
  of the five as the recipe does and gets that photograph's per-channel mean and contrast (:data:`FROST_PHOTO_STATS`,
  measured on 224 crops of the photographs; mean over the five RGB 143.7 / 164.8 / 176.8, std within a crop 13-36).
  Same blend ``clip(c0 * x + c1 * frost)`` and weights as the table. Where the CIFAR / Tiny-ImageNet scripts
  shrink the photographs (by 0.2 / 0.3) before the crop, the texture is made at ``size / scale`` and resized
  to the image bilinearly (:func:`~dtn_bench.data.corruptions.weather.frost`).
* ``motion_blur`` and ``snow``: ImageMagick's ``MotionBlurImage`` is replaced by the same line kernel computed
  here: width ``w = 2 * ceil(radius) + 1``, weights ``k_i ∝ exp(-i^2 / (2 sigma^2))`` for ``i = 0..w-1``
  (one-sided), taps at ``(round(i cos a), round(i sin a))``, edge pixels repeated; applied with an FFT and truncated
  to 8 bits as ImageMagick's 8-bit output is.
* ``shot_noise`` and all other random draws use torch's generators (not NumPy's), so values differ from any NumPy
  run while the distributions are the recipe's (Poisson counts by exact CDF inversion).
* ``elastic_transform``: OpenCV's ``warpAffine`` quantises coordinates to 1/32 pixel; here sampling is exact
  bilinear (``grid_sample``). Borders as in the recipe (reflect-101 for the affine, half-sample reflect after).
* ``spatter`` (extra): OpenCV's Canny detector, distance transform, histogram equalisation and emboss filter are
  re-implemented in torch (Sobel L1 magnitude, 4-direction non-maximum suppression, 8-connected hysteresis; the
  distance is the exact Euclidean one where OpenCV uses a 5x5 mask approximation).
* ``pixelate``: Pillow's BOX resampling is re-implemented with the same coefficients (in floating point where
  Pillow uses 22-bit fixed point, rounding after each pass as Pillow does); agrees within one grey level.

Everything else follows the recipe's formulas (noted per function); the 8 deterministic corruptions (brightness,
contrast, pixelate, jpeg_compression, saturate, defocus_blur, gaussian_blur, zoom_blur) agree with a plain
NumPy/PIL implementation of the recipe within one grey level before the JPEG save. ``glass_blur`` runs the recipe's
serial sweep of dependent pixel moves (~50k per iteration) as it executes in NumPy, compiled with numba
(:mod:`dtn_bench.data.corruptions._glass`).

Modules (the corruptions by the ImageNet-C grouping; the 4 extras with their group):
    filters: helpers several families share (per-image random draws, filters with explicit borders, resampling,
        the motion-blur line kernel, HSV value / saturation).
    noise: gaussian, shot, impulse; speckle (extra).
    blur: defocus, glass (its compiled sweep in ``_glass``), motion, zoom; gaussian blur (extra).
    weather: snow, frost, fog, brightness; spatter (extra).
    digital: contrast, elastic transform, pixelate, JPEG compression; saturate (extra).
    job: the folder job of ``dtn-bench corrupt`` and the speed benchmark of ``dtn-bench bench corrupt``.

This module holds the table of the 19 corruptions and their severity parameters (:data:`CORRUPTION_FNS`), the one
resolver of corruption names and severities (for ``corrupt``, ``bench corrupt`` and ``imagenet-c``), and
:func:`corrupt_batch`; it re-exports the public names of the modules above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from dtn_bench.checks import did_you_mean, unknown_name_message
from dtn_bench.data.corruptions.blur import _glass_sweep as _glass_sweep
from dtn_bench.data.corruptions.blur import defocus_blur, gaussian_blur, glass_blur, motion_blur, zoom_blur
from dtn_bench.data.corruptions.blur import glass_codes as glass_codes
from dtn_bench.data.corruptions.blur import prepare_compiled as prepare_compiled
from dtn_bench.data.corruptions.blur import zoom_factors as zoom_factors
from dtn_bench.data.corruptions.digital import contrast, elastic_transform, jpeg_compression, pixelate, saturate
from dtn_bench.data.corruptions.filters import IMAGENET_C as IMAGENET_C
from dtn_bench.data.corruptions.filters import SIZE as SIZE
from dtn_bench.data.corruptions.filters import Gens as Gens
from dtn_bench.data.corruptions.filters import Recipe as Recipe
from dtn_bench.data.corruptions.filters import _clipped_zoom as _clipped_zoom
from dtn_bench.data.corruptions.filters import _gaussian as _gaussian
from dtn_bench.data.corruptions.filters import motion_kernel as motion_kernel
from dtn_bench.data.corruptions.noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise
from dtn_bench.data.corruptions.weather import FROST_PHOTO_STATS as FROST_PHOTO_STATS
from dtn_bench.data.corruptions.weather import brightness, fog, frost, snow, spatter
from dtn_bench.data.corruptions.weather import frost_texture as frost_texture
from dtn_bench.data.corruptions.weather import plasma_fractal as plasma_fractal
from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES
from dtn_bench.registry import Registry

__all__ = [
    "ALL_CORRUPTIONS",
    "CORRUPTION_FNS",
    "CorruptSummary",
    "IMAGENET_C",
    "IMAGE_EXTENSIONS",
    "check_folder_args",
    "corrupt_batch",
    "corrupt_folder",
    "image_seed",
    "job_settings",
    "load_image",
    "plasma_fractal",
    "Recipe",
    "resolve_corruptions",
    "resolve_severities",
]

ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS
"""The 15 of the mCE, then the 4 extras: the canonical order."""

CORRUPTION_FNS = Registry("corruption")
"""name -> ``fn(x, severity, gens, recipe=IMAGENET_C)``; meta ``params`` (ImageNet-C's severity table) and
``stochastic``. Another dataset's table and image size come in a :class:`Recipe` (CIFAR-10/100-C and
Tiny-ImageNet-C: :mod:`dtn_bench.cifar_c.generate`)."""

_TABLE = (
    # name, function, parameters at severities 1..5 (each function's docstring names them), stochastic
    ("gaussian_noise", gaussian_noise, (0.08, 0.12, 0.18, 0.26, 0.38), True),
    ("shot_noise", shot_noise, (60, 25, 12, 5, 3), True),
    ("impulse_noise", impulse_noise, (0.03, 0.06, 0.09, 0.17, 0.27), True),
    ("speckle_noise", speckle_noise, (0.15, 0.2, 0.35, 0.45, 0.6), True),
    ("defocus_blur", defocus_blur, ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)), False),
    ("gaussian_blur", gaussian_blur, (1, 2, 3, 4, 6), False),
    ("glass_blur", glass_blur, ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)), True),
    ("motion_blur", motion_blur, ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), True),
    ("zoom_blur", zoom_blur, tuple(tuple(zoom_factors(s).round(2).tolist()) for s in SEVERITIES), False),
    ("snow", snow, ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)), True),
    ("frost", frost, ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)), True),
    ("fog", fog, ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)), True),
    ("brightness", brightness, (0.1, 0.2, 0.3, 0.4, 0.5), False),
    ("saturate", saturate, ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)), False),
    ("contrast", contrast, (0.4, 0.3, 0.2, 0.1, 0.05), False),
    ("pixelate", pixelate, (0.6, 0.5, 0.4, 0.3, 0.25), False),
    ("jpeg_compression", jpeg_compression, (25, 18, 15, 10, 7), False),
    ("elastic_transform", elastic_transform, ((488, 170.8, 24.4), (488, 19.52, 48.8), (12.2, 2.44, 4.88),
                                              (17.08, 2.44, 4.88), (29.28, 2.44, 4.88)), True),
    ("spatter", spatter, ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                          (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)), True),
)
for _name, _fn, _params, _stochastic in _TABLE:
    CORRUPTION_FNS.register(_name, params=_params, stochastic=_stochastic)(_fn)
del _name, _fn, _params, _stochastic


# ---------------------------------------------------------------------------------------------------------------
# resolving names and severities (one implementation; each call site binds its own rules)


def _unknown_corruption(name: str, hint: str) -> str:
    """The one-line error for an unknown corruption name (see :func:`resolve_corruptions` for ``hint``)."""
    known = list(ALL_CORRUPTIONS)
    if hint == "matches":
        return unknown_name_message("corruption", name, known)
    return f"unknown corruption {name!r}{did_you_mean(name, known, n=1, cutoff=0.4, show=None, sort_known=False)}"


def resolve_corruptions(names: Sequence[str] | None = None, extra: bool = False, *,
                        order: Literal["given", "canonical"] = "given",
                        hint: Literal["matches", "closest"] = "matches",
                        recipe: Recipe | None = None) -> tuple[str, ...]:
    """The corruptions to make or evaluate: ``names`` checked, duplicates dropped, or the 15 of the mCE.

    ``dtn-bench corrupt`` and ``bench corrupt`` use the defaults; ``imagenet-c``
    (:func:`dtn_bench.imagenet_c.data.resolve_corruptions`) uses ``order="canonical", hint="closest"``. A
    ``recipe`` of another corruption set (ImageNet-C-bar) resolves against that set's list instead
    (:func:`dtn_bench.data.corruptions.cbar.resolve_set_corruptions`).

    Args:
        names: corruption names; ``None`` or empty means the 15 of the mCE.
        extra: add the 4 extra corruptions not in ``names`` yet.
        order: ``"given"``: the order of ``names``, then the extras; ``"canonical"``: the order of
            :data:`ALL_CORRUPTIONS`.
        hint: what the error on an unknown name suggests. ``"matches"``: up to 3 near matches (``did you mean: a,
            b?``), else the first 12 known names, sorted; ``"closest"``: the closest match (``did you mean a?``), else
            all 19 names in canonical order.
        recipe: the recipe of the set made; with its own ``functions``, its names (given order, default all).

    Returns:
        The names, each once.

    Raises:
        DTNBenchError: an unknown name (one line, with the suggestion).
    """
    if recipe is not None and recipe.functions is not None:
        from dtn_bench.data.corruptions.cbar import resolve_set_corruptions

        return resolve_set_corruptions(names, recipe, extra=extra)
    chosen: list[str] = []
    for name in names or CORRUPTIONS:
        if name not in CORRUPTION_FNS:
            raise DTNBenchError(_unknown_corruption(name, hint))
        if name not in chosen:
            chosen.append(name)
    if extra:
        chosen += [c for c in EXTRA_CORRUPTIONS if c not in chosen]
    if order == "canonical":
        chosen.sort(key=ALL_CORRUPTIONS.index)
    return tuple(chosen)


def _severity(value: int | str, parse: bool) -> int:
    """One checked severity (see :func:`resolve_severities` for ``parse``)."""
    if not parse:
        if value not in SEVERITIES:
            raise DTNBenchError(f"severity {value} is not one of 1, 2, 3, 4, 5")
        return int(value)
    try:
        v = int(str(value).strip())
    except ValueError:
        raise DTNBenchError(f"severity {value!r} is not an integer 1..5") from None
    if v not in SEVERITIES:
        raise DTNBenchError(f"severity {v} is out of range: ImageNet-C severities are 1..5")
    return v


def resolve_severities(values: Sequence[int | str] | None, *, order: Literal["given", "sorted"] = "given",
                       default: Sequence[int] | None = None, parse: bool = True) -> tuple[int, ...]:
    """Checked severities (integers 1..5), duplicates dropped; a one-line error otherwise.

    ``dtn-bench corrupt``, ``bench corrupt`` and :func:`corrupt_batch` use the defaults; ``imagenet-c``
    (:func:`dtn_bench.imagenet_c.data.resolve_severities`) uses ``order="sorted", default=SEVERITIES, parse=False``.

    Args:
        values: severities.
        order: ``"given"`` keeps the order of ``values``; ``"sorted"`` sorts them.
        default: returned when ``values`` is ``None`` or empty; without one, no severity is an error.
        parse: ``True``: integers or their text (``"3"``, ``" 4"``), errors ``not an integer 1..5`` and ``out of
            range``; ``False``: each value must be one of 1..5 as it is (``3``, not ``"3"``), error ``not one of 1,
            2, 3, 4, 5``.

    Returns:
        The severities, each once.

    Raises:
        DTNBenchError: a value that is not a severity, or none given (without ``default``).
    """
    if not values and default is not None:
        return tuple(default)
    out: list[int] = []
    for s in values:
        v = _severity(s, parse)
        if v not in out:
            out.append(v)
    if not out:
        raise DTNBenchError("no severity given: choose from 1..5")
    return tuple(sorted(out)) if order == "sorted" else tuple(out)


# ---------------------------------------------------------------------------------------------------------------
# corrupting a batch


def corrupt_batch(images: torch.Tensor, name: str, severity: int,
                  generator: torch.Generator | Sequence[torch.Generator] | None = None,
                  recipe: Recipe | None = None) -> torch.Tensor:
    """Corrupts a batch of images as a recipe does (ImageNet-C's by default), up to (not including) any file save.

    Args:
        images: uint8 ``[N, 3, H, W]`` or ``[3, H, W]`` (RGB; ImageNet-C uses ``H = W = 224``), on any device. A
            float tensor is read as 0..255 values.
        name: corruption name (see :data:`ALL_CORRUPTIONS`).
        severity: 1..5.
        generator: one :class:`torch.Generator` per image (the result of image ``i`` then depends only on
            ``generator[i]``), or a single generator used for the images in order, or ``None`` (a fresh unseeded
            one; not reproducible).
        recipe: the dataset's :class:`Recipe` (table, image size, and for another corruption set its functions,
            e.g. :data:`~dtn_bench.data.corruptions.cbar.IMAGENET_C_BAR`); ``None``: ImageNet-C's table, any image
            size. Given, the images must be ``recipe.size`` square.

    Returns:
        uint8 tensor of the input's shape and device: ``trunc(clip(out, 0, 255))`` as ``np.uint8`` would.

    Raises:
        DTNBenchError: unknown name, bad severity, bad shape.
    """
    entry = (CORRUPTION_FNS if recipe is None or recipe.functions is None else recipe.functions).get(name)
    resolve_severities([severity])
    single = images.dim() == 3
    x = images[None] if single else images
    if x.dim() != 4 or x.shape[1] != 3:
        raise DTNBenchError(f"corrupt_batch: expected [N, 3, H, W] images, got shape {tuple(images.shape)}")
    if recipe is not None and tuple(x.shape[-2:]) != (recipe.size, recipe.size):
        raise DTNBenchError(f"corrupt_batch: {recipe.name} images are {recipe.size}x{recipe.size}, got "
                            f"{x.shape[-2]}x{x.shape[-1]}")
    n = x.shape[0]
    if generator is None:
        generator = torch.Generator()
    gens = [generator] * n if isinstance(generator, torch.Generator) else list(generator)
    if len(gens) != n:
        raise DTNBenchError(f"corrupt_batch: {len(gens)} generators for {n} images")
    xf = x.to(torch.float32).contiguous() / 255
    with torch.no_grad():
        out = entry.factory(xf, int(severity), gens, IMAGENET_C if recipe is None else recipe)
    out = torch.floor(out.clamp_(0, 255)).to(torch.uint8)
    return out[0] if single else out


# The folder job and the benchmark use the table, the resolvers and corrupt_batch above: imported last.
# ImageNet-C-bar: another corruption set on the same job (its recipe brings its own functions).
from dtn_bench.data.corruptions.cbar import CBAR_CORRUPTIONS as CBAR_CORRUPTIONS  # noqa: E402
from dtn_bench.data.corruptions.cbar import IMAGENET_C_BAR as IMAGENET_C_BAR  # noqa: E402
from dtn_bench.data.corruptions.job import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS  # noqa: E402
from dtn_bench.data.corruptions.job import JPEG_QUALITY as JPEG_QUALITY  # noqa: E402
from dtn_bench.data.corruptions.job import MANIFEST_NAME as MANIFEST_NAME  # noqa: E402
from dtn_bench.data.corruptions.job import PARTIAL_NAME as PARTIAL_NAME  # noqa: E402
from dtn_bench.data.corruptions.job import PEER as PEER  # noqa: E402
from dtn_bench.data.corruptions.job import CorruptSummary as CorruptSummary  # noqa: E402
from dtn_bench.data.corruptions.job import benchmark as benchmark  # noqa: E402
from dtn_bench.data.corruptions.job import check_folder_args as check_folder_args  # noqa: E402
from dtn_bench.data.corruptions.job import corrupt_folder as corrupt_folder  # noqa: E402
from dtn_bench.data.corruptions.job import encode_jpeg as encode_jpeg  # noqa: E402
from dtn_bench.data.corruptions.job import image_seed as image_seed  # noqa: E402
from dtn_bench.data.corruptions.job import job_settings as job_settings  # noqa: E402
from dtn_bench.data.corruptions.job import list_images as list_images  # noqa: E402
from dtn_bench.data.corruptions.job import load_image as load_image  # noqa: E402
from dtn_bench.data.corruptions.job import load_peer as load_peer  # noqa: E402
