"""IR noise: one stream per tensor, so the teacher depends on the generator
only (not on the thread pool that fills it), and zero-sum noise keeps T_d == S."""
import torch

from mmgpd.reparam import inverse_reparameterize

from .test_core import make_net


def _teacher(threads, seed=0, mode='zero_sum', std=1e-3):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return inverse_reparameterize(
            make_net(), 2, branches=True, noise=std, noise_mode=mode,
            generator=torch.Generator().manual_seed(seed))
    finally:
        torch.set_num_threads(old)


def test_noise_does_not_depend_on_the_thread_count():
    for mode in ('zero_sum', 'iid'):
        std = 1e-3 if mode == 'zero_sum' else 1e-6  # iid moves T_d(x)
        one, four = _teacher(1, mode=mode, std=std), _teacher(4, mode=mode, std=std)
        a, b = one.state_dict(), four.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (mode, k)


def test_noise_follows_the_generator():
    a, b = _teacher(2, seed=0).state_dict(), _teacher(2, seed=1).state_dict()
    clean = inverse_reparameterize(  # same branches, no noise
        make_net(), 2, branches=True,
        generator=torch.Generator().manual_seed(0)).state_dict()
    noisy = [k for k in a if not torch.equal(a[k], clean[k])]
    assert len(noisy) >= 3  # the widened convs past the stem
    for k in noisy:  # another seed, other noise
        assert not torch.equal(a[k], b[k]), k
        assert (a[k] - clean[k]).abs().max() < 0.05, k  # std 1e-3


def test_zero_sum_noise_keeps_the_function():
    net = make_net().eval()
    teacher = _teacher(2).eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        s, t = net(x), teacher(x)
    assert (t - s).abs().max() <= 1e-5 * s.abs().max()
