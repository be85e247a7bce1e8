"""``dtn-bench list`` (models, norms, suites) and ``dtn-bench info MODEL``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dtn_bench.cli.options import EmaOpt, NormOpt, PretrainedFileOpt, PretrainedOpt
from dtn_bench.cli.output import STATE, console, err_console
from dtn_bench.errors import DTNBenchError

app = typer.Typer()


def _norms_table(pattern: str | None) -> tuple[Table, list]:
    """The ``list norms`` table: each normaliser's facts (:class:`dtn_bench.norms.NormInfo`), and the entries."""
    from dtn_bench.norms import NORMS

    table = Table(title="Normalisers (--norm NAME); MACs per element of the layer's input (dtn_bench.norms.base)")
    for col in ("name", "label", "formula", "MACs/elem", "padding mask", "zoo"):
        table.add_column(col)
    entries = NORMS.list(pattern)
    for e in entries:
        i = e.meta["info"]
        macs = f"{i.macs_per_element}" + (" + inter-token" if i.inter_token_macs is not None else "")
        table.add_row(e.name, i.label, i.formula, macs, i.mask, f"*_{i.zoo_suffix}" if i.zoo_suffix else "")
    return table, entries


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="models, norms or suites")],
    pattern: Annotated[str | None, typer.Argument(help="Name filter: substring or shell pattern (vit_s*).")] = None,
) -> None:
    """List registered models, norms or suites."""
    kinds = ("models", "norms", "suites")
    if what not in kinds:
        from dtn_bench.registry import unknown_name_message

        raise DTNBenchError(unknown_name_message("list", what, list(kinds)))
    if what == "models":
        from dtn_bench.models import MODELS
        from dtn_bench.models.small import SMALL_MODELS

        table = Table(title="Models (timm.create_model names)")
        for col in ("name", "model", "heads", "dim", "norm in blocks 0-9"):
            table.add_column(col)
        entries = MODELS.list(pattern) + SMALL_MODELS.list(pattern)  # the zoo, then the 32 / 64 px models
        for e in entries:
            m = e.meta
            table.add_row(e.name, m["label"], str(m["heads"]), str(m["dim"]), m["norm"])
    elif what == "norms":
        table, entries = _norms_table(pattern)
    else:
        from dtn_bench.suites import SUITES, load_presets

        table = Table(title="Suites")
        for col in ("name", "what it measures", "presets"):
            table.add_column(col)
        entries = SUITES.list(pattern)
        for e in entries:
            table.add_row(e.name, e.description, ", ".join(load_presets(e.name)))
    if not entries:
        raise DTNBenchError(f"no {what} match {pattern!r}")
    console.print(table)


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="Zoo model (vit_s_dtn) or any timm model name.")],
    norm: NormOpt = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Load these weights.")] = None,
    ema: EmaOpt = True,
    pretrained: PretrainedOpt = False,
    pretrained_file: PretrainedFileOpt = None,
    macs: Annotated[bool, typer.Option("--macs/--no-macs", help="Count MACs with torch's flop counter.")] = True,
) -> None:
    """Parameters, MACs and which normaliser sits where in MODEL."""
    from dtn_bench.models.info import describe

    d = describe(model, norm=norm, checkpoint=checkpoint, ema=ema, pretrained=pretrained,
                 pretrained_file=pretrained_file, macs=macs, debug=STATE["debug"])
    table = Table(title=f"{model}" + (f" with {norm}" if norm else ""))
    table.add_column("property")
    table.add_column("value")
    table.add_row("parameters", f"{d['params']:,} ({d['params'] / 1e6:.2f} M)")
    if d.get("gmacs") is not None:
        table.add_row("GMACs (224x224, torch flop counter / 2)", f"{d['gmacs']:.3f}")
    if d.get("checkpoint"):
        ck = d["checkpoint"]
        table.add_row("checkpoint", f"{ck['path']} (sha256 {ck['sha256'][:12]})")
        table.add_row("weights", f"{ck['weights']} ({ck['key'] or 'flat state dict'})")
        err_console.print(ck["message"], markup=False, highlight=False, soft_wrap=True)
    if d.get("pretrained"):
        pw = d["pretrained"]
        table.add_row("weights", f"{pw['source']} (sha256 {pw['sha256'][:20]})")
        for line in (pw["message"], *pw["notes"]):
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(table)
    where = Table(title="Normalisers")
    for col in ("layers", "normaliser", "details"):
        where.add_column(col)
    for layers, kind, detail in d["norms"]:
        where.add_row(layers, kind, detail)
    console.print(where)
