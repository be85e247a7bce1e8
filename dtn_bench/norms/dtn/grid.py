"""The 2-D path of :class:`~dtn_bench.norms.dtn.DTN`: a ``rows x cols`` patch grid (``grid_size``).

The logits split into an x part and a y part, so ``P^h`` is exactly the Kronecker product of a ``W x W`` and an
``H x H`` matrix, each a softmax over its own source axis. ``P^h xn`` is two small matrix products along the grid
axes: ``O(T (H + W))`` per channel instead of ``O(T^2)``, rectangular grids included. On CPU tensors an unpooled grid
runs the fused numba kernels of :mod:`dtn_bench.norms.dtn.cpu2d` (training with a hand-written backward,
:class:`_Grid`, and inference): one sweep over the samples per call instead of about 15 torch operations, each of them
a parallel region whose barrier can wait a whole time slice when other processes share the cores. GPUs,
``torch.compile``, a torch dispatch mode (a flop counter) and pooled grids run torch operations.

``pool_to`` reproduces the authors' ``dtn_pool``: for a grid larger than ``pool_to`` the pre-normalised map is
average-pooled by ``k = grid_h // pool_to`` (the authors' square kernel), ``P`` acts on the pooled grid (the second
moment is taken of the pooled features), and mean and variance are nearest-upsampled back.
"""

from __future__ import annotations

import numpy as np
import torch

from dtn_bench.norms.dtn.common import _cpu_constants, _flush_subnormal, _scratch, _seq_gates, _Standardise

# Pooled-grid inference on the CPU works on batch chunks of about this many elements (see _forward_grid).
_CPU_CHUNK = 1 << 20
# The unpooled 2-D inference path works on batch chunks of about this many elements (see DTN._infer_grid).
_GRID_CHUNK = 160_000
# Unpooled 2-D layers on CPU tensors run the fused kernels of cpu2d (False: torch operations only).
_CPU_GRID_KERNELS = True


def _as_grid(grid_size) -> tuple[int, int] | None:
    if grid_size is None:
        return None
    if isinstance(grid_size, int):
        return (grid_size, grid_size)
    gh, gw = (int(v) for v in grid_size)
    return (gh, gw)


# ---------------------------------------------------------------------------------------------------------------------
# 2-D grids on the CPU: the fused kernels of cpu2d
def _grid_kernels(x: torch.Tensor) -> bool:
    """Whether an unpooled 2-D layer runs :mod:`dtn_bench.norms.dtn.cpu2d` on ``x``.

    It does for a CPU tensor outside ``torch.compile`` with no torch dispatch mode active (a flop counter sees torch
    operations only), unless :data:`_CPU_GRID_KERNELS` is False.
    """
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return (_CPU_GRID_KERNELS and x.device.type == "cpu" and not torch.compiler.is_compiling()
            and _get_current_dispatch_mode() is None)


def _grid_forward_cpu(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      g_mean: torch.Tensor | None, g_var: torch.Tensor, eps: float, prefix: int):
    """The 2-D layer on contiguous ``x [B, T, C]`` by :func:`dtn_bench.norms.dtn.cpu2d.forward`.

    ``px [H, cols, cols]``, ``py [H, rows, rows]`` are :meth:`DTN.axis_matrices` (``[head, source, target]``), the gates
    given as their parameters (``g_mean`` None for ``only_var``). Returns the output and what the backward needs:
    ``(r [B, T, H], mean_ln, var_ln [B, T], gates)``.
    """
    from dtn_bench.norms.dtn import cpu2d as dtn_cpu2d

    B, T, C = x.shape
    H, gw, gh = px.shape[0], px.shape[1], py.shape[1]
    d = C // H
    cv = _cpu_constants(eps, H, d, x.dtype)
    with np.errstate(over="ignore"):  # a gate far past saturation: exp overflows to inf, the sigmoid is exactly 0 / 1
        gates = _seq_gates(g_mean, g_var)
    out, r, mean_ln, var_ln = x.new_empty(B, T, C), x.new_empty(B, T, H), x.new_empty(B, T), x.new_empty(B, T)
    dtn_cpu2d.forward(x.view(B, T, H, d).numpy(), px.detach().contiguous().numpy(), py.detach().contiguous().numpy(),
                      gates, weight.detach().view(H, d).numpy(), bias.detach().view(H, d).numpy(), cv, prefix, (gh, gw),
                      out.view(B, T, H, d).numpy(), r.numpy(), mean_ln.numpy(), var_ln.numpy(), torch.get_num_threads())
    return out, (r, mean_ln, var_ln, gates)


