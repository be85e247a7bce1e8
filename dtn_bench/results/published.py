"""Published reference numbers, as data with their source.

Tables put our measurements beside these. Each entry is a :class:`Published` with the number (``None`` where the
source publishes none), the source it was taken from, and a note. Keys are ``(model, norm)`` tuples using the
package's names: models ``vit_t``, ``vit_t_star``, ``vit_s``, ``vit_s_star``, ``vit_b_star`` (the ``*`` variants
of the DTN paper), ``transformer``, ``bigbird``, ``reformer``, and timm names where a source used a stock timm
model; norms ``layernorm``, ``batchnorm``, ``instancenorm``, ``groupnorm``, ``scalenorm``, ``powernorm``, ``dtn``,
``dyt``, ``derf``, and ``sn`` for the normaliser comparison's "SN" column, which the source does not expand (so no
normaliser of this package is known to be it).

The ImageNet accuracies, FLOPs, parameters and the normaliser comparison come from the results tables of the
authors' official README (github wqshao126/DTN); ListOps LayerNorm baselines from the LRA paper. Dynamic Tanh
(``dyt``): the DyT authors' README (github jiachenzhu/DyT) gives ImageNet-1k top-1 for ViT-B and ViT-L only (and
ConvNeXt), each with every LayerNorm of a stock timm ViT replaced, final norm included, so they are keyed by the timm
model (:data:`DYT_IMAGENET_TOP1`), not by this package's DTN-layout zoo; the comparison's ViT-S / ViT-S* with DyT are
"not published". Dynamic erf (``derf``): the Derf authors' README (github zlab-princeton/Derf) gives ImageNet-1k top-1
of ViT-B and ViT-L with LayerNorm, DyT and Derf (:data:`DERF_IMAGENET_TOP1`), again with every LayerNorm of a stock
timm ViT replaced (their ``convert_ln_to_derf``), so keyed by the timm model. PowerNorm's own paper evaluates NLP
tasks (translation, language modelling) only; its ViT numbers are the DTN comparison's PN column.

Each normaliser names the tables that hold its numbers in its facts (:attr:`dtn_bench.norms.NormInfo.published`).

Units follow the sources: accuracies in percent, compute in GMACs (the DTN paper's "FLOPs" column counts
multiply-accumulates), parameters in millions. :func:`published` looks a key up in a table by name and answers
``Published(None, source, "not published")`` where the source has no number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dtn_bench.errors import DTNBenchError


@dataclass(frozen=True)
class Published:
    """A published reference number.

    Attributes:
        value: the number, or ``None`` where the source publishes none.
        source: where it comes from (authors, venue, table).
        note: anything a reader needs to compare it fairly (units, conditions), or ``"not published"``.
    """

    value: float | None
    source: str
    note: str = ""


DTN_README = "Shao et al., ICLR 2022, official README"
DTN_PAPER = "Shao et al., ICLR 2022 (Dynamic Token Normalization)"
LRA_PAPER = "Tay et al., ICLR 2021 (Long Range Arena), Table 1"
DYT_README = "Zhu et al., CVPR 2025 (Transformers without Normalization), official README (github jiachenzhu/DyT)"
DERF_README = ("Chen et al., CVPR 2026 (Stronger Normalization-Free Transformers, arXiv 2512.10938), official README "
               "(github zlab-princeton/Derf)")
NOT_PUBLISHED = "not published"


def _table(
    source: str, values: dict[tuple[str, str], float | None], note: str = ""
) -> dict[tuple[str, str], Published]:
    return {
        key: Published(value, source, note if value is not None else NOT_PUBLISHED) for key, value in values.items()
    }


IMAGENET_TOP1: dict[tuple[str, str], Published] = _table(
    DTN_README,
    {
        ("vit_t", "layernorm"): 72.2,
        ("vit_t_star", "layernorm"): 72.3,
        ("vit_t_star", "dtn"): 73.2,
        ("vit_s", "layernorm"): 79.9,
        ("vit_s", "dtn"): 80.6,
        ("vit_s_star", "layernorm"): 80.6,
        ("vit_s_star", "dtn"): 81.7,
        ("vit_b_star", "layernorm"): 81.7,
        ("vit_b_star", "dtn"): 82.5,
    },
    note="ImageNet-1k top-1 accuracy (%), 224x224",
)
"""ImageNet-1k top-1 accuracy (%) of the DTN paper's models, keyed by ``(model, norm)``."""

