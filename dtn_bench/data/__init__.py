"""Data sets of the benchmarks.

Modules:
    listops: Long-Range Arena ListOps: seeded generator, tokeniser, validating loader, token and data caches.
    corruptions: the ImageNet-C corruptions (one module per family: filters, noise, blur, weather, digital), the
        name and severity resolver, and the folder job of ``dtn-bench corrupt``.
"""

from __future__ import annotations
