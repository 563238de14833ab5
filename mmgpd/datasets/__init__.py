"""Datasets and transforms (registered in ``mmgpd.registry.DATASETS`` / ``TRANSFORMS``)."""
