"""Fused CPU kernels (numba) for the 2-D :class:`~dtn_bench.norms.dtn.DTN` layer on an unpooled grid.

Used by :class:`dtn_bench.norms.dtn.grid._Grid` on CPU tensors (training and inference). The arithmetic is the layer's
(module docstring of :mod:`dtn_bench.norms.dtn`; the eager form is ``DTN._forward`` / ``DTN._infer_grid``): with
``xn = x * r`` (``r = 1 / sqrt(mean_c x^2 + eps)`` per token and head), ``P^h = Py^h (x) Px^h`` and the gates
``lam_m``, ``lam_v`` of each head,

- ``[A, M2] = P^h [xn, xn^2]``: a product along the grid's x axis (``s1[y, tx] = sum_sx Px[sx, tx] z[y, sx]``), then
  one along y (``[A, M2][ty, x] = sum_sy Py[sy, ty] s1[sy, x]``), both on rows of ``2d`` contiguous channels;
- ``y = (xn - (1 - lam_m) A - lam_m mean_ln) s * w + b`` with ``s = 1 / sqrt((1 - lam_v)(M2 - A^2) + lam_v var_ln
  + eps)``; prefix tokens use the LN statistics alone (as if both gates were 1).

One kernel call is one sweep over the samples: each sample's token statistics, then per head the two products and
the output, all in per-sample buffers of ``[L, 2d]`` that stay in the cache, instead of one pass over the whole
tensors per torch operation (about 15 operations per forward, each its own parallel region: on a 2-core machine with
other busy processes every region's barrier can wait a time slice for a descheduled thread, which made the eager
layer 8-10x slower under load; here there is one region per call).

The backward (:func:`backward`) recomputes the products of each sample instead of keeping them (they are 4x the
input's size per layer; recomputing in the cache costs less than reading them back). With ``e = dL/dy * w * s`` and
``f = e * y * s`` (``= -2 dL/dvar``): ``dL/dA = -(1 - lam_m) e + (1 - lam_v) f A``, ``dL/dM2 = -(1 - lam_v) f / 2``;
back through the y product (``dL/ds1`` and ``dL/dPy``) and the x product (``dL/dz`` and ``dL/dPx``), then
``dL/dxn = e + dL/dz_1 + 2 xn dL/dz_2`` plus the LN statistics' terms, and ``dL/dx = r (dL/dxn - xn mean_c(dL/dxn
xn))``. The entries of ``dL/dPx``, ``dL/dPy`` where ``P`` is 0 (flushed) are left 0: the caller's softmax and flush
pass no gradient through them. Sums over the batch (the affine parameters, the gates, ``dL/dP``) are written per
sample and summed by the caller, so the result does not depend on the number of threads.

Parallelism: a numba parallel loop over chunks of samples, each chunk with its own buffers (:func:`run`); one
thread runs the sequential kernel with no parallel region. Scalars come in as arrays of the tensors' dtype so that fp32
arithmetic stays fp32. Compiled on first use and cached on disk; kept in its own module so that ``import dtn_bench``
does not import numba.
"""

from __future__ import annotations

import numba
import numpy as np

from dtn_bench.norms.dtn import cpu  # its token moments; importing it sets numba's threading-layer priority first

# as dtn_cpu: reassociation (vectorised sums) and fused multiply-adds, no finite-math assumptions
_FAST = {"reassoc", "contract"}


# ---------------------------------------------------------------------------------------------------------- helpers
@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _token_stats(xb, cst, rb, mb, vb):
    """Per token of one sample ``xb [T, H, d]``: RMS factors ``rb [T, H]``, LN mean ``mb`` and unbiased var ``vb``."""
    for t in range(xb.shape[0]):
        mu, var = cpu.token_moments(xb[t], rb[t], cst)
        mb[t] = mu
        vb[t] = var


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _load(xb, rb, pre, h, z):
    """``z [L, 2d] = [xn, xn^2]`` of head ``h``'s patch tokens (the tokens after the ``pre`` prefix tokens)."""
    L = z.shape[0]
    d = z.shape[1] // 2
    for s in range(L):
        xh = xb[pre + s, h]
        rh = rb[pre + s, h]
        zr = z[s]
        for c in range(d):
            v = xh[c] * rh
            zr[c] = v
            zr[d + c] = v * v


