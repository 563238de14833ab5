"""torch.compile (Inductor, CPU) of GPD training: ``compile=True`` in a config
(MMEngine's Runner compiles ``model.train_step``) trains with the eager losses
within fp32 tolerance; benchmarks/compile_ratio.py does what the Runner does
side by side with eager."""
import os.path as osp
import shutil
import sys

import pytest
import torch

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
CFG = osp.join(REPO_ROOT, 'configs/bench/digits_gpd.py')
# 3 iterations of 16 images, no validation, a log line per iteration
QUICK = ['--no-validate', '--cfg-options', 'train_dataloader.dataset.indices=48',
         'train_dataloader.batch_size=16', 'train_cfg.max_epochs=1',
         'default_hooks.logger.interval=1']
#: Inductor reorders fp32 reductions: measured <= 2e-7 over 3 steps
LOSS_RTOL = 1e-5


def test_inductor_cpp_compiler_works():
    from torch._inductor import config
    cxx = config.cpp.cxx[-1] if isinstance(config.cpp.cxx, tuple) else \
        config.cpp.cxx
    assert shutil.which(cxx), (
        f'Inductor needs a C++ compiler ({cxx!r}, torch._inductor.config.cpp'
        '.cxx) on PATH: install g++ (Debian: apt-get install g++)')

    def f(x):
        return torch.sin(x) * 2 + x.cos()

    x = torch.randn(64)
    torch.testing.assert_close(torch.compile(f)(x), f(x))


def _history(runner, key):
    return runner.message_hub.get_scalar(f'train/{key}').data[0]


def test_runner_compile_trains_digits_like_eager(tmp_path):
    import train as train_tool
    eager = train_tool.main([CFG, '--work-dir', str(tmp_path / 'eager'),
                             *QUICK])
    torch._dynamo.reset()
    # the lr schedule changes the lr every iteration: GPD.train_step keeps the
    # optimizer step out of the compiled region, so nothing recompiles
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = train_tool.main([CFG, '--work-dir',
                                    str(tmp_path / 'compiled'), *QUICK,
                                    'compile=True'])
    lrs = compiled.message_hub.get_scalar('train/lr').data[0]
    assert len(set(lrs)) == 3
    # what MMEngine compiled: the bound train_step, replaced on the model
    assert 'train_step' in vars(compiled.model)
    assert 'train_step' not in vars(eager.model)
    assert compiled.iter == eager.iter == 3
    for key in ('loss', 'loss_student', 'loss_dynamic_teacher', 'loss_gap'):
        ref, got = _history(eager, key), _history(compiled, key)
        assert len(got) == 3
        for a, b in zip(got, ref):
            assert a == pytest.approx(b, rel=LOSS_RTOL), key


def _ratio_row(setting, batch):
    from benchmarks.compile_ratio import run_setting
    from benchmarks.cost import SETTINGS
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    torch.set_num_threads(1)  # restored by conftest
    return run_setting(setting, SETTINGS[setting](), batch, check_steps=3,
                       repeats=2)


def test_compile_ratio_digits_losses_equal_eager():
    row = _ratio_row('digits', 8)
    assert row['max_rel_loss_diff'] <= LOSS_RTOL
    assert len(row['losses']) == 3
    # the steps trained: the loss moves, in both
    first, last = row['losses'][0], row['losses'][-1]
    assert first['eager']['loss'] != last['eager']['loss']
    assert row['graph_breaks'] > 0  # backward / optimizer step split the graph
    assert row['ratio'] > 0 and row['eager_ms'] > 0


@pytest.mark.slow
def test_compile_ratio_imagenet_resnet18_losses_equal_eager():
    """mmpretrain's ResNet-18 at 224² (T_d 2x wide), batch 2: minutes of
    Inductor compilation on a small CPU."""
    row = _ratio_row('imagenet', 2)
    assert row['max_rel_loss_diff'] <= LOSS_RTOL
    assert len(row['losses']) == 3


def test_compiled_cbr_under_autocast_stays_fp32():
    """CBR's autocast-off region (``full_precision``) traces in one graph."""
    from mmgpd.registry import MODELS
    from mmgpd.reparam import derive_student_state

    from ..models.test_gpd import gpd_cfg
    torch.manual_seed(0)
    model = MODELS.build(gpd_cfg(ratio=3, branches=('1x1', '1x1_kxk')))
    teacher = model.dynamic_teacher
    ref = derive_student_state(teacher)
    torch._dynamo.reset()
    derive = torch.compile(derive_student_state, fullgraph=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = derive(teacher)
    assert set(got) == set(ref)
    for name, value in ref.items():
        assert got[name].dtype == value.dtype, name
        torch.testing.assert_close(got[name], value, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_runner_compile_with_amp_and_channels_last(tmp_path):
    """--amp (CPU bf16) + model.channels_last=True + compile=True: the eager
    bf16 losses within bf16 rounding of a loss of ~10 (8 eps_bf16)."""
    import train as train_tool
    opts = ['model.channels_last=True']
    eager = train_tool.main([CFG, '--amp', '--work-dir', str(tmp_path / 'e'),
                             *QUICK, *opts])
    torch._dynamo.reset()
    compiled = train_tool.main([CFG, '--amp', '--work-dir',
                                str(tmp_path / 'c'), *QUICK, *opts,
                                'compile=True'])
    for key in ('loss', 'loss_student', 'loss_dynamic_teacher', 'loss_gap'):
        ref, got = _history(eager, key), _history(compiled, key)
        assert len(got) == 3
        for a, b in zip(got, ref):
            assert a == pytest.approx(b, rel=8 * 2.0**-7), key
