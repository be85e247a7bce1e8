"""Vision models: the DTN paper's ViT zoo (registered with timm at ``import dtn_bench``) and the norm converter."""

from dtn_bench.models import small  # noqa: F401  (registers vit_cifar_t_* / vit_tiny_t_* with timm)
from dtn_bench.models.vit import MODELS, VIT_SPECS, LocalViT, convert_norms, create, norm_slots

__all__ = ["MODELS", "VIT_SPECS", "LocalViT", "convert_norms", "create", "norm_slots"]
