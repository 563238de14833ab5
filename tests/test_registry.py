"""mmgpd's registries are children of MMEngine's and reachable from mmpretrain/mmdet scopes."""
import importlib

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.registry import MODELS as MMENGINE_MODELS

import mmgpd.registry as registry
from mmgpd.utils import register_all_modules


@registry.MODELS.register_module(force=True)
class RegistryTestDummy(nn.Module):
    """A module registered only in mmgpd's MODELS registry."""

    def __init__(self, width=3):
        super().__init__()
        self.width = width


@pytest.mark.parametrize('name', registry.__all__)
def test_every_registry_is_a_child_of_mmengine(name):
    reg = getattr(registry, name)
    assert reg.scope == 'mmgpd'
    assert reg.parent is not None and reg.parent.scope == 'mmengine'
    assert reg.parent._children['mmgpd'] is reg
    assert reg._locations and all(loc.startswith('mmgpd.') for loc in reg._locations)
    for loc in reg._locations:
        importlib.import_module(loc)


def test_build_mmgpd_type_from_mmpretrain_scoped_config(tmp_path):
    """`type='mmgpd.X'` resolves under an inherited mmpretrain default scope."""
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']\n"
        "dummy = dict(type='mmgpd.RegistryTestDummy', width=5)\n")
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.default_scope == 'mmpretrain'
    import mmpretrain.registry as mmpretrain_registry
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        dummy = mmpretrain_registry.MODELS.build(cfg.dummy)
        root_built = MMENGINE_MODELS.build(cfg.dummy)
        # The inherited mmpretrain types still build in the same scope.
        backbone = MMENGINE_MODELS.build(cfg.model.backbone)
    assert isinstance(dummy, RegistryTestDummy) and dummy.width == 5
    assert isinstance(root_built, RegistryTestDummy)
    assert type(backbone).__module__.startswith('mmpretrain.')


def test_build_mmgpd_type_from_mmdet_scope():
    import mmdet.registry as mmdet_registry
    with DefaultScope.overwrite_default_scope('mmdet'):
        dummy = mmdet_registry.MODELS.build(dict(type='mmgpd.RegistryTestDummy'))
    assert isinstance(dummy, RegistryTestDummy) and dummy.width == 3


def test_unknown_mmgpd_type_is_a_clear_error():
    import mmpretrain.registry as mmpretrain_registry
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(KeyError, match='NoSuchThing'):
            mmpretrain_registry.MODELS.build(dict(type='mmgpd.NoSuchThing'))


def test_register_all_modules_sets_the_mmgpd_scope():
    register_all_modules(init_default_scope=True)
    assert DefaultScope.get_current_instance().scope_name == 'mmgpd'
    assert isinstance(registry.MODELS.build(dict(type='RegistryTestDummy')),
                      RegistryTestDummy)
