"""Stock timm models with timm's own pretrained weights (``--pretrained``, ``--pretrained-file PATH``).

Both go through ``timm.create_model(name, pretrained=True)``, so timm's loader does the work it does for everyone
(:func:`timm.models.load_pretrained`: the model's checkpoint filter, position-embedding resampling, a classifier
dropped when ``num_classes`` differs). ``--pretrained`` takes the weights timm's pretrained config names (the
Hugging Face hub or a URL, downloaded into their caches when online); ``--pretrained-file PATH`` puts a local file
into that config (``pretrained_cfg_overlay=dict(file=PATH)``), the same code path offline. What was loaded is
recorded as ``weights_source`` (``timm:<architecture>.<tag>`` or ``file:PATH``) and ``weights_sha256`` (the file's
SHA-256; for hub weights the cached file's, or, when timm's cache cannot be found, ``tensors:`` and the SHA-256 of the
loaded tensors).

Zoo models (``vit_s_dtn``, ...) have no pretrained weights in timm: their weights come from ``--checkpoint PATH``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from dtn_bench.errors import DTNBenchError


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a model's pretrained weights came from.

    Attributes:
        source: ``timm:<architecture>.<tag>`` (timm's release) or ``file:PATH`` (``--pretrained-file``).
        sha256: the weights file's SHA-256 (``tensors:<hex>`` when only the loaded tensors could be hashed).
        message: the one line to show.
    """

    source: str
    sha256: str
    message: str


def check_request(name: str, *, pretrained: bool, pretrained_file: str | Path | None,
                  checkpoint: str | Path | None = None, ema: bool = True) -> None:
    """One-line errors for a pretrained request that cannot work, before any model is built.

    Args:
        name: the ``--model`` name.
        pretrained: ``--pretrained`` was given.
        pretrained_file: ``--pretrained-file PATH`` (implies ``pretrained``).
        checkpoint: ``--checkpoint PATH``: weights from elsewhere, refused together with either.
        ema: ``False`` (``--no-ema``) applies to ``--checkpoint`` only.
    """
    if not (pretrained or pretrained_file is not None):
        return
    flag = "--pretrained-file" if pretrained_file is not None else "--pretrained"
    if checkpoint is not None:
        raise DTNBenchError(f"{flag} and --checkpoint both give the weights: use one")
    if not ema:
        raise DTNBenchError(f"--no-ema applies to --checkpoint; {flag} loads what timm's loader takes (a file's EMA "
                            "weights when it holds them)")
    from dtn_bench.models.vit import MODELS

    if name in MODELS:
        raise DTNBenchError(f"{name} is a dtn-bench zoo model: timm has no pretrained weights for it; load a "
                            "checkpoint with --checkpoint PATH")
    if pretrained_file is not None:
        p = Path(pretrained_file)
        if not p.is_file():
            raise DTNBenchError(f"--pretrained-file {p} does not exist or is not a file")
        from dtn_bench.checkpoint import file_kind

        file_kind(p, "--pretrained-file")  # an empty, text or foreign file is said so here, not by timm's loader
        return
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        return  # create() says "unknown model" with its near matches
    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.url or cfg.hf_hub_id or cfg.file or cfg.state_dict):
        raise DTNBenchError(f"{name} has no pretrained weights in timm (see timm.list_pretrained()); "
                            "--pretrained-file PATH loads your own through timm's loader")


