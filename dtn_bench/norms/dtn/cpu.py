"""Fused CPU kernels (numba) for the 1-D :class:`~dtn_bench.norms.dtn.DTN` layer: four sweeps over the tokens.

Used by :class:`dtn_bench.norms.dtn.sequence._Sequence` on CPU tensors. The arithmetic is the layer's (module
docstring of :mod:`dtn_bench.norms.dtn`, the functional form in ``sequence._seq_forward``); each kernel makes one sweep
over the rows (tokens) instead of one pass over the tensors per torch operation (about 45 of them for a forward and
backward):

1. :func:`prepare`: per token the RMS factors ``r`` of its heads, the LN mean and unbiased variance, and its row of
   the convolution input ``u = [m xn, m xn^2, m]`` (``2C + H`` channels).
2. :func:`finish`: per token the convolution ``v = sum_t taps[t] u[p + t - w]`` of its row along the sequence (the
   heads' kernels ``K``, band 0 of ``dtn._seq_bands``: at most 1), ``[A, M2] = v_{1,2} / v_3`` for real tokens (0 for
   padding), the gates, the standardisation and the affine part; ``v`` is kept for the backward. A real token whose
   denominator ``v_3`` for a head is below ``tau = e^-R`` (its real sources all lie far below the kernel's peak) is
   "deep" for that head: its ``v`` for that head is recomputed with the weights ``exp(logit - c)``, ``c`` the largest
   logit among its real sources (a per-token log-sum-exp shift: the largest weight is 1, the denominator at least 1),
   and ``c`` is kept (``cs``; ``inf`` for the others).
3. :func:`grad_stats`: with ``e = dL/dy * w * s`` and ``f = e * y * s``, the gradients ``gv`` of the convolution's
   outputs, ``e`` itself, its and ``f``'s per-(token, head) sums, and the shard's sums for the affine parameters and
   the gates. A deep (token, head)'s ``gv`` goes to ``gvd`` instead (0 in ``gv``).
4. :func:`grad_input`: per token ``gz = dL/du`` (the convolution of ``gv`` with the kernels reversed), ``dL/dx`` from
   ``e``, ``gz`` and the LN statistics' gradients, and the lag sums ``R_h(d) = sum_i sum_c u[i, c] gv[i + d, c]``
   over head ``h``'s channels, from which ``dL/da_p = sum_d d^p K_h(d) R_h(d)``. Deep targets in a row's window add
   ``exp(logit - c) gvd`` to ``gz`` and the same weight times their lag product to ``Rw_h(d)`` (so
   ``dL/da_p = sum_d d^p (K_h(d) R_h(d) + Rw_h(d))``); rows with none skip this.

Rows of the convolution are packed (:func:`pack`): each sample's span from its first to its last real token, one
after another with ``w`` zero rows between them, so that no window reaches into the next sample. Padding contributes
exact zeros to every sum, so the convolutions and lag sums skip it: with ListOps' lengths (21-199 tokens of 201)
that is less than half the rows. Prefix tokens (the first ``pre`` rows of every sample, mask 0) go through the same
sweeps with the LN statistics alone, so the caller needs no slicing or concatenation.

Every kernel works on a range of rows and writes only those rows (and its own shard's partial sums); :func:`run`
splits the rows into as many contiguous shards as torch uses threads and runs them in a numba parallel loop, on
numba's OpenMP threads where that layer loads (else ``workqueue``), unless ``NUMBA_THREADING_LAYER`` chooses another
layer. Measured on a 2-core VM (quick shape, one layer forward + backward): OpenMP 1.9 ms, ``workqueue`` 3.3 ms (its
two shards ran no faster than one), two shards by a Python thread 2.5 ms; in a ListOps training step OpenMP alone
beat one thread. With one thread (runs side by side, ``--threads 1``) no parallel loop runs and the layer does not
matter. With another process busy on the second core, OpenMP's barrier waits for a time slice (the layer 5-6 ms
against ``workqueue``'s 3.6 ms): there ``NUMBA_THREADING_LAYER=workqueue`` or one torch thread is faster.

Scalars come in as arrays of the tensors' dtype so that fp32 arithmetic stays fp32 (numba would widen a Python float
to fp64). Inner loops index 1-D row slices: numba's negative-index handling on multi-dimensional indexing keeps LLVM
from vectorising them (3-4x slower). Compiled on first use and cached on disk; kept in its own module so that
``import dtn_bench`` does not import numba.
"""

