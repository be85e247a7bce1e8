"""The ``bench-corrupt`` suite's registration (the generator's speed; measured by
:func:`dtn_bench.data.corruptions.benchmark`, run by ``dtn-bench bench corrupt``; no paper-style table)."""

from __future__ import annotations

from dtn_bench.runner import Suite
from dtn_bench.suites import register

CORRUPT_SUITE = register(Suite(
    "bench-corrupt", "ImageNet-C corruption generator speed: ms per 224 image for each corruption and one "
    "15-corruption pass, images/s, and imagecorruptions timed beside it when installed",
    {"time_ms": False, "cpu_time_ms": False, "throughput_img_s": True, "speedup": True}, None, None, None))
