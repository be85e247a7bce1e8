"""Paired comparisons of two normalisers (A minus B), as pure functions.

Every comparison is a paired difference ``d_i = a_i - b_i`` over the units both sides share (seeds for training
suites, images for evaluation suites, repetitions for timings), reported with its uncertainty.

Formulas (``n`` pairs, level ``1 - alpha``, 95% unless told):

- **mean difference**: ``dbar = (1/n) sum_i d_i``; sample standard deviation ``s = sqrt(sum_i (d_i - dbar)^2 /
  (n - 1))``.
- **Student-t interval** (two-sided, ``n - 1`` degrees of freedom): ``dbar -+ t_{1-alpha/2, n-1} * s / sqrt(n)``.
  One pair gives no interval: the result has ``low = high = None`` and a ``reason``.
- **significant**: the interval excludes 0 (``low > 0`` or ``high < 0``); an interval that contains 0, or touches
  it, is "not significant".
- **Student-t CDF**: for ``t >= 0``, ``P(T > t) = I_x(nu/2, 1/2) / 2`` with ``x = nu / (nu + t^2)``, and
  ``F(-t) = 1 - F(t)``. ``I_x(a, b)`` is the regularized incomplete beta function, evaluated by its continued
  fraction (modified Lentz, as in Numerical Recipes section 6.4) with the prefactor from ``math.lgamma``.
  ``nu = inf`` (and ``nu > 1e7``, where the two differ by less than 1e-7) is the normal, ``Phi(z) = erfc(-z /
  sqrt(2)) / 2``.
- **t and normal quantiles**: the root of ``log P(T > t) = log q`` by Newton's method kept inside a bisection
  bracket; the normal's far tail ``log Q(z)`` comes from the Mills ratio, so every float ``q`` down to 5e-324 has
  its quantile (or the search raises; it never returns an unconverged value).
- **percentile bootstrap**: ``B`` resamples of the ``n`` pairs with replacement, the same indices for A and B;
  the interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the ``B`` resampled statistics (numpy's
  default linear interpolation); the point estimate is the statistic of the data itself.
- **group-mean bootstrap**: a statistic ``f(m^A, m^B)`` of per-group means ``m_g = (1/n_g) sum_i x_{g,i}``. With
  ``joint=True`` one image resample is shared by every group (the groups are the same images, e.g. the 75
  corruption/severity cells of ImageNet-C); with ``joint=False`` each group is resampled on its own.
- **mCE difference**: ``E_{c,s} = 1 - accuracy``, ``CE_c = 100 * sum_s E_{c,s} / sum_s E^AlexNet_{c,s}``,
  ``mCE = mean_c CE_c``. It is linear in the errors, so ``mCE_A - mCE_B = sum_{c,s} w_{c,s} (E^A_{c,s} -
  E^B_{c,s})`` with ``w_{c,s} = 100 / (C * sum_s E^AlexNet_{c,s})``; with a joint resample this is the bootstrap
  mean of one number per image, ``v_i = sum_{c,s} w_{c,s} (wrong^A_{c,s,i} - wrong^B_{c,s,i})``.
- **McNemar**: ``b = #(A right, B wrong)``, ``c = #(A wrong, B right)``. Exact (``b + c < 25``):
  ``p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c))``. Otherwise, with Edwards' continuity correction,
  ``chi2 = max(|b - c| - 1, 0)^2 / (b + c)`` and ``p = P(chi2_1 >= chi2) = erfc(sqrt(chi2 / 2))``.
- **spread over repetitions**: min / median / max of ``r_k = x_k / y_k``, the ratio of repetition ``k``.
- **correctness bits**: one bit per image, ``np.packbits(..., bitorder="little")``: image ``i`` is bit ``i % 8``
  (least significant first) of byte ``i // 8``; the unused high bits of the last byte are 0.

Resampling draws counts rather than index lists where it can: when the rows take few distinct values (boolean
correctness, ``d`` in {-1, 0, 1}) the number of draws of each distinct row is multinomial, which is the same
distribution as drawing indices and costs ``O(B)``; otherwise indices are drawn in chunks, turned into per-image
counts with ``np.bincount`` and the resampled means are one matrix product.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PairedDifference", "McNemarResult", "Spread",
    "regularized_incomplete_beta", "normal_cdf", "normal_quantile", "t_cdf", "t_quantile", "t_pvalue",
    "chi2_sf_1df",
    "check_unique", "pair_by_key",
    "t_interval", "paired_t_interval", "paired_bootstrap", "bootstrap_group_means", "bootstrap_mce_difference",
    "mcnemar", "mcnemar_counts", "MCNEMAR_EXACT_BELOW",
    "spread", "ratio_spread",
    "pack_bits", "unpack_bits",
]

# --------------------------------------------------------------------------------------------------- distributions

_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_ITER = 20_000
_NORMAL_DF = 1e7  # above this many degrees of freedom the t distribution is taken as the normal (|dF| < 1e-7)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    # Modified Lentz evaluation of the continued fraction of I_x(a, b) (Numerical Recipes, 2nd ed., eq. 6.4.5);
    # the tiny floor keeps a zero denominator from ending the recurrence.
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) >= _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, _CF_MAX_ITER + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) >= _CF_TINY else _CF_TINY)
            c = 1.0 + aa / c
            c = c if abs(c) >= _CF_TINY else _CF_TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _betainc(a: float, b: float, x: float, y: float, log_x: float | None = None) -> float:
    # y = 1 - x, passed in so that callers who know it more precisely than 1 - x (the t tail) keep the digits;
    # log_x likewise, for an x that underflows (the far t tail).
    if log_x is None:
        if x <= 0.0:
            return 0.0
        log_x = math.log(x)
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * log_x + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast here; otherwise use I_x(a, b) = 1 - I_y(b, a)
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b) = B(x; a, b) / B(a, b)``.

    Args:
        a: First shape parameter, ``a > 0``.
        b: Second shape parameter, ``b > 0``.
        x: Upper limit of the integral, ``0 <= x <= 1``.

    Returns:
        ``I_x(a, b)`` in ``[0, 1]``.

    Raises:
        ValueError: For a parameter out of range.
    """
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"incomplete beta needs finite a > 0 and b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete beta needs 0 <= x <= 1, got x={x}")
    return _betainc(a, b, x, 1.0 - x)


