"""An analytic count of the work the normalisation layers themselves do (the ``norm_gmacs`` column).

FLOP counters see matrix products only: every LayerNorm-style layer counts 0, and DTN counts just its inter-token
products. This module counts every normaliser by formula from the shapes it sees in one forward pass (forward
pre-hooks), per sample, in multiply-accumulates (MACs) like the ``gmacs`` column.

Convention: one MAC for each multiply, add, subtract, multiply-add or divide per element, taken over the whole input
``[N, T, C]`` of the layer (``N`` samples, windows for Swin; ``T`` tokens; ``C`` channels); per-token or per-head
scalars (square roots, sigmoids, reductions of already-reduced sums) are not counted.

==========================  ===========  =======================================================================
normaliser                  MACs / elem  passes
==========================  ===========  =======================================================================
LayerNorm, InstanceNorm,    4            sum (mean), sum of squares (variance), ``(x - mu) * r``, affine
GroupNorm
RMSNorm, ScaleNorm          3            sum of squares, scale, gain
BatchNorm (eval)            2            ``(x - running_mean) * r``, affine
DTN (``dtn``, ``dtn_var``)  9            RMS pre-normalisation (sum of squares, scale), LN sum, ``xn^2``,
                                         ``var_in = m2 - A^2``, gate lerp of mean and of variance, standardise,
                                         affine
==========================  ===========  =======================================================================

DTN's inter-token statistics (mean and second moment, per head and channel, patch tokens only) come on top:

* 2-D, as this package computes them (``P^h`` separable, see :mod:`dtn_bench.norms.dtn`): ``2 C T' (H' + W')`` per
  sample on the ``H' x W'`` grid the statistics are taken on (``T' = H' W'``; the pooled grid with ``dtn_pool``,
  whose average pooling adds ``C T`` more); the dense ``T' x T'`` form of the authors' code is ``2 C T'^2``
  (``norm_gmacs_dense``). ViT-S layer: 4.2 M vs 29.5 M MACs.
* 1-D (sequences), as computed by the torch operations: one depthwise convolution along the sequence of ``2 w + 1``
  taps over ``2 C + H`` channels (the two maps plus one normalising row per head), ``(2 C + H) L (2 w + 1)`` per
  sequence, ``w = DTN.effective_window(L)`` (on the CPU the window narrowed to the kernel's fp32 support, 4 to 9
  tokens with the local init); dense: ``2 C L^2``. The fused CPU kernels do the same work on real tokens only. A test
  checks these counts against torch's flop counter on the layer.

``norm_gmacs`` counts DTN as this package computes it; ``norm_gmacs_dense`` counts the authors' dense form (for
every other normaliser the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

ELEMENTWISE_MACS: dict[str, int] = {
    "LayerNorm": 4,
    "InstanceNorm": 4,
    "GroupNorm": 4,
    "RMSNorm": 3,
    "ScaleNorm": 3,
    "BatchNorm": 2,
    "DTN": 9,
}
"""Per-element MACs by normaliser kind (see the module docstring)."""


def norm_kind(module: nn.Module) -> str | None:
    """The normaliser kind of ``module`` (a key of :data:`ELEMENTWISE_MACS`), or ``None`` for other modules."""
    from dtn_bench.norms import DTN, BatchNorm, GroupNorm, InstanceNorm, RMSNorm, ScaleNorm

    if isinstance(module, DTN):
        return "DTN"
    if isinstance(module, (nn.LayerNorm,)):
        return "LayerNorm"
    if isinstance(module, (RMSNorm, getattr(nn, "RMSNorm", RMSNorm))):
        return "RMSNorm"
    if isinstance(module, ScaleNorm):
        return "ScaleNorm"
    if isinstance(module, (BatchNorm, nn.modules.batchnorm._BatchNorm)):
        return "BatchNorm"
    if isinstance(module, (InstanceNorm, nn.modules.instancenorm._InstanceNorm)):
        return "InstanceNorm"
    if isinstance(module, (GroupNorm, nn.GroupNorm)):
        return "GroupNorm"
    return None


def dtn_inter_token_macs(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs of one DTN layer's inter-token statistics for an input of ``shape = [N, T, C]``.

    Args:
        module: a :class:`~dtn_bench.norms.DTN`.
        shape: its input shape.

    Returns:
        ``(as computed here, dense T x T form)``, summed over the ``N`` samples.
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
    dense = n * 2 * c * length * length
    return n * (2 * c + module.num_heads) * length * (2 * w + 1), dense


@dataclass
class NormMacs:
    """Totals of one counted forward pass (all samples of the pass), by kind."""

    computed: int = 0
    dense: int = 0
    layers: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class NormMacCounter:
    """Context manager counting normaliser MACs over the forward passes run inside it.

    Example::

        with NormMacCounter(model) as nc:
            model(x)
        per_sample_gmacs = nc.totals.computed / x.shape[0] / 1e9
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.totals = NormMacs()
        self._handles: list = []

    def _hook(self, module: nn.Module, args) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            return
        kind = norm_kind(module)
        x = args[0]
        elementwise = ELEMENTWISE_MACS[kind] * x.numel()
        computed = dense = elementwise
        if kind == "DTN":
            inter, inter_dense = dtn_inter_token_macs(module, tuple(x.shape))
            computed += inter
            dense += inter_dense
        self.totals.computed += computed
        self.totals.dense += dense
        self.totals.layers += 1
        self.totals.by_kind[kind] = self.totals.by_kind.get(kind, 0) + computed

    def __enter__(self) -> NormMacCounter:
        for module in self.model.modules():
            if norm_kind(module) is not None:
                self._handles.append(module.register_forward_pre_hook(self._hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
