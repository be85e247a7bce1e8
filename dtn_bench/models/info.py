"""What a model is made of: parameters, MACs, and which normaliser sits in which layers."""

from __future__ import annotations

from pathlib import Path

import torch


def count_gmacs(model: torch.nn.Module, img_size: int = 224) -> float:
    """GMACs of one image at the model's input size (``img_size`` when it has none): torch's flop counter / 2, the
    vision papers' "FLOPs". Matrix products inside DTN count; LayerNorm-style elementwise work counts 0."""

    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or (img_size, img_size)
    p = next(model.parameters())
    return count_input_gmacs(model, torch.zeros(1, 3, *size, device=p.device, dtype=p.dtype))


def count_input_gmacs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GMACs of one inference forward of ``model`` on the example input ``x`` (torch's flop counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
    finally:
        model.train(was_training)
    return fc.get_total_flops() / 2 / 1e9


def norm_layout(model: torch.nn.Module) -> list[tuple[str, str, str]]:
    """``[(layers, normaliser class, details)]`` grouping consecutive blocks that use the same normaliser."""
    from dtn_bench.models.vit import norm_slots

    groups: list[list] = []
    for name, mod in norm_slots(model):
        block = int(name.split(".")[1])
        kind = type(mod).__name__
        detail = mod.extra_repr() if hasattr(mod, "extra_repr") else ""
        if groups and groups[-1][1] == kind and groups[-1][2] == detail:
            groups[-1][0].add(block)
        else:
            groups.append([{block}, kind, detail])
    out = []
    for blocks, kind, detail in groups:
        lo, hi = min(blocks), max(blocks)
        out.append((f"blocks {lo}-{hi} (norm1, norm2)" if hi > lo else f"block {lo} (norm1, norm2)", kind, detail))
    final = getattr(model, "norm", None)
    if isinstance(final, torch.nn.Module) and not isinstance(final, torch.nn.Identity):
        out.append(("final norm", type(final).__name__, final.extra_repr()))
    return out


def describe(name: str, *, norm: str | None = None, checkpoint: str | Path | None = None, macs: bool = True,
             debug: bool = False) -> dict:
    """Parameters, optional GMACs, checkpoint identity and norm layout of a model."""
    from dtn_bench.checkpoint import load_checkpoint
    from dtn_bench.models.vit import create

    model = create(name, norm=norm)
    info = {"name": name, "norm": norm, "params": sum(p.numel() for p in model.parameters())}
    if checkpoint is not None:
        info["checkpoint"] = load_checkpoint(model, checkpoint, debug=debug)
    info["gmacs"] = count_gmacs(model) if macs else None
    info["norms"] = norm_layout(model)
    return info