@numba.njit(cache=True, nogil=True)
def bands(pm):
    """Where the axis matrices ``pm [H, n, n]`` (``[head, source, target]``) are nonzero, as index ranges.

    Returns ``band [H, 4, n]``: per source ``s`` the targets ``band[h, 0, s] <= t < band[h, 1, s]``, per target ``t``
    the sources ``band[h, 2, t] <= s < band[h, 3, t]``, each the span from the first to the last nonzero weight (empty
    when there is none). The products run over these spans only: a local kernel's flushed tails are skipped without a
    test per weight (a branch per weight made the loops 2x slower than multiplying by the zeros), and every nonzero
    weight is inside its span, so nothing changes but the time.
    """
    H, n = pm.shape[0], pm.shape[1]
    band = np.zeros((H, 4, n), dtype=np.int64)
    for h in range(H):
        for i in range(n):
            band[h, 0, i], band[h, 2, i] = n, n
        for s in range(n):
            for t in range(n):
                if pm[h, s, t] != 0:
                    band[h, 0, s] = min(band[h, 0, s], t)
                    band[h, 1, s] = t + 1
                    band[h, 2, t] = min(band[h, 2, t], s)
                    band[h, 3, t] = max(band[h, 3, t], s + 1)
    return band


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy", inline="always")
def _zero(rows, lo, hi):
    for i in range(lo, hi):
        r = rows[i]
        for c in range(r.shape[0]):
            r[c] = 0


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy", inline="always")
def _axpy4(acc, p0, p1, p2, p3, s0, s1, s2, s3):
    """``acc += p0 s0 + p1 s1 + p2 s2 + p3 s3`` (rows): four source rows per pass over ``acc``.

    One load and one store of ``acc`` serve four multiply-adds (one row at a time: one each), 1.3-1.5x faster.
    """
    for c in range(acc.shape[0]):
        acc[c] += p0 * s0[c] + p1 * s1[c] + p2 * s2[c] + p3 * s3[c]


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy", inline="always")
def _axpy(acc, p, s0):
    for c in range(acc.shape[0]):
        acc[c] += p * s0[c]


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _along_x(src, px, bx, gh, gw, dst):
    """``dst[y * gw + tx] = sum_sx px[sx, tx] src[y * gw + sx]`` (rows of ``K`` channels; ``bx`` = :func:`bands`)."""
    for y in range(gh):
        o = y * gw
        _zero(dst, o, o + gw)
        for tx in range(gw):
            acc = dst[o + tx]
            lo, hi = bx[2, tx], bx[3, tx]
            n4 = lo + (hi - lo) // 4 * 4
            for sx in range(lo, n4, 4):
                _axpy4(acc, px[sx, tx], px[sx + 1, tx], px[sx + 2, tx], px[sx + 3, tx], src[o + sx], src[o + sx + 1],
                       src[o + sx + 2], src[o + sx + 3])
            for sx in range(n4, hi):
                _axpy(acc, px[sx, tx], src[o + sx])


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _along_y(src, py, by, gh, gw, dst):
    """``dst[ty * gw + x] = sum_sy py[sy, ty] src[sy * gw + x]`` (rows of ``K`` channels; ``by`` = :func:`bands`)."""
    _zero(dst, 0, gh * gw)
    for ty in range(gh):
        lo, hi = by[2, ty], by[3, ty]
        n4 = lo + (hi - lo) // 4 * 4
        for x in range(gw):
            acc = dst[ty * gw + x]
            for sy in range(lo, n4, 4):
                _axpy4(acc, py[sy, ty], py[sy + 1, ty], py[sy + 2, ty], py[sy + 3, ty], src[sy * gw + x],
                       src[(sy + 1) * gw + x], src[(sy + 2) * gw + x], src[(sy + 3) * gw + x])
            for sy in range(n4, hi):
                _axpy(acc, py[sy, ty], src[sy * gw + x])


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _prefix_out(xb, rb, mb, vb, w, b, cst, pre, ob):
    """The prefix tokens' output: LN statistics alone."""
    H, d = w.shape
    eps, one = cst[0], cst[1]
    for t in range(pre):
        mu = mb[t]
        s = one / np.sqrt(vb[t] + eps)
        for h in range(H):
            xh, oh, wh, bh = xb[t, h], ob[t, h], w[h], b[h]
            rh = rb[t, h]
            for c in range(d):
                oh[c] = (xh[c] * rh - mu) * s * wh[c] + bh[c]


