"""Which rule applies to a module: one table, keyed by type.

Third-party types (mmcv, mmpretrain, mmdet) are named by their qualified class
name so that this package imports nothing but PyTorch.  A module whose kind is
``None`` has no rule: IR refuses to widen through it (see ``UnsupportedModuleError``).

Kinds:

``conv`` / ``linear``
    channel-mixing layers: ``Ŵ[j,k] = W[g(j),g(k)] · s_in/(m · s_out)``.
``batchnorm`` / ``layernorm`` / ``groupnorm``
    ``y = N(s ⊙ x) / s`` with γ, β (and running stats) copied by ``g``.
``homogeneous``
    positively homogeneous and channel-wise (ReLU, pooling, dropout, DropPath,
    identity, padding, up-sampling): unchanged.
``nonhomogeneous``
    element-wise but not homogeneous (GELU, SiLU, ReLU6, Hardswish, tanh...):
    evaluated at student scale, ``f(s ⊙ x) / s``.
``channel_scale``
    a per-channel multiplier (LayerScale, PReLU): parameter copied by ``g``.
``scalar``
    a learnable scalar multiplier (mmcv ``Scale``): unchanged.
``attention``
    multi-head self-attention (a container): ``r·h`` heads of the same size,
    q and k carried at student scale (so the scores are exact), v carried.
``gate``
    a multiplicative gate (sigmoid, hard-sigmoid, SE): no rule yet.
"""
from typing import Optional

import torch.nn as nn

__all__ = ['module_kind', 'qualname', 'MIXING', 'NORMS']

MIXING = ('conv', 'linear')
NORMS = ('batchnorm', 'layernorm', 'groupnorm')

_TORCH_KINDS = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), 'conv'),
    ((nn.Linear, ), 'linear'),
    ((nn.modules.batchnorm._BatchNorm, ), 'batchnorm'),
    ((nn.LayerNorm, ), 'layernorm'),
    ((nn.GroupNorm, ), 'groupnorm'),
    ((nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh,
      nn.ELU, nn.CELU, nn.SELU, nn.Mish, nn.Softplus, nn.GLU), 'nonhomogeneous'),
    ((nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d,
      nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.MaxPool1d, nn.MaxPool2d,
      nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
      nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
      nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
      nn.Flatten, nn.Unflatten, nn.Upsample, nn.ZeroPad2d,
      nn.ConstantPad2d), 'homogeneous'),
    ((nn.PReLU, ), 'channel_scale'),
    ((nn.Sigmoid, nn.Hardsigmoid), 'gate'),
]

# Third-party modules, by qualified class name (no import needed).
_NAMED_KINDS = {
    'mmcv.cnn.bricks.drop.DropPath': 'homogeneous',
    'mmcv.cnn.bricks.drop.Dropout': 'homogeneous',
    'mmpretrain.models.utils.layer_scale.LayerScale': 'channel_scale',
    'mmcv.cnn.bricks.scale.Scale': 'scalar',
    'mmcv.cnn.bricks.scale.LayerScale': 'channel_scale',
    'mmcv.cnn.bricks.hswish.HSwish': 'nonhomogeneous',
    'mmcv.cnn.bricks.swish.Swish': 'nonhomogeneous',
    'mmcv.cnn.bricks.activation.GELU': 'nonhomogeneous',
    'mmcv.cnn.bricks.activation.Clamp': 'nonhomogeneous',
    'mmcv.cnn.bricks.hsigmoid.HSigmoid': 'gate',
    'mmcv.cnn.bricks.transformer.AdaptivePadding': 'homogeneous',
    'mmpretrain.models.utils.attention.MultiheadAttention': 'attention',
    'mmpretrain.models.utils.se_layer.SELayer': 'gate',
    'mmdet.models.layers.se_layer.SELayer': 'gate',
    'mmcv.cnn.bricks.context_block.ContextBlock': 'gate',
}

# Containers that are handled as one unit (their children are not visited).
UNIT_KINDS = ('attention', 'gate')


def qualname(module: nn.Module) -> str:
    """``'package.module.ClassName'`` of ``module``'s type."""
    cls = type(module)
    return f'{cls.__module__}.{cls.__qualname__}'


def module_kind(module: nn.Module) -> Optional[str]:
    """The rule kind of ``module`` (see the module docstring), or None.

    Containers (modules with children) that are not handled as a unit return
    ``'container'``.
    """
    for cls in type(module).__mro__:
        name = f'{cls.__module__}.{cls.__qualname__}'
        if name in _NAMED_KINDS:
            return _NAMED_KINDS[name]
        if cls is nn.Module:
            break
    for types, kind in _TORCH_KINDS:
        if isinstance(module, types):
            return kind
    if any(True for _ in module.children()):
        return 'container'
    return None
