"""The ImageNet GPD configs of the widened zoo (MobileNetV3-small,
EfficientNet-b0, ConvNeXt-atto, Swin-tiny): they inherit mmpretrain's own
configs, wrap its model in mmgpd.GPD, and IR widens the student exactly."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from ..conftest import REPO_ROOT

CASES = {  # config -> (mmpretrain base, backbone type, probe size)
    'mobilenet-v3-small_in1k.py': ('mobilenet-v3-small_8xb128_in1k',
                                   'MobileNetV3', 64),
    'efficientnet-b0_in1k.py': ('efficientnet-b0_8xb32_in1k', 'EfficientNet',
                                64),
    'convnext-atto_in1k.py': ('convnext-tiny_32xb128_in1k', 'ConvNeXt', 64),
    'swin-tiny_in1k.py': ('swin-tiny_16xb64_in1k', 'SwinTransformer', 224),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_zoo_config_wraps_mmpretrains_model_and_is_exact(name):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from mmgpd.reparam import inverse_reparameterize, max_relative_deviation
    base, backbone, size = CASES[name]
    path = osp.join(REPO_ROOT, 'configs', 'gpd', name)
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'mmgpd.GPD'
    assert cfg.model.distiller.ratio == 2
    assert base in open(path).read()
    assert any(h['type'] == 'mmgpd.GPDHook' for h in cfg.custom_hooks)
    arch = cfg.model.architecture
    assert arch.backbone.type == backbone
    if name.startswith('convnext'):
        assert arch.backbone.arch == 'atto' and arch.head.in_channels == 320
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    student = MODELS.build(arch)
    student.init_weights()
    student.eval()
    probe = torch.randn(2, 3, size, size)
    teacher = inverse_reparameterize(
        student, 2, example_inputs=probe,
        branches=cfg.model.distiller.get('branches'))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = student(x, mode='tensor')
        assert ref.abs().max() > 0
        assert max_relative_deviation(teacher(x, mode='tensor'), ref) <= 1e-5
