"""The 1-D path of :class:`~dtn_bench.norms.dtn.DTN`: sequences with a padding mask, and its backward.

1-D sequences (``grid_size=None``): positions ``0..T-1``, logits ``a0 * d + a1 * d^2`` with ``d = j - i``
(``a0 = pos_proj.weight[:, 0]``, ``a1 = pos_proj.weight[:, 2]``; column 1 is unused), an optional boolean
``mask [B, T]`` (True = real token) so that padding never enters a real token's statistics, and a window:
sources with ``|d| > window`` are dropped. The error this causes is bounded and reported by
:meth:`DTN.truncation_bound`: with ``delta_h = sum_{window < |d| < T} exp(logit_h(d))`` (``logit_h(0) = 0``), every
real token's windowed mean differs from the full-length one by at most ``2 * delta_h * max|xn|`` and its second
moment by at most ``2 * delta_h * max(xn^2)``. With the local init (``a1 = -1``) and the default window of 64,
``delta`` underflows to 0 in float64 for any length. ``window=None`` keeps every source.

Away from the ends the 1-D kernel is translation-invariant, so the masked statistics are ratios of depthwise
convolutions along the sequence, ``P xn = (K * (m xn)) / (K * m)`` (likewise ``xn^2``; ``K_h(d) = exp(logit_h(d) -
shift_h)``, ``m`` the mask, zero outside the sequence): ``O(T (2w + 1))`` per channel for a half-width ``w``. The
layer uses ``w = DTN.effective_window(T)``: on the CPU the window is narrowed to where the kernel's dropped weight is
below ``eps / (2 d)`` of the dtype, so that every statistic moves by less than the dtype's epsilon (the same bound,
tested); with the local init that is 5 to 9 tokens. A hand-written backward (:class:`_Sequence`) replaces autograd;
on CPU tensors the layer runs the fused kernels of :mod:`dtn_bench.norms.dtn.cpu` (numba), which pack the samples'
spans of real tokens so that padding costs no convolution work; elsewhere and under a torch dispatch mode (a flop
counter) it runs torch operations (the convolution is ``F.conv2d``); under ``torch.compile`` a differentiable
per-offset form (:func:`_seq_moments_exact`).

Exactness. A ratio does not change when its terms share a factor, but one shifted kernel cannot represent every
token's weights: a kernel may peak hundreds of nats above its self term ``logit(0) = 0`` (a concave kernel's peak
``a0^2 / (4 |a1|)`` is unbounded; the local init's is ``(H - 1)^2 / 4``, 240 nats at 32 heads), and a token whose
real sources all lie far below the peak (near an end, next to padding) would get a denominator of 0, or weights that
overflow. Every form therefore uses, per target token and head, a shift at or near ``c``, the largest logit among the
token's real sources (``c >= 0``: its own), so that its denominator is at least ``e^-20`` and no weight exceeds
``e^20`` (fp32; ``e^-200`` and ``e^200`` in float64), for every kernel: the torch operations pick per token the
first of a few kernels shifted in steps (:func:`_seq_bands`; up to ``_MAX_BANDS``, past that the per-offset form),
the CPU kernels recompute a token whose denominator under the peak-shifted kernel is below ``e^-20`` with its own
shift ``c`` (:mod:`dtn_bench.norms.dtn.cpu`), and the per-offset form shifts every token by its ``c``. The statistics
are exact to the dtype's rounding for any kernel (tested against the dense formula in float64 up to peaks of 1e4
nats), no infinite value ever meets a mask, and padding tokens get inter-token statistics 0 (their LN statistics
only), finite gradients, and pass no gradient to the kernel.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms.dtn.common import (
    _band_limits,
    _cpu_constants,
    _seq_gates,
    _Standardise,
    _subnormal_floor,
    _token_stats,
)

# At most _MAX_BANDS kernel bands (_seq_bands), past that the per-offset form.
_MAX_BANDS = 8
# 1-D layers on CPU tensors run the fused kernels of cpu (False: torch operations only, as on other devices).
_CPU_KERNELS = True


def _seq_bands(a: np.ndarray, w: int, dtype, max_bands: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The 1-D logits and the head kernels of every band, in float64, for ``a = pos_proj.weight [H, 3]``.

    Returns ``lg [H, 2w + 1]`` with ``lg[h, w + d] = a0 d + a1 d^2``, the logit of the offset ``d = j - i`` (0 at
    ``d = 0``), and ``K [NB, H, 2w + 1]``: ``K[b] = exp(lg - s_b)`` where ``lg - s_b <= M``, else 0, and flushed to 0
    below the subnormal floor of ``dtype`` (:func:`_subnormal_floor`); ``(M, R)`` from :func:`_band_limits`.

    A target token's statistics are ratios, exact with any shift that keeps its largest weight representable. Let
    ``c`` be the largest logit among its real sources (``c >= 0``: its own). Band 0 has the shift ``s_0 = `` the
    head's peak over the window (``K <= 1``) and serves ``c`` in ``[s_0 - R + 1, s_0]``; band ``b + 1`` starts where
    band ``b`` ends (its top ``t``, shift ``t - M``) and serves a range ``M + R - 1`` wide; bands are added until
    ``c = 0`` is served. With its band a token's denominator is at least ``e^(1 - R)``, no weight exceeds ``e^M``,
    and no real source is among the zeroed weights (they lie above ``c``). A token takes the first band whose
    denominator reaches ``e^-R``: a band before its own zeroes none of its sources either, so that is also exact.

    The third value is the number of bands needed; ``K`` holds at most ``max_bands`` of them.
    """
    M, R = _band_limits(dtype)
    dlt = np.arange(-w, w + 1, dtype=np.float64)
    a = a.astype(np.float64)
    lg = a[:, 0:1] * dlt + a[:, 2:3] * (dlt * dlt)
    peak = lg.max(axis=1)
    span = float(peak.max()) - (R - 1)  # below band 0, down to c = 0
    need = 1 + math.ceil(span / (M + R - 1)) if span > 0 else 1
    if not math.isfinite(span):
        need = 1 << 30
    shifts = [peak] + [peak - (R - 1) - (b - 1) * (M + R - 1) - M for b in range(1, min(need, max_bands))]
    z = lg[None] - np.stack(shifts)[:, :, None]
    with np.errstate(over="ignore", invalid="ignore"):
        k = np.where(z <= M, np.exp(np.minimum(z, M)), 0.0)
    k[k < _subnormal_floor(dtype)] = 0
    return lg, k, need


