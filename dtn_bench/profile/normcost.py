"""An analytic count of the work the normalisation layers themselves do (the ``norm_gmacs`` column).

FLOP counters see matrix products only: every LayerNorm-style layer counts 0, and DTN counts just its inter-token
products. This module counts every normaliser by formula from the shapes it sees in one forward pass (forward
pre-hooks), per sample, in multiply-accumulates (MACs) like the ``gmacs`` column.

The formula is the normaliser's own: each registered normaliser declares its count beside its class
(:class:`dtn_bench.norms.NormInfo`: ``macs_per_element`` with the passes it is made of, plus ``inter_token_macs`` for
inter-token statistics), under one convention (:mod:`dtn_bench.norms.base`): one MAC for each multiply, add,
subtract, multiply-add or divide per element and one for each element-wise transcendental function, over the whole
input ``[N, T, C]`` of the layer (``N`` samples, windows for Swin; ``T`` tokens; ``C`` channels); per-token or
per-head scalars are not counted. A module is a normaliser when its class (or a base class) is registered
(:func:`dtn_bench.norms.info_of`; torch's ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.GroupNorm``, batch and instance norms
count as ``layernorm``, ``rmsnorm``, ``groupnorm``, ``batchnorm``, ``instancenorm``). ``dtn-bench list norms`` shows
every normaliser's count.

DTN's inter-token statistics (:func:`dtn_bench.norms.dtn.inter_token_macs`) come on top: 2-D, ``2 C T' (H' + W')``
per sample on the grid the statistics are taken on (separable ``P^h``; the dense ``T' x T'`` form of the authors'
code is ``2 C T'^2``, ``norm_gmacs_dense``; ViT-S layer: 4.2 M vs 29.5 M MACs); 1-D, one depthwise convolution of
``2 w + 1`` taps over ``2 C + H`` channels. A test checks these counts against torch's flop counter on the layer.

``norm_gmacs`` counts DTN as this package computes it; ``norm_gmacs_dense`` counts the authors' dense form (for
every other normaliser the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class NormMacs:
    """Totals of one counted forward pass (all samples of the pass), by registered normaliser name."""

    computed: int = 0
    dense: int = 0
    layers: int = 0
    by_norm: dict[str, int] = field(default_factory=dict)


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
        from dtn_bench.norms import info_of

        name, norm_info = info_of(module)
        computed, dense = norm_info.macs(module, tuple(args[0].shape))
        self.totals.computed += computed
        self.totals.dense += dense
        self.totals.layers += 1
        self.totals.by_norm[name] = self.totals.by_norm.get(name, 0) + computed

    def __enter__(self) -> NormMacCounter:
        from dtn_bench.norms import info_of

        for module in self.model.modules():
            if info_of(module) is not None:
                self._handles.append(module.register_forward_pre_hook(self._hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
