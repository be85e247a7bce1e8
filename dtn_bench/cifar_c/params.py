"""Severity parameters of CIFAR-10/100-C and Tiny-ImageNet-C, as data, with their source.

Transcribed (values only) from Hendrycks' generation scripts in https://github.com/hendrycks/robustness:

- CIFAR-10-C / CIFAR-100-C: ``ImageNet-C/create_c/make_cifar_c.py`` (commit ``ca360085``): 32 x 32 test images,
  ``np.uint8`` of the result, severities 1..5 concatenated into ``<corruption>.npy``, ``labels.npy`` as ``uint8``.
- Tiny-ImageNet-C: ``ImageNet-C/create_c/make_tinyimagenet_c.py`` (commit ``7a64e6a1``): ImageNet val crops resized to
  64 x 64, written as ``<corruption>/<severity>/<wnid>/<image>``.

Each entry is the per-severity tuple of the script's constant ``c`` (what its elements mean is the same as in
ImageNet-C's ``make_imagenet_c.py``, whose table :mod:`dtn_bench.data.corruptions` holds); ``zoom_blur`` is the
largest zoom factor (exclusive end of ``np.arange(1, end, 0.01)``, step 0.01 for both datasets); ``elastic_transform``
is given as fractions of the image size (the scripts multiply by ``IMSIZE``); ``frost`` also rescales its photographs
by :data:`FROST_PHOTO_SCALE` before the random crop. :func:`parameter_table` renders one table as Markdown.

Wired into the generator: :mod:`dtn_bench.cifar_c.generate` builds each dataset's
:class:`~dtn_bench.data.corruptions.Recipe` from these tables (and the scripts' size-dependent choices: fog's plasma
map of 32 / 64, :data:`FROST_PHOTO_SCALE`, elastic fractions times the size, zoom steps of 0.01), which
``dtn-bench corrupt --format cifar10-c|cifar100-c|tiny-imagenet-c`` passes to the corruption functions.
"""

from __future__ import annotations

from typing import Any

SOURCES = {
    "cifar": "hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py (commit ca360085)",
    "tiny-imagenet": "hendrycks/robustness ImageNet-C/create_c/make_tinyimagenet_c.py (commit 7a64e6a1)",
}
"""Where each table comes from."""

FROST_PHOTO_SCALE = {"cifar": 0.2, "tiny-imagenet": 0.3}
"""Scale of the frost photographs before the random crop of the image size."""

CIFAR: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}
"""CIFAR-10-C and CIFAR-100-C (one script, both datasets)."""

TINY_IMAGENET: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
    "shot_noise": (250, 100, 50, 30, 15),
    "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
    "defocus_blur": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
    "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
    "motion_blur": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)),
    "frost": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
    "fog": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "jpeg_compression": (65, 58, 50, 40, 25),
    "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
    "gaussian_blur": (0.5, 0.75, 1, 1.25, 1.5),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0), (0.65, 0.3, 1, 0.69, 0.6, 0),
                (0.65, 0.1, 0.7, 0.68, 0.6, 1), (0.65, 0.1, 0.5, 0.67, 0.6, 1)),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
}
"""Tiny-ImageNet-C."""

TABLES = {"cifar10": CIFAR, "cifar100": CIFAR, "tiny-imagenet": TINY_IMAGENET}
"""Dataset (as ``--dataset`` names it) -> its table."""


def parameter_table(dataset: str) -> str:
    """The severity parameters of ``dataset`` as a Markdown table (corruption x severity), with the source."""
    from dtn_bench.errors import DTNBenchError

    if dataset not in TABLES:
        raise DTNBenchError(f"no parameter table for {dataset!r}: use one of {', '.join(TABLES)}")
    source = SOURCES["tiny-imagenet" if dataset == "tiny-imagenet" else "cifar"]
    lines = [f"Severity parameters of {dataset} (source: {source})", "",
             "| corruption | 1 | 2 | 3 | 4 | 5 |", "| --- | --- | --- | --- | --- | --- |"]
    for name, values in TABLES[dataset].items():
        lines.append(f"| {name} | " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def parameter_document() -> str:
    """The text of ``docs/cifar_c_parameters.md``.

    Every dataset's :func:`parameter_table` under one heading, with what the cells mean.
    """
    frost = ", ".join(f"{k} {v}" for k, v in FROST_PHOTO_SCALE.items())
    head = (
        "# Severity parameters of CIFAR-10-C / CIFAR-100-C and Tiny-ImageNet-C\n\n"
        "What `dtn-bench corrupt --format cifar10-c|cifar100-c|tiny-imagenet-c` applies, from\n"
        "`dtn_bench/cifar_c/params.py` (this file is `dtn_bench.cifar_c.params.parameter_document()`; a test keeps\n"
        "them equal). Each cell is the per-severity constant `c` of Hendrycks' script (the same meaning as in\n"
        "ImageNet-C's `make_imagenet_c.py`); zoom_blur is the largest zoom factor (`np.arange(1, end, 0.01)`),\n"
        "elastic_transform is given as fractions of the image size, and frost rescales its photographs before the\n"
        f"random crop ({frost}).\n"
    )
    return head + "".join(f"\n## {name}\n\n{parameter_table(name)}" for name in TABLES)
