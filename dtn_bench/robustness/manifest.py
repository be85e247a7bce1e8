"""``--checkpoints MANIFEST``: finished runs per normaliser and seed, evaluated instead of trained.

The manifest is a text file, one run per line: the normaliser, the seed and where its weights are, separated by
commas or white space; ``#`` starts a comment, blank lines are skipped, a first line ``norm,seed,path`` is a header::

    # norm, seed, path (relative paths: from the manifest's folder)
    layernorm, 0, results/train/ln-seed0        # a dtn-bench train run folder: its checkpoints/last.pth.tar
    dtn,       0, /ckpt/vit_cifar_t_dtn-s0.pth.tar

Every entry is checked before any work (:func:`read_manifest`), each problem a one-line error naming the manifest and
the line: a malformed line, an unknown normaliser, a seed that is not an integer, a (normaliser, seed) listed twice, a
path that does not exist (or a run folder without ``checkpoints/last.pth.tar``), and a checkpoint that does not fit:

- a ``dtn-bench train`` checkpoint (it records its settings) must be of this study's model family, trained with the
  entry's normaliser and seed on the study's training set, for the test set's classes and image size, and every such
  checkpoint of the manifest must share its training settings (all but the normaliser and seed: a comparison of
  normalisers trained differently would not be one); its weights must load into the model its settings build;
- any other weights file (the authors' checkpoints) must load into the family's model with the entry's normaliser
  and the test set's classes (strict: every key and shape).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtn_bench.errors import DTNBenchError

LAST = Path("checkpoints") / "last.pth.tar"
"""The checkpoint of a ``dtn-bench train`` run folder."""


@dataclass(frozen=True)
class Entry:
    """One checked manifest line.

    Attributes:
        norm: the normaliser.
        seed: the seed.
        checkpoint: the weights file (absolute).
        line: its line in the manifest.
        settings: the recorded training settings of a ``dtn-bench train`` checkpoint (``None``: another file).
        history: its per-epoch records (``[]`` for another file).
        data: the data it was trained on as its rows name it (``None``: not recorded).
        epochs: the epochs its run was to train (``None``: another file); fewer in ``history`` is an unfinished run.
    """

    norm: str
    seed: int
    checkpoint: str
    line: int
    settings: dict[str, Any] | None = None
    history: tuple[dict, ...] = ()
    data: str | None = None
    epochs: int | None = None

    @property
    def unfinished(self) -> bool:
        """A ``dtn-bench train`` checkpoint of a run that stopped before its last epoch."""
        return self.epochs is not None and len(self.history) < self.epochs


def _fields(text: str) -> list[str]:
    return [f for f in re.split(r"[,\s]+", text.strip()) if f]


def parse(path: str | Path) -> list[tuple[int, str, int, Path]]:
    """The lines of the manifest ``path`` as ``(line, norm, seed, path)`` (format only; nothing opened).

    Raises:
        DTNBenchError: no such file, a line without three fields, an unknown normaliser, a seed that is not an
            integer, a (norm, seed) listed twice, or no entries.
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise DTNBenchError(f"--checkpoints {manifest}: {'not a file' if manifest.exists() else 'no such file'}")
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DTNBenchError(f"--checkpoints {manifest}: cannot read it ({type(e).__name__})") from None
    from dtn_bench.norms import NORMS

    out: list[tuple[int, str, int, Path]] = []
    seen: dict[tuple[str, int], int] = {}
    for number, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0]
        fields = _fields(text)
        if not fields or (not out and [f.lower() for f in fields] == ["norm", "seed", "path"]):
            continue
        if len(fields) != 3:
            raise DTNBenchError(f"{manifest} line {number}: expected 'norm, seed, path', got {text.strip()!r}")
        norm, seed_text, where = fields
        try:
            NORMS.get(norm)
        except DTNBenchError as e:
            raise DTNBenchError(f"{manifest} line {number}: {e}") from None
        try:
            seed = int(seed_text)
        except ValueError:
            raise DTNBenchError(f"{manifest} line {number}: seed {seed_text!r} is not an integer") from None
        if (norm, seed) in seen:
            raise DTNBenchError(f"{manifest} line {number}: {norm} seed {seed} is listed twice (also line "
                                f"{seen[(norm, seed)]})")
        seen[(norm, seed)] = number
        file = Path(where).expanduser()
        out.append((number, norm, seed, file if file.is_absolute() else manifest.parent / file))
    if not out:
        raise DTNBenchError(f"--checkpoints {manifest}: no entries (one 'norm, seed, path' per line)")
    return out


def _checkpoint_file(manifest: Path, number: int, where: Path) -> Path:
    if where.is_dir():
        if not (where / LAST).is_file():
            raise DTNBenchError(f"{manifest} line {number}: {where} is a folder without {LAST} (not a finished "
                                "dtn-bench train run)")
        return (where / LAST).resolve()
    if not where.is_file():
        raise DTNBenchError(f"{manifest} line {number}: {where} does not exist")
    return where.resolve()


