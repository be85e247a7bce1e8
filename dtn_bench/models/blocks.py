"""timm's pre-norm vision-transformer block with its normalisers at a placement (:mod:`dtn_bench.placement`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dtn_bench.errors import DTNBenchError
from dtn_bench.placement import DEFAULT, check_placement, residual

_SUBLAYERS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")


class PlacedBlock(nn.Module):
    """timm's pre-norm vision-transformer ``Block`` with its normalisers at ``placement``.

    ``x = residual(x, Attn, norm1, outer=DropPath1(LS1(.)), norm_out=norm1_out)``, then the same with ``Mlp``,
    ``norm2``, ``DropPath2(LS2(.))``, ``norm2_out`` (:func:`residual`). The block's sublayers are adopted, not copied,
    under timm's names, so the state-dict keys of ``pre`` and ``post`` are timm's; ``peri`` adds ``norm1_out`` and
    ``norm2_out``.

    Args:
        block: a ``timm.models.vision_transformer.Block``.
        placement: ``pre``, ``post`` or ``peri``.
        norm1_out: peri only: ``N_out`` of the attention sublayer.
        norm2_out: peri only: ``N_out`` of the MLP sublayer.
    """

    def __init__(self, block: nn.Module, placement: str, norm1_out: nn.Module | None = None,
                 norm2_out: nn.Module | None = None):
        super().__init__()
        self.placement = check_placement(placement, "PlacedBlock: placement")
        for name in _SUBLAYERS:
            setattr(self, name, getattr(block, name))
        if (placement == "peri") != (norm1_out is not None and norm2_out is not None):
            raise DTNBenchError("PlacedBlock: peri takes norm1_out and norm2_out, pre and post take neither")
        if placement == "peri":
            self.norm1_out = norm1_out
            self.norm2_out = norm2_out

    def extra_repr(self) -> str:
        """The placement, for ``repr``."""
        return f"placement={self.placement}"

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """Apply the block to ``x [B, T, C]`` (``attn_mask`` / ``is_causal`` go to the attention, as in timm)."""
        kw = {} if attn_mask is None else {"attn_mask": attn_mask}
        if is_causal:
            kw["is_causal"] = True
        out1, out2 = getattr(self, "norm1_out", None), getattr(self, "norm2_out", None)
        x = residual(x, lambda h: self.attn(h, **kw), self.norm1, self.placement,
                     outer=lambda h: self.drop_path1(self.ls1(h)), norm_out=out1)
        return residual(x, self.mlp, self.norm2, self.placement, outer=lambda h: self.drop_path2(self.ls2(h)),
                        norm_out=out2)


def place_blocks(model: nn.Module, placement: str, make_norm: Callable[[int, str, nn.Module], nn.Module]) -> list[str]:
    """Put the normalisers of every block of a timm vision transformer at ``placement``, in place.

    ``pre`` changes nothing (timm's ``Block`` is the pre-norm block). ``post`` and ``peri`` replace each block by a
    :class:`PlacedBlock` over its sublayers; for ``peri`` ``make_norm(index, slot, like)`` builds the output norm of
    block ``index`` for ``slot`` (``attn`` or ``ffn``), ``like`` being that sublayer's input norm.

    Args:
        model: a timm ``VisionTransformer`` (its ``blocks`` must be timm's ``Block``).
        placement: ``pre``, ``post`` or ``peri``.
        make_norm: builds a peri output norm.

    Returns:
        The qualified names of the norms added (``blocks.0.norm1_out``, ...; empty for pre and post).

    Raises:
        DTNBenchError: an unknown placement, or a block that is not timm's pre-norm ``Block``.
    """
    from timm.models.vision_transformer import Block

    check_placement(placement)
    model.placement = placement
    if placement == DEFAULT:
        return []
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise DTNBenchError(f"--placement {placement}: {type(model).__name__} has no .blocks")
    for i, blk in enumerate(blocks):
        if type(blk) is not Block:
            raise DTNBenchError(f"--placement {placement}: blocks.{i} is a {type(blk).__name__}, not timm's pre-norm "
                                "Block; only pre is available for this model")
    added = []
    for i, blk in enumerate(list(blocks)):
        outs = {}
        if placement == "peri":
            outs = {"norm1_out": make_norm(i, "attn", blk.norm1), "norm2_out": make_norm(i, "ffn", blk.norm2)}
            added += [f"blocks.{i}.{name}" for name in outs]
        blocks[i] = PlacedBlock(blk, placement, **outs)
    return added
