"""Loading checkpoints into dtn-bench models.

``load_checkpoint(model, path)`` reads ``.pth`` / ``.pt`` / ``.bin`` (torch pickles, loaded with
``weights_only=True``) and ``.safetensors``; unwraps state dicts nested under ``model`` / ``state_dict`` /
``model_ema`` / ``state_dict_ema`` / ``module``; strips ``module.`` prefixes (DDP/DataParallel); and maps the
authors' ViT checkpoints (github wqshao126/DTN, ``vit_norm_mix.py``) onto the zoo: their parameter names already
match timm's, and the qkv biases their ViT lacks are filled with zeros, which computes exactly what their model did.
A checkpoint that does not fit is a one-line error naming the first missing/unexpected keys and shape mismatches.

EMA weights: a file saved by timm's ``CheckpointSaver`` (the authors' ``train.py``) holds ``state_dict`` and
``state_dict_ema`` (older timm and DeiT files: ``model`` and ``model_ema``); the authors' reported accuracies are those
of the EMA weights. As timm's own ``load_checkpoint(use_ema=True)`` does, the EMA set is taken when the file has one
(``ema=False``, the CLI's ``--no-ema``, takes the raw one), and :func:`load_checkpoint` says which set it loaded
(``weights``: ``ema`` or ``raw``).
"""

from __future__ import annotations

import argparse
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dtn_bench.errors import DTNBenchError

NESTING_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")
EMA_KEYS = ("state_dict_ema", "model_ema")
"""Where a checkpoint keeps its EMA weights, in the order timm's ``load_checkpoint`` looks (``CheckpointSaver``: the
first; DeiT / older timm: the second)."""


@dataclass(frozen=True)
class StateDict:
    """The weights read from a checkpoint file.

    Attributes:
        tensors: the flat state dict (``module.`` prefixes removed).
        weights: ``ema`` (the file's EMA set) or ``raw``.
        key: where in the file they were (``state_dict_ema``, ``state_dict``, ...; ``""`` for a flat file).
        has_ema: the file holds an EMA set (whether or not it was taken).
        placement: the block placement the file records (``args.placement`` of a ``dtn-bench train`` checkpoint);
            ``None`` when it records none (the authors' files, timm's, a flat state dict).
    """

    tensors: dict[str, torch.Tensor]
    weights: str
    key: str
    has_ema: bool
    placement: str | None = None


