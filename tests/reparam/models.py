"""Builders of the whole OpenMMLab models the reparam core must handle."""
import copy

import torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope

from .nets import randomize_norms


def _cls(backbone, in_channels, head='LinearClsHead'):
    return dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=None if head != 'LinearClsHead' else dict(type='GlobalAveragePooling'),
        head=dict(type=head, num_classes=10, in_channels=in_channels))


#: name -> (scope, model config, default input size, is a CNN)
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

DETECTORS = {
    'retinanet_r18_fpn': 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
    'fcos_r50_fpn_gn': 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
}

TRANSFORMERS = ('deit_tiny', 'deit_small')
HEADS = {'deit_tiny': 3, 'deit_small': 6}

_CACHE = {}


def build(name: str, seed: int = 0, spread: float = 0.0):
    """A fresh model ``name`` in eval mode: the library's own init, random BN
    running statistics, and norm affine parameters spread by ``spread``."""
    key = (name, seed, spread)
    if key not in _CACHE:
        torch.manual_seed(seed)
        if name in CLASSIFIERS:
            init_default_scope('mmpretrain')
            from mmpretrain.registry import MODELS
            model = MODELS.build(copy.deepcopy(CLASSIFIERS[name]))
        else:
            init_default_scope('mmdet')
            from mmdet.registry import MODELS
            cfg = get_config(DETECTORS[name]).model
            cfg.backbone.init_cfg = None
            model = MODELS.build(cfg)
        model.init_weights()
        randomize_norms(model, torch.Generator().manual_seed(seed), spread)
        with torch.no_grad():  # zero-initialised heads (DeiT) would hide errors
            for m in model.modules():
                if isinstance(m, torch.nn.Linear) and not m.weight.any():
                    m.weight.normal_(0, 0.02)
        _CACHE[key] = model.eval()
    return copy.deepcopy(_CACHE[key])


def input_for(name: str, size: int, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if name == 'resnet18_cifar':
        size = min(size, 32)
    return torch.randn(batch, 3, size, size, generator=g)
