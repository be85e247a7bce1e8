"""Loading checkpoints into dtn-bench models.

``load_checkpoint(model, path)`` reads ``.pth`` / ``.pt`` / ``.bin`` (torch pickles, loaded with
``weights_only=True``) and ``.safetensors``; unwraps state dicts nested under ``model`` / ``state_dict`` /
``model_ema`` / ``state_dict_ema`` / ``module``; strips ``module.`` prefixes (DDP/DataParallel); and maps the
authors' ViT checkpoints (github wqshao126/DTN, ``vit_norm_mix.py``) onto the zoo: their parameter names already
match timm's, and the qkv biases their ViT lacks are filled with zeros, which computes exactly what their model did.
A checkpoint that does not fit is a one-line error naming the first missing/unexpected keys and shape mismatches.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from dtn_bench.errors import DTNBenchError

NESTING_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")


def read_state_dict(path: str | Path, *, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its flat, unwrapped state dict (``module.`` prefixes removed)."""
    p = Path(path)
    if not p.is_file():
        raise DTNBenchError(f"checkpoint {p} does not exist or is not a file")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p))
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is the user's file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DTNBenchError(f"cannot read checkpoint {p}: {reason[:200]}") from e
    sd = unwrap(obj, prefer_ema=prefer_ema, where=str(p))
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def unwrap(obj, *, prefer_ema: bool = False, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint object (nested under one of :data:`NESTING_KEYS`)."""
    order = ("model_ema", "state_dict_ema", "model", "state_dict", "module") if prefer_ema else NESTING_KEYS
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in order:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
            break
    raise DTNBenchError(f"{where}: no state dict found (looked under {', '.join(NESTING_KEYS)})")


def map_authors_vit(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the authors' ViT naming onto the zoo: identical names; absent qkv biases become zeros."""
    out = dict(sd)
    own = model.state_dict()
    for key, ref in own.items():
        if key.endswith("attn.qkv.bias") and key not in out and key.replace(".bias", ".weight") in out:
            out[key] = torch.zeros_like(ref)
    return out


def check_fit(sd: Mapping[str, torch.Tensor], model: nn.Module, *, where: str, debug: bool = False) -> None:
    """Raise a one-line :class:`DTNBenchError` if ``sd`` does not fit ``model`` exactly."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {list(sd[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    limit = None if debug else 3
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            shown = items[:limit]
            more = "" if limit is None or len(items) <= limit else f" (+{len(items) - limit} more)"
            parts.append(f"{label} {len(items)}: {', '.join(shown)}{more}")
    hint = "" if debug else "; --debug lists all"
    raise DTNBenchError(f"checkpoint {where} does not fit {type(model).__name__}: {'; '.join(parts)}{hint}")


def load_checkpoint(model: nn.Module, path: str | Path, *, prefer_ema: bool = False, debug: bool = False) -> dict:
    """Load ``path`` into ``model`` (strict) and return ``{"path", "sha256", "tensors"}``.

    Args:
        model: the model to fill.
        path: checkpoint file (.pth/.pt/.bin/.ckpt/.safetensors).
        prefer_ema: take ``model_ema`` / ``state_dict_ema`` when the file holds both plain and EMA weights.
        debug: list every mismatching key in the error.

    Raises:
        DTNBenchError: unreadable file, no state dict inside, or keys/shapes that do not fit.
    """
    sd = read_state_dict(path, prefer_ema=prefer_ema)
    sd = map_authors_vit(sd, model)
    check_fit(sd, model, where=str(path), debug=debug)
    model.load_state_dict(sd, strict=True)
    return {"path": str(path), "sha256": file_sha256(path), "tensors": len(sd)}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (checkpoint identity in result rows)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