from __future__ import annotations

import numba
import numpy as np

# reassociation (vectorised sums) and fused multiply-adds; no finite-math assumptions (padding uses exact zeros). The
# kernels use error_model="numpy": a division by zero gives inf instead of a raised error, which keeps the loops
# vectorisable (the divisions are guarded where that matters).
_FAST = {"reassoc", "contract"}
if numba.config.THREADING_LAYER == "default":  # not chosen by the user (NUMBA_THREADING_LAYER); read at the first loop
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]


def run(kernel, n: int, threads: int, *args) -> None:
    """Run the parallel ``kernel`` (one of this module's) over ``n`` rows in ``min(threads, n)`` shards.

    With one shard it runs in this thread, without the parallel loop.
    """
    shards = max(1, min(threads, n, numba.config.NUMBA_NUM_THREADS))
    if shards == 1:
        _ROWS[kernel](*args, 0, n, 0, 1)
        return
    numba.set_num_threads(shards)
    kernel(*args, n, shards)


@numba.njit(cache=True, nogil=True)
def _pack(m, B, L, w, pidx, gaps):
    total = 0
    ngaps = 0
    for b in range(B):
        first, last = L, -1
        for t in range(L):
            if m[b * L + t] > 0:
                if first == L:
                    first = t
                last = t
        if b > 0:
            for i in range(w):
                gaps[ngaps] = total + i
                ngaps += 1
            total += w
        for t in range(L):
            pidx[b * L + t] = total + t - first if first <= t <= last else -1
        if last >= first:
            total += last - first + 1
    return total


