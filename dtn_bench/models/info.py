"""What a model is made of: parameters, MACs, and which normaliser sits in which layers."""

from __future__ import annotations

from pathlib import Path

import torch


def _sdpa_forward_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


# Fused attention ops whose formula torch's flop counter lacks (torch 2.14: it counts the CUDA flash / efficient /
# cuDNN kernels but not the CPU flash kernel, the overrideable (XPU/PrivateUse1) one or the MPS math op, which then
# count 0). Each gets torch's own SDPA formula, so one model has one count whichever kernel a device or a torch version
# dispatches to. The arguments are the op's schema, tensors given as shapes: (query, key, value, ...) forward,
# (grad_out, query, key, value, ...) backward.
SDPA_FORWARD_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable",
                    "_scaled_dot_product_attention_math_for_mps", "_scaled_dot_product_flash_attention",
                    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
SDPA_BACKWARD_OPS = ("_scaled_dot_product_flash_attention_for_cpu_backward",
                     "_scaled_dot_product_fused_attention_overrideable_backward",
                     "_scaled_dot_product_flash_attention_backward", "_scaled_dot_product_efficient_attention_backward",
                     "_scaled_dot_product_cudnn_attention_backward")


def sdpa_flop_formulas() -> dict:
    """``{aten op packet: flop formula}`` for every fused scaled-dot-product-attention op this torch has.

    The formula is torch's ``sdpa_flop_count`` (forward: ``2 B H Lq Lk (E + Ev)`` FLOPs) and
    ``sdpa_backward_flop_count`` (the scores recomputed, then the four gradient products), the ones torch registers
    for the CUDA kernels; ops this torch version does not have are left out.
    """
    import torch

    out = {}
    for names, formula in ((SDPA_FORWARD_OPS, _sdpa_forward_flops), (SDPA_BACKWARD_OPS, _sdpa_backward_flops)):
        for name in names:
            op = getattr(torch.ops.aten, name, None)
            if op is not None:
                out[op] = formula
    return out


def flop_counter():
    """Torch's ``FlopCounterMode`` (no display) with :func:`sdpa_flop_formulas` added.

    It counts fused attention on every device and torch version (for the CPU flash kernel torch's own counter records
    nothing).
    """
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=sdpa_flop_formulas())


def count_gmacs(model: torch.nn.Module, img_size: int = 224) -> float:
    """GMACs of one image at the model's input size (``img_size`` when it has none): the flop counter / 2.

    That is the vision papers' "FLOPs". Matrix products inside DTN and attention (fused or not) count; LayerNorm-style
    elementwise work counts 0.
    """
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or (img_size, img_size)
    p = next(model.parameters())
    return count_input_gmacs(model, torch.zeros(1, 3, *size, device=p.device, dtype=p.dtype))


def count_input_gmacs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GMACs of one inference forward of ``model`` on the example input ``x`` (:func:`flop_counter` / 2)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), flop_counter() as fc:
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


def describe(name: str, *, norm: str | None = None, checkpoint: str | Path | None = None, ema: bool = True,
             pretrained: bool = False, pretrained_file: str | Path | None = None, macs: bool = True,
             debug: bool = False) -> dict:
    """Parameters, optional GMACs, weights identity and norm layout.

    ``checkpoint`` (which weight set, EMA or raw, is said) or timm's pretrained weights (``pretrained`` /
    ``pretrained_file``: ``info["pretrained"]`` holds ``source``, ``sha256``, ``message`` and ``notes``, what a
    ``norm`` conversion carried over).
    """
    from dtn_bench.checkpoint import load_checkpoint
    from dtn_bench.models.pretrained import check_request
    from dtn_bench.models.vit import conversion_note, create

    check_request(name, pretrained=pretrained, pretrained_file=pretrained_file, checkpoint=checkpoint, ema=ema)
    model = create(name, norm=norm, pretrained=pretrained, pretrained_file=None if pretrained_file is None
                   else str(pretrained_file), debug=debug)
    info = {"name": name, "norm": norm, "params": sum(p.numel() for p in model.parameters())}
    if checkpoint is not None:
        info["checkpoint"] = load_checkpoint(model, checkpoint, ema=ema, debug=debug)
    weights = getattr(model, "pretrained_weights", None)
    if weights is not None:
        note = conversion_note(model, pretrained=True)
        info["pretrained"] = {"source": weights.source, "sha256": weights.sha256, "message": weights.message,
                              "notes": [note] if note else []}
    info["gmacs"] = count_gmacs(model) if macs else None
    info["norms"] = norm_layout(model)
    return info
