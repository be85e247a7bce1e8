"""Sequence models of the Long-Range Arena ListOps suite: attentions (full, BigBird, Reformer LSH) and the encoder."""

from __future__ import annotations

from dtn_bench.sequence.attention import BigBirdAttention, FullAttention, LSHAttention
from dtn_bench.sequence.encoder import (
    ATTENTIONS,
    EncoderBlock,
    LRAEncoder,
    build_attention,
    count_parameters,
    sinusoidal_positions,
)

__all__ = ["ATTENTIONS", "BigBirdAttention", "EncoderBlock", "FullAttention", "LRAEncoder", "LSHAttention",
           "build_attention", "count_parameters", "sinusoidal_positions"]
