"""Custom layers used by task heads and zoo trunks (CRF, multi-label heads,
text, positions)."""

from kerasmtl.layers.crf import CRF
from kerasmtl.layers.multilabel_heads import LabelAttentionHead, MultiLabelOutput
from kerasmtl.layers.position_embedding import PositionEmbedding
from kerasmtl.layers.text import CharacterEncoder, Lowercase
from kerasmtl.layers.transformer_encoder import TransformerEncoderBlock

__all__ = [
    "CRF",
    "CharacterEncoder",
    "LabelAttentionHead",
    "Lowercase",
    "MultiLabelOutput",
    "PositionEmbedding",
    "TransformerEncoderBlock",
]
