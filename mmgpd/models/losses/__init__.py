"""Distillation losses, registered in ``mmgpd.registry.MODELS``: on (N, C)
logits (KD, DKD, SCE) and on a detector's dense outputs (DenseKD, FeatureMSE);
minibatch linear CKA (``cka``, used by DPK)."""
from .cka import cka_from_terms, hsic_terms, linear_cka
from .dense import DenseKDLoss, FeatureMSELoss
from .dkd import DKDLoss
from .kd import KDLoss
from .sce import SoftTargetCrossEntropy

__all__ = ['KDLoss', 'DKDLoss', 'SoftTargetCrossEntropy', 'DenseKDLoss',
           'FeatureMSELoss', 'linear_cka', 'hsic_terms', 'cka_from_terms']
