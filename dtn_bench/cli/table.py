"""``dtn-bench table ...``: tables combining finished runs (one sub-command per suite registers itself here)."""

from __future__ import annotations

import typer

from dtn_bench.cli.main import app

table_app = typer.Typer(help="Paper-style tables combining finished runs.", no_args_is_help=True)
app.add_typer(table_app, name="table")
