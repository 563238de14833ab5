"""Builders of the whole OpenMMLab models the reparam core must handle.

One zoo for the tests (``tests/reparam``) and the benchmarks (``benchmarks/``):
mmpretrain classifiers (10 classes) and mmdet detectors, built from their
configs with the libraries' own init, random batch-norm running statistics and
non-zero heads, so that IR / CBR errors cannot hide behind zeros.
"""
import copy

import torch
import torch.nn as nn

__all__ = [
    'CLASSIFIERS', 'DETECTORS', 'TRANSFORMERS', 'HEADS', 'FAMILIES', 'build',
    'input_for', 'randomize_norms', 'ratios_for', 'has_branch_convs'
]


def randomize_norms(model: nn.Module, generator=None, spread: float = 0.5):
    """Non-trivial BN / LN / GN affine parameters and running statistics.

    γ ~ U(1 − spread, 1 + spread), β ~ U(−spread, spread) (left as they are
    when ``spread`` is 0); running mean in [−0.5, 0.5], running var in [0.5, 1.5].
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm,
                              nn.GroupNorm)):
                if spread and getattr(m, 'weight', None) is not None:
                    m.weight.copy_(1 + spread * (2 * torch.rand(
                        m.weight.shape, generator=generator) - 1))
                if spread and getattr(m, 'bias', None) is not None:
                    m.bias.copy_(spread * (2 * torch.rand(
                        m.bias.shape, generator=generator) - 1))
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and \
                    m.track_running_stats:
                m.running_mean.copy_(torch.rand(m.running_mean.shape,
                                                generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape,
                                               generator=generator) + 0.5)
    return model


def _cls(backbone, in_channels, head='LinearClsHead'):
    return dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=None if head != 'LinearClsHead' else dict(type='GlobalAveragePooling'),
        head=dict(type=head, num_classes=10, in_channels=in_channels))


#: name -> mmpretrain model config (10 classes)
CLASSIFIERS = {
    'resnet18': _cls(dict(type='ResNet', depth=18), 512),
    'resnet34': _cls(dict(type='ResNet', depth=34), 512),
    'resnet50': _cls(dict(type='ResNet', depth=50), 2048),
    'resnetv1d50': _cls(dict(type='ResNetV1d', depth=50), 2048),
    'resnet18_cifar': _cls(dict(type='ResNet_CIFAR', depth=18), 512),
    'mobilenet_v2': _cls(dict(type='MobileNetV2', widen_factor=1.0), 1280),
    'deit_tiny': _cls(
        dict(type='VisionTransformer', arch='deit-tiny', img_size=64,
             patch_size=16), 192, head='VisionTransformerClsHead'),
    'deit_small': _cls(
        dict(type='VisionTransformer', arch='deit-small', img_size=64,
             patch_size=16), 384, head='VisionTransformerClsHead'),
}

#: name -> mmdet config (``mmdet::`` path; the backbone's pretrained init is dropped)
DETECTORS = {
    'retinanet_r18_fpn': 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
    'fcos_r50_fpn_gn': 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
    # a non-ResNet backbone: mmdet's RegNetX (grouped 3x3 convs, group width 16)
    'retinanet_regnetx_800mf_fpn':
    'mmdet::regnet/retinanet_regnetx-800MF_fpn_1x_coco.py',
}

FAMILIES = tuple(CLASSIFIERS) + tuple(DETECTORS)
TRANSFORMERS = ('deit_tiny', 'deit_small')
#: attention heads of the transformers (fractional ratios need whole heads)
HEADS = {'deit_tiny': 3, 'deit_small': 6}

_CACHE = {}


def build(name: str, seed: int = 0, spread: float = 0.0) -> nn.Module:
    """A fresh model ``name`` in eval mode: the library's own init, random BN
    running statistics, and norm affine parameters spread by ``spread``.

    Built once per ``(name, seed, spread)``; every call returns a deep copy.
    """
    from mmengine.registry import init_default_scope
    key = (name, seed, spread)
    if key not in _CACHE:
        torch.manual_seed(seed)
        if name in CLASSIFIERS:
            init_default_scope('mmpretrain')
            from mmpretrain.registry import MODELS
            model = MODELS.build(copy.deepcopy(CLASSIFIERS[name]))
        elif name in DETECTORS:
            from mmengine.hub import get_config
            init_default_scope('mmdet')
            from mmdet.registry import MODELS
            cfg = get_config(DETECTORS[name]).model
            cfg.backbone.init_cfg = None
            model = MODELS.build(cfg)
        else:
            raise KeyError(f'unknown model {name!r}; choose from {FAMILIES}')
        model.init_weights()
        randomize_norms(model, torch.Generator().manual_seed(seed), spread)
        with torch.no_grad():  # zero-initialised heads (DeiT) would hide errors
            for m in model.modules():
                if isinstance(m, torch.nn.Linear) and not m.weight.any():
                    m.weight.normal_(0, 0.02)
        _CACHE[key] = model.eval()
    return copy.deepcopy(_CACHE[key])


def input_for(name: str, size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random image batch for ``name`` (CIFAR models take at most 32²)."""
    g = torch.Generator().manual_seed(seed)
    if name == 'resnet18_cifar':
        size = min(size, 32)
    return torch.randn(batch, 3, size, size, generator=g)


def ratios_for(name: str, fractional: float = 1.5):
    """Integer ratios 2, 3 and a fractional one the model can take: whole
    heads, ``(h + 1) / h``, for a transformer; ``fractional`` otherwise."""
    if name in TRANSFORMERS:
        h = HEADS[name]
        return [2, 3, (h + 1) / h]
    return [2, 3, fractional]


def has_branch_convs(name: str) -> bool:
    """Whether the model has k×k stride-1 convs that can grow branches."""
    return name not in TRANSFORMERS