def _fit_summary(text: str, debug: bool) -> str | None:
    """The one-line form of a torch ``load_state_dict`` error (several lines), as ``check_fit`` writes it.

    ``None`` when ``text`` is not such an error.
    """
    if "Error(s) in loading state_dict" not in text:
        return None
    limit = None if debug else 3
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)")):
        m = re.search(pattern, text)
        if m:
            keys = re.findall(r'"([^"]+)"', m.group(1))
            parts.append((label, keys))
    size = r"torch\.Size\(\[([\d, ]*)\]\)"
    mismatch = rf"size mismatch for ([^:]+): copying a param with shape {size} from checkpoint, the shape in " \
               rf"current model is {size}"
    shapes = [f"{k} [{a}] vs [{b}]" for k, a, b in re.findall(mismatch, text)]
    if shapes:
        parts.append(("shape mismatch", shapes))
    out = []
    for label, items in parts:
        more = "" if limit is None or len(items) <= limit else f" (+{len(items) - limit} more)"
        out.append(f"{label} {len(items)}: {', '.join(items[:limit])}{more}")
    return "; ".join(out) + ("" if debug else "; --debug lists all")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _hub_file(cfg: dict) -> Path | None:
    """The file timm's loader read for a hub / URL release, found in the Hugging Face or torch hub cache."""
    hub_id = cfg.get("hf_hub_id")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        try_to_load_from_cache = None
    if hub_id and try_to_load_from_cache is not None:  # timm reads the hub whenever it can (not the URL)
        repo, _, revision = hub_id.partition("@")
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:  # timm's order: safetensors first
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        return None
    url = cfg.get("url")
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url.split("?")[0]).name
        if path.is_file():
            return path
    return None


def tensors_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes, in key order)."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(f"{key}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def create_pretrained(name: str, *, pretrained_file: str | Path | None = None, debug: bool = False,
                      **kwargs) -> tuple[torch.nn.Module, PretrainedWeights]:
    """A stock timm model with timm's pretrained weights, through timm's own loader.

    Args:
        name: a timm model name (``deit_small_patch16_224``, optionally with a tag: ``...224.fb_in1k``).
        pretrained_file: a local weights file given to timm's loader through the pretrained-config overlay
            (``None``: the weights timm's pretrained config names, from the hub when online).
        debug: list every mismatching key when the file does not fit.
        **kwargs: ``timm.create_model`` arguments (``num_classes``: a differing classifier is left at its init, as
            timm does).

    Returns:
        ``(model, PretrainedWeights)``.

    Raises:
        DTNBenchError: a file that does not fit or cannot be read, weights that cannot be fetched.
    """
    import timm

    overlay = {} if pretrained_file is None else {"pretrained_cfg_overlay": {"file": str(pretrained_file)}}
    where = f"--pretrained-file {pretrained_file}" if pretrained_file is not None else f"timm's weights of {name}"
    try:
        model = timm.create_model(name, pretrained=True, **overlay, **kwargs)
    except DTNBenchError:
        raise
    except Exception as e:  # noqa: BLE001 - timm's loader raises anything from torch.load, the hub, load_state_dict
        fit = _fit_summary(str(e), debug)
        if fit is not None:
            raise DTNBenchError(f"{where} does not fit {name}: {fit}") from None
        hint = "" if pretrained_file is not None else " (offline? --pretrained-file PATH loads a local copy)"
        raise DTNBenchError(f"cannot load {where}: {type(e).__name__}: {_first_line(e)}{hint}") from None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if pretrained_file is not None:
        from dtn_bench.checkpoint import file_sha256

        path = Path(pretrained_file)
        source, sha = f"file:{path}", file_sha256(path)
        message = f"pretrained weights: {path} through timm's loader (sha256 {sha[:12]})"
    else:
        tag = cfg.get("tag")
        source = f"timm:{cfg.get('architecture', name.split('.')[0])}" + (f".{tag}" if tag else "")
        found = _hub_file(cfg)
        if found is not None:
            from dtn_bench.checkpoint import file_sha256

            sha = file_sha256(found)
        else:
            sha = f"tensors:{tensors_sha256(model)}"
        message = f"pretrained weights: {source} (timm's release, sha256 {sha[:20]})"
    if kwargs.get("num_classes") not in (None, cfg.get("num_classes")):
        message += (f"; the classifier has {kwargs['num_classes']} outputs, not the release's "
                    f"{cfg.get('num_classes')}: timm left it at its random init")
    return model, PretrainedWeights(source, sha, message)