class _Grid(torch.autograd.Function):
    """The unpooled 2-D layer on CPU tensors (steps 1-5 of :mod:`dtn_bench.norms.dtn`) by :mod:`.cpu2d`.

    Forward and backward are fused kernels. Inputs ``(x, px, py, weight, bias, g_mean, g_var, eps, prefix)``: the
    axis matrices come from :meth:`DTN.axis_matrices` with autograd, so ``dL/dpx``, ``dL/dpy`` flow on through the
    softmax to ``pos_proj``. The backward keeps only ``x`` and the per-token statistics and recomputes the products
    (see the kernel module). Checked against the eager path and by gradcheck in float64 in the tests.
    """

    @staticmethod
    def forward(ctx, x, px, py, weight, bias, g_mean, g_var, eps, prefix):
        out, (r, mean_ln, var_ln, gates) = _grid_forward_cpu(x, px, py, weight, bias, g_mean, g_var, eps, prefix)
        ctx.eps, ctx.prefix, ctx.only_var = eps, prefix, g_mean is None
        ctx.gates = gates
        ctx.save_for_backward(x, px, py, weight, r, mean_ln, var_ln)
        return out

    @staticmethod
    def backward(ctx, grad):
        from dtn_bench.norms.dtn import cpu2d as dtn_cpu2d

        x, px, py, weight, r, mean_ln, var_ln = ctx.saved_tensors
        B, T, C = x.shape
        H, gw, gh = px.shape[0], px.shape[1], py.shape[1]
        d = C // H
        nd = x.numpy().dtype
        gates = ctx.gates
        G = grad.detach().contiguous()
        gx = x.new_empty(B, T, C)
        gpx, gpy = np.empty((B, H, gw, gw), dtype=nd), np.empty((B, H, gh, gh), dtype=nd)
        gwb, ggate = np.empty((B, 2, C), dtype=nd), np.empty((B, 2, H), dtype=nd)
        dtn_cpu2d.backward(G.view(B, T, H, d).numpy(), x.view(B, T, H, d).numpy(), r.numpy(), mean_ln.numpy(),
                           var_ln.numpy(), px.contiguous().numpy(), py.contiguous().numpy(), gates,
                           weight.detach().view(H, d).numpy(), _cpu_constants(ctx.eps, H, d, x.dtype), ctx.only_var,
                           ctx.prefix, (gh, gw), gx.view(B, T, H, d).numpy(), gpx, gpy, gwb, ggate,
                           torch.get_num_threads())
        need = ctx.needs_input_grad
        sums = gwb.sum(0)
        g_lam = ggate.sum(0)
        return (gx if need[0] else None,
                torch.from_numpy(gpx.sum(0)) if need[1] else None,
                torch.from_numpy(gpy.sum(0)) if need[2] else None,
                torch.from_numpy(sums[0]) if need[3] else None,
                torch.from_numpy(sums[1]) if need[4] else None,
                torch.from_numpy(g_lam[0] * gates[0] * gates[1]) if need[5] and not ctx.only_var else None,
                torch.from_numpy(g_lam[1] * gates[2] * gates[3]) if need[6] else None,
                None, None)