PAPER_FLOPS_G: dict[tuple[str, str], Published] = _table(
    DTN_README,
    {
        ("vit_t", "layernorm"): 1.26,
        ("vit_t_star", "layernorm"): 1.26,
        ("vit_t_star", "dtn"): 1.26,
        ("vit_s", "layernorm"): 4.60,
        ("vit_s", "dtn"): 4.88,
        ("vit_b_star", "layernorm"): 17.58,
        ("vit_b_star", "dtn"): 18.13,
    },
    note="FLOPs column, counted as multiply-accumulates (GMACs), 224x224 input; ViT-T: one number, LayerNorm (the "
    "source has no DTN ViT-T result); ViT-S*: none given",
)
"""Compute per image (GMACs) reported by the DTN authors, keyed by ``(model, norm)``."""

PAPER_PARAMS_M: dict[tuple[str, str], Published] = _table(
    DTN_README,
    {
        ("vit_t", "layernorm"): 5.7,
        ("vit_t_star", "layernorm"): 5.7,
        ("vit_t_star", "dtn"): 5.7,
        ("vit_s", "layernorm"): 22.1,
        ("vit_s", "dtn"): 22.1,
        ("vit_b_star", "layernorm"): 86.5,
        ("vit_b_star", "dtn"): 86.5,
    },
    note="millions of parameters; one number per model for LN and DTN (ViT-T: LayerNorm only; ViT-S*: none given)",
)
"""Parameter counts (millions) reported by the DTN authors, keyed by ``(model, norm)``."""

NORM_COMPARISON_TOP1: dict[tuple[str, str], Published] = {**_table(
    f"{DTN_README}, comparison of normalizers",
    {
        ("vit_s", "layernorm"): 79.9,
        ("vit_s_star", "layernorm"): 80.6,
        ("vit_s", "batchnorm"): 77.3,
        ("vit_s_star", "batchnorm"): 77.2,
        ("vit_s", "instancenorm"): 77.7,
        ("vit_s_star", "instancenorm"): 77.6,
        ("vit_s", "groupnorm"): 78.3,
        ("vit_s_star", "groupnorm"): 79.5,
        ("vit_s", "sn"): 80.1,
        ("vit_s_star", "sn"): 81.0,
        ("vit_s", "scalenorm"): 80.0,
        ("vit_s_star", "scalenorm"): 80.6,
        ("vit_s", "powernorm"): 79.8,
        ("vit_s_star", "powernorm"): 80.4,
        ("vit_s", "dtn"): 80.6,
        ("vit_s_star", "dtn"): 81.7,
    },
    note="ImageNet-1k top-1 accuracy (%); 'sn' is the table's SN column, a normaliser the source does not expand",
), **_table(DYT_README, {("vit_s", "dyt"): None, ("vit_s_star", "dyt"): None}),
   **_table(DERF_README, {("vit_s", "derf"): None, ("vit_s_star", "derf"): None})}
"""ImageNet-1k top-1 accuracy (%) of ViT-S and ViT-S* with each normaliser, keyed by ``(model, norm)``; DyT and Derf
have no published ViT-S / ViT-S* number ("not published", source: the DyT and Derf READMEs)."""

DYT_IMAGENET_TOP1: dict[tuple[str, str], Published] = _table(
    DYT_README,
    {
        ("vit_base_patch16_224", "layernorm"): 82.3,
        ("vit_base_patch16_224", "dyt"): 82.5,
        ("vit_large_patch16_224", "layernorm"): 83.1,
        ("vit_large_patch16_224", "dyt"): 83.6,
    },
    note="ImageNet-1k top-1 accuracy (%), 224x224, supervised, the DyT authors' recipe; stock timm ViT with every "
    "LayerNorm (final norm included) replaced by DyT, not the DTN-paper layout of the vit_b_* zoo models",
)
"""ImageNet-1k top-1 accuracy (%) of the DyT paper's ViTs with LayerNorm and with DyT, keyed by
``(timm model, norm)``."""

DERF_IMAGENET_TOP1: dict[tuple[str, str], Published] = _table(
    DERF_README,
    {
        ("vit_base_patch16_224", "layernorm"): 82.3,
        ("vit_base_patch16_224", "dyt"): 82.5,
        ("vit_base_patch16_224", "derf"): 82.8,
        ("vit_large_patch16_224", "layernorm"): 83.1,
        ("vit_large_patch16_224", "dyt"): 83.6,
        ("vit_large_patch16_224", "derf"): 83.8,
    },
    note="ImageNet-1k top-1 accuracy (%), 224x224, supervised, effective batch 4096, EMA weights; stock timm ViT with "
    "every LayerNorm (final norm included) replaced, not the DTN-paper layout of the vit_b_* zoo models",
)
"""ImageNet-1k top-1 accuracy (%) of the Derf paper's ViTs with LayerNorm, DyT and Derf, keyed by
``(timm model, norm)``."""

