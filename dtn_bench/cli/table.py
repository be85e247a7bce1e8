"""``dtn-bench table ...``: tables combining finished runs.

One sub-command per registered suite that has a report, made on demand (so ``dtn-bench --help`` imports no suite),
plus ``table all``; see :mod:`dtn_bench.cli.suite_tables`.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from dtn_bench.cli.main import app


class SuiteTablesGroup(TyperGroup):
    """The ``table`` group: its fixed commands (``all``) and one command per registered suite with a report."""

    def list_commands(self, ctx):  # noqa: D102
        from dtn_bench.cli.suite_tables import suite_commands

        return [*suite_commands(), *super().list_commands(ctx)]

    def get_command(self, ctx, cmd_name):  # noqa: D102
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        from dtn_bench.cli.suite_tables import suite_command

        return suite_command(cmd_name)


table_app = typer.Typer(cls=SuiteTablesGroup, help="Paper-style tables combining finished runs.",
                        no_args_is_help=True)
app.add_typer(table_app, name="table")
