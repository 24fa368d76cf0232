"""Sharing architectures: functional builders returning a `MultiTaskModel`."""

from kerasmtl.sharing.hard import hard_sharing
from kerasmtl.sharing.soft import soft_sharing

__all__ = ["hard_sharing", "soft_sharing"]
