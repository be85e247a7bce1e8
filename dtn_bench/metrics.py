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
