"""ImageNet-C metrics: known answers, computed here by hand from the definitions."""

from __future__ import annotations

import pytest
import torch

from dtn_bench import metrics as M

# the reference's "avg" column, typed in separately from the per-severity table
ALEXNET_AVG = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500, "speckle_noise": 0.845388, "gaussian_blur": 0.787108,
    "spatter": 0.717512, "saturate": 0.658248,
}


def test_constants_agree_with_the_published_averages():
    assert len(M.CORRUPTIONS) == 15 and len(set(M.CORRUPTIONS)) == 15
    assert set(M.ALEXNET_ERRORS) == set(M.CORRUPTIONS) | set(M.EXTRA_CORRUPTIONS)
    for c, avg in ALEXNET_AVG.items():
        assert M.alexnet_average(c) == pytest.approx(avg, abs=1e-6), c


def test_alexnet_scores_100():
    errors = {c: M.ALEXNET_ERRORS[c] for c in M.CORRUPTIONS}
    assert M.mce(errors) == pytest.approx(100.0)
    assert M.relative_mce(errors, M.ALEXNET_CLEAN_ERROR) == pytest.approx(100.0)


def test_known_answer_constant_error():
    errors = {c: [0.5] * 5 for c in M.CORRUPTIONS}
    expected = sum(100 * 0.5 / ALEXNET_AVG[c] for c in M.CORRUPTIONS) / 15
    assert M.mce(errors) == pytest.approx(expected, rel=1e-6)
    rel = sum(100 * (0.5 - 0.2) / (ALEXNET_AVG[c] - 0.43478) for c in M.CORRUPTIONS) / 15
    assert M.relative_mce(errors, 0.2) == pytest.approx(rel, rel=1e-6)
    assert M.mean_corruption_error(errors) == pytest.approx(0.5)
    assert M.mean_corruption_accuracy(errors) == pytest.approx(0.5)


def test_ce_is_ratio_of_sums_and_halves_with_errors():
    half = {c: [e / 2 for e in M.ALEXNET_ERRORS[c]] for c in M.CORRUPTIONS}
    assert M.mce(half) == pytest.approx(50.0)
    errs = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert M.ce("fog", errs) == pytest.approx(100 * 1.5 / sum(M.ALEXNET_ERRORS["fog"]))


def test_extras_never_enter_mce():
    errors = {c: [0.5] * 5 for c in M.CORRUPTIONS}
    base = M.mce(errors)
    errors["spatter"] = [1.0] * 5
    assert M.mce(errors) == base
    assert M.extra_ce(errors) == {"spatter": pytest.approx(100 / ALEXNET_AVG["spatter"])}


def test_missing_and_bad_inputs_raise_value_error_naming_them():
    errors = {c: [0.5] * 5 for c in M.CORRUPTIONS}
    del errors["frost"]
    with pytest.raises(ValueError, match="frost"):
        M.mce(errors)
    with pytest.raises(ValueError, match="frost"):
        M.relative_mce(errors, 0.2)
    errors["frost"] = [0.5] * 4
    with pytest.raises(ValueError, match="frost: expected 5"):
        M.mce(errors)
    errors["frost"] = [0.5, 0.5, 50, 0.5, 0.5]
    with pytest.raises(ValueError, match="frost severity 3"):
        M.mce(errors)
    errors["frost"] = [0.5] * 5
    errors["frots"] = [0.5] * 5
    with pytest.raises(ValueError, match="did you mean frost"):
        M.mce(errors)
    with pytest.raises(ValueError, match="clean_error"):
        M.relative_ce("fog", [0.5] * 5, 1.5)


def test_topk_correct_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    targets = torch.tensor([1, 2, 0, 1])
    assert M.topk_correct(logits, targets, ks=(1, 2, 3)).tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match="top-5"):
        M.topk_correct(logits, targets, ks=(1, 5))
