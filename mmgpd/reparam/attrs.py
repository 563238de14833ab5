"""Module attributes that a forward reads, widened with the module.

A forward that computes ``torch.split(x, self.width, 1)`` or
``x.reshape(B, N, 3, self.num_heads, C // self.num_heads)`` must see the
teacher's values.  One table, keyed by qualified class name (no import of the
third-party package), says which attributes of which class hold widths or head
counts:

* ``'width'`` — a channel count: ``round(r · v)`` (``replica.teacher_width``);
* ``'heads'`` — a head count: whole heads of the student's size ``d``
  (``head_dims``, or ``embed_dims / num_heads``), ``teacher_width(h · d) / d``.

A list or tuple of widths (``num_features`` per stage) is widened entry by
entry.  Attributes a class does not have are skipped.

Widening attributes never changes parameters; the rules (``rules.py``) and the
layout planner (``propagate.py``) do that.  A class whose forward reads a width
that is not in this table gives a teacher whose code disagrees with its
tensors: the planner then names the op that fails.
"""
from typing import Dict

import torch.nn as nn

from .kinds import qualname
from .replica import teacher_width

__all__ = ['ATTRIBUTES', 'widen_attributes']

#: qualified class name -> {attribute: 'width' | 'heads'}
_HEADS = {'embed_dims': 'width', 'num_heads': 'heads'}
_MMP = 'mmpretrain.models.backbones.'

ATTRIBUTES: Dict[str, Dict[str, object]] = {
    _MMP + 'res2net.Bottle2neck': {'width': 'width'},
    'mmpretrain.models.utils.attention.WindowMSA': _HEADS,
    'mmpretrain.models.utils.attention.WindowMSAV2': _HEADS,
    'mmpretrain.models.utils.attention.BEiTAttention': _HEADS,
    _MMP + 'swin_transformer.SwinTransformer': {'num_features': 'width'},
    _MMP + 'swin_transformer_v2.SwinTransformerV2': {'num_features': 'width'},
    _MMP + 'davit.DaViT': {'num_features': 'width'},
    _MMP + 'davit.DaViTWindowMSA': _HEADS,
    _MMP + 'davit.ChannelAttention': _HEADS,
    _MMP + 'mixmim.MixMIMWindowAttention': _HEADS,
    _MMP + 'hivit.Attention': _HEADS,
    _MMP + 'twins.GlobalSubsampledAttention': _HEADS,
    _MMP + 'twins.LocallyGroupedSelfAttention': _HEADS,
    _MMP + 'xcit.XCA': _HEADS,
    _MMP + 'xcit.ClassAttntion': _HEADS,
    _MMP + 'tnt.PixelEmbed': {'embed_dims_inner': 'width'},
    _MMP + 'van.VANBlock': {'out_channels': 'width'},
    _MMP + 'edgenext.SDTAEncoder': {'conv_channels': 'width'},
    'mmpretrain.models.utils.attention.ChannelMultiheadAttention': _HEADS,
    _MMP + 'hornet.gnConv': {'dims': 'width'},
    _MMP + 'hornet.HorNetLayerNorm': {'normalized_shape': 'width'},
    # allocates its (num_rois, out_channels, k, k) output from this width
    'mmdet.models.roi_heads.roi_extractors.single_level_roi_extractor.'
    'SingleRoIExtractor': {'out_channels': 'width'},
}


def _widen(value, ratio):
    if isinstance(value, (list, tuple)):
        return type(value)(_widen(v, ratio) for v in value)
    return teacher_width(value, ratio)


def widen_attributes(model: nn.Module, ratio: float) -> nn.Module:
    """Widen, in place, the attributes of :data:`ATTRIBUTES` in ``model``."""
    for module in model.modules():
        spec = ATTRIBUTES.get(qualname(module))
        if not spec or getattr(module, '_gpd_attrs_widened', False):
            continue
        old = {name: getattr(module, name) for name in spec
               if hasattr(module, name)}
        for name, rule in spec.items():
            if name not in old:
                continue
            if rule == 'width':
                setattr(module, name, _widen(old[name], ratio))
                continue
            heads = old[name]
            head_dim = getattr(module, 'head_dims', None) or getattr(
                module, 'head_dim', None)
            if not isinstance(head_dim, int):
                embed = old.get('embed_dims', getattr(module, 'dim', None))
                head_dim = embed // heads if isinstance(embed, int) else None
            if head_dim:
                setattr(module, name,
                        teacher_width(heads * head_dim, ratio) // head_dim)
            else:
                setattr(module, name, teacher_width(heads, ratio))
        module._gpd_attrs_widened = True
    return model
