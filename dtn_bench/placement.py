"""Where the normaliser sits in a transformer block: ``pre``, ``post`` or ``peri`` (``--placement``).

For a residual sublayer ``F`` (attention or MLP) with normalisers ``N`` (``N_in``, ``N_out`` for peri):

* ``pre`` (dtn-bench's default, the ViT / GPT-2 block): ``x = x + F(N(x))``;
* ``post`` (the original Transformer): ``x = N(x + F(x))``;
* ``peri`` (Kim et al., "Peri-LN", ICML 2025, arXiv 2502.02732): ``x = x + N_out(F(N_in(x)))``, a normaliser on the
  sublayer's input and one on its output, each its own layer with its own parameters.

Where a block scales or drops its residual branch (timm's LayerScale and DropPath, the LRA encoder's residual
dropout), ``F = outer(inner(.))`` with ``outer`` that scaling / dropping, and ``N_out`` sits between them:
``x + outer(N_out(inner(N_in(x))))``; with ``outer`` the identity this is the formula above. A padding mask, where
the model has one, goes to every normaliser of the block (so DTN's rule, that padding never enters a real token's
statistics, holds in every slot); prefix tokens (class, distillation) reach every slot unchanged, and every
normaliser of a block is built with the same context (heads, grid, prefix tokens). A model's final norm is kept in
every placement.

Placement is a setting of the block, independent of which normaliser fills the slots; it is recorded with the
results (config, rows, run keys, table labels). :func:`residual` is the one implementation of the three; the vision
models use it through :class:`~dtn_bench.models.blocks.PlacedBlock`, which adopts the sublayers of timm's pre-norm
``Block`` (no fork of the architecture), the LRA encoder through its own block. This module imports no torch, so a
config checks its placement cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dtn_bench.errors import DTNBenchError

if TYPE_CHECKING:  # torch is not imported here: configs check a placement without it
    import torch
    from torch import nn

PLACEMENTS = ("pre", "post", "peri")
"""The placements, default first."""
DEFAULT = "pre"


def check_placement(placement: str, where: str = "--placement") -> str:
    """``placement`` when it is one of :data:`PLACEMENTS`, else a one-line :class:`DTNBenchError` naming ``where``."""
    if placement not in PLACEMENTS:
        raise DTNBenchError(f"{where} {placement!r}: choose {', '.join(PLACEMENTS)}")
    return placement


def _norm(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return norm(x) if mask is None else norm(x, mask)


def residual(x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], norm: nn.Module, placement: str, *,
             outer: Callable[[torch.Tensor], torch.Tensor] | None = None, norm_out: nn.Module | None = None,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """One residual sublayer with its normaliser(s) at ``placement`` (module docstring).

    Args:
        x: the residual stream ``[B, T, C]``.
        inner: the sublayer (attention, MLP).
        norm: ``N`` (pre, post) or ``N_in`` (peri).
        placement: ``pre``, ``post`` or ``peri``.
        outer: scaling / dropping of the branch (LayerScale, DropPath, dropout); ``None``: the identity.
        norm_out: ``N_out`` (peri only).
        mask: padding mask ``[B, T]`` (True = real token) for the normalisers; ``None``: they are called without.

    Returns:
        The new residual stream.
    """
    def branch(h: torch.Tensor) -> torch.Tensor:
        return h if outer is None else outer(h)

    if placement == "pre":
        return x + branch(inner(_norm(norm, x, mask)))
    if placement == "post":
        return _norm(norm, x + branch(inner(x)), mask)
    if placement == "peri":
        return x + branch(_norm(norm_out, inner(_norm(norm, x, mask)), mask))
    raise DTNBenchError(f"placement {placement!r}: choose {', '.join(PLACEMENTS)}")
