"""Package metadata and layout."""
import importlib.metadata
import os.path as osp
import re

import mmgpd
from .conftest import REPO_ROOT


def test_version_is_single_sourced():
    with open(osp.join(REPO_ROOT, 'mmgpd', 'version.py')) as f:
        declared = re.search(r"__version__ = '([^']+)'", f.read()).group(1)
    assert mmgpd.__version__ == declared
    assert importlib.metadata.version('mmgpd') == declared


def test_pinned_stack_versions():
    """The tested version matrix of README.md is what is installed."""
    import mmcv
    import mmdet
    import mmengine
    import mmpretrain
    import torch
    import torchvision
    assert torch.__version__.split('+')[0] == '2.14.1'
    assert torchvision.__version__.split('+')[0] == '0.29.1'
    assert (mmcv.__version__, mmengine.__version__, mmpretrain.__version__,
            mmdet.__version__) == ('2.1.0', '0.10.7', '1.2.0', '3.3.0')
    assert importlib.metadata.version('mmcv') == '2.1.0'  # not mmcv-lite
    from mmcv.utils import ext_loader
    ext_loader.load_ext('_ext', ['nms'])  # the compiled ops are there
