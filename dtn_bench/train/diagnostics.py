"""What each normaliser of a model has learnt, read every epoch: cheap enough to be always on.

Found generically (any module of the model, whatever its class, so a normaliser added later is read too):

- **Gated normalisers** (a module with a ``var_norm_weight`` parameter: DTN, ``dtn_var``): how much of the LN
  (intra-token) statistics each layer uses, ``ln_share_var = mean_h sigmoid(var_norm_weight_h)`` and, where there is a
  ``mean_norm_weight``, ``ln_share_mean`` likewise (DTN: ``mu = (1 - s(g)) mean_inter + s(g) mean_ln``, so 1 is pure
  LayerNorm and 0 pure inter-token statistics; both start at 0.5).
- **Point-wise normalisers** (a module with an ``alpha`` parameter: DyT ``w * tanh(alpha x) + b``, Derf
  ``w * erf(alpha x + s) + b``, ...): ``alpha`` and every other parameter that is not ``weight`` / ``bias`` (Derf's
  shift), each as its mean, and ``saturated_frac``: the fraction of the layer's units on a fixed batch of validation
  images whose squashed value ``f`` (the module run with ``weight = 1``, ``bias = 0``) is within 1% of the
  function's bound, ``|f| >= 0.99 sup|f|``, where ``sup|f|`` is the module's output on inputs of +-1e6 (1 for tanh and
  erf). A saturated unit passes almost no gradient.

Measurement only: :func:`measure` returns ``{(layer, metric): value}``.
"""

from __future__ import annotations

import torch
from torch import nn

SATURATION = 0.99
PROBE = 1e6


def gated_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules with a ``var_norm_weight`` parameter of their own (DTN and its variants)."""
    return [(n, m) for n, m in model.named_modules() if "var_norm_weight" in m._parameters]


def pointwise_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules with an ``alpha`` parameter of their own (DyT, Derf, ...)."""
    return [(n, m) for n, m in model.named_modules() if "alpha" in m._parameters]


def has_diagnostics(model: nn.Module) -> bool:
    """Whether the model has a layer :func:`measure` reads."""
    return bool(gated_layers(model) or pointwise_layers(model))


def _squashed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with its affine set to the identity (``weight = 1``, ``bias = 0``)."""
    from torch.func import functional_call

    override = {}
    for name, value in (("weight", 1.0), ("bias", 0.0)):
        p = module._parameters.get(name)
        if p is not None:
            override[name] = torch.full_like(p, value)
    return functional_call(module, override, (x,)) if override else module(x)


def _saturated(module: nn.Module, x: torch.Tensor) -> float | None:
    """The fraction of ``|f(x)| >= 0.99 sup|f|`` (``None`` when ``f`` is unbounded)."""
    probe = torch.full((1, 2, x.shape[-1]), PROBE, dtype=x.dtype, device=x.device)
    probe[:, 1] = -PROBE
    bound = _squashed(module, probe).abs().max()
    if not torch.isfinite(bound) or bound <= 0:
        return None
    f = _squashed(module, x)
    return float((f.abs() >= SATURATION * bound).float().mean())


@torch.no_grad()
def measure(model: nn.Module, images: torch.Tensor | None) -> dict[tuple[str, str], float]:
    """``{(layer, metric): value}`` of every gated and point-wise normaliser of ``model``.

    Args:
        model: the (unwrapped) model.
        images: a fixed batch for ``saturated_frac`` (``None``: parameters only).
    """
    out: dict[tuple[str, str], float] = {}
    for name, m in gated_layers(model):
        out[(name, "ln_share_var")] = float(torch.sigmoid(m.var_norm_weight.float()).mean())
        if "mean_norm_weight" in m._parameters:
            out[(name, "ln_share_mean")] = float(torch.sigmoid(m.mean_norm_weight.float()).mean())
    points = pointwise_layers(model)
    for name, m in points:
        for pname, p in m._parameters.items():
            if p is not None and pname not in ("weight", "bias"):
                out[(name, pname)] = float(p.float().mean())
    if points and images is not None:
        for name, frac in _saturation(model, points, images).items():
            out[(name, "saturated_frac")] = frac
    return out


def _saturation(model: nn.Module, points: list[tuple[str, nn.Module]], images: torch.Tensor) -> dict[str, float]:
    """``saturated_frac`` of each point-wise layer on one eval-mode forward pass of ``images``."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, args, res, key=name: inputs.__setitem__(key, args[0]))
             for name, m in points]
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    out = {}
    for name, m in points:
        frac = _saturated(m, inputs[name]) if name in inputs else None
        if frac is not None:
            out[name] = frac
    return out
