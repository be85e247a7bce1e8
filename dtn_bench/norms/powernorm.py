"""PowerNorm (PN), Shen et al., "PowerNorm: Rethinking Batch Normalization in Transformers", ICML 2020.

For ``[B, T, C]`` tokens ``x`` with an optional boolean mask ``[B, T]`` (True = real token), per channel ``c``:

* group scaling, per token and per group ``g`` of ``C / G`` channels (``G = num_groups``, the attention heads)::

      x'  = x / sqrt(E_{c in g} x^2 + eps_g)

* the batch's quadratic mean over the real tokens, and the normalisation (training, step ``t``, counted from 1)::

      psi_B^2 = E_{b,t real} x'^2                                 (no mean is subtracted)
      z       = x' / sqrt(psi_B^2 + eps)          while t <= warmup_iters
      z       = x' / sqrt(psi^2 + eps)            afterwards (psi^2: the running value before this step's update)
      y       = w * z + b

* the running quadratic mean, updated after ``z`` is computed::

      psi^2 <- psi^2 * (t - 1) / t + psi_B^2 / t                 only while t < warmup_iters (cumulative mean)
      psi^2 <- alpha_fwd * psi^2 + (1 - alpha_fwd) * psi_B^2     every step, warm-up included

* the approximate backward, with ``g = dL/dy`` and a running gradient statistic ``nu`` (per channel, initially 0)::

      g_hat  = w * g - (1 - alpha_bkw) * nu * z
      dL/dx' = g_hat / sqrt(psi_B^2 + eps)
      nu    <- nu + E_{b,t real} (g_hat * z)
      dL/dw  = sum_{b,t} g * z,   dL/db = sum_{b,t} g

  No gradient flows through ``psi_B^2``: the running ``-(1 - alpha_bkw) * nu * z`` term stands in for the batch
  statistic's gradient. With ``alpha_bkw = 0``, ``eps = 0`` and ``nu`` equal to this batch's ``E_{b,t real}(w g z)``,
  ``dL/dx'`` is exactly the gradient of the warm-up forward (padded tokens receiving no gradient). The group
  scaling's gradient is exact (ordinary autograd).

* inference: ``y = w * x' / sqrt(psi^2 + eps) + b``.

Everything above follows the authors' released code (github sIncerass/powernorm, commit 1159641,
``fairseq/modules/norms/mask_powernorm.py``: ``MaskPowerNorm``, ``PowerFunction``, ``GroupScaling1D``), including
three details of that code kept as released: during warm-up both running updates apply (the cumulative mean, then the
exponential one); the backward divides by the batch's ``psi_B`` also after warm-up, where the forward divided by the
running ``psi``; ``nu`` is accumulated without a ``(1 - alpha_bkw)`` factor on the new term. Defaults are the authors':
``eps = eps_g = 1e-5``, ``alpha_fwd = alpha_bkw = 0.9``, ``warmup_iters = 10000`` (the class default; their training
scripts pass the learning-rate warm-up steps), ``num_groups`` = the attention heads (what their transformer layers
pass; ``build_norm`` passes ``num_heads``).

Deviations from the released code, all of them:

* Padding in the backward: ``nu``'s batch mean is taken over the real tokens only, and the correction term
  ``-(1 - alpha_bkw) * nu * z`` is applied at real tokens only, so a padded token gets ``w * g / sqrt(psi_B^2 + eps)``,
  the exact gradient at a position that does not enter ``psi_B^2``. The authors average over every position of the
  padded batch and correct padded positions too, although their forward statistic excludes padding: a padded token
  that receives no gradient still sends ``-(1 - alpha_bkw) * nu * z / sqrt(psi_B^2 + eps)`` back. Without a mask the
  two agree exactly.
* Precision: the statistics (``psi_B^2``, ``psi^2``, ``nu``) are computed in the wider of the input's and the buffers'
  dtypes (float32 under bf16/fp16 autocast); the authors compute them in the input's dtype.
* Layout only (no numerical effect): tokens ``[B, T, C]`` and a mask with True = real token (the authors: ``[T, B, C]``
  and True = padding); buffers ``running_phi``, ``ema_gz`` of shape ``[C]`` and ``iters`` of shape ``[]`` (theirs
  ``[1, C, 1, 1]`` and ``[1]``; their shapes still load, see ``_load_from_state_dict``).

As in the authors' code the statistics are per process (not synchronised across data-parallel ranks), the forward in
training mode updates ``psi^2`` and the step counter even under ``torch.no_grad()``, and every backward updates ``nu``.
"""

