"""Hooks, loops and optimizer wrappers for GPD training (registered in
``mmgpd.registry.HOOKS`` / ``LOOPS`` / ``OPTIM_WRAPPERS``)."""
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
