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
    a sigmoid-like function: traced through, it needs an exact input.
``layernorm2d``
    mmpretrain's channel-first LayerNorm2d (normalises dim 1).
``roi_pool``
    RoI pooling (mmcv ``RoIAlign``, mmdet ``SingleRoIExtractor``): bilinear
    sampling of each channel at box coordinates, a positively homogeneous,
    channel-wise map of its features: the output keeps the layout of its
    input (every FPN level it reads in one layout), the boxes must be exact
    (the teacher's are the student's).  No parameters; the extractor's
    ``out_channels`` is widened by ``attrs.py``.

Two-stage detectors need two more things, neither a module kind: the shared
FCs' flattened ``C×k×k`` RoI features are an op (``flatten``) that the planner
follows like any other on the tags (``propagate.py``: teacher column
``c'·k² + b`` carries student column ``g(c')·k² + b``; tested by hand in
``tests/models/test_gpd_two_stage.py``), and proposal decoding reads only
*output boundaries* — the RPN / RoI prediction layers, kept at the student's
width and values — which the task names (``output_boundaries`` of
``mmgpd.models.tasks.detection``), since which outputs a model decodes is a
property of the task, not of a layer type.

Only :data:`RULE_UNITS` are units of the layout planner (``propagate.py``):
every other module — containers, SE layers, gates, Flatten, padding, DropPath,
hand-written attention — is traced through and its functional ops are
followed on layouts.  A class whose own ``forward`` differs from its torch
base's is not given the base's kind (``LayerNorm2d``, ``ConvWS2d``).
"""
from typing import Optional

import torch.nn as nn

__all__ = ['module_kind', 'unit_kind', 'qualname', 'MIXING', 'NORMS', 'RULE_UNITS']

MIXING = ('conv', 'linear')
NORMS = ('batchnorm', 'layernorm', 'groupnorm')

_TORCH_KINDS = [
    # transposed convs too: the same rule with the weight's in / out dims
    # swapped (``rules.Builder.mixing``)
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
      nn.ConvTranspose3d), 'conv'),
    ((nn.Linear, ), 'linear'),
    ((nn.modules.batchnorm._BatchNorm, ), 'batchnorm'),
    ((nn.LayerNorm, ), 'layernorm'),
    ((nn.GroupNorm, ), 'groupnorm'),
    ((nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh,
      nn.ELU, nn.CELU, nn.SELU, nn.Mish, nn.Softplus), 'nonhomogeneous'),
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
    'mmpretrain.models.utils.norm.LayerNorm2d': 'layernorm2d',
    'mmcv.cnn.bricks.conv_ws.ConvWS2d': None,
    'mmcv.cnn.bricks.conv_ws.ConvAWS2d': None,
    'torch.nn.modules.activation.GLU': None,
    # two-stage detectors: RoI pooling, channel-wise (a carried unit)
    'mmcv.ops.roi_align.RoIAlign': 'roi_pool',
    'mmdet.models.roi_heads.roi_extractors.single_level_roi_extractor.'
    'SingleRoIExtractor': 'roi_pool',
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

#: Kinds that ``propagate.py`` treats as one unit with a rule of ``ir.py``;
#: every other module is traced through (its functional ops are followed).
RULE_UNITS = ('conv', 'linear', 'batchnorm', 'layernorm', 'groupnorm',
              'layernorm2d', 'nonhomogeneous', 'channel_scale', 'attention',
              'roi_pool', 'refused')

#: why a ``refused`` class has no rule (none at present; the mechanism stays
#: for classes that must be named rather than traced through)
REFUSED = {}


def qualname(module: nn.Module) -> str:
    """``'package.module.ClassName'`` of ``module``'s type."""
    cls = type(module)
    return f'{cls.__module__}.{cls.__qualname__}'


def module_kind(module: nn.Module) -> Optional[str]:
    """The rule kind of ``module`` (see the module docstring), or None.

    Containers (modules with children) that are not handled as a unit return
    ``'container'``.  Third-party classes are matched by exact class first, then
    through their bases only when they do not override ``forward`` (a subclass
    with its own forward, e.g. ``LayerNorm2d``, is not its base).
    """
    own_forward = 'forward' in type(module).__dict__
    for cls in type(module).__mro__:
        if cls is nn.Module or (own_forward and cls is not type(module)):
            break  # a subclass with its own forward is not its base
        name = f'{cls.__module__}.{cls.__qualname__}'
        if name in _NAMED_KINDS:
            kind = _NAMED_KINDS[name]
            if kind is None:
                return 'container' if any(True for _ in module.children()) \
                    else None
            return kind
    if _trusted_forward(module):
        for types, kind in _TORCH_KINDS:
            if isinstance(module, types):
                return kind
    if any(True for _ in module.children()):
        return 'container'
    return None


#: third-party subclasses of torch layers whose forward only adds empty-tensor
#: handling around the torch one
_TRUSTED_FORWARD = {
    'mmcv.cnn.bricks.wrappers.Conv2d', 'mmcv.cnn.bricks.wrappers.Conv3d',
    'mmcv.cnn.bricks.wrappers.ConvTranspose2d', 'mmcv.cnn.bricks.wrappers.Linear',
    'mmcv.cnn.bricks.wrappers.MaxPool2d', 'mmcv.cnn.bricks.wrappers.MaxPool3d',
    # pads the input spatially (from its size), then the torch conv
    'mmcv.cnn.bricks.conv2d_adaptive_padding.Conv2dAdaptivePadding',
}


def _trusted_forward(module: nn.Module) -> bool:
    """Whether a torch-derived class computes what its torch base computes:
    classes of torch itself, subclasses that do not override ``forward``, and
    :data:`_TRUSTED_FORWARD`."""
    for cls in type(module).__mro__:
        if cls.__module__.startswith('torch.'):
            return True
        if qualname_of(cls) in _TRUSTED_FORWARD:
            return True
        if 'forward' in cls.__dict__:
            return False
    return True


def qualname_of(cls) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'


def unit_kind(module: nn.Module) -> Optional[str]:
    """The kind of ``module`` if the layout planner treats it as a unit, else None."""
    kind = module_kind(module)
    return kind if kind in RULE_UNITS else None
