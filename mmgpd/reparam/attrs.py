"""Module attributes that a forward reads, widened with the module.

A forward that computes ``torch.split(x, self.width, 1)`` or
``x.reshape(B, N, 3, self.num_heads, C // self.num_heads)`` must see the
teacher's values.  One table, keyed by qualified class name (no import of the
third-party package), says which attributes of which class hold widths or head
counts:

* ``'width'`` — a channel count: ``round(r · v)`` (``replica.teacher_width``);
* ``'heads'`` — a head count of the space of ``embed_attr`` channels: whole
  heads of the student's size, ``teacher_width(h · d) / d``.

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

#: qualified class name -> {attribute: 'width' | ('heads', head-dim source)}
ATTRIBUTES: Dict[str, Dict[str, object]] = {
    'mmpretrain.models.backbones.res2net.Bottle2neck': {'width': 'width'},
    'mmpretrain.models.backbones.swin_transformer.SwinBlock': {},
    'mmpretrain.models.utils.attention.WindowMSA': {
        'embed_dims': 'width', 'num_heads': ('heads', 'embed_dims')},
    'mmpretrain.models.utils.attention.WindowMSAV2': {
        'embed_dims': 'width', 'num_heads': ('heads', 'embed_dims')},
    'mmpretrain.models.utils.attention.BEiTAttention': {
        'embed_dims': 'width', 'num_heads': ('heads', 'embed_dims')},
}


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
            value = old[name]
            if rule == 'width':
                setattr(module, name, teacher_width(value, ratio))
            else:
                embed = old.get(rule[1], getattr(module, rule[1]))
                head_dim = embed // value
                setattr(module, name,
                        teacher_width(embed, ratio) // head_dim)
        module._gpd_attrs_widened = True
    return model