LRA_LISTOPS: dict[tuple[str, str], Published] = {
    **_table(
        LRA_PAPER,
        {
            ("transformer", "layernorm"): 36.37,
            ("bigbird", "layernorm"): 36.05,
            ("reformer", "layernorm"): 37.27,
        },
        note="ListOps test accuracy (%), LayerNorm models",
    ),
    **_table(
        DTN_PAPER,
        {
            ("transformer", "dtn"): None,
            ("bigbird", "dtn"): None,
            ("reformer", "dtn"): None,
        },
    ),
}
"""Long-Range Arena ListOps test accuracy (%), keyed by ``(model, norm)``; the DTN paper gives no per-model number."""

IMAGENET_C_MCE: dict[tuple[str, str], Published] = {}
"""ImageNet-C mCE (%): the DTN paper publishes no per-model number, so every lookup is "not published"."""

TABLES: dict[str, tuple[dict[tuple[str, str], Published], str]] = {
    "imagenet_top1": (IMAGENET_TOP1, DTN_README),
    "paper_flops_g": (PAPER_FLOPS_G, DTN_README),
    "paper_params_m": (PAPER_PARAMS_M, DTN_README),
    "norm_comparison_top1": (NORM_COMPARISON_TOP1, f"{DTN_README}, comparison of normalizers"),
    "dyt_imagenet_top1": (DYT_IMAGENET_TOP1, DYT_README),
    "derf_imagenet_top1": (DERF_IMAGENET_TOP1, DERF_README),
    "lra_listops": (LRA_LISTOPS, LRA_PAPER),
    "imagenet_c_mce": (IMAGENET_C_MCE, DTN_PAPER),
}
"""Table name -> (table, source used for keys the table lacks)."""

NORM_ALIASES: dict[str, str] = {
    "ln": "layernorm",
    "layer_norm": "layernorm",
    "bn": "batchnorm",
    "batch_norm": "batchnorm",
    "in": "instancenorm",
    "instance_norm": "instancenorm",
    "gn": "groupnorm",
    "group_norm": "groupnorm",
    "scale_norm": "scalenorm",
    "pn": "powernorm",
    "power_norm": "powernorm",
    "dynamic_tanh": "dyt",
    "dynamic_erf": "derf",
}
"""Short or spelled-out norm names accepted by :func:`published`, mapped to the package's names."""

_NORMS = {"layernorm", "batchnorm", "instancenorm", "groupnorm", "scalenorm", "powernorm", "dtn", "sn", "dyt", "derf",
          "identity"}


def _canonical_norm(norm: str) -> str:
    norm = str(norm).lower()
    return NORM_ALIASES.get(norm, norm)


def _canonical_key(key: Any) -> Any:
    """``("vit_s", "ln")`` or ``"vit_s_ln"`` -> ``("vit_s", "layernorm")``; other keys unchanged."""
    if isinstance(key, tuple) and len(key) == 2:
        return (str(key[0]).lower(), _canonical_norm(key[1]))
    if isinstance(key, str) and "_" in key:
        model, suffix = key.lower().rsplit("_", 1)
        norm = _canonical_norm(suffix)
        if norm in _NORMS:
            return (model, norm)
    return key


def published(table_name: str, key: Any) -> Published:
    """Looks up a published number.

    Args:
        table_name: one of :data:`TABLES` (case-insensitive), e.g. ``"imagenet_top1"``.
        key: ``(model, norm)``, e.g. ``("vit_s", "dtn")``; short norm names (``"ln"``) and combined model names
            (``"vit_s_star_dtn"``) are accepted.

    Returns:
        The entry, or ``Published(None, <table source>, "not published")`` when the table has none for ``key``.

    Raises:
        DTNBenchError: for an unknown table name.
    """
    name = str(table_name).lower()
    if name not in TABLES:
        raise DTNBenchError(f"unknown published table {table_name!r}: choose one of {', '.join(TABLES)}")
    table, source = TABLES[name]
    entry = table.get(_canonical_key(key))
    if entry is None:
        return Published(None, source, NOT_PUBLISHED)
    return entry
