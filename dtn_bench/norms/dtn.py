"""Dynamic Token Normalization (Shao et al., ICLR 2022), exact and fast.

Numerically this is the authors' module (github wqshao126/DTN, ``models/normkit/norms/dtn.py``) with the same
parameters and state-dict keys, computed without any ``[T, T]`` position tensor. The two agree to <= 1e-4 (max
absolute, fp32) for concave position kernels (``a^h_2 < 0``: the ConViT local init and every trained kernel seen so
far). For strongly convex kernels both implementations lose fp32 accuracy (4e-4 to 1e-3 between them, measured),
while in fp64 they agree to 1e-11: the difference is rounding, not the formula.

1. RMS pre-normalisation of every (token, head) chunk: ``xn = x / sqrt(mean(x_chunk^2) + eps)``.
2. Intra-token (LN) statistics of ``xn`` over all ``C`` channels, unbiased variance (``C - 1``), as the authors'.
3. Inter-token statistics per head and channel: ``mean_in = P^h xn`` and ``var_in = P^h(xn^2) - mean_in^2`` where
   ``P^h[i, j] = softmax_i(a^h . [dx, dy, dx^2 + dy^2])`` (softmax over the source token ``i``).
4. Two gates per head: ``mu = (1 - s(g_mean)) mean_in + s(g_mean) mean_ln``, ``var`` likewise with ``g_var``.
5. ``y = (xn - mu) / sqrt(var + eps) * weight + bias``.

The logits split into an x part and a y part, so ``P^h`` is exactly the Kronecker product of a ``W x W`` and an
``H x H`` matrix, each a softmax over its own source axis. ``P^h xn`` is two small matrix products along the grid
axes: ``O(T (H + W))`` per channel instead of ``O(T^2)``, rectangular grids included.

Prefix tokens (class / distillation tokens, ``num_prefix_tokens`` leading tokens) are normalised with the LN
statistics alone (as if both gates were 1) and take no part in the patch tokens' inter-token statistics.

``pool_to`` reproduces the authors' ``dtn_pool``: for a grid larger than ``pool_to`` the pre-normalised map is
average-pooled by ``k = grid_h // pool_to`` (the authors' square kernel), ``P`` acts on the pooled grid (the second
moment is taken of the pooled features), and mean and variance are nearest-upsampled back.

1-D sequences (``grid_size=None``): positions ``0..T-1``, logits ``a0 * d + a1 * d^2`` with ``d = j - i``
(``a0 = pos_proj.weight[:, 0]``, ``a1 = pos_proj.weight[:, 2]``; column 1 is unused), an optional boolean
``mask [B, T]`` (True = real token) so that padding never enters a real token's statistics, and a window:
sources with ``|d| > window`` are dropped. The window makes the cost ``O(T * window)``. The error this causes is
bounded and reported by :meth:`DTN.truncation_bound`: with ``delta_h = sum_{window < |d| < T} exp(logit_h(d))``
(``logit_h(0) = 0``), every real token's windowed mean differs from the full-length one by at most
``2 * delta_h * max|xn|`` and its second moment by at most ``2 * delta_h * max(xn^2)``. With the local init
(``a1 = -1``) and the default window of 64, ``delta`` underflows to 0 in float64 for any length. ``window=None``
keeps every source (exact, ``O(T^2)`` time, still no ``[B, T, T]`` tensor).

The 1-D statistics are ratios of banded sums of ``exp(logit - shift)`` with one shift per head, so they are exact
(to fp32 rounding) while the kernel's peak within the window is less than about 87 nats above its self term
``logit(0) = 0``: always for a concave kernel (``a1 < 0``, peak ``a0^2 / (4 |a1|)``) such as the local init, whose
peak is at most 16 nats. Past that range (e.g. a strongly convex kernel) a token whose available sources all lie that
far below the peak gets inter-token statistics of 0 instead of NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dtn_bench.errors import DTNBenchError

# Largest logit offset kept above the self term in the 1-D kernel before exp(); see _kernel_1d.
_MAX_EXP = 60.0
# CPU inference works on batch chunks of about this many elements (see DTN.forward).
_CPU_CHUNK = 1 << 20
# The unpooled 2-D inference path works on batch chunks of about this many elements (see DTN._infer_grid).
_GRID_CHUNK = 160_000
# Inference scratch buffers, shared by every DTN layer (layers run one after another); keyed by role, shape, dtype and
# device. Reusing them avoids faulting in fresh pages for every chunk of every layer.
_WORKSPACE: dict[tuple, torch.Tensor] = {}
# Inference kernel for unpooled 2-D grids: "eager" (torch ops, any device) or "triton" (dtn_triton, CUDA): set_kernel.
KERNELS = ("eager", "triton")
_KERNEL = "eager"


def set_kernel(name: str) -> None:
    """Choose the inference kernel of every DTN layer on an unpooled 2-D grid: ``eager`` (torch ops, the default) or
    ``triton`` (the fused kernels of :mod:`dtn_bench.norms.dtn_triton`, CUDA only). Autograd, ``torch.compile``,
    pooled grids and 1-D sequences always use the eager path."""
    global _KERNEL
    if name not in KERNELS:
        raise DTNBenchError(f"DTN kernel {name!r}: choose {' or '.join(KERNELS)}")
    if name == "triton":
        from dtn_bench.norms import dtn_triton

        dtn_triton.check_available()
    _KERNEL = name


def get_kernel() -> str:
    """The inference kernel chosen by :func:`set_kernel`."""
    return _KERNEL


def _scratch(role: str, shape, like: torch.Tensor) -> torch.Tensor:
    """A reusable CPU buffer (not thread-safe: one forward at a time); elsewhere a fresh tensor, since CUDA's caching
    allocator already reuses memory and held buffers would only inflate peak-memory figures."""
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


def _flush_subnormal(p: torch.Tensor) -> torch.Tensor:
    """Zero the weights below 1e-20 (fp32; 1e-200 in fp64). They change no result measurably (the weights of a
    token sum to 1), but they and their products with small features are subnormal numbers, which send every matrix
    product and elementwise op downstream onto the CPU's slow path: a local kernel has weights like ``exp(-169)``,
    and without this the layer ran 10-40x slower on x86."""
    floor = 1e-200 if p.dtype == torch.float64 else 1e-20
    return torch.where(p >= floor, p, torch.zeros((), dtype=p.dtype, device=p.device))


def _inv_or_zero(den: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``1 / den`` for real target tokens (``real``, broadcast to ``den``), 0 for padding.

    A real token's ``den`` includes its own weight ``exp(-shift)``, while a padding token's may be 0 or as small as the
    flush threshold (1e-20, a real token far away): its ``1 / den^2`` in the gradient overflows to inf, and inf times
    the padding's zero gradient is NaN in the kernel's gradient. Padding gets statistics 0 and no gradient at all."""
    return den.masked_fill((den <= 0) | ~real, math.inf).reciprocal()


