"""Hooks and loops for GPD training (registered in ``mmgpd.registry.HOOKS`` / ``LOOPS``)."""
