"""A fused Triton inference kernel for :class:`~dtn_bench.norms.dtn.DTN` on an unpooled 2-D grid (CUDA).

Selected per layer by ``DTN.kernel = "triton"``, or on every layer of a model by
``dtn_bench.norms.dtn.use_kernel(model, "triton")`` (``dtn-bench profile --dtn-kernel triton``); autograd,
``torch.compile``, pooled grids and 1-D sequences keep the eager path. The arithmetic is the eager layer's (module
docstring of :mod:`dtn_bench.norms.dtn`), in fp32 whatever the input dtype, with the output in the input's dtype:

1. ``_ln_stats_kernel``, one program per block of tokens: the LN mean and unbiased variance of the RMS-pre-normalised
   token over all ``C`` channels (two passes over the token's heads, the second centred).
2. ``_grid_kernel``, one program per (sample, head), in two phases over the head's ``[rows, cols, d]`` tile:
   along x, each grid row's ``[cols, d]`` block of ``xn`` and ``xn^2`` times ``Px^T`` (``tl.dot`` in IEEE fp32), into
   a per-program fp32 scratch; then along y, each grid column of the scratch times ``Py^T``, and the epilogue (gates,
   standardisation, affine) for that column's tokens, written straight to the output. ``xn`` is recomputed from
   ``x`` where it is needed rather than stored.

Prefix tokens take the LN statistics only and are finished with a few torch ops (there are one or two of them).

Where it has run: its equality tests run the same kernels in Triton's interpreter (``TRITON_INTERPRET=1``) on the
CPU. This project's machines have no GPU, so it has never been compiled for or timed on one.
"""

from __future__ import annotations

import os

import torch

from dtn_bench.errors import DTNBenchError

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with torch's Linux x86-64 CUDA wheels
    triton = None
    tl = None


