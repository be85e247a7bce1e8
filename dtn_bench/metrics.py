"""ImageNet-C metrics (Hendrycks & Dietterich, ICLR 2019), as pure functions.

Every number here is labelled for what it is:

- ``E(s, c)``: top-1 error (a fraction) at severity ``s`` of corruption ``c``.
- **CE** (corruption error, AlexNet-normalised, percent): ``CE(c) = 100 * sum_s E(s, c) / sum_s E_AlexNet(s, c)``.
- **mCE** (percent): the mean CE over the 15 benchmark corruptions; the 4 extras never enter it. AlexNet = 100.
- **relative CE / relative mCE** (percent): ``100 * (mean_s E(s, c) - E_clean) / (mean_s E_AlexNet(s, c) -
  E_AlexNet_clean)``, averaged over the 15. This "mean form" (clean error subtracted per severity) is the one that
  reproduces the paper's tables. The AlexNet clean error used is :data:`ALEXNET_CLEAN_ERROR` = 0.43478
  (torchvision's AlexNet; the paper prints 43.5%).
- **mean corruption error / accuracy** (fractions): the plain, unnormalised mean over the 15 x 5 errors, which is
  what Hendrycks' own test script prints; it is not the mCE.
- **RobustBench's mCE**: on RobustBench's fixed 5,000-image subset of val, RobustBench divides by AlexNet's errors on
  that same subset (:data:`ROBUSTBENCH_ALEXNET_ACCURACY`), not by the full-set averages above:
  ``mCE = mean_c [mean_s E(s, c) / mean_s E_AlexNet-subset(s, c)]`` (``robustbench/eval.py``,
  ``corruptions_evaluation``); :func:`mce_over` takes either baseline, and :data:`NORMALISATIONS` names each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS: tuple[str, ...] = tuple(c for group in GROUPS.values() for c in group)
"""The 15 corruptions of the mCE, in canonical order."""
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 extra corruptions (reported with their own CE, never in the mCE)."""
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# AlexNet top-1 errors (fractions) per severity 1..5, from the ImageNet-C repository.
ALEXNET_ERRORS: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
    "speckle_noise": (0.66192, 0.74440, 0.90246, 0.94548, 0.97268),
    "gaussian_blur": (0.54732, 0.70444, 0.82574, 0.89864, 0.95940),
    "spatter": (0.47196, 0.62194, 0.75052, 0.84132, 0.90182),
    "saturate": (0.59342, 0.65514, 0.51174, 0.70834, 0.82260),
}
ALEXNET_CLEAN_ERROR = 0.43478
"""AlexNet's clean top-1 error on ImageNet val (torchvision's model; the paper prints 43.5%)."""

