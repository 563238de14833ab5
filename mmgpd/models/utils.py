"""Small helpers shared by the GPD algorithm and distiller."""
import torch.nn as nn


def mark_initialized(module: nn.Module) -> nn.Module:
    """Keep MMEngine's ``init_weights`` away from an already built model
    (the dynamic teacher built by IR, the static teacher loaded from a checkpoint)."""
    for m in module.modules():
        if hasattr(m, '_is_init'):
            m._is_init = True
    return module
