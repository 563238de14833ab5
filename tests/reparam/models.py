"""Builders of the whole OpenMMLab models the reparam core must handle.

They live in :mod:`mmgpd.testing` (shared with ``benchmarks/``); re-exported
here under the names the tests use.
"""
from mmgpd.testing import CLASSIFIERS, DETECTORS, HEADS, TRANSFORMERS, build, input_for

__all__ = ['CLASSIFIERS', 'DETECTORS', 'HEADS', 'TRANSFORMERS', 'build',
           'input_for']
