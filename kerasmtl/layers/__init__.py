"""Custom layers used by task heads, sharing architectures and zoo trunks (CRF,
multi-label heads, detection head, experts' gates, cross-stitch units, task
attention, text, positions, an LSTM for end-padded sequences)."""

from kerasmtl.layers.backbones import ImageRescaling, image_trunk, stride2_decoder
from kerasmtl.layers.crf import CRF
from kerasmtl.layers.cross_stitch_unit import CrossStitch
from kerasmtl.layers.detection import CenterNetHead
from kerasmtl.layers.expert_gate import ExpertGate
from kerasmtl.layers.hoisted_lstm import HoistedLSTM
from kerasmtl.layers.instance_masks import instance_id_map
from kerasmtl.layers.multilabel_heads import LabelAttentionHead, MultiLabelOutput
from kerasmtl.layers.position_embedding import PositionEmbedding
from kerasmtl.layers.task_attention import TaskAttention
from kerasmtl.layers.text import CharacterEncoder, Lowercase, WordDropout, WordShape
from kerasmtl.layers.transformer_encoder import TransformerEncoderBlock

__all__ = [
    "CRF",
    "CenterNetHead",
    "CharacterEncoder",
    "CrossStitch",
    "ExpertGate",
    "HoistedLSTM",
    "ImageRescaling",
    "LabelAttentionHead",
    "Lowercase",
    "WordDropout",
    "WordShape",
    "MultiLabelOutput",
    "PositionEmbedding",
    "TaskAttention",
    "TransformerEncoderBlock",
    "image_trunk",
    "stride2_decoder",
    "instance_id_map",
]
