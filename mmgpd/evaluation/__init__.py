"""Metrics (registered in ``mmgpd.registry.METRICS``)."""
from .per_model import PerModelMetric

__all__ = ['PerModelMetric']
