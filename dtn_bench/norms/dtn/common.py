"""What both DTN paths share: the standardisation with its backward, the per-token statistics, scratch buffers.

Used by :mod:`dtn_bench.norms.dtn.grid` (2-D) and :mod:`dtn_bench.norms.dtn.sequence` (1-D); the formula is in the
docstring of :mod:`dtn_bench.norms.dtn`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# 1-D kernel bands (sequence._seq_bands): per dtype, the largest log-weight M a band keeps above its shift and the log
# of the smallest denominator e^-R a token accepts from a band (also the CPU kernels' e^-R, _cpu_constants).
_BAND_LIMITS = {True: (200.0, 200.0), False: (20.0, 20.0)}  # keyed by "float64"
# Inference scratch buffers, shared by every DTN layer (layers run one after another); keyed by role, shape, dtype and
# device. Reusing them avoids faulting in fresh pages for every chunk of every layer.
_WORKSPACE: dict[tuple, torch.Tensor] = {}


def _scratch(role: str, shape, like: torch.Tensor) -> torch.Tensor:
    """A reusable CPU buffer (not thread-safe: one forward at a time); elsewhere a fresh tensor.

    Off the CPU, CUDA's caching allocator already reuses memory and held buffers would only inflate peak-memory figures.
    """
    if like.device.type != "cpu":
        return torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
    # inference tensors (made under inference_mode) cannot be updated in place outside it: one buffer per mode
    key = (role, tuple(shape), like.dtype, like.device, torch.is_inference_mode_enabled())
    buf = _WORKSPACE.get(key)
    if buf is None:
        if len(_WORKSPACE) > 64:  # many shapes seen: start over rather than grow without bound
            _WORKSPACE.clear()
        buf = _WORKSPACE[key] = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
    return buf


def _subnormal_floor(dtype) -> float:
    """The weight below which :func:`_flush_subnormal` zeroes: 1e-200 in fp64, 1e-20 otherwise."""
    return 1e-200 if dtype in (torch.float64, np.float64) else 1e-20


def _flush_subnormal(p: torch.Tensor) -> torch.Tensor:
    """Zero the weights below 1e-20 (fp32; 1e-200 in fp64).

    They change no result measurably (the weights of a token sum to 1), but they and their products with small features
    are subnormal numbers, which send every matrix product and elementwise op downstream onto the CPU's slow path: a
    local kernel has weights like ``exp(-169)``, and without this the layer ran 10-40x slower on x86.
    """
    return torch.where(p >= _subnormal_floor(p.dtype), p, torch.zeros((), dtype=p.dtype, device=p.device))


class _Standardise(torch.autograd.Function):
    """``(xn - mu) / sqrt(var + eps)`` from the inter-token statistics, with a hand-written backward.

    ``mu = lerp(A, mean_ln, lam_m)`` (``mean_ln`` alone when ``lam_m`` is None), ``var = lerp(M2 - A^2, var_ln,
    lam_v)``; ``st = [A, M2]`` on the last axis (token-major ``[B, L, H, 2d]``, possibly a view of head-major
    memory: its gradient is made in the same memory order), the LN statistics per token
    ``[B, L, 1, 1]``, the gates per head ``[1, 1, H, 1]``. Autograd through the same arithmetic makes about twice
    as many passes over the tensors (a reduction for every broadcast input of every op); this is the layer's
    training hot path. Checked by gradcheck in the tests.
    """

    @staticmethod
    def forward(ctx, xn, st, mean_ln, var_ln, lam_m, lam_v, eps):
        d = xn.shape[-1]
        A, M2 = st[..., :d], st[..., d:]
        var_in = torch.addcmul(M2, A, A, value=-1.0)
        # the gates as (1 - lam) * a + lam * c in two ops, each with one broadcast operand: lerp with two (c per token,
        # lam per head) falls off ATen's vectorised CPU loops
        s = (var_in * (1.0 - lam_v)).add_(var_ln * lam_v + eps).rsqrt_()
        if lam_m is None:
            y = torch.sub(xn, mean_ln).mul_(s)
        else:  # xn - mu = xn + (lam_m - 1) A - lam_m mean_ln
            y = torch.addcmul(xn, A, lam_m - 1.0).sub_(mean_ln * lam_m).mul_(s)
        ctx.save_for_backward(y, s, A, var_in, mean_ln, var_ln, lam_m, lam_v)
        ctx.has_mean_gate = lam_m is not None
        ctx.st_layout = (st.shape, st.stride())
        return y

    @staticmethod
    def backward(ctx, g):
        y, s, A, var_in, mean_ln, var_ln, lam_m, lam_v = ctx.saved_tensors
        d = g.shape[-1]
        gx = g * s  # dL/dxn
        gv = (gx * y).mul_(s).mul_(-0.5)  # dL/dvar
        gv_h = gv.sum(-1, keepdim=True)  # [B, L, H, 1]
        g_var_ln = (gv_h * lam_v).sum(-2, keepdim=True)
        g_lam_v = ((gv_h * var_ln).sum(dim=(0, 1), keepdim=True)
                   - (gv * var_in).sum(dim=(0, 1, 3), keepdim=True).view(lam_v.shape))
        gx_h = gx.sum(-1, keepdim=True)
        if ctx.has_mean_gate:
            g_mean_ln = -(gx_h * lam_m).sum(-2, keepdim=True)
            g_lam_m = ((gx * A).sum(dim=(0, 1, 3), keepdim=True).view(lam_m.shape)
                       - (gx_h * mean_ln).sum(dim=(0, 1), keepdim=True))
        else:
            g_mean_ln = -gx_h.sum(-2, keepdim=True)
            g_lam_m = None
        # dL/dM2 = (1 - lam_v) dL/dvar; dL/dA = (1 - lam_m) dL/dmu - 2 A dL/dM2 (dL/dmu = -gx)
        a_scale = (lam_m - 1.0) if ctx.has_mean_gate else None
        if torch.compiler.is_compiling():  # functional, for dynamo (no strided out=)
            gM2 = gv * (1.0 - lam_v)
            gA = torch.addcmul(gx * a_scale, A, gM2, value=-2.0) if a_scale is not None else -2.0 * A * gM2
            g_st = torch.cat([gA, gM2], dim=-1)
        else:  # both halves written straight into one buffer
            g_st = torch.empty_strided(*ctx.st_layout, dtype=g.dtype, device=g.device)  # st's memory order
            gA, gM2 = g_st[..., :d], g_st[..., d:]
            torch.mul(gv, 1.0 - lam_v, out=gM2)
            if a_scale is not None:
                torch.mul(gx, a_scale, out=gA).addcmul_(A, gM2, value=-2.0)
            else:
                torch.mul(A, gM2, out=gA).mul_(-2.0)
        return gx, g_st, g_mean_ln, g_var_ln, g_lam_m, g_lam_v, None


def _token_stats(xh: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token statistics of ``xh [B, T, H, d]``: RMS factors, LN mean and variance, chunk mean squares.

    The RMS pre-normalisation factor ``r [B, T, H, 1]`` of every (token, head) chunk, the LN mean and (unbiased)
    variance ``[B, T, 1, 1]`` of ``xn = x * r`` over all ``C`` channels, from per-chunk sums (no ``[B, T, C]``
    temporaries): mean = sum_h r_h sum_c x / C, E[xn^2] = mean_h ms / (ms + eps); and the mean square ``ms`` of every
    chunk.
    """
    d = xh.shape[-1]
    C = d * xh.shape[-2]
    ms = torch.linalg.vector_norm(xh, dim=-1, keepdim=True).square() / d  # mean square
    r = torch.rsqrt(ms + eps)
    mean_ln = (xh.sum(-1, keepdim=True) * r).sum(-2, keepdim=True) / C
    e2 = (ms / (ms + eps)).mean(-2, keepdim=True)
    return r, mean_ln, (e2 - mean_ln * mean_ln) * (C / (C - 1)), ms