def _as_grid(grid_size) -> tuple[int, int] | None:
    if grid_size is None:
        return None
    if isinstance(grid_size, int):
        return (grid_size, grid_size)
    gh, gw = (int(v) for v in grid_size)
    return (gh, gw)


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


class DTN(nn.Module):
    """Dynamic Token Normalization for ``[B, T, C]`` tokens.

    Args:
        dim: channels ``C``.
        num_heads: heads ``H`` (the DTN groups); ``dim`` must be divisible by it.
        grid_size: patch grid ``(rows, cols)`` or an int for a square grid; ``None`` for 1-D sequences.
        num_prefix_tokens: leading tokens (class, distillation) normalised with LN statistics only.
        eps: the authors' epsilon, used in the RMS pre-normalisation and the final standardisation.
        only_var: the ``dtn_var`` variant: LN mean with the mixed variance (no ``mean_norm_weight``).
        pool_to: the authors' ``dtn_pool``: grids larger than this are pooled to it for the statistics.
        local_init: ConViT local initialisation of ``pos_proj`` (heads attend to offsets around each token).
        window: 1-D only: largest ``|j - i|`` kept (``None``: all).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size=(14, 14),
        num_prefix_tokens: int = 0,
        eps: float = 1e-5,
        only_var: bool = False,
        pool_to: int | None = None,
        local_init: bool = True,
        *,
        window: int | None = 64,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_heads <= 0 or dim % num_heads:
            raise DTNBenchError(f"DTN: dim {dim} is not divisible by num_heads {num_heads}")
        grid = _as_grid(grid_size)
        if grid is not None and min(grid) <= 0:
            raise DTNBenchError(f"DTN: grid_size {grid_size} must be positive")
        if num_prefix_tokens < 0:
            raise DTNBenchError(f"DTN: num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        if window is not None and window < 1:
            raise DTNBenchError(f"DTN: window must be >= 1 or None, got {window}")
        self.pool = 1
        if pool_to is not None:
            if grid is None:
                raise DTNBenchError("DTN: pool_to needs a 2-D grid_size")
            if min(grid) < pool_to:
                raise DTNBenchError(f"DTN: grid {grid[0]}x{grid[1]} is smaller than pool_to={pool_to}")
            k = grid[0] // pool_to
            if grid[0] % k or grid[1] % k:
                raise DTNBenchError(f"DTN: grid {grid[0]}x{grid[1]} cannot be pooled by {k} (pool_to={pool_to})")
            self.pool = k
        self.dim = dim
        self.num_heads = num_heads
        self.grid_size = grid
        self.num_prefix_tokens = num_prefix_tokens
        self.eps = eps
        self.only_var = only_var
        self.pool_to = pool_to
        self.window = window
        dd = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(dim, **dd))
        self.bias = nn.Parameter(torch.zeros(dim, **dd))
        if not only_var:
            self.mean_norm_weight = nn.Parameter(torch.zeros(num_heads, **dd))
        self.var_norm_weight = nn.Parameter(torch.zeros(num_heads, **dd))
        self.pos_proj = nn.Linear(3, num_heads, **dd)
        self.reset_parameters(local_init)

    def reset_parameters(self, local_init: bool = True) -> None:
        """The authors' initialisation: affine 1/0, gates 0, ``pos_proj`` trunc-normal(.02) then local init."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if not self.only_var:
            nn.init.zeros_(self.mean_norm_weight)
        nn.init.zeros_(self.var_norm_weight)
        nn.init.trunc_normal_(self.pos_proj.weight, std=0.02)
        nn.init.zeros_(self.pos_proj.bias)
        if local_init:
            self.local_init()

    @torch.no_grad()
    def local_init(self, locality_strength: float = 1.0) -> None:
        """ConViT local init. 2-D: head ``h1 + k*h2`` of the ``k x k = int(sqrt(H))^2`` first heads looks at offset
        ``(h2 - c, h1 - c)``; the others keep their random weights. 1-D: every head gets ``a1 = -1`` and an offset
        ``h - c`` (``c`` the centre head), so the heads cover consecutive offsets around the token."""
        w = self.pos_proj.weight
        H = self.num_heads
        if self.grid_size is None:
            center = (H - 1) / 2 if H % 2 == 0 else H // 2
            for h in range(H):
                w[h, 0] = 2 * (h - center)
                w[h, 1] = 0.0
                w[h, 2] = -1.0
        else:
            k = int(H**0.5)
            center = (k - 1) / 2 if k % 2 == 0 else k // 2
            for h1 in range(k):
                for h2 in range(k):
                    p = h1 + k * h2
                    w[p, 2] = -1.0
                    w[p, 1] = 2 * (h1 - center)
                    w[p, 0] = 2 * (h2 - center)
        w.mul_(locality_strength)

    def extra_repr(self) -> str:
        grid = "1-D" if self.grid_size is None else f"{self.grid_size[0]}x{self.grid_size[1]}"
        s = f"{self.dim}, heads={self.num_heads}, grid={grid}, prefix={self.num_prefix_tokens}, eps={self.eps}"
        if self.only_var:
            s += ", only_var=True"
        if self.pool > 1:
            s += f", pool={self.pool}"
        if self.grid_size is None:
            s += f", window={self.window}"
        return s

    # ----------------------------------------------------------------------------------------------------------------
    # position matrices
    def axis_matrices(self, rows: int, cols: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head axis factors of ``P``: ``Py [H, rows, rows]`` and ``Px [H, cols, cols]``, indexed
        ``[h, source, target]`` and normalised over the source, so ``P^h = Py^h (x) Px^h`` (token = y * cols + x)."""
        a = self.pos_proj.weight.to(dtype)

        def axis(n: int, lin: torch.Tensor) -> torch.Tensor:
            r = torch.arange(n, device=a.device, dtype=dtype)
            d = r.view(1, n) - r.view(n, 1)  # d[i, j] = j - i  (target minus source)
            logits = lin.view(-1, 1, 1) * d + a[:, 2].view(-1, 1, 1) * d * d
            return _flush_subnormal(logits.softmax(dim=1))

        return axis(rows, a[:, 1]), axis(cols, a[:, 0])

    def _kernel_1d(self, s: int, reach: int, dtype, dense_length: int | None = None) -> torch.Tensor:
        """Banded 1-D kernel ``K [H, 3s, s]``: source ``u`` of blocks (n-1, n, n+1), target ``v`` of block n,
        ``d = s + v - u``; ``exp(logit(d) - shift)`` where ``|d| <= reach``, else 0. With ``dense_length = L`` the
        whole ``K [H, L, L]`` (source ``u``, target ``v``, ``d = v - u``) instead, for short sequences."""
        a = self.pos_proj.weight.to(dtype)
        if dense_length is not None:
            u = torch.arange(dense_length, device=a.device, dtype=dtype).view(dense_length, 1)
            d = u.view(1, dense_length) - u
        else:
            u = torch.arange(3 * s, device=a.device, dtype=dtype).view(3 * s, 1)
            v = torch.arange(s, device=a.device, dtype=dtype).view(1, s)
            d = s + v - u
        logits = a[:, 0].view(-1, 1, 1) * d + a[:, 2].view(-1, 1, 1) * d * d
        keep = d.abs() <= reach
        logits = logits.masked_fill(~keep, float("-inf"))
        # Shift so the largest kept term is at most e^60 (no overflow in the sums) while the self term (logit 0)
        # stays representable unless the kernel's range exceeds ~147 nats; the bias of pos_proj cancels.
        top = logits.amax(dim=(1, 2), keepdim=True)
        shift = (top - _MAX_EXP).clamp_min(0.0)
        return _flush_subnormal(torch.exp(logits - shift))

    @torch.no_grad()
    def truncation_bound(self, length: int) -> torch.Tensor:
        """Per-head ``delta_h`` (float64) of the 1-D window at sequence length ``length`` (0 when nothing is cut).

        Every real token's windowed mean is within ``2 * delta_h * max|xn|`` of the full-length one, its second
        moment within ``2 * delta_h * max(xn^2)`` (module docstring)."""
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

    # ----------------------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]``; ``mask [B, T]`` (True = real token) is used by 1-D DTN."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise DTNBenchError(f"DTN: expected input [B, T, {self.dim}], got {list(x.shape)}")
        B, T, C = x.shape
        P = self.num_prefix_tokens
        if self.grid_size is not None:
            gh, gw = self.grid_size
            if T != P + gh * gw:
                raise DTNBenchError(
                    f"DTN: {T} tokens do not match grid {gh}x{gw} + {P} prefix tokens = {P + gh * gw}"
                )
        elif T <= P:
            raise DTNBenchError(f"DTN: {T} tokens leave no sequence after {P} prefix tokens")
        if (_KERNEL == "triton" and self.grid_size is not None and self.pool == 1 and x.dtype != torch.float64
                and not torch.is_grad_enabled() and not torch.compiler.is_compiling()):
            from dtn_bench.norms import dtn_triton

            return dtn_triton.infer_grid(self, x)
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            # A residual stream may be a transposed view ([B, T, C] stored channels-first, from a patch embedding);
            # one copy to token-major order makes every later pass contiguous.
            xc = x.to(cdtype).contiguous()
            if torch.is_grad_enabled() or torch.compiler.is_compiling():  # functional: autograd, or for fusion
                y = self._forward(xc, mask)
            else:
                y = torch.empty(B, T, C, dtype=xc.dtype, device=xc.device)
                if self.grid_size is not None and self.pool == 1:
                    self._infer_grid(xc, y)
                else:
                    # On the CPU, cache-sized batch chunks: the temporaries stay small and are reused (_scratch)
                    # instead of being faulted in afresh for every layer.
                    step = max(1, _CPU_CHUNK // (T * C)) if x.device.type == "cpu" else B
                    for i in range(0, B, step):
                        m = None if mask is None else mask[i : i + step]
                        self._forward(xc[i : i + step], m, out=y[i : i + step])
        return y.to(x.dtype)

    def _token_stats(self, xh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For ``xh [B, T, H, d]``: the RMS pre-normalisation factor ``r [B, T, H, 1]`` of every (token, head) chunk
        and the LN mean and (unbiased) variance ``[B, T, 1, 1]`` of ``xn = x * r`` over all ``C`` channels, from
        per-chunk sums (no ``[B, T, C]`` temporaries): mean = sum_h r_h sum_c x / C,
        E[xn^2] = mean_h ms / (ms + eps)."""
        d = xh.shape[-1]
        C = d * xh.shape[-2]
        ms = torch.linalg.vector_norm(xh, dim=-1, keepdim=True).square() / d  # mean square
        r = torch.rsqrt(ms + self.eps)
        mean_ln = (xh.sum(-1, keepdim=True) * r).sum(-2, keepdim=True) / C
        e2 = (ms / (ms + self.eps)).mean(-2, keepdim=True)
        return r, mean_ln, (e2 - mean_ln * mean_ln) * (C / (C - 1))

    def _forward(self, x: torch.Tensor, mask: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """The layer on float input. With ``out`` (no autograd) it works in place and writes into ``out``."""
        B, T, C = x.shape
        H, eps, P = self.num_heads, self.eps, self.num_prefix_tokens
        d = C // H
        dt = x.dtype
        xh = x.view(B, T, H, d)
        r, mean_ln, var_ln = self._token_stats(xh)

        # 1-D sequences and pooled grids: the P products run in a head-major layout ("L") where both are plain batched
        # GEMMs (2-D: [H, B, rows, c, cols], 1-D: [H, B, c, L]); everything elementwise runs token-major ([B, T, H, d]),
        # where the innermost axis is a contiguous run of d channels and the per-token statistics broadcast cheaply.
        # Unpooled grids use the layout of _stats_grid / _infer_grid, which needs no transposing copy.
        seq = self.grid_size is None
        to_l = self._to_l_1d if seq else self._to_l_2d
        from_l = self._from_l_1d if seq else self._from_l_2d
        cdim = 2 if seq else 3
        stats = self._stats_1d if seq else self._stats_2d
        m = None if mask is None else mask[:, P:]
        L = T - P
        lam_v = torch.sigmoid(self.var_norm_weight.to(dt)).view(1, 1, H, 1)
        lam_m = None if self.only_var else torch.sigmoid(self.mean_norm_weight.to(dt)).view(1, 1, H, 1)
        mu_ln, v_ln = mean_ln[:, P:], var_ln[:, P:]
        w = self.weight.to(dt).view(1, 1, H, d)
        b = self.bias.to(dt).view(1, 1, H, d)
        if out is None:
            xn = xh * r  # RMS pre-normalised, token-major [B, T, H, d]
            xs = xn[:, P:]
            if not seq and self.pool == 1:  # head-major statistics, read through a token-major view (_infer_grid)
                st = self._stats_grid(xs)
            else:
                zl = torch.cat([to_l(xs), to_l(xs * xs)], dim=cdim)  # [xn, xn^2] in L, contiguous
                st = from_l(stats(zl, m)).reshape(B, L, H, 2 * d)  # token-major copy of the statistics
            y = _Standardise.apply(xs, st, mu_ln, v_ln, lam_m, lam_v, eps)
            if P:
                yp = (xn[:, :P] - mean_ln[:, :P]) * torch.rsqrt(var_ln[:, :P] + eps)
                y = torch.cat([yp, y], dim=1)
            return torch.addcmul(b.view(C), y.reshape(B, T, C), w.view(C))
        # inference (1-D, pooled): the same arithmetic in preallocated buffers and in place, the affine part in `out`;
        # xn is never materialised token-major (the tail uses x * r), eps rides along with the copy of m2, and the
        # mean is kept negated so that x * r - mu is one fused multiply-add.
        shape = list(to_l(xh[:, P:]).shape)
        shape[cdim] *= 2
        zl = _scratch("z", shape, x)
        torch.mul(to_l(xh[:, P:]), to_l(r[:, P:]), out=zl.narrow(cdim, 0, d))
        torch.mul(zl.narrow(cdim, 0, d), zl.narrow(cdim, 0, d), out=zl.narrow(cdim, d, d))
        sl = stats(zl, m)
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
        """Autograd form of :meth:`_infer_grid`'s products: ``[P xn, P xn^2]`` of the patch tokens ``xs [B, L, H, d]``
        computed head-major (``[H, B, rows, cols, 2d]``, no transposing copy) and returned as a token-major view
        ``[B, L, H, 2d]``."""
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

    @staticmethod
    def _to_l_1d(t: torch.Tensor) -> torch.Tensor:
        return t.permute(2, 0, 3, 1)

    @staticmethod
    def _from_l_1d(t: torch.Tensor) -> torch.Tensor:
        return t.permute(1, 3, 0, 2)

    def _stats_2d(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Inter-token mean and second moment of patch tokens from ``z = [xn, xn^2]`` (``[H, B, rows, 2d, cols]``)
        through the separable ``P``: one batched GEMM along the grid's x axis, one along y. Returns
        ``[P xn, P xn^2]`` in the same layout."""
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

    def _stats_1d(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Windowed, masked inter-token mean and second moment of a sequence from ``z = [xn, xn^2]``
        (``[H, B, 2d, L]``) as ratios of banded sums, ``mean_j = sum_i K(j-i) m_i x_i / sum_i K(j-i) m_i``
        (likewise ``x^2``); blocks of ``s`` tokens each see their own and both neighbouring blocks."""
        H, B, d2, L = z.shape
        reach = L - 1 if self.window is None else min(self.window, L - 1)
        s = L if self.window is None else max(1, min(reach, L))
        nb = math.ceil(L / s)
        if mask is None:
            m = z.new_ones(1, B, 1, L)
            zm = z
        else:
            if mask.shape != (B, L):
                raise DTNBenchError(f"DTN: mask shape {list(mask.shape)} does not match tokens [{B}, {L}]")
            m = mask.to(z.dtype).view(1, B, 1, L)
            zm = z * m
        if L <= 4 * s:  # short: one GEMM with the whole [L, L] kernel costs no more than the three bands
            K = self._kernel_1d(s, reach, z.dtype, dense_length=L)
            num = (zm.reshape(H, B * d2, L) @ K).view(H, B, d2, L)
            den = m.view(1, B, L).expand(H, B, L) @ K  # [H, B, L]
            # (a product's backward is cheaper than a division's)
            return num * _inv_or_zero(den, m.view(1, B, L) > 0).unsqueeze(2)
        zm = torch.cat([zm, m.expand(H, B, 1, L)], dim=2)  # [H, B, 2d + 1, L]
        zm = F.pad(zm, (s, nb * s - L + s))  # one empty block before, padding and one empty block after
        zm = zm.view(H, B, d2 + 1, nb + 2, s)
        z3 = torch.cat([zm[..., :-2, :], zm[..., 1:-1, :], zm[..., 2:, :]], dim=-1)  # [H, B, 2d+1, nb, 3s]
        K = self._kernel_1d(s, reach, z.dtype)  # [H, 3s, s]
        out = (z3.view(H, -1, 3 * s) @ K).view(H, B, d2 + 1, nb * s)[..., :L]
        num, den = out.split([d2, 1], dim=2)
        return num * _inv_or_zero(den, m > 0)  # den >= exp(-shift) > 0 for real tokens
