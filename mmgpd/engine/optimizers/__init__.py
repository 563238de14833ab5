"""Optimizer wrappers (registered in ``mmgpd.registry.OPTIM_WRAPPERS``)."""
from .amp_optim_wrapper import AmpOptimWrapper

__all__ = ['AmpOptimWrapper']