def _seq_taps(k: torch.Tensor, d: int, flip: bool) -> torch.Tensor:
    """Per-channel taps ``[2C + H, 2w + 1]`` of the head kernels ``k [H, 2w + 1]``.

    For the channels ``[xn (C), xn^2 (C), mask (H)]`` of :func:`_seq_conv`'s input, reversed along the taps with
    ``flip``.
    """
    kc = k.flip(1) if flip else k
    per_channel = kc.repeat_interleave(d, dim=0)
    return torch.cat([per_channel, per_channel, kc], dim=0)


def _seq_kernels_numpy(lg: np.ndarray, k: np.ndarray, d: int, dtype) -> tuple[torch.Tensor, ...]:
    """The kernels of :mod:`dtn_bench.norms.dtn.cpu` from :func:`_seq_bands`' ``lg`` and ``k`` (band 0 only).

    ``(K [H, 2w + 1] float64, taps reversed, taps, lg [H, 2w + 1] float64)``, the taps ``[2w + 1, 2C + H]`` in
    ``dtype`` (float32 or float64): :func:`_seq_taps` transposed.
    """
    nd = np.float64 if dtype == torch.float64 else np.float32
    k0 = k[0]
    H, n = k0.shape

    def taps(kc: np.ndarray) -> torch.Tensor:
        t = np.empty((n, (2 * d + 1) * H), dtype=nd)
        per_channel = np.repeat(kc, d, axis=0).T
        t[:, : d * H], t[:, d * H : 2 * d * H], t[:, 2 * d * H :] = per_channel, per_channel, kc.T
        return torch.from_numpy(t)

    return torch.from_numpy(k0), taps(k0[:, ::-1]), taps(k0), torch.from_numpy(lg)