def _band_limits(dtype) -> tuple[float, float]:
    """``(M, R)`` of the 1-D kernel bands in ``dtype``: 200, 200 in float64, 20, 20 otherwise (:func:`_seq_bands`)."""
    return _BAND_LIMITS[dtype in (torch.float64, np.float64)]


def _seq_gates(g_mean: torch.Tensor | None, g_var: torch.Tensor) -> np.ndarray:
    """The gates ``[lam_m, 1 - lam_m, lam_v, 1 - lam_v] [4, H]`` (numpy, the parameters' dtype).

    ``1 - lam`` is computed as ``sigmoid(-g)``; ``lam_m = 1`` without a mean gate. numpy: a handful of tiny operations
    for every layer call, each several times cheaper than a torch operation.
    """
    gv = g_var.detach().numpy()
    one = np.ones_like(gv)
    gm = None if g_mean is None else g_mean.detach().numpy()
    lam_v, lam_v1 = one / (one + np.exp(-gv)), one / (one + np.exp(gv))
    if gm is None:
        return np.stack([one, one - one, lam_v, lam_v1])
    return np.stack([one / (one + np.exp(-gm)), one / (one + np.exp(gm)), lam_v, lam_v1])


_CPU_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _cpu_constants(eps: float, H: int, d: int, dtype) -> np.ndarray:
    """``[eps, 1, 1/d, 1/C, 1/H, C/(C-1), 1/2, 2, 2/(C-1), e^-R]`` in ``dtype`` for :mod:`dtn_bench.norms.dtn.cpu`.

    Kept per arguments; ``R`` of :func:`_band_limits`.
    """
    key = (eps, H, d, dtype)
    cst = _CPU_CONSTANTS.get(key)
    if cst is None:
        C = H * d
        cst = _CPU_CONSTANTS[key] = torch.tensor([eps, 1.0, 1.0 / d, 1.0 / C, 1.0 / H, C / (C - 1), 0.5, 2.0,
                                                  2.0 / (C - 1), math.exp(-_band_limits(dtype)[1])], dtype=dtype)
    return cst.numpy()
