"""``model.channels_last=True``: S, T_d, T_s and the inputs in
``torch.channels_last``; CBR-derived and extracted student weights in the same
format; the same numbers as the contiguous model (exactness unchanged)."""
import pytest
import torch

from mmgpd.registry import MODELS
from mmgpd.reparam import (default_forward, derive_student_state,
                           extract_student, max_relative_deviation)

from .test_gpd import batch, gpd_cfg, step, teacher_ckpt  # noqa: F401

CL = torch.channels_last
SETTINGS = {
    'r2': dict(),
    'r1.5': dict(ratio=1.5),
    'r2_branches': dict(branches=('1x1', '1x1_avg', '1x1_kxk')),
}


def _is_cl(t):
    """A genuinely channels_last 4-D tensor (not one whose sizes make both
    formats contiguous)."""
    return t.is_contiguous(memory_format=CL) and (
        not t.is_contiguous() or t.shape[1] == 1 or t.shape[2:].numel() == 1)


def _four_d(named):
    out = {n: t for n, t in named if t.dim() == 4}
    assert out
    return out


def _pair(teacher=None, **distiller):
    models = []
    for cl in (False, True):
        cfg = gpd_cfg(**distiller)
        cfg.channels_last = cl
        if teacher is not None:
            cfg.teacher, cfg.teacher_ckpt = teacher[1], teacher[0]
            cfg.distiller.kd_loss = dict(type='mmgpd.KDLoss', temperature=4.0)
        torch.manual_seed(0)
        models.append(MODELS.build(cfg))
    return models


@pytest.mark.parametrize('setting', list(SETTINGS))
def test_memory_formats_and_exactness(setting):
    plain, model = _pair(**SETTINGS[setting])
    t_d = model.dynamic_teacher
    for name, p in _four_d(t_d.named_parameters()).items():
        assert _is_cl(p), name
    for name, p in _four_d(model.student.template.named_parameters()).items():
        assert _is_cl(p), name
    derived = _four_d(derive_student_state(t_d).items())
    for name, v in derived.items():
        assert _is_cl(v), name
    extracted = extract_student(t_d)
    for name, p in _four_d(extracted.named_parameters()).items():
        assert _is_cl(p), name
    # the same weights, other strides
    for (n, a), (_, b) in zip(plain.state_dict().items(),
                              model.state_dict().items()):
        assert torch.equal(a, b), n
    assert all(p.is_contiguous() for p in _four_d(
        plain.dynamic_teacher.named_parameters()).values())

    # T_d vs its extracted student (they differ by the effect of IR's noise,
    # ~1e-4 here): the contiguous model's deviation, within fp32
    x = plain.data_preprocessor(batch(8), False)['inputs']
    devs = []
    for m, inputs in ((plain, x), (model, x.contiguous(memory_format=CL))):
        t_d = m.dynamic_teacher.eval()
        with torch.no_grad():
            devs.append(max_relative_deviation(
                default_forward(t_d, inputs),
                default_forward(extract_student(t_d).eval(), inputs)))
    assert devs[1] == pytest.approx(devs[0], abs=1e-6)
    with torch.no_grad():
        for name in ('student', 'dynamic_teacher'):
            a = plain.eval()(x, mode='tensor') if name == 'student' else \
                plain.dynamic_teacher(x, mode='tensor')
            model.eval_model = name
            b = model.eval()(x, mode='tensor')
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_inputs_and_static_teacher_are_channels_last(teacher_ckpt):  # noqa: F811
    plain, model = _pair(teacher=teacher_ckpt)
    for name, p in _four_d(model.teacher.named_parameters()).items():
        assert _is_cl(p), name
    seen = {}
    hooks = []

    def record(name, x):
        seen.setdefault(name, _is_cl(x))

    for name, root in (('student', model.student.template),
                       ('dynamic_teacher', model.dynamic_teacher),
                       ('static_teacher', model.teacher)):
        conv = root.backbone.conv1
        hooks.append(conv.register_forward_pre_hook(
            lambda m, args, name=name: record(name, args[0])))
    log = step(model.train())
    for h in hooks:
        h.remove()
    assert seen == {'student': True, 'dynamic_teacher': True,
                    'static_teacher': True}
    ref = step(plain.train())
    assert set(log) == set(ref)
    for key in ref:
        torch.testing.assert_close(log[key], ref[key], rtol=1e-5, atol=1e-6)
    # after an optimizer step T_d's weights are still channels_last
    for name, p in _four_d(model.dynamic_teacher.named_parameters()).items():
        assert _is_cl(p), name


def test_channels_last_must_be_a_bool():
    cfg = gpd_cfg()
    cfg.channels_last = 'yes'
    with pytest.raises(TypeError, match='model.channels_last'):
        MODELS.build(cfg)
