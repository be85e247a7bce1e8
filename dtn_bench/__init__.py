"""dtn-bench: benchmarking suite for token normalisers in transformers, built around Dynamic Token Normalization.

Importing the package registers the DTN paper's ViT zoo with timm, so ``timm.create_model("vit_s_dtn")`` works.
"""

__version__ = "0.1.0"

from dtn_bench import models  # noqa: E402,F401  (registers vit_*_ln / vit_*_dtn with timm)
from dtn_bench.norms import DTN, build_norm  # noqa: E402,F401
