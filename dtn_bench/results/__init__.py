"""Results: the row schema, run folders written atomically, reading rows back, and tables rendered from them.

Modules:
    schema: identity / setting / provenance columns, units, :func:`make_row`.
    env: the environment a run is made in (versions, device, git commit).
    writer: :class:`RunWriter` and atomic file writes.
    io: :func:`read_rows` from run folders or rows files.
    tables: pivots and Markdown / LaTeX / CSV rendering.
    published: published reference numbers with their sources (look one up with :func:`lookup_published`).
"""

from __future__ import annotations

from dtn_bench.results.env import device_name, environment
from dtn_bench.results.io import read_rows
from dtn_bench.results.published import (
    IMAGENET_C_MCE,
    IMAGENET_TOP1,
    LRA_LISTOPS,
    NORM_COMPARISON_TOP1,
    PAPER_FLOPS_G,
    PAPER_PARAMS_M,
    Published,
)
from dtn_bench.results.published import published as lookup_published
from dtn_bench.results.schema import (
    IDENTITY_COLUMNS,
    PROVENANCE_COLUMNS,
    UNITS,
    make_row,
    order_columns,
    validate_rows,
)
from dtn_bench.results.tables import add_published, pivot, render, to_csv, to_latex, to_markdown
from dtn_bench.results.writer import RunWriter, atomic_write_bytes, atomic_write_text

__all__ = [
    "IDENTITY_COLUMNS",
    "IMAGENET_C_MCE",
    "IMAGENET_TOP1",
    "LRA_LISTOPS",
    "NORM_COMPARISON_TOP1",
    "PAPER_FLOPS_G",
    "PAPER_PARAMS_M",
    "PROVENANCE_COLUMNS",
    "UNITS",
    "Published",
    "RunWriter",
    "add_published",
    "atomic_write_bytes",
    "atomic_write_text",
    "device_name",
    "environment",
    "lookup_published",
    "make_row",
    "order_columns",
    "pivot",
    "read_rows",
    "render",
    "to_csv",
    "to_latex",
    "to_markdown",
    "validate_rows",
]