def _recorded(ck: Any) -> dict | None:
    """The recorded settings of a ``dtn-bench train`` checkpoint, ``None`` for another file."""
    extra = ck.get("dtn_bench") if isinstance(ck, dict) else None
    args = ck.get("args") if isinstance(ck, dict) else None
    if not isinstance(extra, dict) or not hasattr(args, "model"):
        return None
    return dict(vars(args))


def _check_train_checkpoint(where: str, file: Path, settings: dict, norm: str, seed: int, model: str, dataset: str,
                            classes: int, size: int, ema: bool) -> int:
    """A ``dtn-bench train`` checkpoint against the entry and the study (one-line errors); its planned epochs."""
    from dtn_bench.shifts.plan import model_classes, model_input
    from dtn_bench.train.config import TrainConfig
    from dtn_bench.train.loop import load_trained
    from dtn_bench.train.suite import norm_label

    try:
        cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    except TypeError as e:
        raise DTNBenchError(f"{where}: its recorded settings are not a train config ({e})") from None
    for what, have, want in (("model", cfg.model, model), ("normaliser", norm_label(cfg), norm),
                             ("seed", cfg.seed, seed)):
        if have != want:
            raise DTNBenchError(f"{where}: trained with {what} {have}, the entry says {want}; it does not fit")
    if cfg.dataset != dataset:
        raise DTNBenchError(f"{where}: trained on {cfg.dataset}, the test set is of {dataset}; it does not fit")
    try:
        net, _, _ = load_trained(file, ema=ema)
    except DTNBenchError as e:
        raise DTNBenchError(f"{where}: {e}") from None
    if model_classes(net) != classes:
        raise DTNBenchError(f"{where}: the model predicts {model_classes(net)} classes, the test set has {classes}")
    got = model_input(net).size
    if got != (size, size):
        raise DTNBenchError(f"{where}: the model takes {got[0]}x{got[1]} images, the test set is {size}x{size}")
    return cfg.epochs + cfg.cooldown_epochs


def _check_weights(where: str, file: Path, model: str, norm: str, classes: int, ema: bool) -> None:
    """Another weights file: it must load into the family's model with ``norm`` and ``classes`` outputs."""
    from dtn_bench.checkpoint import load_checkpoint
    from dtn_bench.models.small import create

    try:
        net = create(model, norm=norm, num_classes=classes)
    except TypeError as e:
        raise DTNBenchError(f"{where}: cannot build {model} with {norm}: {e}") from None
    try:
        load_checkpoint(net, file, ema=ema)
    except DTNBenchError as e:
        raise DTNBenchError(f"{where}: {e}") from None


def read_manifest(path: str | Path, *, model: str, dataset: str, classes: int, size: int,
                  ema: bool = True) -> list[Entry]:
    """Every entry of the manifest ``path``, checked (the module docstring); nothing is written.

    Args:
        path: the manifest.
        model: the study's model family.
        dataset: the study's training set (a ``dtn-bench train`` checkpoint must have been trained on it).
        classes: the test set's classes.
        size: the test set's image size.
        ema: the weights the evaluation will take (the EMA set when a file has one).

    Raises:
        DTNBenchError: the first problem, naming the manifest and the line.
    """
    from dtn_bench.train.loop import read_checkpoint

    manifest = Path(path)
    entries = []
    for number, norm, seed, where in parse(manifest):
        file = _checkpoint_file(manifest, number, where)
        label = f"{manifest} line {number}: {file}"
        try:
            ck = read_checkpoint(file) if file.suffix != ".safetensors" else {}
        except DTNBenchError as e:
            raise DTNBenchError(f"{label}: not a checkpoint ({e})") from None
        settings = _recorded(ck)
        if settings is not None:
            planned = _check_train_checkpoint(label, file, settings, norm, seed, model, dataset, classes, size,
                                              ema)
            data = (ck["dtn_bench"].get("settings") or {}).get("data")
            entries.append(Entry(norm, seed, str(file), number, settings, tuple(ck.get("history") or ()), data,
                                 planned))
        else:
            _check_weights(label, file, model, norm, classes, ema)
            entries.append(Entry(norm, seed, str(file), number))
    _check_same_training(manifest, entries)
    return entries


def _check_same_training(manifest: Path, entries: list[Entry]) -> None:
    """The ``dtn-bench train`` checkpoints share every training setting but the normaliser and seed."""
    from dtn_bench.train.config import HOW_KEYS

    trained = [e for e in entries if e.settings is not None]
    skip = set(HOW_KEYS) | {"norm", "seed", "world_size"}
    for e in trained[1:]:
        first = trained[0]
        for key in sorted(set(first.settings) | set(e.settings)):
            if key in skip:
                continue
            a, b = first.settings.get(key), e.settings.get(key)
            if _plain(a) != _plain(b):
                raise DTNBenchError(f"{manifest} line {e.line}: {e.norm} seed {e.seed} was trained with {key}={b!r}, "
                                    f"line {first.line} ({first.norm} seed {first.seed}) with {key}={a!r}; the "
                                    "normalisers must be trained alike to be compared")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