def pack(m: np.ndarray, B: int, L: int, w: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Pack the rows of the float mask ``m [B * L]``: ``(pidx [B * L], P, gaps)``.

    ``pidx`` is the packed row of every token (``-1`` outside its sample's span of real tokens), ``P`` the number of
    packed rows (at least 1) and ``gaps`` the packed rows between samples. Every packed row but those between samples
    belongs to exactly one token.
    """
    pidx = np.empty(B * L, dtype=np.int64)
    gaps = np.empty(max(0, B - 1) * w, dtype=np.int64)
    P = _pack(m, B, L, w, pidx, gaps)
    if P == 0:  # no real token: one row of zeros for the convolution
        return pidx, 1, np.zeros(1, dtype=np.int64)
    return pidx, P, gaps


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _zero_rows(a, rows, lo, hi):
    for i in range(lo, hi):
        ar = a[rows[i]]
        for c in range(ar.shape[0]):
            ar[c] = 0


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _conv_row(src, taps, p, acc):
    """``acc = sum_t taps[t] * src[p + t - w]`` over the rows inside ``src`` (``taps [2w + 1, K]``)."""
    P = src.shape[0]
    w = taps.shape[0] // 2
    for c in range(acc.shape[0]):
        acc[c] = 0
    for t in range(taps.shape[0]):
        i = p + t - w
        if i < 0 or i >= P:
            continue
        sr, tt = src[i], taps[t]
        for c in range(acc.shape[0]):
            acc[c] += tt[c] * sr[c]


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy", inline="always")
def token_moments(xt, rt, cst):
    """One token ``xt [H, d]``: its per-head RMS factors into ``rt [H]``; returns its LN mean and unbiased variance.

    ``rt[h] = 1 / sqrt(mean_c x^2 + eps)``; the LN moments are taken of the RMS-normalised token (the common base of
    the intra- and inter-token statistics, see ``DTN``). Shared by the 1-D and the 2-D kernels (``cpu2d``).
    """
    H, d = xt.shape
    eps, one, inv_d, inv_c, inv_h, c_c1 = cst[0], cst[1], cst[2], cst[3], cst[4], cst[5]
    zero = eps - eps
    tot = zero
    e2 = zero
    for h in range(H):
        xh = xt[h]
        s1 = zero
        s2 = zero
        for c in range(d):
            v = xh[c]
            s1 += v
            s2 += v * v
        ms = s2 * inv_d
        rh = one / np.sqrt(ms + eps)
        rt[h] = rh
        tot += s1 * rh
        e2 += ms / (ms + eps)
    mu = tot * inv_c
    return mu, (e2 * inv_h - mu * mu) * c_c1


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _prepare_rows(x, m, pidx, gaps, cst, r, mean_ln, var_ln, u, lo, hi, shard, shards):
    N, H, d = x.shape
    C = H * d
    g = gaps.shape[0]
    _zero_rows(u, gaps, g * shard // shards, g * (shard + 1) // shards)
    for n in range(lo, hi):
        xr, rr = x[n], r[n]
        mu, var = token_moments(xr, rr, cst)
        mean_ln[n] = mu
        var_ln[n] = var
        p = pidx[n]
        if p < 0:
            continue
        ur = u[p]
        mn = m[n]
        for h in range(H):
            xh, u1, u2 = xr[h], ur[h * d : h * d + d], ur[C + h * d : C + h * d + d]
            f = rr[h] * mn
            for c in range(d):
                v = xh[c] * f
                u1[c] = v
                u2[c] = v * v
            ur[2 * C + h] = mn


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _deep_row(u, lg, p, h, d, vr):
    """``v`` of the packed target row ``p`` for head ``h`` with weights ``exp(lg - c)``; returns ``c`` (float64).

    ``c`` is the largest logit ``lg[h, w + j - i]`` among the real sources ``i`` (mask channel > 0) of the window.
    """
    P, K = u.shape
    H = lg.shape[0]
    C = H * d
    nt = lg.shape[1]
    w = nt // 2
    c = -np.inf
    for t in range(nt):  # source p + t - w, offset w - t
        i = p + t - w
        if 0 <= i < P and u[i, 2 * C + h] > 0:
            c = max(c, lg[h, nt - 1 - t])
    v1, v2 = vr[h * d : h * d + d], vr[C + h * d : C + h * d + d]
    for k in range(d):
        v1[k] = 0
        v2[k] = 0
    den = 0.0
    for t in range(nt):
        i = p + t - w
        if 0 <= i < P and u[i, 2 * C + h] > 0:
            wt = np.exp(lg[h, nt - 1 - t] - c)
            ur = u[i]
            den += wt * ur[2 * C + h]
            for k in range(d):
                v1[k] += wt * ur[h * d + k]
                v2[k] += wt * ur[C + h * d + k]
    vr[2 * C + h] = den
    return c


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _finish_rows(x, m, u, taps, lg, pidx, r, mean_ln, var_ln, gates, w, b, cst, T, pre, out, S, inv, v, cs, ndeep, lo,
                 hi, shard, shards):
    N, H, d = x.shape
    C = H * d
    eps, one, tau = cst[0], cst[1], cst[9]
    zero = eps - eps
    blank = np.zeros(u.shape[1], dtype=u.dtype)  # the statistics of a token outside the packed rows: 0
    for n in range(lo, hi):
        mn = m[n]
        mu_ln = mean_ln[n]
        vl = var_ln[n]
        p = pidx[n]
        prefix = n % T < pre
        if p >= 0:
            vr = v[p]
            _conv_row(u, taps, p, vr)
            if mn > zero:
                for h in range(H):
                    if not vr[2 * C + h] >= tau:  # deep for this head
                        cs[p, h] = _deep_row(u, lg, p, h, d, vr)
                        ndeep[shard] += 1
        else:
            vr = blank
        for h in range(H):
            den = vr[2 * C + h]
            iv = one / den if (mn > zero and den > zero) else zero
            inv[n, h] = iv
            lm, lm1, lv, lv1 = gates[0, h], gates[1, h], gates[2, h], gates[3, h]
            if prefix:  # the LN statistics alone
                lm, lm1, lv, lv1 = one, zero, one, zero
            c0 = lv * vl + eps
            rh = r[n, h]
            xh, v1, v2, oh, sh = x[n, h], vr[h * d : h * d + d], vr[C + h * d : C + h * d + d], out[n, h], S[n, h]
            wh, bh = w[h * d : h * d + d], b[h * d : h * d + d]
            for c in range(d):
                a = v1[c] * iv
                m2 = v2[c] * iv
                s = one / np.sqrt(lv1 * (m2 - a * a) + c0)
                sh[c] = s
                oh[c] = (xh[c] * rh - lm1 * a - lm * mu_ln) * s * wh[c] + bh[c]


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_stats_rows(g, x, v, pidx, gaps, r, mean_ln, var_ln, S, inv, gates, w, cst, T, pre, cs, gv, gvd, e_out, E,
                     F, part, lo, hi, shard, shards):
    N, H, d = x.shape
    C = H * d
    eps, one, half, two = cst[0], cst[1], cst[6], cst[7]
    zero = eps - eps
    ng = gaps.shape[0]
    _zero_rows(gv, gaps, ng * shard // shards, ng * (shard + 1) // shards)
    block = 64  # rows summed in the tensors' dtype before they go into the float64 totals
    acc = np.zeros(2 * C + 2 * H, dtype=x.dtype)
    acc_w, acc_b = acc[:C], acc[C : 2 * C]
    scratch = np.zeros(gv.shape[1], dtype=gv.dtype)  # gv of a token outside the packed rows (0, not kept)
    blank = np.zeros(v.shape[1], dtype=v.dtype)
    for n in range(lo, hi):
        mu_ln = mean_ln[n]
        vl = var_ln[n]
        p = pidx[n]
        gvr = gv[p] if p >= 0 else scratch
        vr = v[p] if p >= 0 else blank
        prefix = n % T < pre
        for h in range(H):
            iv = inv[n, h]
            lm, lm1, lv1 = gates[0, h], gates[1, h], gates[3, h]
            if prefix:  # the LN statistics alone: the gates take no part
                lm, lm1, lv1 = one, zero, zero
            rh = r[n, h]
            xh, sh, gh, eh = x[n, h], S[n, h], g[n, h], e_out[n, h]
            v1, v2 = vr[h * d : h * d + d], vr[C + h * d : C + h * d + d]
            wh, aw, ab = w[h * d : h * d + d], acc_w[h * d : h * d + d], acc_b[h * d : h * d + d]
            dst = gvr
            if p >= 0 and cs[p, h] < np.inf:  # deep: into gvd, 0 in gv
                dst = gvd[p]
                for c in range(d):
                    gvr[h * d + c] = 0
                    gvr[C + h * d + c] = 0
                gvr[2 * C + h] = 0
            g1, g2 = dst[h * d : h * d + d], dst[C + h * d : C + h * d + d]
            e_sum = zero
            f_sum = zero
            gden = zero
            glm = zero
            glv = zero
            for c in range(d):
                a = v1[c] * iv
                m2 = v2[c] * iv
                var_in = m2 - a * a
                s = sh[c]
                y = (xh[c] * rh - lm1 * a - lm * mu_ln) * s
                gg = gh[c]
                aw[c] += gg * y
                ab[c] += gg
                e = gg * wh[c] * s
                f = e * y * s
                eh[c] = e
                e_sum += e
                f_sum += f
                gv2 = -(half * lv1 * iv) * f
                gv1 = -(lm1 * iv) * e - two * a * gv2
                g1[c] = gv1
                g2[c] = gv2
                gden += gv1 * a + gv2 * m2
                glm += e * (a - mu_ln)
                glv += f * (var_in - vl)
            dst[2 * C + h] = -gden
            E[n, h] = e_sum
            F[n, h] = f_sum
            if not prefix:
                acc[2 * C + h] += glm
                acc[2 * C + H + h] += half * glv
        if (n - lo) % block == block - 1 or n == hi - 1:
            ps = part[shard]
            for i in range(acc.shape[0]):
                ps[i] += acc[i]
                acc[i] = zero


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _flush_lag(lag, Rs, H, d):
    """Add the per-tap, per-channel lag sums ``lag [2w + 1, 2C + H]`` into ``Rs [H, 2w + 1]`` by head and zero them."""
    C = H * d
    for t in range(lag.shape[0]):
        lt = lag[t]
        for h in range(H):
            s = lt[2 * C + h]
            for c in range(d):
                s += lt[h * d + c] + lt[C + h * d + c]
            Rs[h, t] += s
        for c in range(lt.shape[0]):
            lt[c] = 0


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _deep_targets(gvd, cs, lg, ur, p, gz, Rw, d):
    """Deep targets of the source row ``p`` (``u[p] = ur``): ``exp(lg - c) gvd`` into ``gz``, lag sums into ``Rw``."""
    P = gvd.shape[0]
    H, nt = lg.shape
    C = H * d
    w = nt // 2
    for t in range(nt):  # target p + t - w, offset t - w
        j = p + t - w
        if j < 0 or j >= P:
            continue
        for h in range(H):
            c = cs[j, h]
            if c < np.inf:
                wt = np.exp(lg[h, t] - c)
                gd = gvd[j]
                s = ur[2 * C + h] * gd[2 * C + h]
                for k in range(d):
                    a1, a2 = gd[h * d + k], gd[C + h * d + k]
                    gz[h * d + k] += wt * a1
                    gz[C + h * d + k] += wt * a2
                    s += ur[h * d + k] * a1 + ur[C + h * d + k] * a2
                Rw[h, t] += wt * s


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_input_rows(  # noqa: C901 - one fused sweep: a numba kernel split in two costs a pass over the rows
    e, gv, u, taps, pidx, x, r, m, mean_ln, E, F, gates, cst, only_var, T, pre, gvd, cs, lg, deep, gx, R, Rw, lo, hi,
    shard, shards
):
    N, H, d = x.shape
    C = H * d
    K = gv.shape[1]
    P = gv.shape[0]
    nt = taps.shape[0]
    w = nt // 2
    eps, inv_d, inv_c, half, two, two_c1 = cst[0], cst[2], cst[3], cst[6], cst[7], cst[8]
    zero = eps - eps
    gz = np.zeros(K, dtype=gv.dtype)
    lag = np.zeros((nt, K), dtype=gv.dtype)  # per tap and channel; summed over the shard's rows, then per head
    rows_in_lag = 0
    Rs = R[shard]
    for n in range(lo, hi):
        g_mean = zero
        g_var = zero
        prefix = n % T < pre
        for h in range(H):
            g_mean -= E[n, h] if (only_var or prefix) else gates[0, h] * E[n, h]
            g_var -= half * F[n, h] if prefix else half * gates[2, h] * F[n, h]
        kappa = g_var * two_c1
        shift = g_mean * inv_c - kappa * mean_ln[n]
        mn = m[n]
        p = pidx[n]
        if p >= 0:  # dL/du of this row and its lag products (a token outside the packed rows is padding: m = 0)
            ur = u[p]
            for c in range(K):
                gz[c] = 0
            for t in range(nt):
                i = p + t - w
                if i < 0 or i >= P:
                    continue
                gr, tt, lt = gv[i], taps[t], lag[t]
                for c in range(K):
                    gz[c] += tt[c] * gr[c]
                    lt[c] += ur[c] * gr[c]
            rows_in_lag += 1
            if rows_in_lag == 64:  # into the float64 totals
                _flush_lag(lag, Rs, H, d)
                rows_in_lag = 0
            if deep and mn > zero:  # (a padding source's weight for a deep target could overflow: it has none)
                _deep_targets(gvd, cs, lg, ur, p, gz, Rw[shard], d)
        for h in range(H):
            rh = r[n, h]
            xh, eh, oh = x[n, h], e[n, h], gx[n, h]
            z1, z2 = gz[h * d : h * d + d], gz[C + h * d : C + h * d + d]
            dot = zero
            for c in range(d):
                xn = xh[c] * rh
                q = eh[c] + mn * z1[c] + xn * (two * mn * z2[c] + kappa) + shift
                oh[c] = q
                dot += q * xn
            dot *= inv_d
            for c in range(d):
                oh[c] = rh * (oh[c] - xh[c] * rh * dot)
    _flush_lag(lag, Rs, H, d)


# parallel drivers: shard s of `shards` takes rows [n s / shards, n (s + 1) / shards)
@numba.njit(cache=True, nogil=True, parallel=True)
def prepare(x, m, pidx, gaps, cst, r, mean_ln, var_ln, u, n, shards):
    """The forward's first sweep (module docstring, 1.) over the rows of ``x [N, H, d]`` with mask ``m [N]``.

    Writes ``r [N, H]``, ``mean_ln``, ``var_ln [N]`` and the packed rows ``u[pidx[n]]`` of ``u [P, 2C + H]``, the rows
    ``gaps`` between samples zeroed. ``cst = [eps, 1, 1/d, 1/C, 1/H, C/(C-1), 1/2, 2, 2/(C-1)]``.
    """
    for s in numba.prange(shards):
        _prepare_rows(x, m, pidx, gaps, cst, r, mean_ln, var_ln, u, n * s // shards, n * (s + 1) // shards, s,
                      shards)


@numba.njit(cache=True, nogil=True, parallel=True)
def finish(x, m, u, taps, lg, pidx, r, mean_ln, var_ln, gates, w, b, cst, T, pre, out, S, inv, v, cs, ndeep, n,
           shards):
    """The forward's second sweep (module docstring, 2.): the output ``out [N, H, d]`` and what the backward keeps.

    Writes ``out [N, H, d]``, the factor ``S = 1 / sqrt(var + eps) [N, H, d]``, ``inv [N, H]`` (``1 / v_3`` for real
    tokens, else 0) and the packed convolution ``v [P, 2C + H]`` of ``u`` with ``taps [2w + 1, 2C + H]``
    (``A = v_1 inv``, ``M2 = v_2 inv``). ``gates = [lam_m, 1 - lam_m, lam_v, 1 - lam_v] [4, H]`` (``lam_m = 1`` for
    the LN mean); the first ``pre`` rows of every ``T`` (prefix tokens, ``m = 0``) use the LN statistics alone, as if
    both gates were 1. A real token whose ``v_3`` for a head is below ``cst[9] = e^-R`` is recomputed with its own
    shift (module docstring, 2.; ``lg [H, 2w + 1]`` the float64 logits at offsets ``-w .. w``), the shift written to
    ``cs [P, H]`` (float64, ``inf`` elsewhere), and counted in ``ndeep[shard]``.
    """
    for s in numba.prange(shards):
        _finish_rows(x, m, u, taps, lg, pidx, r, mean_ln, var_ln, gates, w, b, cst, T, pre, out, S, inv, v, cs, ndeep,
                     n * s // shards, n * (s + 1) // shards, s, shards)


@numba.njit(cache=True, nogil=True, parallel=True)
def grad_stats(g, x, v, pidx, gaps, r, mean_ln, var_ln, S, inv, gates, w, cst, T, pre, cs, gv, gvd, e_out, E, F, part,
               n, shards):
    """The backward's first sweep (module docstring, 3.) with ``v``, ``S``, ``inv`` from :func:`finish`.

    Writes the packed rows of ``gv [P, 2C + H]`` (those between samples zeroed), ``e_out [N, H, d]``, ``E``,
    ``F [N, H]``, and into ``part[shard] = [dL/dw (C), dL/db (C), dL/dlam_m (H), dL/dlam_v (H)]`` (float64) the
    shards' sums (prefix rows, as in :func:`finish`, add nothing to the gates' sums). The deep (token, head) pairs of
    ``cs`` write their ``gv`` into the same rows of ``gvd [P, 2C + H]`` instead, with 0 in ``gv``.
    """
    for s in numba.prange(shards):
        _grad_stats_rows(g, x, v, pidx, gaps, r, mean_ln, var_ln, S, inv, gates, w, cst, T, pre, cs, gv, gvd, e_out,
                         E, F, part, n * s // shards, n * (s + 1) // shards, s, shards)


@numba.njit(cache=True, nogil=True, parallel=True)
def grad_input(e, gv, u, taps, pidx, x, r, m, mean_ln, E, F, gates, cst, only_var, T, pre, gvd, cs, lg, deep, gx, R,
               Rw, n, shards):
    """The backward's second sweep (module docstring, 4.): ``dL/dx [N, H, d]`` and the lag sums.

    ``dL/dx`` comes from ``e``, ``E``, ``F`` and ``dL/du = sum_t taps[t] gv[p + t - w]`` (``taps`` the kernels in
    natural order); into ``R[shard, h, t]`` (float64) go the shard's lag sums ``sum_i sum_c u[i, c] gv[i + t - w, c]``
    over head ``h``'s channels. ``cst[8] = 2 / (C - 1)``; prefix rows as in :func:`finish`. With ``deep`` (some
    token is deep), the deep targets' weights ``exp(lg - cs)`` times ``gvd`` go into ``dL/du`` and their lag sums
    into ``Rw[shard, h, t]`` (float64, already weighted).
    """
    for s in numba.prange(shards):
        _grad_input_rows(e, gv, u, taps, pidx, x, r, m, mean_ln, E, F, gates, cst, only_var, T, pre, gvd, cs, lg, deep,
                         gx, R, Rw, n * s // shards, n * (s + 1) // shards, s, shards)


_ROWS = {prepare: _prepare_rows, finish: _finish_rows, grad_stats: _grad_stats_rows, grad_input: _grad_input_rows}