def _seq_conv(u: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """A depthwise convolution along the sequence of token-major ``u [B, L, K]`` with ``taps [K, 2w + 1]``.

    ``out[b, j, c] = sum_t taps[c, t] u[b, j + t - w, c]`` (zero outside the sequence). It runs channels-last (on the
    CPU oneDNN's depthwise kernel), so a contiguous ``u`` goes in and the output comes out token-major, no transposing
    copy either way.
    """
    K, n = taps.shape
    v = F.conv2d(u.transpose(1, 2).unsqueeze(2), taps.reshape(K, 1, 1, n), padding=(0, n // 2), groups=K)
    return v.squeeze(2).transpose(1, 2)


def _seq_input(xn: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """The convolution input ``u = [m xn, m xn^2, m] [B, L, 2C + H]`` (contiguous) of ``xn [B, L, H, d]``.

    ``m [B, L, 1, 1]`` is the float mask (``None``: every token real).
    """
    B, L, H, d = xn.shape
    C = H * d
    u = xn.new_empty(B, L, 2 * C + H)
    u1, u2 = u[..., :C].view(B, L, H, d), u[..., C : 2 * C].view(B, L, H, d)
    if m is None:
        u1.copy_(xn)
        u[..., 2 * C :].fill_(1.0)
    else:
        torch.mul(xn, m, out=u1)
        u[..., 2 * C :].copy_(m.view(B, L, 1).expand(B, L, H))
    torch.mul(u1, u1, out=u2)
    return u


def _head_channels(t: torch.Tensor, d: int) -> torch.Tensor:
    """A per-(token, head) tensor ``[B, L, H]`` spread over :func:`_seq_conv`'s channels ``[B, L, 2C + H]``."""
    r = t.repeat_interleave(d, dim=-1)
    return torch.cat([r, r, t], dim=-1)


def _seq_conv_bands(u: torch.Tensor, taps: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``v = K_b * u`` per target token and head, ``K_b`` the first band whose denominator reaches ``e^-R``.

    ``taps [NB, 2C + H, 2w + 1]`` are the bands' reversed taps (:func:`_seq_bands`). Returns ``v [B, L, 2C + H]`` and
    the band of every (token, head) ``[B, L, H]`` (-1 where none reaches it: padding), or None with one band.
    """
    v = _seq_conv(u, taps[0])
    if taps.shape[0] == 1:
        return v, None
    H = u.shape[-1] // (2 * d + 1)
    tau = math.exp(-_band_limits(u.dtype)[1])
    band = torch.where(v[..., -H:] >= tau, 0, -1).to(torch.int8)
    for b in range(1, taps.shape[0]):
        vb = _seq_conv(u, taps[b])
        take = (band < 0) & (vb[..., -H:] >= tau)
        band = torch.where(take, b, band).to(torch.int8)
        v = torch.where(_head_channels(take, d), vb, v)
    return v, band


def _seq_forward(x: torch.Tensor, m: torch.Tensor | None, kernels: tuple, weight: torch.Tensor, bias: torch.Tensor,
                 g_mean: torch.Tensor | None, g_var: torch.Tensor, eps: float, keep: bool):
    """The 1-D layer on ``x [B, L, C]`` (no prefix tokens) without autograd.

    Returns the output and, with ``keep``, the tensors :class:`_Sequence` 's backward needs. ``m [B, L, 1, 1]`` is the
    float mask (``None``: all real), ``kernels`` the bands' kernels and taps (:meth:`DTN._seq_kernels`), the gates
    given as their parameters (``g_mean`` None for ``only_var``).
    """
    k, taps = kernels[0], kernels[1]
    B, L, C = x.shape
    H = k.shape[1]
    d = C // H
    xh = x.view(B, L, H, d)
    r, mean_ln, var_ln, _ = _token_stats(xh, eps)
    xn = xh * r
    u = _seq_input(xn, m)
    v, band = _seq_conv_bands(u, taps, d)  # [sum K m xn, sum K m xn^2, sum K m] per target token
    den = v[..., 2 * C :].unsqueeze(-1)  # [B, L, H, 1]; a real token's is at least e^-R (_seq_bands)
    real = den > 0 if m is None else (den > 0) & (m > 0)
    inv = torch.where(real, 1.0 / torch.where(real, den, 1.0), 0.0)
    st = torch.mul(v[..., : 2 * C].view(B, L, 2, H, d), inv.unsqueeze(2))  # [A, M2]; 0 for padding tokens
    A, M2 = st[:, :, 0], st[:, :, 1]
    var_in = torch.addcmul(M2, A, A, value=-1.0)
    lam_v = torch.sigmoid(g_var).view(1, 1, H, 1)
    # rsqrt((1 - lam_v) var_in + lam_v var_ln + eps), 1 - lam_v as sigmoid(-g) (no cancellation)
    s = torch.addcmul(lam_v * var_ln + eps, var_in, torch.sigmoid(-g_var).view(1, 1, H, 1)).rsqrt_()
    if g_mean is None:
        y = torch.sub(xn, mean_ln)
        lam_m = None
    else:  # xn - mu = xn - (1 - lam_m) A - lam_m mean_ln
        lam_m = torch.sigmoid(g_mean).view(1, 1, H, 1)
        y = torch.addcmul(xn, A, -torch.sigmoid(-g_mean).view(1, 1, H, 1)).sub_(lam_m * mean_ln)
    y.mul_(s)
    out = torch.addcmul(bias, y.view(B, L, C), weight)
    if not keep:
        return out, None
    return out, (xn, u, st, var_in, s, y, inv, r, mean_ln, var_ln, lam_m, lam_v, band)


def _seq_moments_exact(xn: torch.Tensor, m: torch.Tensor | None, a: torch.Tensor, w: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P xn, P xn^2)``, each ``[B, L, H, d]`` (0 for padding targets), with differentiable torch operations.

    For every target token ``j`` and head ``h`` the weights are ``exp(logit_h(j - i) - c_jh)`` over its real sources
    ``i`` with ``|j - i| <= w``, ``c_jh`` the largest of their logits (a per-token log-sum-exp shift, held constant:
    the ratios do not depend on it): the largest weight is 1, so no denominator can vanish and no weight overflow,
    for any kernel. Taken offset by offset, ``2w + 1`` steps of elementwise operations with static shapes and no
    host synchronisation: the form ``torch.compile`` traces. ``m [B, L, 1, 1]`` is the float mask (None: all real),
    ``a = pos_proj.weight``; the logits are computed in float64.
    """
    B, L, H, d = xn.shape
    mm = xn.new_ones(B, L, 1, 1) if m is None else m
    up = F.pad(torch.cat([xn * mm, xn * xn * mm], dim=-1), (0, 0, 0, 0, w, w))  # sources, [B, L + 2w, H, 2d]
    mp = F.pad(mm.view(B, L, 1), (0, 0, w, w))  # [B, L + 2w, 1]
    dlt = torch.arange(w, -w - 1, -1, device=xn.device, dtype=torch.float64)  # step s: source j + s - w, d = w - s
    a64 = a.to(torch.float64)
    lg = dlt.unsqueeze(1) * a64[:, 0] + (dlt * dlt).unsqueeze(1) * a64[:, 2]  # [2w + 1, H]
    none = torch.full((), -math.inf, dtype=torch.float64, device=xn.device)
    c = none.expand(B, L, H)
    for s in range(2 * w + 1):
        c = torch.maximum(c, torch.where(mp[:, s : s + L] > 0, lg[s].detach(), none))
    num = den = None
    for s in range(2 * w + 1):
        ms = mp[:, s : s + L]
        wt = torch.exp(torch.where(ms > 0, lg[s] - c, none)).to(xn.dtype) * ms  # [B, L, H]; 0 for padding
        term = wt.unsqueeze(-1) * up[:, s : s + L]
        num, den = (term, wt) if num is None else (num + term, den + wt)
    ok = (mm.view(B, L, 1) > 0) & (den > 0)
    st = num * torch.where(ok, 1.0 / torch.where(ok, den, 1.0), 0.0).unsqueeze(-1)
    return st[..., :d], st[..., d:]


def _cpu_kernels(x: torch.Tensor) -> bool:
    """Whether the 1-D layer runs :mod:`dtn_bench.norms.dtn.cpu` on ``x``.

    It does for a CPU tensor with no torch dispatch mode active (a flop counter, an allocation tracker, fake tensors),
    which sees torch operations only.
    """
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _CPU_KERNELS and x.device.type == "cpu" and _get_current_dispatch_mode() is None


def _seq_forward_cpu(x: torch.Tensor, mf: torch.Tensor, prefix: int, kernels: tuple, weight: torch.Tensor,
                     bias: torch.Tensor, g_mean: torch.Tensor | None, g_var: torch.Tensor, eps: float):
    """:func:`_seq_forward` on the CPU by the fused kernels of :mod:`dtn_bench.norms.dtn.cpu`, prefix tokens included.

    ``x [B, T, C]`` is contiguous, ``mf [B, T]`` the float mask with its first ``prefix`` columns (the prefix tokens,
    normalised with their LN statistics alone) set to 0. The convolution runs over the samples' packed spans of real
    tokens; returns the output ``[B, T, C]`` and what the backward needs.
    """
    from dtn_bench.norms.dtn import cpu as dtn_cpu

    k, taps, lg = kernels[0], kernels[1], kernels[3]
    B, T, C = x.shape
    H = k.shape[0]
    d = C // H
    N, K, w = B * T, 2 * C + H, (k.shape[1] - 1) // 2
    threads = torch.get_num_threads()
    cv = _cpu_constants(eps, H, d, x.dtype)
    xv, mv = x.view(N, H, d).numpy(), mf.view(N).numpy()
    pv, P, gaps = dtn_cpu.pack(mv, B, T, w)
    r, mean_ln, var_ln = x.new_empty(N, H), x.new_empty(N), x.new_empty(N)
    u, v = x.new_empty(P, K), x.new_empty(P, K)
    rv, mlv, vlv, uv = r.numpy(), mean_ln.numpy(), var_ln.numpy(), u.numpy()
    dtn_cpu.run(dtn_cpu.prepare, N, threads, xv, mv, pv, gaps, cv, rv, mlv, vlv, uv)
    gates = _seq_gates(g_mean, g_var)
    out, S, inv = x.new_empty(B, T, C), x.new_empty(N, H, d), x.new_empty(N, H)
    cs, ndeep = np.full((P, H), np.inf), np.zeros(max(1, min(threads, N)), dtype=np.int64)  # deep tokens' shifts
    dtn_cpu.run(dtn_cpu.finish, N, threads, xv, mv, uv, taps.numpy(), lg.numpy(), pv, rv, mlv, vlv, gates,
                weight.detach().numpy(), bias.detach().numpy(), cv, T, prefix, out.view(N, H, d).numpy(), S.numpy(),
                inv.numpy(), v.numpy(), cs, ndeep)
    return out, (x, mf, torch.from_numpy(pv), torch.from_numpy(gaps), r, mean_ln, var_ln, v, S, inv, u,
                 torch.from_numpy(gates), torch.from_numpy(cs), torch.from_numpy(ndeep))


def _seq_backward_cpu(ctx, grad: torch.Tensor):
    """The backward of :class:`_Sequence` on the CPU.

    By the fused kernels (module docstring of :mod:`dtn_bench.norms.dtn.cpu`); the small reductions in numpy.
    """
    from dtn_bench.norms.dtn import cpu as dtn_cpu

    x, mf, pidx, gaps, r, mean_ln, var_ln, v, S, inv, u, gates, cs, ndeep, k, weight = ctx.saved_tensors
    only_var, w, prefix = ctx.only_var, ctx.w, ctx.prefix
    B, T, C = x.shape
    H = k.shape[0]
    d = C // H
    N = B * T
    threads = torch.get_num_threads()
    shards = max(1, min(threads, N))
    need = ctx.needs_input_grad
    cv = _cpu_constants(ctx.eps, H, d, x.dtype)
    xv, mv, pv, gates_v = x.view(N, H, d).numpy(), mf.view(N).numpy(), pidx.numpy(), gates.numpy()
    rv, mlv, uv = r.numpy(), mean_ln.numpy(), u.numpy()
    G = grad.detach().contiguous()
    gv, e = x.new_empty(u.shape), x.new_empty(N, H, d)
    deep = bool(ndeep.sum())  # some (token, head) has its own shift (cpu.finish)
    gvd = np.empty(u.shape if deep else (1, u.shape[1]), dtype=xv.dtype)
    E, F = np.empty((N, H), dtype=xv.dtype), np.empty((N, H), dtype=xv.dtype)
    part = np.zeros((shards, 2 * C + 2 * H))
    ev, gvv, csv = e.numpy(), gv.numpy(), cs.numpy()
    dtn_cpu.run(dtn_cpu.grad_stats, N, threads, G.view(N, H, d).numpy(), xv, v.numpy(), pv, gaps.numpy(), rv, mlv,
                var_ln.numpy(), S.numpy(), inv.numpy(), gates_v, weight.detach().numpy(), cv, T, prefix, csv, gvv, gvd,
                ev, E, F, part)
    sums = part.sum(0).astype(xv.dtype)
    grads = [None] * 10
    if need[3]:
        grads[3] = torch.from_numpy(sums[:C])
    if need[4]:
        grads[4] = torch.from_numpy(sums[C : 2 * C])
    if need[5] and not only_var:
        grads[5] = torch.from_numpy(sums[2 * C : 2 * C + H] * gates_v[0] * gates_v[1])
    if need[6]:
        grads[6] = torch.from_numpy(sums[2 * C + H :] * gates_v[2] * gates_v[3])
    gx = x.new_empty(B, T, C)
    R, Rw = np.zeros((shards, H, 2 * w + 1)), np.zeros((shards, H, 2 * w + 1))
    dtn_cpu.run(dtn_cpu.grad_input, N, threads, ev, gvv, uv, ctx.taps_back.numpy(), pv, xv, rv, mv, mlv, E, F,
                gates_v, cv, only_var, T, prefix, gvd, csv, ctx.lg.numpy(), deep, gx.view(N, H, d).numpy(), R, Rw)
    if need[2]:
        Rk = R.sum(0) * k.numpy() + Rw.sum(0)
        dlt = np.arange(-w, w + 1, dtype=np.float64)
        g_a = np.stack([Rk @ dlt, np.zeros(H), Rk @ (dlt * dlt)], axis=1).astype(xv.dtype)
        grads[2] = torch.from_numpy(g_a)
    if need[0]:
        grads[0] = gx
    return tuple(grads)


def _seq_kernel_grad(k: torch.Tensor, gvs: list[torch.Tensor], u: torch.Tensor, d: int) -> torch.Tensor:
    """``dL/da [H, 3]`` for the bands' kernels ``k [NB, H, 2w + 1]`` (float64), their tokens' ``gv`` and ``u``.

    ``dL/da_p = sum gv * ((d^p K_b) * u)`` over the tokens of band ``b`` (:class:`_Sequence`), as convolutions.
    """
    H, n = k.shape[1], k.shape[2]
    C = H * d
    w = (n - 1) // 2
    dlt = torch.arange(-w, w + 1, device=k.device, dtype=k.dtype)
    parts = torch.zeros(2, H, dtype=u.dtype, device=u.device)
    for kb, gvb in zip(k, gvs, strict=True):
        for p, kp in enumerate((kb * dlt, kb * (dlt * dlt))):
            prod = (gvb * _seq_conv(u, _seq_taps(kp.to(u.dtype), d, flip=True))).sum(dim=(0, 1))  # [2C + H]
            parts[p] += prod[:C].view(H, d).sum(1) + prod[C : 2 * C].view(H, d).sum(1) + prod[2 * C :]
    return torch.stack([parts[0], torch.zeros_like(parts[0]), parts[1]], dim=1)


class _Sequence(torch.autograd.Function):
    """The 1-D layer (steps 1-5 of :mod:`dtn_bench.norms.dtn`, no prefix tokens) with a hand-written backward.

    Forward: ``u = [m xn, m xn^2, m]``, ``v = K * u`` (:func:`_seq_conv`, per head; per (token, head) the kernel of
    its band, :func:`_seq_conv_bands`), ``[A, M2] = v_{1,2} / v_3`` for real tokens (0 for padding), then the gates
    and the standardisation. Backward, with ``e = dL/dy * w * s`` and
    ``f = e * y * s`` (``= -2 dL/dvar``): the statistics' gradients over ``v_3`` (``gv``, the mask channel's entry
    ``-sum_c gv * [A, M2]``), back through the convolution (``K`` reversed), and ``dL/da_p = sum gv * (d^p K) * u`` for
    ``a_p`` = ``pos_proj.weight[:, 0]`` (``p = 1``) and ``[:, 2]`` (``p = 2``) (each band's shift is a constant: the
    ratios do not depend on it), with ``gv`` restricted to the band's tokens: two more convolutions, since the
    gradient of a depthwise convolution's weights is slow on the CPU. Autograd through the same arithmetic runs about
    three times as many passes over the tensors, and PyTorch's depthwise-convolution backward is far slower than its
    forward. Checked by gradcheck in float64 and against autograd in the tests.
    """

    @staticmethod
    def forward(ctx, x, m, a, weight, bias, g_mean, g_var, eps, kernels, prefix):
        k = kernels[0]
        ctx.w, ctx.only_var, ctx.eps, ctx.prefix = (k.shape[-1] - 1) // 2, g_mean is None, eps, prefix
        ctx.cpu = _cpu_kernels(x)  # then kernels are in the CPU kernels' form (DTN._seq_kernels)
        ctx.taps_back = kernels[2]
        if ctx.cpu:
            ctx.lg = kernels[3]
            out, saved = _seq_forward_cpu(x, m, prefix, kernels, weight, bias, g_mean, g_var, eps)
            ctx.save_for_backward(*saved, k, weight)
            return out
        out, saved = _seq_forward(x, m, kernels, weight, bias, g_mean, g_var, eps, keep=True)
        ctx.save_for_backward(*saved, m, k, weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        if ctx.cpu:
            return _seq_backward_cpu(ctx, grad)
        xn, u, st, var_in, s, y, inv, r, mean_ln, var_ln, lam_m, lam_v, band, m, k, weight = ctx.saved_tensors
        B, L, H, d = xn.shape
        C = H * d
        need = ctx.needs_input_grad
        G = grad.contiguous().view(B, L, H, d)
        g_weight = (G * y).sum(dim=(0, 1)).view(C) if need[3] else None
        g_bias = G.sum(dim=(0, 1)).view(C) if need[4] else None
        e = torch.mul(G, s).mul_(weight.view(H, d))  # dL/dxn through the numerator of y; dL/dmu = -e
        f = torch.mul(e, y).mul_(s)  # -2 dL/dvar
        A = st[:, :, 0]
        E, Fh = e.sum(-1, keepdim=True), f.sum(-1, keepdim=True)  # per (token, head)
        g_var_ln = (Fh * lam_v).sum(-2, keepdim=True).mul_(-0.5)
        g_g_var = None
        if need[6]:
            g_lam_v = ((f * var_in).sum(dim=(0, 1, 3)) - (Fh * var_ln).sum(dim=(0, 1, 3))).mul_(0.5)
            g_g_var = g_lam_v * lam_v.view(H) * (1.0 - lam_v.view(H))
        g_g_mean = None
        if lam_m is None:
            g_mean_ln = -E.sum(-2, keepdim=True)
        else:
            g_mean_ln = -(E * lam_m).sum(-2, keepdim=True)
            if need[5]:
                g_lam_m = (e * A).sum(dim=(0, 1, 3)) - (E * mean_ln).sum(dim=(0, 1, 3))
                g_g_mean = g_lam_m * lam_m.view(H) * (1.0 - lam_m.view(H))
        # gradients of the convolution's outputs: d/dA and d/dM2 over the denominator, and the denominator's own
        gv = xn.new_empty(B, L, 2 * C + H)
        gv1, gv2 = gv[..., :C].view(B, L, H, d), gv[..., C : 2 * C].view(B, L, H, d)
        torch.mul(f, inv * (-0.5 * (1.0 - lam_v)), out=gv2)  # dL/dM2 = (1 - lam_v) dL/dvar
        if lam_m is None:  # dL/dA = -2 A dL/dM2 (+ (1 - lam_m) dL/dmu with the mean gate)
            torch.mul(A, gv2, out=gv1).mul_(-2.0)
        else:
            torch.mul(e, inv * (lam_m - 1.0), out=gv1).addcmul_(A, gv2, value=-2.0)
        gv[..., 2 * C :] = (gv[..., : 2 * C].view(B, L, 2, H, d) * st).sum(dim=(2, 4)).neg_()  # d/d(sum K m)
        # per band: gv of its (token, head) pairs only (one band: all of them)
        gvs = [gv] if band is None else [torch.where(_head_channels(band == b, d), gv, 0.0) for b in range(len(k))]
        g_a = _seq_kernel_grad(k, gvs, u, d) if need[2] else None
        g_x = None
        if need[0]:
            gz = _seq_conv(gvs[0], ctx.taps_back[0])  # dL/du
            for gvb, tb in zip(gvs[1:], ctx.taps_back[1:], strict=True):
                gz += _seq_conv(gvb, tb)
            gu1, gu2 = gz[..., :C].view(B, L, H, d), gz[..., C : 2 * C].view(B, L, H, d)
            # dL/dxn = e + m gu1 + 2 m xn gu2 + dL/dmean_ln / C + dL/dvar_ln * 2 (xn - mean_ln) / (C - 1)
            kappa = g_var_ln * (2.0 / (C - 1))
            if m is None:
                t = torch.add(kappa, gu2, alpha=2.0)
                gxn = e.add_(gu1)
            else:
                t = torch.addcmul(kappa, gu2, m, value=2.0)
                gxn = e.addcmul_(gu1, m)
            gxn.addcmul_(t, xn).add_(g_mean_ln / C - kappa * mean_ln)
            # through the RMS pre-normalisation: dL/dx = r (dL/dxn - xn mean_c(dL/dxn xn))
            dot = (gxn * xn).sum(-1, keepdim=True).div_(-d)
            g_x = gxn.addcmul_(xn, dot).mul_(r).view(B, L, C)
        return g_x, None, g_a, g_weight, g_bias, g_g_mean, g_g_var, None, None, None


class SequenceMixin:
    """The 1-D path of :class:`~dtn_bench.norms.dtn.DTN` (``grid_size=None``): its methods, mixed into the class."""

    @torch.no_grad()
    def truncation_bound(self, length: int) -> torch.Tensor:
        """Per-head ``delta_h`` (float64) of the 1-D window at sequence length ``length`` (0 when nothing is cut).

        Every real token's windowed mean is within ``2 * delta_h * max|xn|`` of the full-length one, its second
        moment within ``2 * delta_h * max(xn^2)`` (module docstring).
        """
        if self.grid_size is not None:
            raise DTNBenchError("DTN.truncation_bound is for 1-D DTN (grid_size=None)")
        H = self.num_heads
        if self.window is None or length - 1 <= self.window:
            return torch.zeros(H, dtype=torch.float64)
        a = self.pos_proj.weight.detach().double().cpu()
        d = torch.arange(self.window + 1, length, dtype=torch.float64)
        d = torch.cat([d, -d])
        logits = a[:, 0:1] * d + a[:, 2:3] * d * d
        return torch.logsumexp(logits, dim=1).exp()

    def truncation_tolerance(self, dtype=torch.float32) -> float:
        """``eps / (2 d)``: the largest :meth:`truncation_bound` that moves no statistic by more than ``dtype``'s eps.

        With ``delta_h <= eps / (2 d)`` the mean moves by at most ``2 delta_h max|xn| <= eps / sqrt(d)`` and the second
        moment by at most ``2 delta_h max(xn^2) <= eps`` (``|xn| <= sqrt(d)``, ``d`` the channels per head): below the
        dtype's resolution at 1. Past it the window may change the layer's function.
        """
        return torch.finfo(dtype).eps / (2 * (self.dim // self.num_heads))

    def effective_window(self, length: int, dtype=torch.float32) -> int:
        """The largest ``|j - i|`` the 1-D statistics use at sequence length ``length``.

        ``W = min(window, length - 1)`` (``length - 1`` without a window), reduced on the CPU to the smallest
        ``w <= W`` whose dropped weight ``sum_{w < |d| <= W} exp(logit_h(d))`` (``logit_h(0) = 0``) is at most
        ``tol = eps / (2 d)`` for every head, ``eps`` the machine epsilon of ``dtype`` and ``d`` the channels per head.
        By the bound of :meth:`truncation_bound` (with the cut starting at ``w``) every real token's mean then moves by
        at most ``2 tol max|xn| <= eps / sqrt(d)`` and its second moment by at most ``2 tol max(xn^2) <= eps`` (the
        pre-normalised ``xn`` has ``|xn| <= sqrt(d)``): less than the dtype's resolution at 1. With the local init
        (``a1 = -1``) that is 5 to 9 tokens instead of the window's 64. Elsewhere (no host sync on a GPU) and under
        ``torch.compile`` it is ``W``.
        """
        W = max(0, length - 1 if self.window is None else min(self.window, length - 1))
        a = self.pos_proj.weight
        if W == 0 or a.device.type != "cpu" or torch.compiler.is_compiling():
            return W
        tol = self.truncation_tolerance(dtype)
        a = a.detach().numpy().astype(np.float64)  # numpy: a few small operations, run for every layer and step
        t = np.arange(1, W + 1, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            quad = a[:, 2:3] * (t * t)
            mass = np.exp(quad + a[:, 0:1] * t) + np.exp(quad - a[:, 0:1] * t)  # weight at |d| = t, [H, W]
            tail = np.cumsum(mass[:, ::-1], axis=1)[:, ::-1]  # tail[:, i]: weight at |d| > i (non-increasing in i)
            return int((~(tail <= tol)).sum(1).max())  # per head the first i with tail <= tol (NaN counts as > tol)

    def inter_token_moments(self, xn: torch.Tensor, mask: torch.Tensor | None = None, width: int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """1-D: the inter-token statistics ``(P xn, P xn^2)``, each ``[B, L, H, d]``, of pre-normalised tokens.

        The tokens are ``xn [B, L, H, d]`` (prefix tokens excluded) with the optional ``mask [B, L]``; the statistics
        are 0 for padding tokens.

        ``width`` is the largest ``|j - i|`` used (default :meth:`effective_window`). The functional form (the one
        ``torch.compile`` traces, :func:`_seq_moments_exact`): differentiable, exact for any kernel; the layer's other
        forms compute the same with a hand-written backward.
        """
        B, L, H, d = xn.shape
        m = None if mask is None else mask.to(device=xn.device, dtype=xn.dtype).view(B, L, 1, 1)
        w = self.effective_window(L, xn.dtype) if width is None else width
        return _seq_moments_exact(xn, m, self.pos_proj.weight, w)

    def _seq_kernels(self, length: int, dtype, cpu: bool) -> tuple[torch.Tensor, ...] | None:
        """The bands' head kernels (:func:`_seq_bands`) at :meth:`effective_window` ``w``, and their taps.

        ``cpu``: band 0 in the form of :mod:`dtn_bench.norms.dtn.cpu` (:func:`_seq_kernels_numpy`: ``K``, the taps
        ``[2w + 1, 2C + H]`` reversed and natural, the logits); otherwise ``(K [NB, H, 2w + 1] float64, taps reversed,
        taps)`` with the taps ``[NB, 2C + H, 2w + 1]`` (:func:`_seq_taps`) on the weights' device, or None when the
        kernel needs more than :data:`_MAX_BANDS` bands. Computed on the host from the weights (on a GPU one small
        copy, a synchronisation) in numpy: a few tiny operations for every layer call, the kernel changing with every
        update. No autograd. In inference (the kernel unchanged) they are kept for its values, the length and the dtype.
        """
        a = self.pos_proj.weight.detach()
        an = a.to(torch.float64).cpu().numpy()
        key = (an.tobytes(), length, dtype, self.window, cpu, a.device)
        cache = self.__dict__.setdefault("_seq_cache", {})
        if key in cache:
            return cache[key]
        w = self.effective_window(length, dtype)
        d = self.dim // self.num_heads
        lg, k, need = _seq_bands(an, w, dtype, 1 if cpu else _MAX_BANDS)
        if cpu:
            out = _seq_kernels_numpy(lg, k, d, dtype)
        elif need > _MAX_BANDS:
            out = None
        else:
            kt = torch.from_numpy(k).to(a.device)
            out = (kt, torch.stack([_seq_taps(kb.to(dtype), d, flip=True) for kb in kt]),
                   torch.stack([_seq_taps(kb.to(dtype), d, flip=False) for kb in kt]))
        if len(cache) >= 8:
            cache.clear()
        cache[key] = out
        return out

    def _seq_functional(self, xs: torch.Tensor, m: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                        g_mean: torch.Tensor | None, g_var: torch.Tensor) -> torch.Tensor:
        """The 1-D layer on the tokens ``xs [B, L, C]`` (no prefix) with differentiable torch operations.

        The statistics of :func:`_seq_moments_exact`, the standardisation of :class:`_Standardise`.
        """
        B, L, C = xs.shape
        H = self.num_heads
        xh = xs.reshape(B, L, H, C // H)
        r, mean_ln, var_ln = self._token_stats(xh)
        xn = xh * r
        A, M2 = _seq_moments_exact(xn, m, self.pos_proj.weight, self.effective_window(L, xs.dtype))
        lam_v = torch.sigmoid(g_var).view(1, 1, H, 1)
        lam_m = None if g_mean is None else torch.sigmoid(g_mean).view(1, 1, H, 1)
        y = _Standardise.apply(xn, torch.cat([A, M2], dim=-1), mean_ln, var_ln, lam_m, lam_v, self.eps)
        return torch.addcmul(bias, y.reshape(B, L, C), weight)

    def _forward_seq(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The 1-D layer on float, contiguous ``x [B, T, C]``.

        The hand-written backward of :class:`_Sequence` under autograd, its forward alone for inference, the functional
        form under ``torch.compile``.
        """
        B, T, C = x.shape
        H, P, eps = self.num_heads, self.num_prefix_tokens, self.eps
        L = T - P
        dt = x.dtype
        if mask is not None and tuple(mask.shape) != (B, T):
            raise DTNBenchError(f"DTN: mask shape {list(mask.shape)} does not match tokens [{B}, {T}]")
        weight, bias = self.weight.to(dt), self.bias.to(dt)
        g_mean = None if self.only_var else self.mean_norm_weight.to(dt)
        g_var = self.var_norm_weight.to(dt)
        if not torch.compiler.is_compiling() and _cpu_kernels(x):
            # every token, prefix tokens included (with mask 0), in one sweep: no slicing or concatenation
            mf = torch.ones(B, T, dtype=dt) if mask is None else mask.to(dtype=dt, copy=True)
            mf[:, :P] = 0
            kernels = self._seq_kernels(L, dt, cpu=True)
            if torch.is_grad_enabled():
                return _Sequence.apply(x, mf, self.pos_proj.weight.to(dt), weight, bias, g_mean, g_var, eps, kernels,
                                       P)
            return _seq_forward_cpu(x, mf, P, kernels, weight, bias, g_mean, g_var, eps)[0]
        m = None if mask is None else mask[:, P:].to(device=x.device, dtype=dt).reshape(B, L, 1, 1)
        xs = x[:, P:]
        kernels = None if torch.compiler.is_compiling() else self._seq_kernels(L, dt, cpu=False)
        if kernels is None:  # under torch.compile, or a kernel past _MAX_BANDS bands
            y = self._seq_functional(xs, m, weight, bias, g_mean, g_var)
        else:
            if torch.is_grad_enabled():
                y = _Sequence.apply(xs, m, self.pos_proj.weight.to(dt), weight, bias, g_mean, g_var, eps, kernels, 0)
            else:
                y, _ = _seq_forward(xs, m, kernels, weight, bias, g_mean, g_var, eps, keep=False)
        if not P:
            return y
        # prefix tokens: LN statistics only
        xp = x[:, :P].reshape(B, P, H, C // H)
        rp, mean_p, var_p = self._token_stats(xp)
        yp = (xp * rp - mean_p) * torch.rsqrt(var_p + eps)
        return torch.cat([torch.addcmul(bias, yp.reshape(B, P, C), weight), y], dim=1)