def normal_cdf(z: float) -> float:
    """The standard normal CDF ``Phi(z) = erfc(-z / sqrt(2)) / 2``."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _normal_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_MILLS_FROM = 30.0  # above this z, log Q(z) comes from the Mills ratio (Q(z) < 5e-198 would lose digits to underflow)


def _normal_log_pdf(z: float) -> float:
    return -0.5 * z * z - _LOG_SQRT_2PI


def _normal_log_tail(z: float) -> float:
    """``log Q(z)``, ``Q(z) = P(Z > z)``, without underflow for any finite ``z``.

    Far out, ``Q(z) = phi(z) R(z)`` with the Mills ratio's asymptotic series ``R(z) = (1/z) sum_k (-1)^k (2k - 1)!! /
    z^(2k)`` (Abramowitz & Stegun 26.2.12), summed while its terms shrink; at ``z >= 30`` they fall by ``(2k + 1) /
    z^2 < 1/18`` a term, so the sum is exact to rounding long before it diverges.
    """
    if z < _MILLS_FROM:
        return math.log(_normal_tail(z))
    inv2 = 1.0 / (z * z)
    term, total, k = 1.0, 1.0, 0
    while abs(term) > 1e-17 * total:
        k += 1
        term *= -(2 * k - 1) * inv2
        total += term
    return _normal_log_pdf(z) - math.log(z) + math.log(total)


def _invert_tail(log_tail: Callable[[float], float], log_pdf: Callable[[float], float], log_q: float,
                 start: float) -> float:
    """The ``t > 0`` with ``tail(t) = q`` for a decreasing tail with density ``pdf`` (``q < 1/2``), given as logs.

    Newton's method on ``g(t) = log tail(t) - log q``, ``g'(t) = -pdf(t) / tail(t)``, kept inside a bisection
    bracket: in logs the step stays of the order of the distance to the root however far out the tail is (on the
    tail itself a step from the bracket's middle is ``1 / t`` long, and 400 of them did not reach ``z = 37``).

    Raises:
        ArithmeticError: When the root is beyond the float range or the iteration does not converge.
    """
    lo, hi = 0.0, max(1.0, start)
    while log_tail(hi) > log_q:
        lo, hi = hi, 2.0 * hi
        if math.isinf(hi):
            raise ArithmeticError(f"quantile for tail probability {math.exp(log_q):.6g} is beyond the float range")
    t = start if lo < start < hi else 0.5 * (lo + hi)
    for _ in range(200):
        log_tail_t = log_tail(t)
        g = log_tail_t - log_q
        if abs(g) <= 2e-16 * max(1.0, abs(log_q)):  # as close as log tail(t) can be evaluated
            return t
        if g > 0.0:
            lo = t
        else:
            hi = t
        step = g * math.exp(min(log_tail_t - log_pdf(t), 700.0)) if log_tail_t > -math.inf else math.nan
        new = t + step  # g' = -pdf / tail, so the Newton step is +g * tail / pdf
        if not lo < new < hi:  # a step out of the bracket (or none) falls back to bisection
            new = math.sqrt(lo) * math.sqrt(hi) if lo > 0.0 and hi > 4.0 * lo else 0.5 * (lo + hi)
        if abs(new - t) <= 4e-16 * new or hi - lo <= 4e-16 * hi:
            return new
        t = new
    raise ArithmeticError(f"quantile for tail probability {math.exp(log_q):.6g} did not converge")


def normal_quantile(p: float) -> float:
    """The standard normal quantile ``Phi^-1(p)``, for every float ``0 < p < 1`` (down to 5e-324).

    Args:
        p: Probability, ``0 < p < 1``.

    Returns:
        The ``z`` with ``Phi(z) = p``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile needs 0 < p < 1, got {p}")
    if p == 0.5:
        return 0.0
    q = min(p, 1.0 - p)
    z = _invert_tail(_normal_log_tail, _normal_log_pdf, math.log(q), math.sqrt(-2.0 * math.log(q)))
    return z if p > 0.5 else -z


def _check_df(df: float) -> None:
    if not df > 0:  # also rejects nan
        raise ValueError(f"degrees of freedom must be > 0, got {df}")


def _t_tail(t: float, df: float) -> float:
    """``P(T > t)`` for ``t >= 0``."""
    if df > _NORMAL_DF:
        return _normal_tail(t)
    if t == 0.0:
        return 0.5
    if math.isinf(t):
        return 0.0
    log_s = math.log(t) - 0.5 * math.log(df)  # s = t / sqrt(df), which may overflow for a tiny df
    if log_s > 230.0:  # x = 1 / (1 + s^2) would underflow: keep its logarithm
        inv = math.exp(-2.0 * log_s)
        log_x = -2.0 * log_s - math.log1p(inv)
        return 0.5 * _betainc(0.5 * df, 0.5, math.exp(log_x), 1.0 / (1.0 + inv), log_x)
    r = t * t / df  # x = 1 / (1 + r) and 1 - x = 1 / (1 + 1 / r), both without cancellation
    return 0.5 * _betainc(0.5 * df, 0.5, 1.0 / (1.0 + r), 1.0 / (1.0 + 1.0 / r))


def _t_log_pdf(t: float, df: float) -> float:
    if df > _NORMAL_DF:
        return _normal_log_pdf(t)
    log_c = math.lgamma(0.5 * (df + 1.0)) - math.lgamma(0.5 * df) - 0.5 * math.log(df * math.pi)
    return log_c - 0.5 * (df + 1.0) * (2.0 * math.log(t) - math.log(df) + math.log1p(df / (t * t)) if t * t > df
                                       else math.log1p(t * t / df))


def _t_log_tail(t: float, df: float) -> float:
    tail = _t_tail(t, df)
    return math.log(tail) if tail > 0.0 else -math.inf


def t_cdf(t: float, df: float) -> float:
    """The Student-t CDF ``P(T <= t)`` with ``df`` degrees of freedom.

    Args:
        t: The point; ``+-inf`` give 1 and 0.
        df: Degrees of freedom, ``df > 0`` (need not be an integer); ``math.inf`` is the normal.

    Returns:
        ``P(T <= t)``.
    """
    _check_df(df)
    if math.isnan(t):
        raise ValueError("t is nan")
    tail = _t_tail(abs(t), df)
    return tail if t < 0 else 1.0 - tail


def t_pvalue(t: float, df: float) -> float:
    """The two-sided p-value ``P(|T| >= |t|) = 2 P(T > |t|)`` with ``df`` degrees of freedom."""
    _check_df(df)
    if math.isnan(t):
        raise ValueError("t is nan")
    return min(1.0, 2.0 * _t_tail(abs(t), df))


def t_quantile(p: float, df: float) -> float:
    """The Student-t quantile: the ``t`` with ``P(T <= t) = p``.

    Args:
        p: Probability, ``0 < p < 1`` (0.975 for a two-sided 95% interval).
        df: Degrees of freedom, ``df > 0``; ``math.inf`` is the normal.

    Returns:
        The quantile ``t_{p, df}``.
    """
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile needs 0 < p < 1, got {p}")
    if p == 0.5:
        return 0.0
    if df > _NORMAL_DF:
        return normal_quantile(p)
    q = min(p, 1.0 - p)
    z = -normal_quantile(q)
    # start: the first two terms of the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5)
    start = z + (z**3 + z) / (4.0 * df) + (5.0 * z**5 + 16.0 * z**3 + 3.0 * z) / (96.0 * df * df)
    t = _invert_tail(lambda u: _t_log_tail(u, df), lambda u: _t_log_pdf(u, df), math.log(q), start)
    return t if p > 0.5 else -t


def chi2_sf_1df(x: float) -> float:
    """The chi-square survival function with one degree of freedom, ``P(chi2_1 >= x) = erfc(sqrt(x / 2))``."""
    if not x >= 0:
        raise ValueError(f"chi-square statistic must be >= 0, got {x}")
    return math.erfc(math.sqrt(0.5 * x))


# --------------------------------------------------------------------------------------------------- pairing


def _key_text(key: Hashable) -> str:
    return "/".join(map(str, key)) if isinstance(key, tuple) else str(key)


def check_unique(keys: Iterable[Hashable], what: str = "seed") -> None:
    """Raise if a key occurs more than once.

    Args:
        keys: The seeds (or ``(corruption, severity)`` pairs, repetitions...) of one side of a comparison.
        what: What a key is, for the message (``"seed"``, ``"pair"``).

    Raises:
        ValueError: One line naming every duplicate and how often it occurs, e.g. ``duplicate seed: 3 (2 times)``.
    """
    counts = Counter(keys)
    dups = [f"{_key_text(k)} ({n} times)" for k, n in counts.items() if n > 1]
    if dups:
        raise ValueError(f"duplicate {what}{'s' if len(dups) > 1 else ''}: {', '.join(dups)}")


def pair_by_key(
    a: Iterable[tuple[Hashable, Any]],
    b: Iterable[tuple[Hashable, Any]],
    *,
    what: str = "seed",
    names: tuple[str, str] = ("A", "B"),
    strict: bool = True,
) -> tuple[list[Hashable], list[Any], list[Any]]:
    """Match two sides of a comparison on their keys (seeds, images, pairs).

    Args:
        a: ``(key, value)`` items of side A.
        b: ``(key, value)`` items of side B.
        what: What a key is, for messages.
        names: The two sides' names, for messages.
        strict: Raise when a key is on one side only; ``False`` keeps the keys on both sides.

    Returns:
        ``(keys, values_a, values_b)``: the shared keys in A's order and the values in that order.

    Raises:
        ValueError: A duplicate key on either side, or (``strict``) a key on one side only; one line.
    """
    items_a, items_b = list(a), list(b)
    for name, items in zip(names, (items_a, items_b), strict=True):
        try:
            check_unique((k for k, _ in items), what)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    map_a, map_b = dict(items_a), dict(items_b)
    if strict:
        only = [f"{what} {_key_text(k)} only in {n}" for n, mine, other in ((names[0], map_a, map_b),
                                                                            (names[1], map_b, map_a))
                for k in mine if k not in other]
        if only:
            raise ValueError("unpaired: " + "; ".join(only))
    keys = [k for k in map_a if k in map_b]
    return keys, [map_a[k] for k in keys], [map_b[k] for k in keys]


# --------------------------------------------------------------------------------------------------- differences


@dataclass(frozen=True)
class PairedDifference:
    """A mean (or other statistic of a) paired difference A - B with its interval.

    Attributes:
        mean: The point estimate (the statistic of the data, never of the resamples).
        low: Lower end of the interval; ``None`` when no interval can be given.
        high: Upper end of the interval; ``None`` when no interval can be given.
        n: Number of pairs (seeds, images).
        method: ``"t"`` or ``"bootstrap"``.
        confidence: Two-sided level of the interval.
        reason: Why there is no interval (``"one seed: no interval"``); ``None`` when there is one.
        significant: Whether the interval excludes 0 (computed; ``False`` without an interval).
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    method: str
    confidence: float = 0.95
    reason: str | None = None
    significant: bool = field(init=False)

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError("an interval needs both ends or neither")
        if self.low is None and not self.reason:
            raise ValueError("a difference without an interval needs a reason")
        sig = self.low is not None and (self.low > 0 or self.high < 0)
        object.__setattr__(self, "significant", bool(sig))

    @property
    def has_interval(self) -> bool:
        """Whether an interval was computed."""
        return self.low is not None

    def format(self, digits: int = 2) -> str:
        """``"-1.58 [-2.46, -0.70]"``, or ``"-1.58 (one seed: no interval)"``."""
        if self.low is None:
            return f"{self.mean:.{digits}f} ({self.reason})"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def __str__(self) -> str:
        return self.format()


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numbers or booleans, got dtype {arr.dtype}")
    if arr.dtype != bool and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has a value that is not finite (nan or inf)")
    return arr


def _differences(a: Any, b: Any) -> np.ndarray:
    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"paired values differ in length: {xa.size} against {xb.size}")
    if xa.size == 0:
        raise ValueError("no pairs: a difference needs at least one")
    return xa.astype(np.float64) - xb.astype(np.float64)


def t_interval(differences: Any, *, confidence: float = 0.95, unit: str = "seed") -> PairedDifference:
    """Student-t interval of the mean of paired differences (two-sided, ``n - 1`` degrees of freedom).

    Args:
        differences: The ``d_i = a_i - b_i``, one per seed.
        confidence: Two-sided level.
        unit: What a pair is, for the no-interval reason.

    Returns:
        The mean difference with its interval; with one pair, no interval and ``reason = "one <unit>: no
        interval"``.

    Raises:
        ValueError: No pairs, a non-finite value, or a confidence outside (0, 1).
    """
    _check_confidence(confidence)
    d = _as_1d(differences, "differences").astype(np.float64)
    if d.size == 0:
        raise ValueError("no pairs: a difference needs at least one")
    return _t_result(d, confidence, unit)


def _t_result(d: np.ndarray, confidence: float, unit: str) -> PairedDifference:
    n = int(d.size)
    mean = float(np.mean(d))
    if n == 1:
        return PairedDifference(mean, None, None, 1, "t", confidence, reason=f"one {unit}: no interval")
    half = t_quantile(0.5 + 0.5 * confidence, n - 1) * float(np.std(d, ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, "t", confidence)


def paired_t_interval(a: Any, b: Any, *, confidence: float = 0.95, unit: str = "seed") -> PairedDifference:
    """Student-t interval of the mean paired difference ``a - b`` (two-sided, ``n - 1`` degrees of freedom).

    Args:
        a: Side A, one value per seed (already matched to ``b``, see :func:`pair_by_key`).
        b: Side B, in the same order.
        confidence: Two-sided level.
        unit: What a pair is, for the no-interval reason.

    Returns:
        See :func:`t_interval`.
    """
    _check_confidence(confidence)
    return _t_result(_differences(a, b), confidence, unit)


# --------------------------------------------------------------------------------------------------- bootstrap

_FEW_ROWS = 64  # at most this many distinct rows: draw multinomial counts of the rows instead of indices
_FEW_ROWS_MAX_BOOL_COLUMNS = 16  # boolean rows are coded as integers below 2**16 to count them
_GATHER_MAX_COLUMNS = 4  # up to this many columns, sum gathered values; above, one matrix product of counts
_CHUNK_DRAWS = 1 << 22  # indices drawn at once on the general path (32 MiB of int64)


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows, counts)`` of the distinct rows of ``x`` when there are few of them (and finding them is cheap)."""
    n, m = x.shape
    if m == 1:
        values, counts = np.unique(x[:, 0], return_counts=True)
        rows = values[:, None]
    elif x.dtype == bool and m <= _FEW_ROWS_MAX_BOOL_COLUMNS:
        codes = x.astype(np.int64) @ (np.int64(1) << np.arange(m, dtype=np.int64))
        counts_all = np.bincount(codes, minlength=1 << m)
        present = np.flatnonzero(counts_all)
        rows = ((present[:, None] >> np.arange(m)) & 1).astype(bool)
        counts = counts_all[present]
    else:
        return None
    return (rows, counts) if len(rows) <= _FEW_ROWS else None


def _resampled_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Column means of ``n_boot`` row resamples of ``x`` (shape ``(n, m)``), the same rows for every column."""
    n, m = x.shape
    distinct = _distinct_rows(x)
    if distinct is not None:
        rows, counts = distinct
        draws = rng.multinomial(n, counts / n, size=n_boot)  # (n_boot, distinct rows)
        return (draws @ rows.astype(np.float64)) / n
    # Boolean columns sum exactly in float32: every partial sum is an integer below 2**24.
    values = x.astype(np.float32 if x.dtype == bool and n < (1 << 24) else np.float64)
    out = np.empty((n_boot, m), dtype=np.float64)
    per = max(1, _CHUNK_DRAWS // n)
    for start in range(0, n_boot, per):
        r = min(per, n_boot - start)
        idx = rng.integers(0, n, size=(r, n))
        if m <= _GATHER_MAX_COLUMNS:
            for j in range(m):
                out[start:start + r, j] = values[:, j][idx].sum(axis=1, dtype=np.float64)
        else:
            idx += (np.arange(r) * n)[:, None]
            counts = np.bincount(idx.ravel(), minlength=r * n).reshape(r, n)
            out[start:start + r] = counts.astype(values.dtype) @ values
    out /= n
    return out


def _columns(arrays: Sequence[np.ndarray]) -> np.ndarray:
    stacked = np.stack(arrays, axis=1)
    return stacked if stacked.dtype == bool else stacked.astype(np.float64)


def _check_boot(n_boot: int, confidence: float) -> None:
    _check_confidence(confidence)
    if int(n_boot) != n_boot or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot}")


def _boot_result(point: float, boot: np.ndarray, n: int, confidence: float) -> PairedDifference:
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [0.5 * alpha, 1.0 - 0.5 * alpha])
    return PairedDifference(float(point), float(low), float(high), n, "bootstrap", confidence)


def paired_bootstrap(
    a: Any,
    b: Any,
    *,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    unit: str = "seed",
) -> PairedDifference:
    """Paired percentile bootstrap interval of the mean difference ``a - b``.

    Works for per-seed metrics and for per-image correctness (booleans); the pairs are resampled together.

    Args:
        a: Side A, one value (or boolean) per unit, matched to ``b``.
        b: Side B, in the same order.
        n_boot: Number of resamples.
        confidence: Two-sided level.
        seed: Seed of a ``numpy.random.Generator`` (or the generator itself).
        unit: What a pair is (``"seed"``, ``"image"``), for the no-interval reason.

    Returns:
        The observed mean difference with the percentile interval; one pair gives no interval.
    """
    _check_boot(n_boot, confidence)
    d = _differences(a, b)
    if d.size == 1:
        return PairedDifference(float(d[0]), None, None, 1, "bootstrap", confidence, reason=f"one {unit}: no interval")
    boot = _resampled_means(d[:, None], int(n_boot), _generator(seed))[:, 0]
    return _boot_result(float(np.mean(d)), boot, int(d.size), confidence)


def _group_arrays(groups_a: Sequence[Any], groups_b: Sequence[Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(groups_a) != len(groups_b):
        raise ValueError(f"A has {len(groups_a)} groups and B {len(groups_b)}")
    if not groups_a:
        raise ValueError("no groups")
    xs_a, xs_b = [], []
    for g, (ga, gb) in enumerate(zip(groups_a, groups_b, strict=True)):
        xa, xb = _as_1d(ga, f"A group {g}"), _as_1d(gb, f"B group {g}")
        if xa.shape != xb.shape:
            raise ValueError(f"group {g}: A has {xa.size} values and B {xb.size}; paired groups need the same units")
        if xa.size == 0:
            raise ValueError(f"group {g} is empty")
        xs_a.append(xa)
        xs_b.append(xb)
    return xs_a, xs_b


def bootstrap_group_means(
    groups_a: Sequence[Any],
    groups_b: Sequence[Any],
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    joint: bool = True,
    unit: str = "image",
) -> PairedDifference:
    """Paired percentile bootstrap of a statistic of per-group means, e.g. an mCE difference.

    Within a group, A and B are resampled with the same indices (the same images).

    Args:
        groups_a: Side A, one 1-D array (numbers or booleans) per group.
        groups_b: Side B, the same groups, each the same length as A's.
        statistic: ``statistic(means_a, means_b)`` with both of shape ``(r, G)`` returns shape ``(r,)``; it must
            be vectorised over the first axis.
        n_boot: Number of resamples.
        confidence: Two-sided level.
        seed: Seed of a ``numpy.random.Generator`` (or the generator itself).
        joint: One resample of the units shared by all groups (they are the same images; needs equal lengths);
            ``False`` resamples each group on its own.
        unit: What a unit is, for the no-interval reason.

    Returns:
        The statistic of the observed means with its percentile interval; groups of one unit give no interval.
    """
    _check_boot(n_boot, confidence)
    xs_a, xs_b = _group_arrays(groups_a, groups_b)
    n_groups = len(xs_a)
    means_a = np.array([x.mean() for x in xs_a], dtype=np.float64)[None, :]
    means_b = np.array([x.mean() for x in xs_b], dtype=np.float64)[None, :]
    point = np.asarray(statistic(means_a, means_b), dtype=np.float64)
    if point.shape != (1,):
        raise ValueError(f"statistic must return one value per row, got shape {point.shape} for one row")
    sizes = {x.size for x in xs_a}
    if joint and len(sizes) > 1:
        raise ValueError(f"joint resampling needs groups of one length, got lengths {sorted(sizes)}")
    if max(sizes) == 1:
        return PairedDifference(float(point[0]), None, None, 1, "bootstrap", confidence,
                                reason=f"one {unit}: no interval")
    rng = _generator(seed)
    if joint:
        means = _resampled_means(_columns(xs_a + xs_b), int(n_boot), rng)
        boot_a, boot_b = means[:, :n_groups], means[:, n_groups:]
    else:
        boot_a = np.empty((int(n_boot), n_groups))
        boot_b = np.empty((int(n_boot), n_groups))
        for g, (xa, xb) in enumerate(zip(xs_a, xs_b, strict=True)):
            means = _resampled_means(_columns([xa, xb]), int(n_boot), rng)
            boot_a[:, g], boot_b[:, g] = means[:, 0], means[:, 1]
    boot = np.asarray(statistic(boot_a, boot_b), dtype=np.float64)
    if boot.shape != (int(n_boot),):
        raise ValueError(f"statistic must return shape ({int(n_boot)},), got {boot.shape}")
    return _boot_result(float(point[0]), boot, min(sizes), confidence)


def mce_weights(cells: Sequence[tuple[str, int]], alexnet_errors: Mapping[str, Sequence[float]]) -> np.ndarray:
    """The weight of each ``(corruption, severity)`` cell in the mCE over ``cells`` (module docstring).

    ``w_{c,s} = 100 / (C * sum_s E^AlexNet_{c,s})``, so ``mCE = sum_{c,s} w_{c,s} E_{c,s}`` (percent) with ``C`` the
    corruptions in ``cells`` and, per corruption, the sum over its severities in ``cells``.

    Raises:
        ValueError: A cell without reference errors, or a severity outside the reference's.
    """
    by_corruption: dict[str, list[int]] = {}
    for corruption, severity in cells:
        by_corruption.setdefault(corruption, []).append(severity)
    denominators = {}
    for corruption, severities in by_corruption.items():
        if corruption not in alexnet_errors:
            raise ValueError(f"no AlexNet reference errors for corruption {corruption!r}")
        ref = alexnet_errors[corruption]
        for s in severities:
            if not (isinstance(s, (int, np.integer)) and 1 <= s <= len(ref)):
                raise ValueError(f"severity {s!r} of {corruption!r} is not one of 1..{len(ref)}")
        denominators[corruption] = sum(float(ref[s - 1]) for s in severities)
        if not denominators[corruption] > 0:
            raise ValueError(f"AlexNet reference errors of {corruption!r} sum to {denominators[corruption]}")
    n_corruptions = len(by_corruption)
    return np.array([100.0 / (n_corruptions * denominators[c]) for c, _ in cells], dtype=np.float64)


def bootstrap_mce_difference(
    correct_a: Mapping[tuple[str, int], Any],
    correct_b: Mapping[tuple[str, int], Any],
    alexnet_errors: Mapping[str, Sequence[float]],
    *,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    joint: bool = True,
) -> PairedDifference:
    """Paired percentile bootstrap of ``mCE_A - mCE_B`` (percent; negative: A is more robust).

    The mCE is taken over the corruptions in the keys and, per corruption, over its severities in the keys (pass
    the 15 benchmark corruptions at severities 1-5 for the published mCE).

    Args:
        correct_a: ``{(corruption, severity): per-image booleans}`` of model A.
        correct_b: The same cells and images for model B, in the same image order.
        alexnet_errors: ``{corruption: AlexNet top-1 errors (fractions) at severities 1, 2, ...}``, e.g.
            ``dtn_bench.metrics.ALEXNET_ERRORS``.
        n_boot: Number of resamples.
        confidence: Two-sided level.
        seed: Seed of a ``numpy.random.Generator`` (or the generator itself).
        joint: One image resample shared by every cell (the cells are the same images; needs equal lengths);
            ``False`` resamples each cell on its own.

    Returns:
        The observed mCE difference with its percentile interval.

    Raises:
        ValueError: Cells that differ between A and B, a cell without reference errors, non-boolean data, or
            unequal lengths.
    """
    if set(correct_a) != set(correct_b):
        only = sorted(map(_key_text, set(correct_a) ^ set(correct_b)))
        raise ValueError(f"A and B are not over the same corruption/severity cells: {', '.join(only[:5])}")
    cells = list(correct_a)
    if not cells:
        raise ValueError("no corruption/severity cells")
    weights = mce_weights(cells, alexnet_errors)
    xs_a, xs_b = _group_arrays([correct_a[k] for k in cells], [correct_b[k] for k in cells])
    for k, xa, xb in zip(cells, xs_a, xs_b, strict=True):
        if xa.dtype != bool or xb.dtype != bool:
            raise ValueError(f"cell {_key_text(k)}: correctness must be booleans, got {xa.dtype} and {xb.dtype}")

    def mce_difference(acc_a: np.ndarray, acc_b: np.ndarray) -> np.ndarray:
        return (acc_b - acc_a) @ weights  # error = 1 - accuracy, so E_A - E_B = acc_B - acc_A

    sizes = {x.size for x in xs_a}
    if not joint or len(sizes) > 1 or max(sizes) == 1:
        return bootstrap_group_means(xs_a, xs_b, mce_difference, n_boot=n_boot, confidence=confidence, seed=seed,
                                     joint=joint)
    _check_boot(n_boot, confidence)
    # Linear statistic, shared resample: the bootstrap of the mean of one score per image (module docstring).
    n = xs_a[0].size
    score = weights @ (np.stack(xs_b).astype(np.float64) - np.stack(xs_a))
    boot = _resampled_means(score[:, None], int(n_boot), _generator(seed))[:, 0]
    return _boot_result(float(np.mean(score)), boot, n, confidence)


# --------------------------------------------------------------------------------------------------- McNemar

MCNEMAR_EXACT_BELOW = 25
"""Discordant counts ``b + c`` below this use the exact binomial test; the rest the corrected chi-square."""


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two models on the same images.

    Attributes:
        b: Images A gets right and B wrong.
        c: Images A gets wrong and B right.
        p_value: Two-sided p-value.
        method: ``"exact"`` (binomial) or ``"chi2"`` (continuity corrected, 1 df).
        statistic: The corrected chi-square, or ``None`` for the exact test.
        alpha: Significance level.
        significant: Whether ``p_value < alpha`` (computed).
    """

    b: int
    c: int
    p_value: float
    method: str
    statistic: float | None = None
    alpha: float = 0.05
    significant: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "significant", bool(self.p_value < self.alpha))

    @property
    def discordant(self) -> int:
        """``b + c``."""
        return self.b + self.c