class GridMixin:
    """The 2-D path of :class:`~dtn_bench.norms.dtn.DTN` (``grid_size`` set): its methods, mixed into the class."""

    # position matrices
    def axis_matrices(self, rows: int, cols: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head axis factors of ``P``: ``Py [H, rows, rows]`` and ``Px [H, cols, cols]``.

        Indexed ``[h, source, target]`` and normalised over the source, so ``P^h = Py^h (x) Px^h``
        (token = y * cols + x).
        """
        a = self.pos_proj.weight.to(dtype)

        def axis(n: int, lin: torch.Tensor) -> torch.Tensor:
            r = torch.arange(n, device=a.device, dtype=dtype)
            d = r.view(1, n) - r.view(n, 1)  # d[i, j] = j - i  (target minus source)
            logits = lin.view(-1, 1, 1) * d + a[:, 2].view(-1, 1, 1) * d * d
            return _flush_subnormal(logits.softmax(dim=1))

        return axis(rows, a[:, 1]), axis(cols, a[:, 0])

    def _forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """A 2-D layer on contiguous float ``x [B, T, C]``.

        Unpooled grids on CPU tensors run the fused kernels (:meth:`_forward_grid_cpu`, training and inference);
        otherwise the functional form under autograd or ``torch.compile``, else the in-place inference paths.
        """
        if self.pool == 1 and _grid_kernels(x):
            return self._forward_grid_cpu(x)
        if torch.is_grad_enabled() or torch.compiler.is_compiling():  # functional: autograd, or for fusion
            return self._forward(x)
        B, T, C = x.shape
        y = torch.empty(B, T, C, dtype=x.dtype, device=x.device)
        if self.pool == 1:
            self._infer_grid(x, y)
            return y
        # On the CPU, cache-sized batch chunks: the temporaries stay small and are reused (_scratch) instead of being
        # faulted in afresh for every layer.
        step = max(1, _CPU_CHUNK // (T * C)) if x.device.type == "cpu" else B
        for i in range(0, B, step):
            self._forward(x[i : i + step], out=y[i : i + step])
        return y

    def _forward_grid_cpu(self, x: torch.Tensor) -> torch.Tensor:
        """An unpooled 2-D layer on contiguous float ``x [B, T, C]`` by the fused CPU kernels (:class:`_Grid`)."""
        dt = x.dtype
        py, px = self.axis_matrices(*self.grid_size, dtype=dt)
        weight, bias = self.weight.to(dt), self.bias.to(dt)
        g_mean = None if self.only_var else self.mean_norm_weight.to(dt)
        g_var = self.var_norm_weight.to(dt)
        if torch.is_grad_enabled():
            return _Grid.apply(x, px, py, weight, bias, g_mean, g_var, self.eps, self.num_prefix_tokens)
        return _grid_forward_cpu(x, px, py, weight, bias, g_mean, g_var, self.eps, self.num_prefix_tokens)[0]

    def _forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """A 2-D layer on float input. With ``out`` (no autograd, pooled grids) it works in place into ``out``."""
        B, T, C = x.shape
        H, eps, P = self.num_heads, self.eps, self.num_prefix_tokens
        d = C // H
        dt = x.dtype
        xh = x.view(B, T, H, d)
        r, mean_ln, var_ln = self._token_stats(xh)

        # Pooled grids: the P products run in a head-major layout ("L", [H, B, rows, c, cols]) where both are plain
        # batched GEMMs; everything elementwise runs token-major ([B, T, H, d]), where the innermost axis is a
        # contiguous run of d channels and the per-token statistics broadcast cheaply. Unpooled grids use the layout
        # of _stats_grid / _infer_grid, which needs no transposing copy.
        to_l, from_l, stats = self._to_l_2d, self._from_l_2d, self._stats_2d
        L = T - P
        lam_v = torch.sigmoid(self.var_norm_weight.to(dt)).view(1, 1, H, 1)
        lam_m = None if self.only_var else torch.sigmoid(self.mean_norm_weight.to(dt)).view(1, 1, H, 1)
        mu_ln, v_ln = mean_ln[:, P:], var_ln[:, P:]
        w = self.weight.to(dt).view(1, 1, H, d)
        b = self.bias.to(dt).view(1, 1, H, d)
        if out is None:
            xn = xh * r  # RMS pre-normalised, token-major [B, T, H, d]
            xs = xn[:, P:]
            if self.pool == 1:  # head-major statistics, read through a token-major view (_infer_grid)
                st = self._stats_grid(xs)
            else:
                zl = torch.cat([to_l(xs), to_l(xs * xs)], dim=3)  # [xn, xn^2] in L, contiguous
                st = from_l(stats(zl)).reshape(B, L, H, 2 * d)  # token-major copy of the statistics
            y = _Standardise.apply(xs, st, mu_ln, v_ln, lam_m, lam_v, eps)
            if P:
                yp = (xn[:, :P] - mean_ln[:, :P]) * torch.rsqrt(var_ln[:, :P] + eps)
                y = torch.cat([yp, y], dim=1)
            return torch.addcmul(b.view(C), y.reshape(B, T, C), w.view(C))
        # inference (pooled): the same arithmetic in preallocated buffers and in place, the affine part in `out`;
        # xn is never materialised token-major (the tail uses x * r), eps rides along with the copy of m2, and the
        # mean is kept negated so that x * r - mu is one fused multiply-add.
        shape = list(to_l(xh[:, P:]).shape)
        shape[3] *= 2
        zl = _scratch("z", shape, x)
        torch.mul(to_l(xh[:, P:]), to_l(r[:, P:]), out=zl.narrow(3, 0, d))
        torch.mul(zl.narrow(3, 0, d), zl.narrow(3, 0, d), out=zl.narrow(3, d, d))
        sl = stats(zl)
        st = _scratch("st", (B, L, H, 2 * d), x)
        sv, lv = st.view(from_l(sl).shape), from_l(sl)
        torch.mul(lv[..., :d], -1.0, out=sv[..., :d])  # -P xn
        torch.add(lv[..., d:], eps, out=sv[..., d:])  # P xn^2 + eps
        neg_mean, m2 = st[..., :d], st[..., d:]
        # The gates as (1 - lam) * a + lam * c, two binary ops: lerp_ with two broadcast operands (c per token, lam per
        # head) falls off ATen's vectorised CPU loops (about 3x slower); lam * c is a small per-(token, head) tensor.
        m2.addcmul_(neg_mean, neg_mean, value=-1.0).mul_(1.0 - lam_v).add_((v_ln + eps) * lam_v)
        rs = m2.rsqrt_()  # 1 / sqrt(var + eps)
        if lam_m is None:
            neg_mean.copy_((-mu_ln).expand_as(neg_mean))
        else:
            neg_mean.mul_(1.0 - lam_m).sub_(mu_ln * lam_m)
        y = neg_mean.addcmul_(xh[:, P:], r[:, P:]).mul_(rs)  # (x * r - mu) / sqrt(var + eps)
        o = out.view(B, T, H, d)
        torch.addcmul(b, y, w, out=o[:, P:])
        if P:
            yp = (xh[:, :P] * r[:, :P] - mean_ln[:, :P]) * torch.rsqrt(var_ln[:, :P] + eps)
            torch.addcmul(b, yp, w, out=o[:, :P])
        return out

    def _stats_grid(self, xs: torch.Tensor) -> torch.Tensor:
        """Autograd form of :meth:`_infer_grid`'s products: ``[P xn, P xn^2]`` of the patch tokens ``xs [B, L, H, d]``.

        Computed head-major (``[H, B, rows, cols, 2d]``, no transposing copy) and returned as a token-major view
        ``[B, L, H, 2d]``.
        """
        B, L, H, d = xs.shape
        gh, gw = self.grid_size
        z = torch.cat([xs.permute(2, 0, 1, 3), (xs * xs).permute(2, 0, 1, 3)], dim=-1)  # [H, B, L, 2d]
        Py, Px = self.axis_matrices(gh, gw, dtype=xs.dtype)  # [H, src, tgt]
        s = Px.transpose(1, 2).unsqueeze(1) @ z.view(H, B * gh, gw, 2 * d)  # along x
        s = Py.transpose(1, 2).unsqueeze(1) @ s.view(H, B, gh, gw * 2 * d)  # along y
        return s.view(H, B, L, 2 * d).permute(1, 2, 0, 3)

    def _infer_grid(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Inference on an unpooled 2-D grid, written into ``y``, with no transposing pass.

        The patch tokens' ``[xn, xn^2]`` are laid out head-major, ``[H, B, rows, cols, 2d]``: a permutation of the
        token-major input that keeps the ``d`` channels of a (token, head) contiguous, so it is written at memory
        speed. There ``P`` acts as a batch of small products along the x axis (``[cols, cols]`` per head times each
        ``[cols, 2d]`` grid row) and one product along the y axis per (head, sample); the statistics come out in the
        same layout, and every later pass reads them through a token-major view whose innermost axis is again a
        contiguous run of ``d`` channels. Each elementwise op has at most one operand broadcast along that axis,
        which keeps it on ATen's vectorised CPU loops. On the CPU the batch is processed in chunks of about
        ``_GRID_CHUNK`` elements, small enough for the chunk's buffers to stay in the L2 cache between passes.
        """
        B, T, C = x.shape
        H, P, eps = self.num_heads, self.num_prefix_tokens, self.eps
        d = C // H
        gh, gw = self.grid_size
        L = gh * gw
        dt = x.dtype
        xh = x.view(B, T, H, d)
        r, mean_ln, var_ln = self._token_stats(xh)
        gv = self.var_norm_weight.to(dt)
        lam_v = torch.sigmoid(gv)
        # A per (head, half) scale and a per (head, sample, token, half) shift of [P xn, P xn^2 - (P xn)^2], so that
        # one multiply and one add serve both halves: [lam_m - 1, 1 - lam_v] and [-lam_m mean_ln, lam_v var_ln + eps]
        # (1 - lam_v as sigmoid(-g), without cancellation).
        if self.only_var:
            lam_m = torch.zeros_like(lam_v)  # the A half is unused
        else:
            lam_m = torch.sigmoid(self.mean_norm_weight.to(dt))
        scale = torch.stack([lam_m - 1.0, torch.sigmoid(-gv)], dim=1).view(H, 1, 1, 2, 1).expand(H, 1, 1, 2, d)
        scale = scale.reshape(H, 1, 1, 2 * d)
        shift = torch.stack([-lam_m.view(H, 1, 1) * mean_ln[:, P:].reshape(1, B, L),
                             lam_v.view(H, 1, 1) * var_ln[:, P:].reshape(1, B, L) + eps], dim=-1)
        shift = shift.view(H, B, L, 2, 1)
        w = self.weight.to(dt).view(H, d)
        bias = self.bias.to(dt).view(H, d)
        Py, Px = self.axis_matrices(gh, gw, dtype=dt)  # [H, src, tgt]
        pxt, pyt = Px.transpose(1, 2).unsqueeze(1), Py.transpose(1, 2).unsqueeze(1)
        yh = y.view(B, T, H, d)
        step = max(1, _GRID_CHUNK // (T * C)) if x.device.type == "cpu" else B
        bufs: dict[int, tuple] = {}
        for i in range(0, B, step):
            n = min(step, B - i)
            if n not in bufs:  # buffers and their views, and the axis matrices as the batched products take them
                z = _scratch("zg", (H, n, L, 2 * d), x)
                s1 = _scratch("s1g", (H * n * gh, gw, 2 * d), x)
                A, M = z[..., :d], z[..., d:]  # xn and xn^2 first, then P xn and P xn^2
                bufs[n] = (
                    z, z.view(H * n * gh, gw, 2 * d), z.view(H * n, gh, gw * 2 * d), s1, s1.view(H * n, gh, gw * 2 * d),
                    A, M, A.permute(1, 2, 0, 3), M.permute(1, 2, 0, 3), z.view(H, n, L, 2, d),
                    pxt.expand(H, n * gh, gw, gw).reshape(H * n * gh, gw, gw),
                    pyt.expand(H, n, gh, gh).reshape(H * n, gh, gh),
                )
            z, z_x, z_y, s1, s1_y, A, M, A_t, M_t, z_2, mx, my = bufs[n]
            xs, rs, o = xh[i : i + n, P:], r[i : i + n, P:], yh[i : i + n, P:]
            torch.mul(xs, rs, out=A_t)  # xn, head-major
            torch.mul(A, A, out=M)  # xn^2
            torch.bmm(mx, z_x, out=s1)  # P along x
            torch.bmm(my, s1_y, out=z_y)  # P along y, back into z: A = P xn, M = P xn^2
            M.addcmul_(A, A, value=-1.0)
            z.mul_(scale)
            z_2.add_(shift[:, i : i + n])  # A = -mu = -(1 - lam_m) P xn - lam_m mean_ln; M = var + eps
            M.rsqrt_()
            if self.only_var:  # the LN mean
                torch.addcmul(-mean_ln[i : i + n, P:], xs, rs, out=o)
            else:  # x * r - mu
                torch.addcmul(A_t, xs, rs, out=o)
            o.mul_(M_t)
            torch.addcmul(bias, o, w, out=o)
        if P:  # prefix tokens: LN statistics only
            yp = (xh[:, :P] * r[:, :P] - mean_ln[:, :P]) * torch.rsqrt(var_ln[:, :P] + eps)
            torch.addcmul(bias, yp, w, out=yh[:, :P])

    # layouts -------------------------------------------------------------------------------------------------------
    def _to_l_2d(self, t: torch.Tensor) -> torch.Tensor:
        b, _, H, k = t.shape
        gh, gw = self.grid_size
        return t.view(b, gh, gw, H, k).permute(3, 0, 1, 4, 2)

    @staticmethod
    def _from_l_2d(t: torch.Tensor) -> torch.Tensor:
        return t.permute(1, 2, 4, 0, 3)  # [B, rows, cols, H, k]

    def _stats_2d(self, z: torch.Tensor) -> torch.Tensor:
        """Inter-token mean and second moment of patch tokens from ``z = [xn, xn^2]`` (``[H, B, rows, 2d, cols]``).

        Computed through the separable ``P``: one batched GEMM along the grid's x axis, one along y. Returns
        ``[P xn, P xn^2]`` in the same layout.
        """
        H, B, gh, d2, gw = z.shape
        d = d2 // 2
        k = self.pool
        g = z
        if k > 1:  # the authors' dtn_pool: AvgPool2d(k) of the pre-normalised map; second moment of pooled features
            g = z[:, :, :, :d].reshape(H, B, gh // k, k, d, gw // k, k).mean(dim=(3, 6))
            g = torch.cat([g, g * g], dim=3)
        rows, cols = g.shape[2], g.shape[4]
        Py, Px = self.axis_matrices(rows, cols, dtype=z.dtype)  # [H, src, tgt]
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            s = g.reshape(H, B * rows * d2, cols) @ Px  # along x
            s = Py.transpose(1, 2).unsqueeze(1) @ s.view(H, B, rows, d2 * cols)  # along y
        else:  # inference: into reused buffers
            s1 = torch.matmul(g.reshape(H, B * rows * d2, cols), Px, out=_scratch("s1", (H, B * rows * d2, cols), g))
            s = torch.matmul(Py.transpose(1, 2).unsqueeze(1), s1.view(H, B, rows, d2 * cols),
                             out=_scratch("s2", (H, B, rows, d2 * cols), g))
        s = s.view(H, B, rows, d2, cols)
        if k > 1:  # nearest upsampling back to the full grid
            s = s.view(H, B, rows, 1, d2, cols, 1).expand(H, B, rows, k, d2, cols, k).reshape(H, B, gh, d2, gw)
        return s