# ---------------------------------------------------------------------------------------------------------- forward
@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _forward_samples(x, px, py, bx, by, gates, w, b, cst, pre, gh, gw, out, r, mean_ln, var_ln, lo, hi):
    B, T, H, d = x.shape
    L = gh * gw
    eps, one = cst[0], cst[1]
    z = np.empty((L, 2 * d), dtype=x.dtype)
    s1 = np.empty((L, 2 * d), dtype=x.dtype)
    for n in range(lo, hi):
        xb, rb, mb, vb, ob = x[n], r[n], mean_ln[n], var_ln[n], out[n]
        _token_stats(xb, cst, rb, mb, vb)
        _prefix_out(xb, rb, mb, vb, w, b, cst, pre, ob)
        for h in range(H):
            _load(xb, rb, pre, h, z)
            _along_x(z, px[h], bx[h], gh, gw, s1)
            _along_y(s1, py[h], by[h], gh, gw, z)  # z = [A, M2]
            lm, lm1, lv, lv1 = gates[0, h], gates[1, h], gates[2, h], gates[3, h]
            wh, bh = w[h], b[h]
            for s in range(L):
                t = pre + s
                mu = mb[t]
                c0 = lv * vb[t] + eps
                rh = rb[t, h]
                xh, oh, st = xb[t, h], ob[t, h], z[s]
                for c in range(d):
                    a = st[c]
                    sv = one / np.sqrt(lv1 * (st[d + c] - a * a) + c0)
                    oh[c] = (xh[c] * rh - lm1 * a - lm * mu) * sv * wh[c] + bh[c]