def mcnemar_counts(b: int, c: int, *, exact: bool | None = None, alpha: float = 0.05) -> McNemarResult:
    """McNemar's test from the discordant counts.

    Args:
        b: Pairs where A is right and B wrong.
        c: Pairs where A is wrong and B right.
        exact: Force the exact binomial test (``True``) or the chi-square (``False``); ``None`` chooses the exact
            test when ``b + c <`` :data:`MCNEMAR_EXACT_BELOW`.
        alpha: Significance level of the result's ``significant``.

    Returns:
        The test result.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    for name, v in (("b", b), ("c", c)):
        if int(v) != v or v < 0:
            raise ValueError(f"McNemar count {name} must be a non-negative integer, got {v}")
    b, c = int(b), int(c)
    n = b + c
    if exact is None:
        exact = n < MCNEMAR_EXACT_BELOW
    if exact:
        k = min(b, c)
        term, total = 1, 1  # C(n, 0); exact integer arithmetic, one correctly rounded division at the end
        for j in range(k):
            term = term * (n - j) // (j + 1)
            total += term
        return McNemarResult(b, c, min(1.0, 2 * total / (1 << n)), "exact", alpha=alpha)
    if n == 0:
        raise ValueError("the chi-square McNemar test needs at least one discordant pair")
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return McNemarResult(b, c, chi2_sf_1df(statistic), "chi2", statistic, alpha)


def mcnemar(correct_a: Any, correct_b: Any, *, exact: bool | None = None, alpha: float = 0.05) -> McNemarResult:
    """McNemar's test of two models' per-image correctness on the same images.

    Args:
        correct_a: Per-image booleans of model A.
        correct_b: Per-image booleans of model B, same images in the same order.
        exact: See :func:`mcnemar_counts`.
        alpha: Significance level of the result's ``significant``.

    Returns:
        The test result.
    """
    xa, xb = _as_1d(correct_a, "correct_a"), _as_1d(correct_b, "correct_b")
    if xa.dtype != bool or xb.dtype != bool:
        raise ValueError(f"McNemar needs booleans, got {xa.dtype} and {xb.dtype}")
    if xa.shape != xb.shape:
        raise ValueError(f"paired correctness differs in length: {xa.size} against {xb.size}")
    b = int(np.count_nonzero(xa & ~xb))
    c = int(np.count_nonzero(~xa & xb))
    return mcnemar_counts(b, c, exact=exact, alpha=alpha)


# --------------------------------------------------------------------------------------------------- spread


@dataclass(frozen=True)
class Spread:
    """Min / median / max over repetitions.

    Attributes:
        min: Smallest repetition.
        median: Median repetition.
        max: Largest repetition.
        n: Number of repetitions.
    """

    min: float
    median: float
    max: float
    n: int

    def format(self, digits: int = 2) -> str:
        """``"0.82 (0.80-0.85)"``: the median, then min-max (``" to "`` between them when one is negative)."""
        med = f"{self.median:.{digits}f}"
        if self.n == 1:
            return f"{med} (one repetition)"
        sep = " to " if self.min < 0 or self.max < 0 else "-"
        return f"{med} ({self.min:.{digits}f}{sep}{self.max:.{digits}f})"

    def __str__(self) -> str:
        return self.format()


def spread(values: Any) -> Spread:
    """Min / median / max of repetitions.

    Args:
        values: One value per repetition.

    Returns:
        Their spread.
    """
    x = _as_1d(values, "values").astype(np.float64)
    if x.size == 0:
        raise ValueError("no repetitions")
    return Spread(float(x.min()), float(np.median(x)), float(x.max()), int(x.size))


def ratio_spread(numerators: Any, denominators: Any) -> Spread:
    """Spread of the per-repetition ratio ``r_k = numerators[k] / denominators[k]`` (e.g. timing A over B).

    Args:
        numerators: One value per repetition.
        denominators: One non-zero value per repetition, the same repetitions in the same order.

    Returns:
        The spread of the ratios.
    """
    x, y = _as_1d(numerators, "numerators"), _as_1d(denominators, "denominators")
    if x.shape != y.shape:
        raise ValueError(f"repetitions differ in number: {x.size} against {y.size}")
    if np.any(y == 0):
        raise ValueError("a denominator repetition is 0: the ratio is undefined")
    return spread(x.astype(np.float64) / y.astype(np.float64))


# --------------------------------------------------------------------------------------------------- bits


def pack_bits(correct: Any) -> bytes:
    """Pack per-image booleans, one bit per image (bit ``i % 8`` of byte ``i // 8``, least significant first).

    Args:
        correct: 1-D booleans (or 0/1 integers).

    Returns:
        ``ceil(n / 8)`` bytes; the unused high bits of the last byte are 0. Store ``n`` beside them.
    """
    x = np.asarray(correct)
    if x.ndim != 1:
        raise ValueError(f"correctness must be one-dimensional, got shape {x.shape}")
    if x.dtype != bool:
        if not (np.issubdtype(x.dtype, np.integer) and np.all((x == 0) | (x == 1))):
            raise ValueError("correctness must be booleans (or 0/1 integers)")
        x = x.astype(bool)
    return np.packbits(x, bitorder="little").tobytes()


def unpack_bits(data: bytes, n: int) -> np.ndarray:
    """Unpack :func:`pack_bits` output.

    Args:
        data: The packed bytes.
        n: Number of images.

    Returns:
        Boolean array of shape ``(n,)``.

    Raises:
        ValueError: ``data`` is not ``ceil(n / 8)`` bytes, or a padding bit is set (not our packing).
    """
    if int(n) != n or n < 0:
        raise ValueError(f"number of images must be a non-negative integer, got {n}")
    n = int(n)
    if len(data) != (n + 7) // 8:
        raise ValueError(f"{len(data)} bytes cannot hold {n} bits packed one per image (need {(n + 7) // 8})")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if bits[n:].any():
        raise ValueError("padding bits after the last image are set: not one-bit-per-image data")
    return bits[:n].astype(bool)
