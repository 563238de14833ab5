"""mmgpd: Gap Preserving Distillation (GPD, Guo et al., ICLR 2025) for OpenMMLab.

Importing :mod:`mmgpd` applies :mod:`mmgpd.utils.compat`, which absorbs the known
breakages of the pinned OpenMMLab stack on current PyTorch / setuptools / NumPy.
"""
from .utils.compat import apply_compat_patches
from .version import __version__

apply_compat_patches()

__all__ = ['__version__', 'apply_compat_patches']
