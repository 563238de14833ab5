"""Distillation losses, registered in ``mmgpd.registry.MODELS``: on (N, C)
logits (KD, DKD, SCE) and on a detector's dense outputs (DenseKD, SoftmaxDenseKD, FeatureMSE);
minibatch linear CKA (``cka``, used by DPK); ReviewKD's hierarchical
context loss (``hcl``)."""
from .cka import cka_from_terms, hsic_terms, linear_cka
from .dense import DenseKDLoss, FeatureMSELoss, SoftmaxDenseKDLoss
from .dkd import DKDLoss
from .hcl import HCLLoss, hcl
from .kd import KDLoss
from .sce import SoftTargetCrossEntropy

__all__ = ['KDLoss', 'DKDLoss', 'SoftTargetCrossEntropy', 'DenseKDLoss',
           'SoftmaxDenseKDLoss', 'FeatureMSELoss', 'HCLLoss', 'hcl',
           'linear_cka', 'hsic_terms', 'cka_from_terms']
