"""Sharing architectures: functional builders returning a `MultiTaskModel`."""

from kerasmtl.sharing.cross_stitch import cross_stitch
from kerasmtl.sharing.dselect_k import dselect_k_mmoe
from kerasmtl.sharing.esmm import cvr_probabilities, esmm
from kerasmtl.sharing.hard import hard_sharing
from kerasmtl.sharing.inspection import attention_maps, gate_weights
from kerasmtl.sharing.learning_to_branch import (
    BranchGate,
    BranchTemperature,
    branching_tree,
    learning_to_branch,
)
from kerasmtl.sharing.moe import cgc, mmoe, ple
from kerasmtl.sharing.mtan import mtan
from kerasmtl.sharing.soft import soft_sharing

__all__ = [
    "BranchGate",
    "BranchTemperature",
    "branching_tree",
    "attention_maps",
    "cgc",
    "cross_stitch",
    "cvr_probabilities",
    "dselect_k_mmoe",
    "esmm",
    "gate_weights",
    "hard_sharing",
    "learning_to_branch",
    "mmoe",
    "mtan",
    "ple",
    "soft_sharing",
]
