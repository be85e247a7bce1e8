"""Options and parsers shared by the commands: each declared once here and reused (``Annotated`` aliases).

Every option that a suite's preset can set defaults to ``None``: not given, so the preset (or the config's dataclass
default) decides; a flag that is given wins (:meth:`dtn_bench.runner.PresetConfig.from_preset`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.errors import DTNBenchError

OutOpt = Annotated[Path, typer.Option("--out", help="Results root; the run folder is OUT/<suite>/<run-id>.")]
RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="Run folder name (default: timestamp + random).")]
NormOpt = Annotated[str | None, typer.Option("--norm", help="Put this registered normaliser into the model.")]
PlacementOpt = Annotated[str | None, typer.Option("--placement", help="Where the normalisers sit in every block: pre "
                                                  "(x + F(N(x)), the default), post (N(x + F(x))) or peri "
                                                  "(x + N_out(F(N_in(x))), each norm its own layer). Recorded with "
                                                  "the results.")]
TuneMallocOpt = Annotated[bool, typer.Option("--tune-malloc/--no-tune-malloc", help="Keep freed memory in the process "
                                             "on CPU (as jemalloc would); recorded with the results.")]
FlushDenormalOpt = Annotated[bool, typer.Option("--flush-denormal/--no-flush-denormal", help="Flush denormal floats "
                                               "to zero on the CPU (faster; changes values below 1.2e-38 only).")]
# model-shape options shared by several commands
DimOpt = Annotated[int | None, typer.Option(help="Channels.")]
HeadsOpt = Annotated[int | None, typer.Option(help="Attention heads (DTN groups).")]
DepthOpt = Annotated[int | None, typer.Option(help="Encoder blocks.")]
MlpDimOpt = Annotated[int | None, typer.Option("--mlp-dim", help="MLP hidden width.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (default: the suite's preset; auto "
                                              "takes the GPU when there is one).")]
ItersOpt = Annotated[int | None, typer.Option("--iters", help="Timed repetitions per measured point.")]
WarmupOpt = Annotated[int | None, typer.Option("--warmup", help="Untimed warm-up repetitions per measured point.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="torch threads (0: torch's default; default: "
                                             "the preset's).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help=(
    "Training-recipe settings as key=value (repeat --set, or list them after it: --set lr=1e-3 epochs=50); any field "
    "of the recipe (dtn-bench train --show-recipe lists them with their types). 'none' clears an optional one."))]
AssignmentsArg = Annotated[list[str] | None, typer.Argument(metavar="[KEY=VALUE]...", show_default=False,
                                                            help="More recipe settings, as with --set.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: the preset's, 0).")]

EmaOpt = Annotated[bool, typer.Option("--ema/--no-ema", help="With --checkpoint: load its EMA weights when it has "
                                      "them (state_dict_ema / model_ema, as timm does; the authors' accuracies are "
                                      "the EMA weights'), or its raw ones. Recorded as `weights: ema|raw`.")]
PretrainedOpt = Annotated[bool, typer.Option("--pretrained", help="A stock timm model with timm's pretrained weights "
                                             "(timm's own loader; the hub when online). With --norm the replaced "
                                             "norms' affine is carried over and the new parameters are untrained. "
                                             "Recorded as weights_source timm:<model>.<tag> with the SHA-256.")]
PretrainedFileOpt = Annotated[Path | None, typer.Option("--pretrained-file", help="Offline --pretrained: load this "
                                                        "local weights file through timm's pretrained loader (its "
                                                        "pretrained-config overlay). Recorded as weights_source "
                                                        "file:PATH with its SHA-256.")]


def parse_grid(text: str) -> tuple[int, int]:
    """``--grid`` text -> ``(rows, cols)``: ``"14x14"`` or ``"14,14"`` -> ``(14, 14)``, one number ``"14"`` likewise.

    Anything else is a one-line error.
    """
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise DTNBenchError(f"--grid {text!r}: expected ROWSxCOLS like 14x14, or one number") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise DTNBenchError(f"--grid {text!r}: expected ROWSxCOLS like 14x14")
    return parts[0], parts[1]


def csv_list(text: str | None, flag: str = "a list option", empty_ok: bool = False) -> tuple[str, ...] | None:
    """``"a, b,,c"`` -> ``("a", "b", "c")`` (items stripped, empty ones dropped); ``None`` (not given) -> ``None``.

    A value given with no item (``--corruptions ''``) is a one-line error naming ``flag`` (it would otherwise read as
    "not given" and mean the default, all 15 corruptions), unless ``empty_ok`` (``bench norms --models ''``: none).
    """
    if text is None:
        return None
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values and not empty_ok:
        raise DTNBenchError(f"{flag} {text!r} is empty: give one value at least, or leave {flag} out for the default")
    return values


def parse_ints(text: str, flag: str, example: str, what: str = "integers") -> tuple[int, ...]:
    """``"1,64,256"`` -> ``(1, 64, 256)``; anything else (or nothing) is a one-line error naming ``flag``."""
    message = f"{flag} {text!r}: expected comma-separated {what} like {example}"
    try:
        values = tuple(int(v) for v in text.split(","))  # int() takes surrounding spaces; "1,,2" and "1," fail
    except ValueError:
        raise DTNBenchError(message) from None
    return values


def parse_severities(text: str | None) -> tuple[int, ...] | None:
    """``"1,3"`` -> ``(1, 3)`` (``None``: not given); anything but comma-separated integers is a one-line error."""
    values = csv_list(text, "--severities")
    if values is None:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise DTNBenchError(f"--severities {text!r}: expected comma-separated integers 1..5") from None
