"""Distillation losses, registered in ``mmgpd.registry.MODELS``: on (N, C)
logits (KD, DKD, SCE) and on a detector's dense outputs (DenseKD, FeatureMSE)."""
from .dense import DenseKDLoss, FeatureMSELoss
from .dkd import DKDLoss
from .kd import KDLoss
from .sce import SoftTargetCrossEntropy

__all__ = ['KDLoss', 'DKDLoss', 'SoftTargetCrossEntropy', 'DenseKDLoss',
           'FeatureMSELoss']