ROBUSTBENCH_ALEXNET_ACCURACY: dict[str, dict[str, tuple[float, float, float, float, float]]] = {
    "2d": {  # ImageNet-C, model_info/imagenet/corruptions/unaggregated_results.csv
        "gaussian_noise": (0.311, 0.1814, 0.0724, 0.0214, 0.0058),
        "shot_noise": (0.2944, 0.1598, 0.0726, 0.0196, 0.012),
        "impulse_noise": (0.2234, 0.1154, 0.0556, 0.014, 0.0054),
        "defocus_blur": (0.3404, 0.262, 0.1502, 0.085, 0.0522),
        "glass_blur": (0.3486, 0.2412, 0.1126, 0.08, 0.0636),
        "motion_blur": (0.4174, 0.295, 0.1794, 0.1022, 0.0698),
        "zoom_blur": (0.3028, 0.2308, 0.1936, 0.163, 0.1312),
        "snow": (0.2788, 0.114, 0.132, 0.085, 0.0502),
        "frost": (0.3788, 0.1976, 0.1052, 0.0994, 0.0616),
        "fog": (0.3154, 0.2324, 0.157, 0.1214, 0.0556),
        "brightness": (0.5504, 0.514, 0.464, 0.3886, 0.2906),
        "contrast": (0.3496, 0.2334, 0.1094, 0.0266, 0.0094),
        "elastic_transform": (0.471, 0.3022, 0.44, 0.3568, 0.1898),
        "pixelate": (0.4754, 0.4502, 0.267, 0.1288, 0.0858),
        "jpeg_compression": (0.4858, 0.4522, 0.4228, 0.3488, 0.2564),
    },
    "3d": {  # ImageNet-3DCC, model_info/imagenet/corruptions/unaggregated_results_3d.csv
        "near_focus": (0.4616, 0.4192, 0.3822, 0.3554, 0.3282),
        "far_focus": (0.4722, 0.3902, 0.3314, 0.29, 0.2586),
        "bit_error": (0.4432, 0.4, 0.3272, 0.263, 0.1498),
        "color_quant": (0.551, 0.5388, 0.5018, 0.3306, 0.0968),
        "flash": (0.2858, 0.248, 0.2082, 0.156, 0.0958),
        "fog_3d": (0.4374, 0.2808, 0.1852, 0.1328, 0.096),
        "h265_abr": (0.498, 0.4836, 0.4494, 0.3626, 0.3694),
        "h265_crf": (0.5028, 0.5012, 0.4886, 0.4496, 0.4318),
        "iso_noise": (0.1308, 0.1052, 0.0658, 0.0286, 0.012),
        "low_light": (0.2832, 0.2364, 0.1874, 0.1246, 0.056),
        "xy_motion_blur": (0.3028, 0.209, 0.153, 0.1156, 0.0954),
        "z_motion_blur": (0.2792, 0.2308, 0.193, 0.166, 0.1516),
    },
}
"""AlexNet's top-1 ACCURACY (fractions of 5,000 images) per severity 1..5 on RobustBench's 5,000-image subset of
ImageNet-C (``"2d"``) and ImageNet-3DCC (``"3d"``): the ``AlexNet`` row of RobustBench's
``model_info/imagenet/corruptions/unaggregated_results.csv`` / ``unaggregated_results_3d.csv`` (commit fe235fb,
2023-04-10; stored as accuracies, as RobustBench stores them); ``robustbench/eval.py`` divides by ``1 -`` these.
RobustBench's ``AlexNet.json`` gives the means: 21.12% (2d) and 28.47% (3d) mean accuracy, mCE 100."""
ROBUSTBENCH_SUBSET_SHA256 = "3d2e60d4fb112fb6a964606e260a8e84f1faa0804958974cb2bb96a7c5e3f4ba"
"""SHA-256 of RobustBench's 5,000-image list (``robustbench/helper_files/imagenet_test_image_ids.txt``: ``wnid/name``
per line, 997 classes, 1-12 images each) as :func:`subset_list_sha256` computes it: the entries sorted, one per line,
each ending in a newline. A subset file with this digest is RobustBench's list."""
ROBUSTBENCH_SUBSET_SIZE = 5000
ROBUSTBENCH_SUBSET_LABEL = "RobustBench's 5,000-image list"
"""How rows name the images of a run on RobustBench's list (its ``subset``; reports normalise by it)."""

HENDRYCKS = "AlexNet-normalised (Hendrycks & Dietterich 2019, full-set AlexNet errors)"
ROBUSTBENCH = "AlexNet-normalised (RobustBench: AlexNet's errors on its 5,000-image subset)"
UNNORMALISED = "unnormalised mean error"
NORMALISATIONS = (HENDRYCKS, ROBUSTBENCH, UNNORMALISED)
"""How a headline corruption metric is normalised; every mCE shown says which."""


def robustbench_alexnet_errors(kind: str) -> dict[str, tuple[float, ...]]:
    """AlexNet's top-1 errors (``1 -`` :data:`ROBUSTBENCH_ALEXNET_ACCURACY`) on RobustBench's subset (2d / 3d)."""
    return {c: tuple(round(1.0 - a, 6) for a in accs) for c, accs in ROBUSTBENCH_ALEXNET_ACCURACY[kind].items()}


def subset_list_sha256(entries: Sequence[str]) -> str:
    """SHA-256 of a subset list's ``wnid/name`` entries, sorted and unique, one per line (order-free identity)."""
    import hashlib

    text = "".join(f"{e}\n" for e in sorted(set(entries)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mce_over(errors: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]],
             corruptions: Sequence[str]) -> float:
    """The mCE (percent) over ``corruptions`` normalised by ``baseline``: ``100 mean_c [sum_s E(s,c) / sum_s B(s,c)]``.

    With ``baseline`` = :data:`ALEXNET_ERRORS` and the 15 :data:`CORRUPTIONS` this is :func:`mce`; with RobustBench's
    subset errors (:func:`robustbench_alexnet_errors`) it is RobustBench's mCE (AlexNet's own errors give 100).

    Raises:
        ValueError: a corruption of ``corruptions`` missing from ``errors`` or ``baseline``, or not 5 severities.
    """
    total = 0.0
    for c in corruptions:
        if c not in errors or c not in baseline:
            raise ValueError(f"missing corruption {c!r} in the {'errors' if c not in errors else 'baseline'}")
        vals = _severity_errors(c, errors[c])
        total += sum(vals) / sum(float(b) for b in baseline[c])
    return 100.0 * total / len(corruptions)