# Channels of a head per program of _grid_kernel (statistics are per channel: chunks are independent), and its warps.
# Chosen from the compiled kernel's register count (about 100 at 32 channels, 4 warps, sm_90), not from GPU timings.
_CHANNEL_CHUNK = 32
_NUM_WARPS = 4


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, read at import)."""
    return triton is not None and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_available(device: torch.device | str | None = None) -> None:
    """One-line :class:`DTNBenchError` unless the kernel can run on ``device``.

    It runs on CUDA, or on any device when interpreting.
    """
    if triton is None:
        raise DTNBenchError("DTN triton kernel: the triton package is not installed (it comes with torch's Linux "
                            "CUDA wheels); use the eager kernel")
    if device is not None and torch.device(device).type != "cuda" and not interpreting():
        raise DTNBenchError(f"DTN triton kernel: needs a CUDA device, got {torch.device(device).type} "
                            "(use the eager kernel, or TRITON_INTERPRET=1 to run it in Triton's CPU interpreter)")


def _pow2(n: int, floor: int = 16) -> int:
    """The next power of two >= ``n`` and >= ``floor`` (tl.dot needs every dimension >= 16)."""
    return max(floor, 1 << (max(1, n) - 1).bit_length())


if triton is not None:

    @triton.jit
    def _ln_stats_kernel(x_ptr, r_ptr, mean_ptr, var_ptr, n_tokens, C, D, H, eps,
                         BT: tl.constexpr, DP: tl.constexpr):
        """The RMS factor ``r [tokens, H]`` of every (token, head) and the LN statistics of the pre-normalised tokens.

        The statistics are the ``mean`` and unbiased ``var`` over all ``C`` channels.
        """
        t = tl.program_id(0) * BT + tl.arange(0, BT)
        tm = t < n_tokens
        c = tl.arange(0, DP)
        cm = c < D
        m2 = tm[:, None] & cm[None, :]
        row = x_ptr + t.to(tl.int64)[:, None] * C + c[None, :]
        s = tl.zeros((BT,), dtype=tl.float32)
        for h in range(H):
            v = tl.load(row + h * D, mask=m2, other=0.0).to(tl.float32)
            r = 1.0 / tl.sqrt(tl.sum(v * v, axis=1) / D + eps)
            tl.store(r_ptr + t * H + h, r, mask=tm)
            s += tl.sum(v, axis=1) * r
        mean = s / C
        q = tl.zeros((BT,), dtype=tl.float32)
        for h in range(H):
            v = tl.load(row + h * D, mask=m2, other=0.0).to(tl.float32)
            r = tl.load(r_ptr + t * H + h, mask=tm, other=0.0)
            dv = tl.where(m2, v * r[:, None] - mean[:, None], 0.0)
            q += tl.sum(dv * dv, axis=1)
        tl.store(mean_ptr + t, mean, mask=tm)
        tl.store(var_ptr + t, q / (C - 1), mask=tm)

    @triton.jit
    def _grid_kernel(x_ptr, y_ptr, sc_ptr, r_ptr, px_ptr, py_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, gate_ptr,
                     T, C, D, H, GH, GW, P, eps,
                     ONLY_VAR: tl.constexpr, GHP: tl.constexpr, GWP: tl.constexpr, DC: tl.constexpr):
        """One (sample, head, chunk of DC channels): P along x into the scratch, then along y with the epilogue.

        Both passes go one grid column at a time.
        """
        pid = tl.program_id(0)
        nc = tl.cdiv(D, DC)
        bh = pid // nc
        b = bh // H
        h = bh % H
        c = (pid % nc) * DC + tl.arange(0, DC)  # channels of this head
        cm = c < D
        ix = tl.arange(0, GWP)
        iy = tl.arange(0, GHP)
        ixm = ix < GW
        iym = iy < GH
        # Px^T and Py^T of this head ([target, source]; the matrices are stored [H, source, target]), zero-padded
        pxt = tl.load(px_ptr + h * GW * GW + ix[None, :] * GW + ix[:, None], mask=ixm[:, None] & ixm[None, :],
                      other=0.0)
        pyt = tl.load(py_ptr + h * GH * GH + iy[None, :] * GH + iy[:, None], mask=iym[:, None] & iym[None, :],
                      other=0.0)
        xb = x_ptr + b.to(tl.int64) * T * C + h * D
        yb = y_ptr + b.to(tl.int64) * T * C + h * D
        rb = r_ptr + b.to(tl.int64) * T * H + h
        sb = sc_ptr + pid.to(tl.int64) * GH * GWP * 2 * DC
        # phase 1, along x: scratch[row, x, :] = [Px^T xn, Px^T xn^2] of the grid row
        mx = ixm[:, None] & cm[None, :]
        for gy in range(GH):
            tok = P + gy * GW + ix
            r = tl.load(rb + tok * H, mask=ixm, other=0.0)
            xn = tl.load(xb + tok[:, None] * C + c[None, :], mask=mx, other=0.0).to(tl.float32) * r[:, None]
            s1 = tl.dot(pxt, xn, input_precision="ieee")
            s2 = tl.dot(pxt, xn * xn, input_precision="ieee")
            so = sb + gy * GWP * 2 * DC + ix[:, None] * 2 * DC + tl.arange(0, DC)[None, :]
            tl.store(so, s1)
            tl.store(so + DC, s2)
        tl.debug_barrier()  # the scratch rows written above are read across threads below
        lam_m = tl.load(gate_ptr + h)
        one_m = tl.load(gate_ptr + H + h)
        lam_v = tl.load(gate_ptr + 2 * H + h)
        one_v = tl.load(gate_ptr + 3 * H + h)
        w = tl.load(w_ptr + h * D + c, mask=cm, other=0.0)
        bias = tl.load(b_ptr + h * D + c, mask=cm, other=0.0)
        my = iym[:, None] & cm[None, :]
        # phase 2, along y, column by column, and the epilogue for the column's tokens
        for gx in range(GW):
            si = sb + iy[:, None] * GWP * 2 * DC + gx * 2 * DC + tl.arange(0, DC)[None, :]
            a1 = tl.load(si, mask=iym[:, None], other=0.0)
            a2 = tl.load(si + DC, mask=iym[:, None], other=0.0)
            A = tl.dot(pyt, a1, input_precision="ieee")  # P xn
            M = tl.dot(pyt, a2, input_precision="ieee")  # P xn^2
            tok = P + iy * GW + gx
            r = tl.load(rb + tok * H, mask=iym, other=0.0)
            xn = tl.load(xb + tok[:, None] * C + c[None, :], mask=my, other=0.0).to(tl.float32) * r[:, None]
            mln = tl.load(mean_ptr + b * T + tok, mask=iym, other=0.0)
            vln = tl.load(var_ptr + b * T + tok, mask=iym, other=1.0)
            var = one_v * (M - A * A) + lam_v * vln[:, None] + eps
            if ONLY_VAR:  # the LN mean
                mu = mln[:, None]
            else:
                mu = one_m * A + lam_m * mln[:, None]
            out = (xn - mu) / tl.sqrt(var) * w[None, :] + bias[None, :]
            tl.store(yb + tok[:, None] * C + c[None, :], out.to(y_ptr.dtype.element_ty), mask=my)


def _layer_constants(mod, gh: int, gw: int) -> tuple[torch.Tensor, ...]:
    """``Px, Py, gates, weight, bias`` of the layer in fp32, computed once and kept on the module.

    They are kept until a parameter changes (keyed on the parameters' storage and in-place version counters): building
    them takes about a dozen small kernel launches, which would otherwise be paid on every call of every layer.
    """
    params = [mod.pos_proj.weight, mod.var_norm_weight, mod.weight, mod.bias]
    if not mod.only_var:
        params.append(mod.mean_norm_weight)
    key = (gh, gw, *((p.data_ptr(), p._version, p.device) for p in params))
    cached = getattr(mod, "_triton_constants", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    f32 = torch.float32
    with torch.no_grad():
        Py, Px = (m.contiguous() for m in mod.axis_matrices(gh, gw, dtype=f32))
        g_v = mod.var_norm_weight.detach().to(f32)
        g_m = torch.zeros_like(g_v) if mod.only_var else mod.mean_norm_weight.detach().to(f32)
        # lam and 1 - lam, the latter as sigmoid(-g) (no cancellation), as the eager path
        gates = torch.stack([torch.sigmoid(g_m), torch.sigmoid(-g_m), torch.sigmoid(g_v), torch.sigmoid(-g_v)])
        consts = (Px, Py, gates.contiguous(), mod.weight.detach().to(f32).contiguous(),
                  mod.bias.detach().to(f32).contiguous())
    # a plain attribute (not a buffer): no state-dict key, and never part of autograd
    object.__setattr__(mod, "_triton_constants", (key, consts))
    return consts


def infer_grid(mod, x: torch.Tensor) -> torch.Tensor:
    """The layer ``mod`` (a :class:`~dtn_bench.norms.dtn.DTN` on an unpooled grid) applied to ``x [B, T, C]``.

    Computed by the fused kernels, without autograd; the result has ``x``'s dtype.
    """
    check_available(x.device)
    B, T, C = x.shape
    H, P, eps = mod.num_heads, mod.num_prefix_tokens, float(mod.eps)
    D = C // H
    gh, gw = mod.grid_size
    DP, GHP, GWP = _pow2(D), _pow2(gh), _pow2(gw)
    f32 = torch.float32
    with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        x = x.contiguous()
        y = torch.empty_like(x)
        r = torch.empty(B * T, H, dtype=f32, device=x.device)
        mean = torch.empty(B * T, dtype=f32, device=x.device)
        var = torch.empty(B * T, dtype=f32, device=x.device)
        bt = 32
        _ln_stats_kernel[(triton.cdiv(B * T, bt),)](x, r, mean, var, B * T, C, D, H, eps, BT=bt, DP=DP)
        Px, Py, gates, w, bias = _layer_constants(mod, gh, gw)
        DC = min(DP, _CHANNEL_CHUNK)
        programs = B * H * triton.cdiv(D, DC)
        scratch = torch.empty(programs * gh * GWP * 2 * DC, dtype=f32, device=x.device)
        _grid_kernel[(programs,)](x, y, scratch, r, Px, Py, mean, var, w, bias, gates,
                                  T, C, D, H, gh, gw, P, eps,
                                  ONLY_VAR=bool(mod.only_var), GHP=GHP, GWP=GWP, DC=DC, num_warps=_NUM_WARPS)
        if P:  # prefix tokens: LN statistics only
            xp = x[:, :P].to(f32).view(B, P, H, D)
            rp = r.view(B, T, H, 1)[:, :P]
            mp, vp = mean.view(B, T)[:, :P, None, None], var.view(B, T)[:, :P, None, None]
            yp = ((xp * rp - mp) * torch.rsqrt(vp + eps)).view(B, P, C) * w + bias
            y[:, :P] = yp.to(y.dtype)
    return y
