"""Hooks and loops for GPD training (registered in ``mmgpd.registry.HOOKS`` / ``LOOPS``)."""
from .hooks import *  # noqa: F401,F403
