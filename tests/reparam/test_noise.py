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


def test_stream_values_do_not_depend_on_who_draws_them():
    """Drawn ahead on the background thread, or on demand by ``take``: the
    same values, chunk by chunk (CHUNK values per seeded generator)."""
    import time

    from mmgpd.reparam.noise import CHUNK, NoiseStream

    def stream(seed=3):
        return NoiseStream(torch.Generator().manual_seed(seed), 3 * CHUNK)

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ahead = stream()
        with ahead.drawing_ahead():
            assert torch.get_num_threads() == 1  # the block runs on one
            time.sleep(0.05)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    assert any(ahead._drawn)  # it drew something meanwhile
    lazy = stream()
    span = (CHUNK - 5, CHUNK + 7)  # across a chunk border
    assert torch.equal(ahead.take(*span), lazy.take(*span))
    assert not torch.equal(lazy.take(0, 10), stream(4).take(0, 10))
    first = torch.Generator().manual_seed(lazy.base)
    assert torch.equal(lazy.take(0, 10),
                       torch.randn(CHUNK, generator=first)[:10])


def test_noise_past_the_drawn_ahead_values_keeps_the_law():
    """Tensors past the values drawn ahead use streams of their own: still
    zero-sum, still following the generator."""
    from mmgpd.reparam import noise

    old = noise.MAX_AHEAD
    noise.MAX_AHEAD = 0  # nothing drawn ahead
    try:
        a = _teacher(2, seed=0)
        b = _teacher(2, seed=0)
    finally:
        noise.MAX_AHEAD = old
    pooled = _teacher(2, seed=0).state_dict()
    net = make_net().eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        s, t = net(x), a.eval()(x)
    assert (t - s).abs().max() <= 1e-5 * s.abs().max()
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], pooled[k]) for k in sa)
