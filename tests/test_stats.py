"""Statistics: known answers typed in from published tables and worked examples (sources beside each)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dtn_bench import stats as S

# --------------------------------------------------------------------------------------------------- t distribution

# Critical values t_{p, df}: NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.2, "Critical values of
# the Student's t distribution" (https://itl.nist.gov/div898/handbook/eda/section3/eda3672.htm), columns
# p = 0.90, 0.95, 0.975, 0.99, 0.995, 0.999. The df = 9, 10 rows are as in H. Quene, "Quantitative methods and
# statistics", appendix C (older printings of the NIST table have 4.296 and 4.143 in the last column).
NIST_P = (0.90, 0.95, 0.975, 0.99, 0.995, 0.999)
NIST_T = {
    1: (3.078, 6.314, 12.706, 31.821, 63.657, 318.309),
    2: (1.886, 2.920, 4.303, 6.965, 9.925, 22.327),
    3: (1.638, 2.353, 3.182, 4.541, 5.841, 10.215),
    4: (1.533, 2.132, 2.776, 3.747, 4.604, 7.173),
    5: (1.476, 2.015, 2.571, 3.365, 4.032, 5.893),
    9: (1.383, 1.833, 2.262, 2.821, 3.250, 4.297),
    10: (1.372, 1.812, 2.228, 2.764, 3.169, 4.144),
    29: (1.311, 1.699, 2.045, 2.462, 2.756, 3.396),
    30: (1.310, 1.697, 2.042, 2.457, 2.750, 3.385),
    100: (1.290, 1.660, 1.984, 2.364, 2.626, 3.174),
    math.inf: (1.282, 1.645, 1.960, 2.326, 2.576, 3.090),
}


@pytest.mark.parametrize("df", list(NIST_T))
def test_t_quantile_matches_the_nist_table_to_three_decimals(df):
    for p, expected in zip(NIST_P, NIST_T[df], strict=True):
        t = S.t_quantile(p, df)
        assert abs(t - expected) <= 5e-4 + 1e-9, (df, p, t)
        assert S.t_quantile(1 - p, df) == pytest.approx(-t, rel=1e-9)  # symmetry


def test_t_quantile_closed_forms():
    # Student's t distribution, special cases (e.g. Wikipedia "Student's t-distribution"): df = 1 is the Cauchy,
    # F^-1(p) = tan(pi (p - 1/2)); df = 2 has F^-1(p) = (2p - 1) / sqrt(2 p (1 - p)).
    for p in (0.001, 0.1, 0.3, 0.7, 0.975, 0.9999):
        assert S.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert S.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
    assert S.t_quantile(0.5, 7) == 0.0
    assert S.t_quantile(1e-300, 1) == pytest.approx(-1 / (math.pi * 1e-300), rel=1e-9)  # far tail, no overflow


def test_normal_quantile_and_cdf():
    # standard normal table values (NIST e-Handbook 1.3.6.7.1): z_0.975 = 1.960, z_0.995 = 2.576
    assert S.normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-6)
    assert S.normal_quantile(0.995) == pytest.approx(2.575829, abs=1e-6)
    assert S.normal_quantile(0.5) == 0.0
    for p in (1e-200, 1e-8, 0.02, 0.4, 0.9, 1 - 1e-12):
        assert S.normal_cdf(S.normal_quantile(p)) == pytest.approx(p, rel=1e-10)
    assert S.t_quantile(0.975, 1e9) == pytest.approx(S.normal_quantile(0.975), abs=1e-7)  # huge df: the normal


def _mpmath_normal_quantile(p: float) -> float:
    # an independent reference: the root of log Phi(z) = log p in 50-digit arithmetic (mpmath comes with torch's sympy)
    import mpmath

    with mpmath.workdps(50):
        log_p = mpmath.log(mpmath.mpf(p))
        return float(mpmath.findroot(lambda z: mpmath.log(mpmath.ncdf(z)) - log_p, -math.sqrt(-2.0 * math.log(p))))


@pytest.mark.parametrize("p", [0.4, 0.1] + [10.0**-k for k in (3, 30, 100, 200, 220, 224, 225, 250, 280, 300, 307)]
                         + [1e-310, 1e-320, 5e-324])
def test_normal_quantile_far_tail_matches_a_50_digit_reference(p):
    # issue 21 section 2: below p ~ 1e-224 the old Newton loop stopped at its cap (-33.83 instead of -37.047 at 1e-300)
    z = S.normal_quantile(p)
    assert z == pytest.approx(_mpmath_normal_quantile(p), rel=1e-14)
    assert S.t_quantile(p, math.inf) == z


def test_normal_quantile_at_1e_300_is_the_published_value():
    # Phi^-1(1e-300) = -37.0471 (issue 21); -37.04709629936120 and -38.46740561714434 are the 50-digit reference above
    assert S.normal_quantile(1e-300) == pytest.approx(-37.0470962993612, abs=2e-13)
    assert S.normal_quantile(5e-324) == pytest.approx(-38.4674056171443, abs=2e-13)  # the smallest positive float


def test_t_quantile_far_tail_closed_form():
    # df = 2: F^-1(p) = (2p - 1) / sqrt(2 p (1 - p)), exact down to the smallest normal float
    for p in (1e-50, 1e-200, 1e-300):
        assert S.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-13)


def test_t_cdf_closed_forms():
    # df = 1: F(t) = 1/2 + arctan(t) / pi; df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert S.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-14)
    assert S.t_cdf(math.sqrt(3.0), 1) == pytest.approx(5 / 6, abs=1e-14)
    assert S.t_cdf(-1.0, 1) == pytest.approx(0.25, abs=1e-14)
    assert S.t_cdf(2.0, 2) == pytest.approx(0.908248290463863, abs=1e-13)  # 1/2 + 1/sqrt(6)
    assert S.t_cdf(0.0, 5) == 0.5
    assert S.t_cdf(math.inf, 3) == 1.0 and S.t_cdf(-math.inf, 3) == 0.0
    assert S.t_cdf(-1e300, 1) == pytest.approx(1 / (math.pi * 1e300), rel=1e-9)


def test_t_pvalues_match_r_output():
    # two-sided p-values printed by R's t.test (4 significant digits, t printed to 5):
    # sleep data, paired (R For Dummies, "How to compare paired data with R"): t = -4.0621, df = 9, p = 0.002833
    # a vs b (Cross Validated, "Why doesn't R output for a paired t-test match the formula"): t = 0.5547, df = 8,
    #   p = 0.5943
    # sample.1 vs sample.2 (matched pairs how-to): t = 2.8577, df = 5, p = 0.0355
    # one-sample differences (UMSL MTH1320 notes 10.5.161): t = -0.069941, df = 7, p = 0.9462
    for t, df, p in ((-4.0621, 9, 0.002833), (0.5547, 8, 0.5943), (2.8577, 5, 0.0355), (-0.069941, 7, 0.9462)):
        assert S.t_pvalue(t, df) == pytest.approx(p, rel=1e-3), (t, df)
        assert S.t_pvalue(t, df) == pytest.approx(2 * S.t_cdf(-abs(t), df), rel=1e-12)


def test_t_quantile_inverts_the_cdf_for_any_df():
    for df in (0.3, 1, 2.5, 3, 30, 1e5):
        for p in (1e-10, 0.01, 0.2, 0.4999, 0.6, 0.99):
            assert S.t_cdf(S.t_quantile(p, df), df) == pytest.approx(p, rel=1e-9), (df, p)


def test_t_bad_arguments_raise():
    for bad in (0.0, 1.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError):
            S.t_quantile(bad, 3)
    for bad_df in (0, -1, math.nan):
        with pytest.raises(ValueError):
            S.t_cdf(1.0, bad_df)
    with pytest.raises(ArithmeticError, match="float range"):
        S.t_quantile(1e-300, 0.2)  # the answer is about 1e1500


def test_regularized_incomplete_beta_known_answers():
    # I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_x(a, b) = P(Binomial(a + b - 1, x) >= a) for integer a, b:
    # I_0.4(2, 3) = 1 - (0.6^4 + 4 * 0.4 * 0.6^3) = 0.5248
    assert S.regularized_incomplete_beta(3.0, 1.0, 0.7) == pytest.approx(0.7**3, rel=1e-13)
    assert S.regularized_incomplete_beta(1.0, 2.5, 0.3) == pytest.approx(1 - 0.7**2.5, rel=1e-13)
    assert S.regularized_incomplete_beta(2.0, 3.0, 0.4) == pytest.approx(0.5248, rel=1e-13)
    for a, b, x in ((0.5, 7.0, 0.2), (30.0, 0.5, 0.97), (2.0, 2.0, 0.5)):
        assert S.regularized_incomplete_beta(a, b, x) == pytest.approx(
            1 - S.regularized_incomplete_beta(b, a, 1 - x), abs=1e-14)
    assert S.regularized_incomplete_beta(2.0, 3.0, 0.0) == 0.0
    assert S.regularized_incomplete_beta(2.0, 3.0, 1.0) == 1.0
    with pytest.raises(ValueError):
        S.regularized_incomplete_beta(0.0, 1.0, 0.5)
    with pytest.raises(ValueError):
        S.regularized_incomplete_beta(1.0, 1.0, 1.5)


def test_chi2_one_df_survival_matches_the_critical_values():
    # NIST e-Handbook 1.3.6.7.4, chi-square critical values, 1 df: 3.841 (0.05), 6.635 (0.01), 10.828 (0.001)
    for x, p in ((3.841, 0.05), (6.635, 0.01), (10.828, 0.001)):
        assert S.chi2_sf_1df(x) == pytest.approx(p, rel=2e-3)
    assert S.chi2_sf_1df(0.0) == 1.0
    with pytest.raises(ValueError):
        S.chi2_sf_1df(-1.0)


# --------------------------------------------------------------------------------------------------- t interval

# R's datasets::sleep (Cushny & Peebles, as used by Student 1908): extra hours of sleep of 10 patients per drug;
# t.test(extra ~ group, data = sleep, paired = TRUE) prints mean -1.58 and 95% CI -2.4598858 -0.7001142
# (R For Dummies, "How to compare paired data with R").
SLEEP_1 = (0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0)
SLEEP_2 = (1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4)


def test_paired_t_interval_matches_r_on_the_sleep_data():
    r = S.paired_t_interval(SLEEP_1, SLEEP_2)
    assert r.mean == pytest.approx(-1.58, abs=1e-12)
    assert r.low == pytest.approx(-2.4598858, abs=1e-7)
    assert r.high == pytest.approx(-0.7001142, abs=1e-7)
    assert (r.n, r.method, r.confidence, r.reason) == (10, "t", 0.95, None)
    assert r.significant and r.has_interval


def test_paired_t_interval_matches_other_r_examples():
    # Cross Validated example: t.test(a, b, paired = TRUE) -> mean 0.2222222, CI -0.7016018 1.1460462 (8 df)
    r = S.paired_t_interval([1, 2, 3, 2, 3, 1, 2, 3, 1], [2, 1, 3, 1, 2, 3, 2, 1, 1])
    assert (r.mean, r.low, r.high) == pytest.approx((0.2222222, -0.7016018, 1.1460462), abs=1e-7)
    assert not r.significant
    # matched-pairs how-to: t.test(sample.1, sample.2, paired = TRUE) -> mean 7, CI 0.7033862 13.2966138 (5 df)
    r = S.paired_t_interval([15, 10, 7, 22, 17, 14], [9, 1, 11, 13, 3, 6])
    assert (r.mean, r.low, r.high) == pytest.approx((7.0, 0.7033862, 13.2966138), abs=1e-7)
    assert r.significant
    # UMSL MTH1320 10.5.161: t.test(difference) -> mean -1.25, CI -43.51131 41.01131 (7 df)
    r = S.t_interval([-30, 30, -40, -40, 80, 60, -50, -20])
    assert (r.mean, r.low, r.high) == pytest.approx((-1.25, -43.51131, 41.01131), abs=1e-5)


def test_t_interval_level_and_degenerate_cases():
    d = np.array([0.5, 1.0, 1.5, 2.0])
    wide = S.t_interval(d, confidence=0.99)
    narrow = S.t_interval(d, confidence=0.80)
    assert wide.low < narrow.low < narrow.high < wide.high
    half = S.t_quantile(0.995, 3) * np.std(d, ddof=1) / 2
    assert (wide.low, wide.high) == pytest.approx((1.25 - half, 1.25 + half), rel=1e-12)
    same = S.t_interval([0.3, 0.3, 0.3])  # no spread: a zero-width interval, still significant (excludes 0)
    assert (same.low, same.high, same.significant) == (pytest.approx(0.3), pytest.approx(0.3), True)
    zero = S.t_interval([0.0, 0.0])
    assert zero.low == zero.high == 0.0 and not zero.significant  # touching 0 is not excluding it


def test_one_seed_gives_no_interval_and_a_reason():
    r = S.paired_t_interval([0.71], [0.70])
    assert r.mean == pytest.approx(0.01)
    assert r.low is None and r.high is None and not r.has_interval and not r.significant
    assert r.reason == "one seed: no interval"
    assert r.format() == "0.01 (one seed: no interval)"
    b = S.paired_bootstrap([True], [False], unit="image")
    assert (b.low, b.high, b.reason, b.method) == (None, None, "one image: no interval", "bootstrap")


def test_paired_inputs_are_checked():
    with pytest.raises(ValueError, match="length"):
        S.paired_t_interval([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no pairs"):
        S.paired_t_interval([], [])
    with pytest.raises(ValueError, match="not finite"):
        S.paired_t_interval([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="confidence"):
        S.paired_t_interval([1.0, 2.0], [1.0, 2.5], confidence=95)
    with pytest.raises(ValueError, match="one-dimensional"):
        S.t_interval([[1.0, 2.0]])


def test_paired_difference_result():
    r = S.PairedDifference(-1.58, -2.46, -0.70, 10, "t")
    assert r.significant and r.format() == "-1.58 [-2.46, -0.70]" and str(r) == r.format()
    assert not S.PairedDifference(0.1, -0.2, 0.4, 5, "t").significant
    assert S.PairedDifference(0.1, 0.05, 0.4, 5, "t").significant
    with pytest.raises(ValueError):
        S.PairedDifference(0.1, None, 0.4, 5, "t")
    with pytest.raises(ValueError, match="reason"):
        S.PairedDifference(0.1, None, None, 1, "t")
    with pytest.raises(AttributeError):
        r.mean = 0.0  # frozen


# --------------------------------------------------------------------------------------------------- pairing


def test_check_unique_names_every_duplicate():
    S.check_unique([0, 1, 2])
    with pytest.raises(ValueError, match=r"^duplicate seed: 1 \(2 times\)$"):
        S.check_unique([0, 1, 1, 2])
    with pytest.raises(ValueError, match=r"^duplicate pairs: fog/3 \(2 times\), snow/1 \(3 times\)$"):
        S.check_unique([("fog", 3), ("snow", 1), ("fog", 3), ("snow", 1), ("snow", 1)], what="pair")


def test_pair_by_key():
    keys, va, vb = S.pair_by_key([(2, 0.7), (0, 0.5), (1, 0.6)], [(0, 0.4), (1, 0.65), (2, 0.6)])
    assert (keys, va, vb) == ([2, 0, 1], [0.7, 0.5, 0.6], [0.6, 0.4, 0.65])
    with pytest.raises(ValueError, match=r"^B: duplicate seed: 0 \(2 times\)$"):
        S.pair_by_key([(0, 1.0)], [(0, 1.0), (0, 2.0)])
    with pytest.raises(ValueError, match=r"^unpaired: seed 3 only in dtn; seed 4 only in ln$"):
        S.pair_by_key([(0, 1.0), (3, 1.0)], [(0, 1.0), (4, 1.0)], names=("dtn", "ln"))
    keys, va, vb = S.pair_by_key([(0, 1.0), (3, 2.0)], [(4, 1.0), (0, 5.0)], strict=False)
    assert (keys, va, vb) == ([0], [1.0], [5.0])


# --------------------------------------------------------------------------------------------------- bootstrap


def test_paired_bootstrap_of_correctness_matches_the_normal_interval():
    rng = np.random.default_rng(0)
    a = rng.random(4000) < 0.75
    b = np.where(rng.random(4000) < 0.9, a, ~a)  # B disagrees with A on about 10% of the images
    r = S.paired_bootstrap(a, b, seed=1, unit="image")
    d = a.astype(float) - b.astype(float)
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert r.mean == pytest.approx(d.mean(), abs=1e-15)
    assert r.low == pytest.approx(d.mean() - 1.959964 * se, abs=0.1 * se)
    assert r.high == pytest.approx(d.mean() + 1.959964 * se, abs=0.1 * se)
    assert (r.n, r.method) == (4000, "bootstrap")


def test_paired_bootstrap_of_continuous_values_matches_the_t_interval():
    rng = np.random.default_rng(2)
    a = rng.normal(1.0, 1.0, size=3000)
    b = a - rng.normal(0.05, 0.5, size=3000)
    r = S.paired_bootstrap(a, b, n_boot=2000, seed=3)
    t = S.paired_t_interval(a, b)
    se = (t.high - t.low) / (2 * 1.96)
    assert r.mean == pytest.approx(t.mean, abs=1e-12)
    assert (r.low, r.high) == pytest.approx((t.low, t.high), abs=0.25 * se)


def test_multinomial_shortcut_has_the_index_resampling_distribution(monkeypatch):
    rng = np.random.default_rng(4)
    a = rng.random(3000) < 0.6
    b = rng.random(3000) < 0.55
    fast = S.paired_bootstrap(a, b, n_boot=4000, seed=5)
    monkeypatch.setattr(S, "_FEW_ROWS", 0)  # force index resampling
    slow = S.paired_bootstrap(a, b, n_boot=4000, seed=5)
    se = (a.astype(float) - b).std(ddof=1) / math.sqrt(3000)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high), abs=0.15 * se)
    assert fast.low != slow.low  # really two paths


def test_bootstrap_is_seeded_and_checks_its_arguments():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=50), rng.normal(size=50)
    one = S.paired_bootstrap(a, b, n_boot=500, seed=11)
    assert one == S.paired_bootstrap(a, b, n_boot=500, seed=11)
    assert one == S.paired_bootstrap(a, b, n_boot=500, seed=np.random.default_rng(11))
    assert one != S.paired_bootstrap(a, b, n_boot=500, seed=12)
    same = S.paired_bootstrap(a, a, n_boot=500)
    assert (same.mean, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    for bad in (1, 2.5):
        with pytest.raises(ValueError, match="n_boot"):
            S.paired_bootstrap(a, b, n_boot=bad)


def _cells(n_corruptions: int = 3, n_severities: int = 5) -> list[tuple[str, int]]:
    return [(f"c{i}", s) for i in range(n_corruptions) for s in range(1, n_severities + 1)]


def test_mce_difference_known_answer_by_hand():
    # two corruptions, one severity, AlexNet errors 0.5 and 0.8:
    # x: E_A = 2/4, E_B = 1/4 -> CE_A - CE_B = 100 * 0.25 / 0.5 = 50
    # y: E_A = 1/4, E_B = 2/4 -> CE_A - CE_B = 100 * -0.25 / 0.8 = -31.25;  mCE_A - mCE_B = (50 - 31.25) / 2 = 9.375
    alexnet = {"x": [0.5], "y": [0.8]}
    a = {("x", 1): np.array([True, True, False, False]), ("y", 1): np.array([True, True, True, False])}
    b = {("x", 1): np.array([True, True, True, False]), ("y", 1): np.array([True, False, True, False])}
    for joint in (True, False):
        r = S.bootstrap_mce_difference(a, b, alexnet, n_boot=200, joint=joint)
        assert r.mean == pytest.approx(9.375, abs=1e-12)
        assert r.low <= r.mean <= r.high


def test_mce_difference_agrees_with_the_metrics_module():
    from dtn_bench import metrics as M

    rng = np.random.default_rng(7)
    n = 300
    a, b = {}, {}
    for c in M.CORRUPTIONS:
        for s in M.SEVERITIES:
            acc = rng.uniform(0.2, 0.9)
            a[(c, s)] = rng.random(n) < acc
            b[(c, s)] = rng.random(n) < acc - 0.05
    r = S.bootstrap_mce_difference(a, b, M.ALEXNET_ERRORS, n_boot=300)
    errors_a = {c: [1 - a[(c, s)].mean() for s in M.SEVERITIES] for c in M.CORRUPTIONS}
    errors_b = {c: [1 - b[(c, s)].mean() for s in M.SEVERITIES] for c in M.CORRUPTIONS}
    assert r.mean == pytest.approx(M.mce(errors_a) - M.mce(errors_b), abs=1e-9)
    assert r.mean < 0 and r.significant  # B errs more, so A has the lower mCE


def test_mce_joint_independent_and_generic_paths_agree():
    rng = np.random.default_rng(8)
    n, cells = 2000, _cells()
    alexnet = {c: [0.5, 0.6, 0.7, 0.8, 0.9] for c, _ in cells}
    base = rng.random(n) < 0.7  # correlated across cells: the same images are easy or hard everywhere
    a = {k: np.where(rng.random(n) < 0.8, base, rng.random(n) < 0.7) for k in cells}
    b = {k: np.where(rng.random(n) < 0.9, a[k], ~a[k]) for k in cells}
    joint = S.bootstrap_mce_difference(a, b, alexnet, n_boot=3000, seed=1)
    weights = np.array([100 / (3 * sum(alexnet[c])) for c, _ in cells])
    generic = S.bootstrap_group_means([a[k] for k in cells], [b[k] for k in cells],
                                      lambda ma, mb: (mb - ma) @ weights, n_boot=3000, seed=1)
    independent = S.bootstrap_mce_difference(a, b, alexnet, n_boot=3000, seed=1, joint=False)
    assert joint.mean == pytest.approx(generic.mean, abs=1e-12) == independent.mean
    width = joint.high - joint.low
    assert (generic.low, generic.high) == pytest.approx((joint.low, joint.high), abs=0.1 * width)
    assert independent.high - independent.low == pytest.approx(width, rel=0.3)


def test_group_bootstrap_of_a_nonlinear_statistic():
    # ratio of overall accuracies, joint and per-group resampling; the point estimate is the observed ratio
    rng = np.random.default_rng(9)
    ga = [rng.random(500) < 0.8, rng.random(500) < 0.6]
    gb = [rng.random(500) < 0.7, rng.random(500) < 0.5]

    def ratio(ma, mb):
        return ma.mean(axis=1) / mb.mean(axis=1)

    expected = (ga[0].mean() + ga[1].mean()) / (gb[0].mean() + gb[1].mean())
    for joint in (True, False):
        r = S.bootstrap_group_means(ga, gb, ratio, n_boot=1000, joint=joint)
        assert r.mean == pytest.approx(expected, rel=1e-12)
        assert 1.0 < r.low < expected < r.high  # A is clearly the more accurate here


def test_group_bootstrap_input_errors():
    ok = [np.ones(4, bool)]
    with pytest.raises(ValueError, match="groups"):
        S.bootstrap_group_means(ok, ok * 2, lambda a, b: a[:, 0])
    with pytest.raises(ValueError, match="same units"):
        S.bootstrap_group_means(ok, [np.ones(3, bool)], lambda a, b: a[:, 0])
    with pytest.raises(ValueError, match="one length"):
        S.bootstrap_group_means([np.ones(4, bool), np.ones(5, bool)], [np.ones(4, bool), np.ones(5, bool)],
                                lambda a, b: a[:, 0])
    with pytest.raises(ValueError, match="one value per row"):
        S.bootstrap_group_means(ok, ok, lambda a, b: a)
    r = S.bootstrap_group_means([np.ones(4, bool), np.ones(5, bool)], [np.zeros(4, bool), np.zeros(5, bool)],
                                lambda a, b: (a - b).mean(axis=1), n_boot=100, joint=False)
    assert (r.mean, r.low, r.high) == (1.0, 1.0, 1.0)


def test_mce_input_errors():
    a = {("fog", 1): np.ones(3, bool)}
    with pytest.raises(ValueError, match="same corruption/severity cells"):
        S.bootstrap_mce_difference(a, {("fog", 2): np.ones(3, bool)}, {"fog": [0.5, 0.5]})
    with pytest.raises(ValueError, match="no AlexNet reference"):
        S.bootstrap_mce_difference(a, a, {"snow": [0.5]})
    with pytest.raises(ValueError, match="severity 1"):
        S.bootstrap_mce_difference(a, a, {"fog": []})
    with pytest.raises(ValueError, match="booleans"):
        S.bootstrap_mce_difference(a, {("fog", 1): np.ones(3)}, {"fog": [0.5]})


# --------------------------------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_known_answers():
    # calcugator chi2_mcnemar example (20 teenagers, discordant 11 and 3): two-tails probability 0.057373046875
    r = S.mcnemar_counts(11, 3)
    assert (r.method, r.statistic) == ("exact", None)
    assert r.p_value == pytest.approx(0.057373046875, abs=1e-15)  # 2 * (1 + 14 + 91 + 364) / 2**14
    # stat-tools.xyz McNemar calculator, b = 12, c = 5: p (exact) = 0.1435
    assert S.mcnemar_counts(12, 5).p_value == pytest.approx(0.1435, abs=5e-5)
    assert S.mcnemar_counts(0, 5).p_value == 2 / 32
    assert S.mcnemar_counts(7, 7).p_value == 1.0 and S.mcnemar_counts(0, 0).p_value == 1.0
    assert S.mcnemar_counts(3, 11).p_value == r.p_value


def test_mcnemar_chi_square_known_answers():
    # stat-tools.xyz, b = 12, c = 5: chi-square (cc) = 2.1176, p = 0.1456 (forced; 17 < 25 would be exact)
    r = S.mcnemar_counts(12, 5, exact=False)
    assert (r.method, r.statistic, r.p_value) == ("chi2", pytest.approx(2.1176, abs=5e-5), pytest.approx(0.1456,
                                                                                                       abs=5e-5))
    # Statology "How to perform McNemar's test in R" (marketing video, discordant 40 and 12), R's mcnemar.test:
    # McNemar's chi-squared = 14.019
    r = S.mcnemar_counts(40, 12)
    assert r.method == "chi2" and r.statistic == pytest.approx(14.019, abs=5e-4)
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(14.019230769 / 2)), rel=1e-8)


def test_mcnemar_switches_to_chi_square_at_25_discordant():
    assert S.MCNEMAR_EXACT_BELOW == 25
    assert S.mcnemar_counts(20, 4).method == "exact"
    assert S.mcnemar_counts(20, 5).method == "chi2"
    assert S.mcnemar_counts(20, 5, exact=True).method == "exact"
    big = S.mcnemar_counts(3000, 2800, exact=True)  # exact integer arithmetic stays usable for large counts
    assert big.p_value == pytest.approx(S.mcnemar_counts(3000, 2800).p_value, rel=0.05)


def test_mcnemar_from_correctness_arrays():
    a = np.array([True] * 11 + [False] * 3 + [True] * 1 + [False] * 5)
    b = np.array([False] * 11 + [True] * 3 + [True] * 1 + [False] * 5)
    r = S.mcnemar(a, b)
    assert (r.b, r.c, r.discordant) == (11, 3, 14)
    assert r.p_value == pytest.approx(0.057373046875) and not r.significant
    assert S.mcnemar(a, b, alpha=0.06).significant
    with pytest.raises(ValueError, match="booleans"):
        S.mcnemar(a.astype(int), b)
    with pytest.raises(ValueError, match="length"):
        S.mcnemar(a, b[:-1])
    with pytest.raises(ValueError, match="non-negative integer"):
        S.mcnemar_counts(-1, 3)


# --------------------------------------------------------------------------------------------------- spread


def test_spread_and_its_format():
    s = S.spread([0.85, 0.80, 0.82])
    assert (s.min, s.median, s.max, s.n) == (0.80, 0.82, 0.85, 3)
    assert s.format() == "0.82 (0.80-0.85)" and str(s) == "0.82 (0.80-0.85)"
    assert S.spread([1.0, 2.0, 4.0, 3.0]).median == 2.5
    assert S.spread([0.82]).format() == "0.82 (one repetition)"
    assert S.spread([-0.2, 0.1, 0.3]).format(1) == "0.1 (-0.2 to 0.3)"
    with pytest.raises(ValueError, match="no repetitions"):
        S.spread([])


def test_ratio_spread_pairs_repetitions():
    s = S.ratio_spread([1.64, 1.60, 1.70], [2.0, 2.0, 2.0])
    assert s.format() == "0.82 (0.80-0.85)"
    assert S.ratio_spread([1.0, 3.0], [2.0, 1.0]).max == 3.0  # per-repetition ratios, not a ratio of sums
    with pytest.raises(ValueError, match="is 0"):
        S.ratio_spread([1.0], [0.0])
    with pytest.raises(ValueError, match="differ in number"):
        S.ratio_spread([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------------------------------- bits


def test_bit_layout_is_little_endian_within_each_byte():
    assert S.pack_bits(np.array([True] + [False] * 7 + [True])) == b"\x01\x01"
    assert S.pack_bits([0, 1]) == b"\x02"
    assert S.pack_bits(np.array([False] * 7 + [True])) == b"\x80"
    assert S.pack_bits(np.zeros(0, bool)) == b""


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1001])
def test_bits_round_trip(n):
    x = np.random.default_rng(n).random(n) < 0.5
    data = S.pack_bits(x)
    assert len(data) == (n + 7) // 8
    y = S.unpack_bits(data, n)
    assert y.dtype == bool and np.array_equal(x, y)


def test_bits_reject_bad_data():
    with pytest.raises(ValueError, match="need 2"):
        S.unpack_bits(b"\x01", 9)
    with pytest.raises(ValueError, match="padding"):
        S.unpack_bits(b"\xff", 3)
    with pytest.raises(ValueError, match="booleans"):
        S.pack_bits([0, 2])
    with pytest.raises(ValueError, match="one-dimensional"):
        S.pack_bits(np.zeros((2, 2), bool))