def file_kind(path: str | Path, what: str = "checkpoint") -> str:
    """What a weights file is, from its first bytes: ``zip``, ``pickle`` or ``safetensors``.

    ``zip`` is what torch.save writes, ``pickle`` an older torch.save (or a plain Python pickle).

    Raises:
        DTNBenchError: the file is empty, text, or none of the three (one line saying which, naming the file).
    """
    p = Path(path)
    try:
        with p.open("rb") as handle:
            head = handle.read(512)
            size = p.stat().st_size
    except OSError as e:
        raise DTNBenchError(f"cannot read {what} {p}: {e.strerror or type(e).__name__}") from None
    if not head:
        raise DTNBenchError(f"cannot read {what} {p}: the file is empty (0 bytes)")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[0] == 0x80:  # the PROTO opcode every pickle of protocol 2 or later starts with
        return "pickle"
    if len(head) > 8 and 0 < int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{":
        return "safetensors"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        start = " ".join(text.split())[:40]
        raise DTNBenchError(f"cannot read {what} {p}: it is a text file, not a checkpoint (it begins {start!r})")
    raise DTNBenchError(f"cannot read {what} {p}: not a checkpoint (neither a torch.save file nor safetensors; it "
                        f"begins with the bytes {head[:8].hex(' ')})")


def refusal_reason(error: BaseException) -> str:
    """Why torch's weights-only loader (or safetensors) refused a file, in one line, without torch's advice.

    torch's message suggests loading again with ``weights_only=False``, which would run whatever the pickle asks for;
    that advice is never passed on. A blocked global is named (``posix.system``): a weights file never needs one.
    """
    text = str(error)
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return (f"refused: it would import {blocked.group(1)}, which a weights file never needs (an unsafe pickle; "
                "read with torch.load(weights_only=True), so nothing in it ran)")
    opcode = re.search(r"Unsupported operand (\d+)", text)
    if opcode:
        return (f"refused: a pickle with opcode {opcode.group(1)}, which torch's weights-only loader does not "
                "accept (not a torch weights file; nothing in it ran)")
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__  # its first sentence


def load_weights_only(path: str | Path, allowed: list | tuple = ()):
    """``torch.load(path, weights_only=True)`` on the CPU, ``allowed`` globals added, torch's pickle warnings muted.

    A plain Python pickle makes torch warn about its protocol before it refuses the file; the refusal is the message.
    """
    import warnings

    with warnings.catch_warnings(), torch.serialization.safe_globals(list(allowed)):
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _read_file(p: Path):
    if not p.is_file():
        raise DTNBenchError(f"checkpoint {p} does not exist or is not a file")
    kind = file_kind(p)
    try:
        if kind == "safetensors" or p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        return load_weights_only(p, [argparse.Namespace])
    except Exception as e:  # noqa: BLE001 - any reader failure is the user's file
        raise DTNBenchError(f"cannot read checkpoint {p}: {refusal_reason(e)}") from e


def _strip_module(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def read_weights(path: str | Path, *, ema: bool = True) -> StateDict:
    """Read a checkpoint file: its EMA weights when it has them and ``ema`` is true, else its raw weights."""
    p = Path(path)
    obj = _read_file(p)
    placement = _recorded_placement(obj)
    ema_key = next((k for k in EMA_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)
                    and obj[k]), None)
    if ema_key is not None and ema:
        tensors = unwrap(obj[ema_key], where=f"{p} ({ema_key})")
        return StateDict(_strip_module(tensors), "ema", ema_key, True, placement)
    raw = {k: v for k, v in obj.items() if k not in EMA_KEYS} if ema_key is not None else obj
    key = next((k for k in NESTING_KEYS if isinstance(raw, Mapping) and isinstance(raw.get(k), Mapping)), "")
    if ema_key is not None and not key:
        raise DTNBenchError(f"checkpoint {p} holds EMA weights ({ema_key}) but no raw state dict (looked under "
                            f"{', '.join(k for k in NESTING_KEYS if k not in EMA_KEYS)}); drop --no-ema")
    return StateDict(_strip_module(unwrap(raw, where=str(p))), "raw", key, ema_key is not None, placement)


def _recorded_placement(obj) -> str | None:
    """``args.placement`` of a checkpoint (timm's ``args`` is an ``argparse.Namespace``; a dict is read too)."""
    args = obj.get("args") if isinstance(obj, Mapping) else None
    value = args.get("placement") if isinstance(args, Mapping) else getattr(args, "placement", None)
    return value if isinstance(value, str) else None


def read_state_dict(path: str | Path, *, ema: bool = True) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its flat, unwrapped state dict (``module.`` prefixes removed).

    The state dict holds the EMA weights when the file has them (unless ``ema`` is false), else the raw ones (see
    :func:`read_weights`).
    """
    return read_weights(path, ema=ema).tensors


def unwrap(obj, *, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint object (nested under one of :data:`NESTING_KEYS`, in that order)."""
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in NESTING_KEYS:
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


def load_checkpoint(model: nn.Module, path: str | Path, *, ema: bool = True, debug: bool = False) -> dict:
    """Load ``path`` into ``model`` (strict) and return what was loaded.

    Args:
        model: the model to fill.
        path: checkpoint file (.pth/.pt/.bin/.ckpt/.safetensors).
        ema: take the EMA weights (``state_dict_ema`` / ``model_ema``) when the file has them, as timm does;
            ``False`` takes the raw ones.
        debug: list every mismatching key in the error.

    Returns:
        ``{"path", "sha256", "tensors", "weights" ("ema" | "raw"), "key" (where in the file), "has_ema",
        "message"}``; ``message`` is the one line to show (which set was loaded, and a note when ``ema=False``
        was asked of a file without EMA weights).

    Raises:
        DTNBenchError: unreadable file, no state dict inside, keys/shapes that do not fit, or a file that records
            another placement than ``model.placement``.
    """
    read = read_weights(path, ema=ema)
    have = getattr(model, "placement", None)
    if read.placement is not None and have is not None and read.placement != have:
        # post / peri blocks name their norms as pre blocks do, so the weights would load and silently mean else
        raise DTNBenchError(f"checkpoint {path} was trained with --placement {read.placement}, the model was built "
                            f"with --placement {have}: pass --placement {read.placement}")
    sd = map_authors_vit(read.tensors, model)
    where = f"{path} (EMA weights, {read.key})" if read.weights == "ema" else str(path)
    try:
        check_fit(sd, model, where=where, debug=debug)
    except DTNBenchError as e:
        if read.weights == "ema":
            raise DTNBenchError(f"{e}; --no-ema loads the raw weights instead") from None
        raise
    model.load_state_dict(sd, strict=True)
    if read.weights == "ema":
        message = f"checkpoint {path}: loaded the EMA weights ({read.key}); --no-ema loads the raw ones"
    elif read.has_ema:
        message = f"checkpoint {path}: loaded the raw weights ({read.key}, --no-ema); the file also holds EMA weights"
    else:
        note = "; note: it holds no EMA weights, so --no-ema changes nothing" if not ema else ""
        message = f"checkpoint {path}: loaded its weights ({read.key or 'a flat state dict'}, raw){note}"
    return {"path": str(path), "sha256": file_sha256(path), "tensors": len(sd), "weights": read.weights,
            "key": read.key, "has_ema": read.has_ema, "message": message}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (checkpoint identity in result rows)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