@numba.njit(cache=True, nogil=True, parallel=True)
def _forward_parallel(x, px, py, bx, by, gates, w, b, cst, pre, gh, gw, out, r, mean_ln, var_ln, chunks):
    B = x.shape[0]
    for k in numba.prange(chunks):
        _forward_samples(x, px, py, bx, by, gates, w, b, cst, pre, gh, gw, out, r, mean_ln, var_ln, B * k // chunks,
                         B * (k + 1) // chunks)


# --------------------------------------------------------------------------------------------------------- backward
@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy", inline="always")
def _axpy4_dot(acc, sr, p0, p1, p2, p3, g0, g1, g2, g3):
    """``acc += p0 g0 + p1 g1 + p2 g2 + p3 g3`` and the four dot products ``<g_i, sr>`` (rows), in one pass."""
    d0 = p0 - p0
    d1 = d0
    d2 = d0
    d3 = d0
    for c in range(acc.shape[0]):
        s = sr[c]
        acc[c] += p0 * g0[c] + p1 * g1[c] + p2 * g2[c] + p3 * g3[c]
        d0 += g0[c] * s
        d1 += g1[c] * s
        d2 += g2[c] * s
        d3 += g3[c] * s
    return d0, d1, d2, d3


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy", inline="always")
def _axpy_dot(acc, sr, p, g0):
    d0 = p - p
    for c in range(acc.shape[0]):
        acc[c] += p * g0[c]
        d0 += g0[c] * sr[c]
    return d0


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_y(g, src, py, by, gh, gw, gsrc, gpy):
    """Back through :func:`_along_y`: ``gsrc`` and ``gpy``.

    ``gsrc[sy, x] = sum_ty py[sy, ty] g[ty, x]`` and ``gpy[sy, ty] = sum_x <g[ty, x], src[sy, x]>`` (0 outside the
    bands; inside them where ``py`` is 0 a value the caller does not use).
    """
    _zero(gsrc, 0, gh * gw)
    _zero(gpy, 0, gh)
    for sy in range(gh):
        lo, hi = by[0, sy], by[1, sy]
        n4 = lo + (hi - lo) // 4 * 4
        gp = gpy[sy]
        for x in range(gw):
            acc, sr = gsrc[sy * gw + x], src[sy * gw + x]
            for ty in range(lo, n4, 4):
                d0, d1, d2, d3 = _axpy4_dot(acc, sr, py[sy, ty], py[sy, ty + 1], py[sy, ty + 2], py[sy, ty + 3],
                                            g[ty * gw + x], g[(ty + 1) * gw + x], g[(ty + 2) * gw + x],
                                            g[(ty + 3) * gw + x])
                gp[ty] += d0
                gp[ty + 1] += d1
                gp[ty + 2] += d2
                gp[ty + 3] += d3
            for ty in range(n4, hi):
                gp[ty] += _axpy_dot(acc, sr, py[sy, ty], g[ty * gw + x])


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_x(g, z, px, bx, gh, gw, two, pre, h, gz, gpx, gxb):
    """Back through :func:`_along_x` of ``z = [xn, xn^2]``: ``gpx`` and ``dL/dxn`` added into ``gxb``.

    ``gz[y, sx] = sum_tx px[sx, tx] g[y, tx]`` (``dL/dz``, one row of scratch ``gz [2d]`` at a time) goes straight into
    ``gxb[pre + y * gw + sx, h] += gz_1 + 2 xn gz_2``; ``gpx[sx, tx] = sum_y <g[y, tx], z[y, sx]>`` (0 outside the
    bands; inside them where ``px`` is 0 a value the caller does not use).
    """
    d = z.shape[1] // 2
    _zero(gpx, 0, gw)
    for y in range(gh):
        o = y * gw
        for sx in range(gw):
            sr, gp = z[o + sx], gpx[sx]
            for c in range(gz.shape[0]):
                gz[c] = 0
            lo, hi = bx[0, sx], bx[1, sx]
            n4 = lo + (hi - lo) // 4 * 4
            for tx in range(lo, n4, 4):
                d0, d1, d2, d3 = _axpy4_dot(gz, sr, px[sx, tx], px[sx, tx + 1], px[sx, tx + 2], px[sx, tx + 3],
                                            g[o + tx], g[o + tx + 1], g[o + tx + 2], g[o + tx + 3])
                gp[tx] += d0
                gp[tx + 1] += d1
                gp[tx + 2] += d2
                gp[tx + 3] += d3
            for tx in range(n4, hi):
                gp[tx] += _axpy_dot(gz, sr, px[sx, tx], g[o + tx])
            oh = gxb[pre + o + sx, h]
            for c in range(d):
                oh[c] += gz[c] + two * sr[c] * gz[d + c]


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_prefix(gb_, xb, rb, mb, vb, w, cst, pre, gxb, E, F, gwp, gbp):
    """The prefix tokens' ``e`` (into ``gxb``), ``E``, ``F`` and affine sums (LN statistics alone)."""
    H, d = w.shape
    eps, one = cst[0], cst[1]
    zero = eps - eps
    for t in range(pre):
        mu = mb[t]
        s = one / np.sqrt(vb[t] + eps)
        for h in range(H):
            xh, gg, eh, wh = xb[t, h], gb_[t, h], gxb[t, h], w[h]
            rh = rb[t, h]
            e_sum = zero
            f_sum = zero
            for c in range(d):
                y = (xh[c] * rh - mu) * s
                e = gg[c] * wh[c] * s
                gwp[h * d + c] += gg[c] * y
                gbp[h * d + c] += gg[c]
                eh[c] = e
                e_sum += e
                f_sum += e * y * s
            E[t, h] = e_sum
            F[t, h] = f_sum


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_head(gb_, xb, rb, mb, vb, gates, w, cst, pre, h, st, gxb, E, F, gwp, gbp, ggp, yrow):
    """Head ``h``'s ``e`` (into ``gxb``), ``E``, ``F``, affine and gate sums; ``st = [A, M2]`` becomes ``[gA, gM2]``.

    ``yrow [d]`` is scratch: the affine sums go in a loop of their own (in the main loop they kept LLVM from
    vectorising it, which left the square roots scalar: 1.6x slower).
    """
    L = st.shape[0]
    d = st.shape[1] // 2
    eps, one, half = cst[0], cst[1], cst[6]
    zero = eps - eps
    lm, lm1, lv, lv1 = gates[0, h], gates[1, h], gates[2, h], gates[3, h]
    wh = w[h]
    aw, ab = gwp[h * d : h * d + d], gbp[h * d : h * d + d]
    glm = zero
    glv = zero
    for s in range(L):
        t = pre + s
        mu = mb[t]
        vl = vb[t]
        c0 = lv * vl + eps
        rh = rb[t, h]
        xh, gg, eh, sr = xb[t, h], gb_[t, h], gxb[t, h], st[s]
        e_sum = zero
        f_sum = zero
        for c in range(d):
            a = sr[c]
            var_in = sr[d + c] - a * a
            sv = one / np.sqrt(lv1 * var_in + c0)
            y = (xh[c] * rh - lm1 * a - lm * mu) * sv
            e = gg[c] * wh[c] * sv
            f = e * y * sv
            yrow[c] = y
            eh[c] = e
            e_sum += e
            f_sum += f
            glm += e * (a - mu)
            glv += f * (var_in - vl)
            sr[c] = lv1 * f * a - lm1 * e  # dL/dA
            sr[d + c] = -half * lv1 * f  # dL/dM2
        for c in range(d):
            aw[c] += gg[c] * yrow[c]
            ab[c] += gg[c]
        E[t, h] = e_sum
        F[t, h] = f_sum
    ggp[0, h] += glm
    ggp[1, h] += half * glv


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_tokens(xb, rb, mb, gates, cst, only_var, pre, E, F, gxb):
    """``dL/dx`` of every token from ``gxb`` (holding ``dL/dxn`` but the LN statistics' terms), ``E`` and ``F``."""
    T, H, d = xb.shape
    eps, inv_d, inv_c, half, two_c1 = cst[0], cst[2], cst[3], cst[6], cst[8]
    zero = eps - eps
    for t in range(T):
        prefix = t < pre
        g_mean = zero
        g_var = zero
        for h in range(H):
            g_mean -= E[t, h] if (only_var or prefix) else gates[0, h] * E[t, h]
            g_var -= half * F[t, h] if prefix else half * gates[2, h] * F[t, h]
        kappa = g_var * two_c1
        shift = g_mean * inv_c - kappa * mb[t]
        for h in range(H):
            rh = rb[t, h]
            xh, oh = xb[t, h], gxb[t, h]
            dot = zero
            for c in range(d):
                xn = xh[c] * rh
                q = oh[c] + xn * kappa + shift
                oh[c] = q
                dot += q * xn
            dot *= inv_d
            for c in range(d):
                oh[c] = rh * (oh[c] - xh[c] * rh * dot)


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _backward_samples(g, x, r, mean_ln, var_ln, px, py, bx, by, gates, w, cst, only_var, pre, gh, gw, gx, gpx, gpy,
                      gwb, ggate, lo, hi):
    B, T, H, d = x.shape
    L = gh * gw
    C = H * d
    two = cst[7]
    z = np.empty((L, 2 * d), dtype=x.dtype)
    s1 = np.empty((L, 2 * d), dtype=x.dtype)
    st = np.empty((L, 2 * d), dtype=x.dtype)
    gs1 = np.empty((L, 2 * d), dtype=x.dtype)
    gz = np.empty(2 * d, dtype=x.dtype)
    yrow = np.empty(d, dtype=x.dtype)
    E = np.empty((T, H), dtype=x.dtype)
    F = np.empty((T, H), dtype=x.dtype)
    for n in range(lo, hi):
        xb, rb, mb, vb, gb_, gxb = x[n], r[n], mean_ln[n], var_ln[n], g[n], gx[n]
        gwp, gbp, ggp = gwb[n, 0], gwb[n, 1], ggate[n]
        for i in range(C):
            gwp[i] = 0
            gbp[i] = 0
        for h in range(H):
            ggp[0, h] = 0
            ggp[1, h] = 0
        _grad_prefix(gb_, xb, rb, mb, vb, w, cst, pre, gxb, E, F, gwp, gbp)
        for h in range(H):
            _load(xb, rb, pre, h, z)
            _along_x(z, px[h], bx[h], gh, gw, s1)
            _along_y(s1, py[h], by[h], gh, gw, st)  # [A, M2]
            _grad_head(gb_, xb, rb, mb, vb, gates, w, cst, pre, h, st, gxb, E, F, gwp, gbp, ggp, yrow)  # [gA, gM2]
            _grad_y(st, s1, py[h], by[h], gh, gw, gs1, gpy[n, h])
            _grad_x(gs1, z, px[h], bx[h], gh, gw, two, pre, h, gz, gpx[n, h], gxb)
        _grad_tokens(xb, rb, mb, gates, cst, only_var, pre, E, F, gxb)


@numba.njit(cache=True, nogil=True, parallel=True)
def _backward_parallel(g, x, r, mean_ln, var_ln, px, py, bx, by, gates, w, cst, only_var, pre, gh, gw, gx, gpx, gpy,
                       gwb, ggate, chunks):
    B = x.shape[0]
    for k in numba.prange(chunks):
        _backward_samples(g, x, r, mean_ln, var_ln, px, py, bx, by, gates, w, cst, only_var, pre, gh, gw, gx, gpx, gpy,
                          gwb, ggate, B * k // chunks, B * (k + 1) // chunks)


# ------------------------------------------------------------------------------------------------------------ entry
_GRAIN = 1 << 16
"""Elements of ``x`` per parallel chunk at least: smaller calls run in one thread (waking a second thread costs more
than it saves, and on a loaded machine it may wait a whole time slice)."""


def _chunks(x, threads: int) -> int:
    """Parallel chunks of samples for ``x [B, ...]``: at most ``threads``, ``B`` and one per :data:`_GRAIN` elements."""
    return max(1, min(threads, x.shape[0], numba.config.NUMBA_NUM_THREADS, x.size // _GRAIN))


def forward(x, px, py, gates, w, b, cst, pre, grid, out, r, mean_ln, var_ln, threads: int) -> None:
    """The layer's forward on numpy arrays.

    Writes ``out [B, T, H, d]`` and what the backward needs, ``r [B, T, H]``, ``mean_ln`` and ``var_ln [B, T]``.
    ``x [B, T, H, d]`` (C-contiguous), ``px [H, gw, gw]`` and ``py [H, gh, gh]`` indexed ``[head, source, target]``,
    ``gates = [lam_m, 1 - lam_m, lam_v, 1 - lam_v] [4, H]`` (``lam_m = 1`` for the LN mean), ``w``, ``b [H, d]``,
    ``cst = [eps, 1, 1/d, 1/C, 1/H, C/(C-1), 1/2, 2, 2/(C-1)]`` in the dtype of ``x``, ``pre`` prefix tokens first,
    ``grid = (gh, gw)``; ``threads`` samples chunks run in parallel (1: no parallel region).
    """
    gh, gw = grid
    bx, by = bands(px), bands(py)
    chunks = _chunks(x, threads)
    if chunks == 1:
        _forward_samples(x, px, py, bx, by, gates, w, b, cst, pre, gh, gw, out, r, mean_ln, var_ln, 0, x.shape[0])
        return
    numba.set_num_threads(chunks)
    _forward_parallel(x, px, py, bx, by, gates, w, b, cst, pre, gh, gw, out, r, mean_ln, var_ln, chunks)


def backward(g, x, r, mean_ln, var_ln, px, py, gates, w, cst, only_var, pre, grid, gx, gpx, gpy, gwb, ggate,
             threads: int) -> None:
    """The layer's backward, from the upstream gradient ``g [B, T, H, d]`` and :func:`forward`'s statistics.

    Writes ``gx = dL/dx [B, T, H, d]`` and per sample ``gpx [B, H, gw, gw]``, ``gpy [B, H, gh, gh]`` (``dL/dPx``,
    ``dL/dPy``; where ``P`` is 0 values the caller does not use: its flush and softmax pass no gradient there),
    ``gwb [B, 2, C]`` (``dL/dw``, ``dL/db``) and ``ggate [B, 2, H]`` (``dL/dlam_m``, unused for ``only_var``, and
    ``dL/dlam_v``). ``threads`` as in :func:`forward`.
    """
    gh, gw = grid
    bx, by = bands(px), bands(py)
    chunks = _chunks(x, threads)
    if chunks == 1:
        _backward_samples(g, x, r, mean_ln, var_ln, px, py, bx, by, gates, w, cst, only_var, pre, gh, gw, gx, gpx, gpy,
                          gwb, ggate, 0, x.shape[0])
        return
    numba.set_num_threads(chunks)
    _backward_parallel(g, x, r, mean_ln, var_ln, px, py, bx, by, gates, w, cst, only_var, pre, gh, gw, gx, gpx, gpy,
                       gwb, ggate, chunks)