from __future__ import annotations

import torch
from torch import nn

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms.base import NormInfo, register_norm
from dtn_bench.norms.simple import _mask_weights


def group_scaling(x: torch.Tensor, num_groups: int, eps: float = 1e-5) -> torch.Tensor:
    """``x / sqrt(E_{c in g} x^2 + eps)`` per token and per group of ``C / num_groups`` channels (``[..., C]``)."""
    C = x.shape[-1]
    xg = x.reshape(*x.shape[:-1], num_groups, C // num_groups)
    return (xg * torch.rsqrt(xg.square().mean(-1, keepdim=True) + eps)).reshape(x.shape)


def _real_count(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | float:
    return float(x.shape[0] * x.shape[1]) if mask is None else mask.sum().clamp_min(1)


class PowerFunction(torch.autograd.Function):
    """PowerNorm's normalisation step on group-scaled tokens: running-statistic forward, approximate backward.

    ``apply(x, weight, bias, running_phi, ema_gz, mask, step, warmup_iters, eps, alpha_fwd, alpha_bkw)`` with ``x``
    ``[B, T, C]``, ``mask`` ``[B, T, 1]`` (1 = real token) or ``None``, ``step`` the 1-based training step. Updates
    ``running_phi`` in the forward and ``ema_gz`` (``nu``) in the backward, in place (see the module docstring).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_phi, ema_gz, mask, step: int, warmup_iters: int, eps: float,
                alpha_fwd: float, alpha_bkw: float):
        """``w * z + b``, ``z = x / sqrt(psi_B^2 + eps)`` in warm-up, else ``x / sqrt(psi^2 + eps)``; updates psi^2."""
        acc = torch.promote_types(x.dtype, running_phi.dtype)
        xa = x.to(acc)
        sq = xa.square() if mask is None else xa.square() * mask.to(acc)
        psi2 = sq.sum((0, 1)) / _real_count(x, mask)
        denom = psi2 if step <= warmup_iters else running_phi.to(acc)
        z = (xa * torch.rsqrt(denom + eps)).to(x.dtype)  # computed before running_phi changes below
        with torch.no_grad():
            if step < warmup_iters:
                running_phi.mul_((step - 1) / step).add_((psi2 / step).to(running_phi.dtype))
            running_phi.mul_(alpha_fwd).add_(psi2.to(running_phi.dtype), alpha=1 - alpha_fwd)
        ctx.save_for_backward(z, psi2, weight, mask)
        ctx.ema_gz = ema_gz  # mutated by backward: kept out of save_for_backward's version check
        ctx.eps, ctx.alpha_bkw = eps, alpha_bkw
        return torch.addcmul(bias, z, weight)

    @staticmethod
    def backward(ctx, grad_out):
        """The approximate gradients of ``x``, ``weight`` and ``bias`` (``None`` for the rest); updates ``nu``."""
        z, psi2, weight, mask = ctx.saved_tensors
        nu = ctx.ema_gz
        acc = psi2.dtype
        za, ga = z.to(acc), grad_out.to(acc)
        correction = (1 - ctx.alpha_bkw) * nu.to(acc) * za
        if mask is not None:
            correction = correction * mask.to(acc)
        g_hat = ga * weight.to(acc) - correction
        prod = g_hat * za if mask is None else g_hat * za * mask.to(acc)
        with torch.no_grad():
            nu.add_((prod.sum((0, 1)) / _real_count(z, mask)).to(nu.dtype))
        grad_x = (g_hat * torch.rsqrt(psi2 + ctx.eps)).to(z.dtype)
        grad_w = (grad_out * z).sum((0, 1)) if ctx.needs_input_grad[1] else None
        grad_b = grad_out.sum((0, 1)) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None, None


class PowerNorm(nn.Module):
    """PowerNorm: ``y = w * x' / sqrt(psi^2 + eps) + b`` on group-scaled tokens ``x'``.

    Running quadratic mean ``psi^2`` (the batch's during warm-up), approximate backward. Formulas and deviations: the
    module docstring.

    Args:
        dim: channels.
        num_groups: groups of the group-scaling step (the authors pass the attention heads).
        eps: epsilon of the quadratic-mean normalisation.
        alpha_fwd: momentum of the running quadratic mean ``psi^2``.
        alpha_bkw: momentum of the running gradient statistic ``nu``.
        warmup_iters: training steps that normalise with the batch's statistic.
        group_eps: epsilon of the group-scaling step.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(self, dim: int, num_groups: int = 1, eps: float = 1e-5, alpha_fwd: float = 0.9,
                 alpha_bkw: float = 0.9, warmup_iters: int = 10000, group_eps: float = 1e-5, *, device=None,
                 dtype=None):
        super().__init__()
        if num_groups < 1 or dim % num_groups:
            raise DTNBenchError(f"powernorm: dim {dim} is not divisible by {num_groups} groups")
        if warmup_iters < 0:
            raise DTNBenchError(f"powernorm: warmup_iters must be >= 0, got {warmup_iters}")
        self.dim, self.num_groups, self.eps, self.group_eps = dim, num_groups, eps, group_eps
        self.alpha_fwd, self.alpha_bkw, self.warmup_iters = alpha_fwd, alpha_bkw, int(warmup_iters)
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))
        self.register_buffer("running_phi", torch.ones(dim, device=device, dtype=dtype))
        self.register_buffer("ema_gz", torch.zeros(dim, device=device, dtype=dtype))
        self.register_buffer("iters", torch.zeros((), device=device, dtype=torch.long))

    def extra_repr(self) -> str:
        """The dimension, groups, ``eps``, momenta and warm-up steps, for ``repr``."""
        return (f"{self.dim}, groups={self.num_groups}, eps={self.eps}, alpha_fwd={self.alpha_fwd}, "
                f"alpha_bkw={self.alpha_bkw}, warmup_iters={self.warmup_iters}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the authors' buffers are [1, C, 1, 1] and [1]: same numbers, other shapes
        for name in ("running_phi", "ema_gz", "iters"):
            value, mine = state_dict.get(prefix + name), getattr(self, name)
            if isinstance(value, torch.Tensor) and value.shape != mine.shape and value.numel() == mine.numel():
                state_dict[prefix + name] = value.reshape(mine.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]``; in training, ``mask [B, T]`` (True = real token) keeps padding out of psi_B^2."""
        m = _mask_weights(x, mask)
        xs = group_scaling(x, self.num_groups, self.group_eps)
        if not self.training:
            scale = torch.rsqrt(self.running_phi + self.eps).to(x.dtype) * self.weight
            return torch.addcmul(self.bias, xs, scale)
        self.iters.add_(1)
        step = int(self.iters)  # a host sync on accelerators, as in the authors' code (.item())
        return PowerFunction.apply(xs, self.weight, self.bias, self.running_phi, self.ema_gz, m, step,
                                   self.warmup_iters, self.eps, self.alpha_fwd, self.alpha_bkw)


@register_norm("powernorm", NormInfo(
    label="PN", formula="w * x' / sqrt(psi^2 + eps) + b, x' = x / sqrt(E_{c in head} x^2 + eps) per token; psi^2 = "
    "E_{b,t} x'^2 of the batch in warm-up, then its running mean; approximate backward", macs_per_element=4,
    macs_passes="group scaling (sum of squares, scale), scale by 1 / sqrt(psi^2 + eps), affine (inference)",
    mask="real-tokens", paper="Shen et al., ICML 2020 (PowerNorm)", zoo_suffix="powernorm",
    published=("norm_comparison_top1",)), cls=PowerNorm)
def _powernorm(dim, *, num_heads=1, eps=1e-5, alpha_fwd=0.9, alpha_bkw=0.9, warmup_iters=10000, num_groups=None,
               group_eps=1e-5, device=None, dtype=None):
    return PowerNorm(dim, num_heads if num_groups is None else num_groups, eps=eps, alpha_fwd=alpha_fwd,
                     alpha_bkw=alpha_bkw, warmup_iters=warmup_iters, group_eps=group_eps, device=device, dtype=dtype)
