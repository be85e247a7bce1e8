"""Data sets of the benchmarks.

Modules:
    listops: Long-Range Arena ListOps: seeded generator, tokeniser, validating loader, token and data caches.
"""

from __future__ import annotations
