"""Distillation losses on (N, C) logits, registered in ``mmgpd.registry.MODELS``."""
from .dkd import DKDLoss
from .kd import KDLoss
from .sce import SoftTargetCrossEntropy

__all__ = ['KDLoss', 'DKDLoss', 'SoftTargetCrossEntropy']
