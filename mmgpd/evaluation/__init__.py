"""Metrics (registered in ``mmgpd.registry.METRICS``)."""