def alexnet_average(corruption: str) -> float:
    """AlexNet's mean error over the five severities of ``corruption`` (what CE divides by)."""
    return sum(ALEXNET_ERRORS[_known(corruption)]) / len(SEVERITIES)


def _known(corruption: str) -> str:
    if corruption not in ALEXNET_ERRORS:
        from dtn_bench.checks import did_you_mean

        hint = did_you_mean(corruption, list(ALEXNET_ERRORS), n=1, cutoff=0.6)
        raise ValueError(f"unknown corruption {corruption!r}{hint if 'did you mean' in hint else ''}")
    return corruption


def _severity_errors(corruption: str, errors: Sequence[float]) -> list[float]:
    vals = [float(e) for e in errors]
    if len(vals) != len(SEVERITIES):
        raise ValueError(f"{corruption}: expected {len(SEVERITIES)} per-severity errors, got {len(vals)}")
    for s, e in zip(SEVERITIES, vals, strict=True):
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"{corruption} severity {s}: error {e} is not a fraction in [0, 1]")
    return vals


def _check_complete(errors: Mapping[str, Sequence[float]]) -> None:
    for name in errors:
        _known(name)
    missing = [c for c in CORRUPTIONS if c not in errors]
    if missing:
        raise ValueError(f"missing corruption {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1
                                                                 else ""))


def ce(corruption: str, errors: Sequence[float]) -> float:
    """Corruption error of one corruption, AlexNet-normalised, in percent."""
    vals = _severity_errors(_known(corruption), errors)
    return 100.0 * sum(vals) / sum(ALEXNET_ERRORS[corruption])


def relative_ce(corruption: str, errors: Sequence[float], clean_error: float) -> float:
    """Relative corruption error of one corruption (mean form), in percent."""
    vals = _severity_errors(_known(corruption), errors)
    _check_fraction("clean_error", clean_error)
    return 100.0 * (sum(vals) / len(vals) - clean_error) / (alexnet_average(corruption) - ALEXNET_CLEAN_ERROR)


def mce(errors: Mapping[str, Sequence[float]]) -> float:
    """MCE in percent: the mean AlexNet-normalised CE over the 15 benchmark corruptions.

    Args:
        errors: corruption name -> its 5 per-severity top-1 errors (fractions). Extra corruptions may be present and
            are ignored; a missing benchmark corruption raises ValueError naming it.
    """
    _check_complete(errors)
    return sum(ce(c, errors[c]) for c in CORRUPTIONS) / len(CORRUPTIONS)


def relative_mce(errors: Mapping[str, Sequence[float]], clean_error: float) -> float:
    """Relative mCE in percent (mean form; AlexNet clean error :data:`ALEXNET_CLEAN_ERROR`).

    Args:
        errors: as for :func:`mce`.
        clean_error: the model's top-1 error on clean ImageNet val (a fraction).
    """
    _check_complete(errors)
    return sum(relative_ce(c, errors[c], clean_error) for c in CORRUPTIONS) / len(CORRUPTIONS)


def extra_ce(errors: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """CE (percent) of each extra corruption present in ``errors`` (never part of the mCE)."""
    return {c: ce(c, errors[c]) for c in EXTRA_CORRUPTIONS if c in errors}


def mean_corruption_error(errors: Mapping[str, Sequence[float]]) -> float:
    """Unnormalised mean top-1 error over the 15 x 5 (corruption, severity) pairs, as a fraction (not the mCE)."""
    _check_complete(errors)
    vals = [e for c in CORRUPTIONS for e in _severity_errors(c, errors[c])]
    return sum(vals) / len(vals)


def mean_corruption_accuracy(errors: Mapping[str, Sequence[float]]) -> float:
    """``1 - mean_corruption_error``, a fraction."""
    return 1.0 - mean_corruption_error(errors)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} {value} is not a fraction in [0, 1]")


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Counts of samples whose target is within the top-k predictions, for each k (int64, exact for all-reduce).

    Args:
        logits: ``[N, classes]``.
        targets: ``[N]`` class indices.
        ks: the k values; each at most the number of classes.
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits {list(logits.shape)} and targets {list(targets.shape)} do not match")
    kmax = max(ks)
    if kmax > logits.shape[1]:
        raise ValueError(f"top-{kmax} asked of {logits.shape[1]} classes")
    top = logits.topk(kmax, dim=1).indices  # [N, kmax], best first
    hit = top.eq(targets.view(-1, 1))
    return torch.stack([hit[:, :k].any(dim=1).sum() for k in ks]).to(torch.int64)
