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
Prefix tokens (class / distillation tokens, ``num_prefix_tokens`` leading tokens) are normalised with the LN
statistics alone (as if both gates were 1) and take no part in the patch tokens' inter-token statistics.

One class, one module per code path: :mod:`~dtn_bench.norms.dtn.grid` (2-D grids: the separable ``P^h``, pooling, the
fused CPU path), :mod:`~dtn_bench.norms.dtn.sequence` (1-D sequences: windowed convolutions, padding masks, exactness,
the hand-written backward), :mod:`~dtn_bench.norms.dtn.common` (the standardisation and per-token statistics both
share), and their kernels: :mod:`~dtn_bench.norms.dtn.cpu` (numba, 1-D), :mod:`~dtn_bench.norms.dtn.cpu2d` (numba,
2-D) and :mod:`~dtn_bench.norms.dtn.triton` (Triton, 2-D inference on CUDA). :mod:`~dtn_bench.norms.dtn.dense` is the
authors' dense algorithm, the reference that tests and ``bench norms`` compare against. The kernel modules import
numba or triton, so they are imported on first use only.
"""

from __future__ import annotations

import torch
from torch import nn

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms.base import NormInfo, register_norm
from dtn_bench.norms.dtn.common import _token_stats
from dtn_bench.norms.dtn.grid import GridMixin, _as_grid
from dtn_bench.norms.dtn.sequence import SequenceMixin

# Inference kernels of a layer on an unpooled 2-D grid (DTN.kernel): torch ops on any device, or dtn.triton (CUDA).
KERNELS = ("eager", "triton")


def check_kernel(name: str) -> str:
    """``name`` when it is a DTN inference kernel (:data:`KERNELS`) that can run here.

    Otherwise a one-line :class:`DTNBenchError`.
    """
    if name not in KERNELS:
        raise DTNBenchError(f"DTN kernel {name!r}: choose {' or '.join(KERNELS)}")
    if name == "triton":
        from dtn_bench.norms.dtn import triton as dtn_triton

        dtn_triton.check_available()
    return name


class use_kernel:  # noqa: N801 - used like a function (as torch.set_grad_enabled)
    """``kernel = name`` on every :class:`DTN` in ``model`` (``model`` itself included), from the call on.

    Used in a ``with`` block it restores each layer's previous kernel when the block ends (error or not)::

        with use_kernel(model, "triton"):
            model(x)

    Args:
        model: a module; its DTN layers get the kernel (the others are left alone).
        name: ``eager`` or ``triton`` (:data:`KERNELS`).

    Raises:
        DTNBenchError: an unknown name, or ``triton`` without the triton package (before any layer changes).
    """

    def __init__(self, model: nn.Module, name: str):
        check_kernel(name)
        self.layers = [mod for mod in model.modules() if isinstance(mod, DTN)]
        self.before = [mod.kernel for mod in self.layers]
        for mod in self.layers:
            mod.kernel = name

    def __enter__(self) -> list[DTN]:
        return self.layers

    def __exit__(self, *exc) -> None:
        for mod, name in zip(self.layers, self.before, strict=True):
            mod.kernel = name


class DTN(GridMixin, SequenceMixin, nn.Module):
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
        kernel: inference kernel on an unpooled 2-D grid, ``eager`` (torch ops) or ``triton`` (the fused kernels
            of :mod:`dtn_bench.norms.dtn.triton`, CUDA); an attribute of the layer (:class:`use_kernel` sets it on
            a whole model). Autograd, ``torch.compile``, pooled grids and 1-D sequences always run eager.
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
        kernel: str = "eager",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.kernel = kernel
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

    @property
    def kernel(self) -> str:
        """The inference kernel on an unpooled 2-D grid: ``eager`` or ``triton`` (:data:`KERNELS`)."""
        return self._kernel

    @kernel.setter
    def kernel(self, name: str) -> None:
        self._kernel = check_kernel(name)

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
        """ConViT local init.

        2-D: head ``h1 + k*h2`` of the ``k x k = int(sqrt(H))^2`` first heads looks at offset ``(h2 - c, h1 - c)``; the
        others keep their random weights. 1-D: every head gets ``a1 = -1`` and an offset ``h - c`` (``c`` the centre
        head), so the heads cover consecutive offsets around the token.
        """
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
        """The layer's settings for ``repr``: dim, heads, grid, prefix, eps, and ``only_var`` / ``pool`` when set."""
        grid = "1-D" if self.grid_size is None else f"{self.grid_size[0]}x{self.grid_size[1]}"
        s = f"{self.dim}, heads={self.num_heads}, grid={grid}, prefix={self.num_prefix_tokens}, eps={self.eps}"
        if self.only_var:
            s += ", only_var=True"
        if self.pool > 1:
            s += f", pool={self.pool}"
        if self.grid_size is None:
            s += f", window={self.window}"
        if self.kernel != "eager":
            s += f", kernel={self.kernel}"
        return s

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
        if (self.kernel == "triton" and self.grid_size is not None and self.pool == 1 and x.dtype != torch.float64
                and not torch.is_grad_enabled() and not torch.compiler.is_compiling()):
            from dtn_bench.norms.dtn import triton as dtn_triton

            return dtn_triton.infer_grid(self, x)
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            # A residual stream may be a transposed view ([B, T, C] stored channels-first, from a patch embedding);
            # one copy to token-major order makes every later pass contiguous.
            xc = x.to(cdtype).contiguous()
            y = self._forward_seq(xc, mask) if self.grid_size is None else self._forward_grid(xc)
        return y.to(x.dtype)

    def _token_stats(self, xh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``r [B, T, H, 1]`` and the LN mean and variance ``[B, T, 1, 1]`` of ``xh [B, T, H, d]``.

        Computed by :func:`_token_stats`.
        """
        r, mean_ln, var_ln, _ = _token_stats(xh, self.eps)
        return r, mean_ln, var_ln


# ------------------------------------------------------------------------------------------------------------ registry
def inter_token_macs(module: DTN, shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs of one DTN layer's inter-token statistics on an input of ``shape = [N, T, C]``, summed over ``N``.

    Returns ``(as computed here, the authors' dense T x T form)``:

    * 2-D (``P^h`` separable): ``2 C T' (H' + W')`` per sample on the ``H' x W'`` grid the statistics are taken on
      (``T' = H' W'``; the pooled grid with ``pool_to``, whose average pooling adds ``C T`` more); dense ``2 C T'^2``.
    * 1-D: one depthwise convolution of ``2 w + 1`` taps over ``2 C + H`` channels (the two maps and one normalising
      row per head), ``(2 C + H) L (2 w + 1)`` per sequence, ``w = effective_window(L)``; dense ``2 C L^2``.
    """
    n, t, c = (int(v) for v in shape)
    length = t - module.num_prefix_tokens
    if module.grid_size is not None:
        gh, gw = module.grid_size
        k = module.pool
        rows, cols = gh // k, gw // k
        tp = rows * cols
        pool = c * gh * gw if k > 1 else 0
        return n * (2 * c * tp * (rows + cols) + pool), n * (2 * c * tp * tp + pool)
    w = module.effective_window(length)
    return n * (2 * c + module.num_heads) * length * (2 * w + 1), n * 2 * c * length * length


_PASSES = ("RMS pre-normalisation (sum of squares, scale), LN sum, xn^2, var_in = m2 - mean_in^2, gate lerp of "
           "mean and of variance, standardise, affine; plus the inter-token statistics (inter_token_macs)")
_PAPER = "Shao et al., ICLR 2022 (Dynamic Token Normalization)"
DTN_INFO = NormInfo(
    label="DTN", paper=_PAPER, mask="sequence", zoo_suffix="dtn", small_zoo=True, macs_per_element=9,
    macs_passes=_PASSES, inter_token_macs=inter_token_macs,
    published=("imagenet_top1", "paper_flops_g", "paper_params_m", "norm_comparison_top1"),
    formula="(x - mu) / sqrt(var + eps) * w + b, mu/var = gated mix of LN and P^h-weighted inter-token "
            "statistics per head")
DTN_VAR_INFO = NormInfo(
    label="DTN (var only)", paper=_PAPER, mask="sequence", macs_per_element=9, macs_passes=_PASSES,
    inter_token_macs=inter_token_macs,
    formula="(x - E_c x) / sqrt(var + eps) * w + b, LN mean, DTN's mixed variance")

@register_norm("dtn", DTN_INFO, cls=DTN)
def _dtn(dim, *, num_heads=1, grid_size=None, num_prefix_tokens=0, eps=1e-5, pool_to=None, local_init=True,
         window=64, kernel="eager", device=None, dtype=None):
    return DTN(dim, num_heads, grid_size=grid_size, num_prefix_tokens=num_prefix_tokens, eps=eps, pool_to=pool_to,
               local_init=local_init, window=window, kernel=kernel, device=device, dtype=dtype)


@register_norm("dtn_var", DTN_VAR_INFO, cls=DTN)
def _dtn_var(dim, *, num_heads=1, grid_size=None, num_prefix_tokens=0, eps=1e-5, pool_to=None, local_init=True,
             window=64, kernel="eager", device=None, dtype=None):
    return DTN(dim, num_heads, grid_size=grid_size, num_prefix_tokens=num_prefix_tokens, eps=eps, only_var=True,
               pool_to=pool_to, local_init=local_init, window=window, kernel=kernel, device=device, dtype=dtype)
