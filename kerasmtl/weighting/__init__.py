"""Loss-level task weighting layers (one file per method)."""

from kerasmtl.weighting.aligned_mtl import AlignedMTL
from kerasmtl.weighting.auto_lambda import AutoLambda
from kerasmtl.weighting.base import LossWeighting
from kerasmtl.weighting.cagrad import CAGrad
from kerasmtl.weighting.conflict_free import ConFIG
from kerasmtl.weighting.dual_balancing import DBMTL
from kerasmtl.weighting.dual_proj import DualProj
from kerasmtl.weighting.dynamic_weight_average import DynamicWeightAverage
from kerasmtl.weighting.excess_mtl import ExcessMTL
from kerasmtl.weighting.fairgrad import FairGrad
from kerasmtl.weighting.famo import FAMO
from kerasmtl.weighting.geometric_loss_strategy import GeometricLossStrategy
from kerasmtl.weighting.grad_drop import GradDrop
from kerasmtl.weighting.gradient_balancer import GradientBalancer
from kerasmtl.weighting.gradnorm import GradNorm
from kerasmtl.weighting.gradvac import GradVac
from kerasmtl.weighting.imtl import IMTL
from kerasmtl.weighting.mgda import MGDA
from kerasmtl.weighting.moco import MoCo
from kerasmtl.weighting.modo import MoDo
from kerasmtl.weighting.nash_mtl import NashMTL
from kerasmtl.weighting.pcgrad import PCGrad
from kerasmtl.weighting.random_loss_weighting import RandomLossWeighting
from kerasmtl.weighting.scale_invariant import ScaleInvariant
from kerasmtl.weighting.sdmgrad import SDMGrad
from kerasmtl.weighting.smooth_tchebycheff import STCH
from kerasmtl.weighting.static import Equal, Static
from kerasmtl.weighting.uncertainty import Uncertainty
from kerasmtl.weighting.upgrad import UPGrad

__all__ = [
    "LossWeighting",
    "Equal",
    "Static",
    "Uncertainty",
    "DynamicWeightAverage",
    "RandomLossWeighting",
    "GeometricLossStrategy",
    "GradientBalancer",
    "GradNorm",
    "PCGrad",
    "MGDA",
    "MoCo",
    "CAGrad",
    "IMTL",
    "NashMTL",
    "FairGrad",
    "AlignedMTL",
    "UPGrad",
    "DualProj",
    "ConFIG",
    "GradVac",
    "FAMO",
    "ScaleInvariant",
    "STCH",
    "DBMTL",
    "ExcessMTL",
    "GradDrop",
    "SDMGrad",
    "MoDo",
    "AutoLambda",
]
