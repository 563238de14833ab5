"""KCD (mmgpd.models.methods.kcd): channel statistics, the assignment, the
reconstructed options (spatial_align, statistic, stats_momentum), state."""
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmgpd.models.methods.kcd import KCD, ChannelMatch, align_spatial


def features(n=12, c=16, hw=4, seed=0, dtype=torch.float32):
    """Correlated channels (a random mixing of c latent maps), not collinear."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, c, hw, hw, generator=g, dtype=torch.float64)
    mix = torch.eye(c, dtype=torch.float64) + \
        0.4 * torch.randn(c, c, generator=g, dtype=torch.float64)
    return torch.einsum('oc,nchw->nohw', mix, latent).to(dtype)


def permuted_teacher(s, sigma, seed=1):
    """Teacher channel i = a_i · student channel sigma[i] + b_i (a_i > 0)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(len(sigma), generator=g, dtype=s.dtype) + 0.5
    b = torch.randn(len(sigma), generator=g, dtype=s.dtype)
    return s[:, sigma] * a.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)


def kcd(cs, ct, mode='permute', taps=('stage4', ), hw=4, **kw):
    m = KCD(taps=taps, mode=mode, **kw)
    m.prepare({t: torch.Size([2, cs, hw, hw]) for t in taps},
              {t: torch.Size([2, ct, hw, hw]) for t in taps})
    return m


def solve(m, s, t, tap='stage4', chunks=3):
    for part_s, part_t in zip(s.chunk(chunks), t.chunk(chunks)):
        m.accumulate({tap: part_s}, {tap: part_t})
    return m.update()


# ------------------------------------------------------------- statistics
def test_correlation_matches_numpy_and_batching():
    s = features(n=10, c=5, hw=3, dtype=torch.float64)
    t = features(n=10, c=7, hw=3, seed=3, dtype=torch.float64)
    one, many = ChannelMatch(5, 7), ChannelMatch(5, 7)
    one.accumulate(s, t)
    for a, b in zip(s.chunk(4), t.chunk(4)):
        many.accumulate(a, b)
    zs = s.permute(0, 2, 3, 1).reshape(-1, 5).numpy()
    zt = t.permute(0, 2, 3, 1).reshape(-1, 7).numpy()
    ref = np.corrcoef(zt.T, zs.T)[:7, 7:]  # (C_t, C_s)
    np.testing.assert_allclose(one.correlation().numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(many.correlation().numpy(), ref, atol=1e-12)


def test_dead_channel_has_zero_correlation():
    s = features(n=6, c=4, hw=2, dtype=torch.float64)
    t = s.clone()
    t[:, 2] = 3.0  # constant channel
    m = ChannelMatch(4, 4)
    m.accumulate(s, t)
    r = m.correlation()
    assert torch.equal(r[2], torch.zeros(4, dtype=torch.float64))
    assert torch.isfinite(r).all()


# ------------------------------------------------------------- recovery
@pytest.mark.parametrize('mode', ['permute', 'orthogonal'])
def test_known_permutation_is_recovered_exactly(mode):
    c = 16
    sigma = torch.randperm(c, generator=torch.Generator().manual_seed(5))
    s = features(c=c)
    t = s[:, sigma]  # the teacher is a channel permutation of the student
    m = kcd(c, c, mode)
    report = solve(m, s, t)
    assert m.solved
    match = m.matches['stage4']
    if mode == 'permute':
        inv = torch.argsort(sigma)
        assert torch.equal(match.perm, inv)
        assert report['stage4']['matched_corr'] == pytest.approx(1.0, abs=1e-9)
    else:
        # Procrustes of a permuted positive-definite correlation: the
        # permutation matrix itself
        ref = torch.zeros(c, c)
        ref[torch.arange(c), torch.argsort(sigma)] = 1.0  # Q[j, perm(j)] = 1
        assert torch.allclose(match.transform, ref, atol=1e-5)
    s_al, t_al = match.align(s, t)
    assert torch.allclose(t_al, s_al, atol=1e-5)
    assert float(m({'stage4': s}, {'stage4': t})['loss_kcd']) < 1e-9


def test_permutation_recovered_under_affine_channel_rescaling():
    """Correlation is per-channel affine invariant: a_i·s + b_i still matches."""
    c = 12
    sigma = torch.randperm(c, generator=torch.Generator().manual_seed(7))
    s = features(c=c, seed=2, dtype=torch.float64)
    m = kcd(c, c)
    solve(m, s, permuted_teacher(s, sigma))
    assert torch.equal(m.matches['stage4'].perm, torch.argsort(sigma))


def test_wider_teacher_extra_channels_dropped():
    """C_t > C_s: the teacher holds the student's channels (permuted) among
    noise channels; each student channel finds its own, the noise is dropped."""
    cs, ct = 8, 13
    s = features(c=cs, seed=4)
    noise = features(c=ct - cs, seed=9)
    order = torch.randperm(ct, generator=torch.Generator().manual_seed(1))
    t = torch.cat([s, noise], 1)[:, order]  # teacher channel i = cat[order[i]]
    m = kcd(cs, ct)
    solve(m, s, t)
    perm = m.matches['stage4'].perm
    # student channel j sits at teacher position where order == j
    expect = torch.argsort(order)[:cs]
    assert torch.equal(perm, expect)
    s_al, t_al = m.matches['stage4'].align(s, t)
    assert s_al.shape == t_al.shape == s.shape
    assert torch.equal(s_al, t_al)


def test_narrower_teacher_unmatched_student_channels_get_no_loss():
    """C_t < C_s: every teacher channel goes to its student channel, the
    student channels with no teacher counterpart are marked -1 and left out."""
    cs, ct = 10, 6
    s = features(c=cs, seed=6)
    pick = torch.tensor([7, 2, 9, 0, 4, 5])  # teacher i = student pick[i]
    t = s[:, pick]
    m = kcd(cs, ct)
    solve(m, s, t)
    perm = m.matches['stage4'].perm
    expect = torch.full((cs, ), -1)
    expect[pick] = torch.arange(ct)
    assert torch.equal(perm, expect)
    s_al, t_al = m.matches['stage4'].align(s, t)
    assert s_al.shape == (12, ct, 4, 4)
    assert torch.equal(s_al, t_al)
    # gradient reaches only the matched student channels
    s_req = s.clone().requires_grad_(True)
    m({'stage4': s_req + 0.1}, {'stage4': t})['loss_kcd'].backward()
    got = s_req.grad.abs().sum((0, 2, 3)) > 0
    assert torch.equal(got, expect >= 0)


def test_orthogonal_transform_is_semi_orthogonal_for_both_width_orders():
    for cs, ct in ((6, 9), (9, 6)):
        m = kcd(cs, ct, 'orthogonal')
        solve(m, features(c=cs, seed=1), features(c=ct, seed=2))
        q = m.matches['stage4'].transform.double()
        small = q @ q.t() if cs <= ct else q.t() @ q
        assert torch.allclose(small, torch.eye(min(cs, ct), dtype=q.dtype),
                              atol=1e-5)
        s_al, t_al = m.matches['stage4'].align(features(c=cs), features(c=ct))
        assert s_al.shape == t_al.shape == (12, cs, 4, 4)


def test_spatial_mismatch_pools_the_larger_map():
    s = features(n=2, c=3, hw=8)
    t = features(n=2, c=3, hw=4)
    a, b = align_spatial(s, t)
    assert a.shape == b.shape == (2, 3, 4, 4)
    assert torch.allclose(a[0, 0, 0, 0], s[0, 0, :2, :2].mean())
    b2, a2 = align_spatial(t, s)
    assert b2.shape == a2.shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match='larger'):
        align_spatial(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 2, 4))


def test_margin_keeps_previous_assignment_and_online_refresh_changes():
    c = 8
    s = features(c=c, seed=11)
    sig1 = torch.randperm(c, generator=torch.Generator().manual_seed(1))
    sig2 = torch.randperm(c, generator=torch.Generator().manual_seed(2))
    m = kcd(c, c, margin=0.0)
    solve(m, s, s[:, sig1])
    report = solve(m, s, s[:, sig2])  # better match found: replaced
    assert torch.equal(m.matches['stage4'].perm, torch.argsort(sig2))
    assert report['stage4']['kept'] == 0.0 and report['stage4']['changed'] > 0
    sticky = kcd(c, c, margin=2.0)  # an improvement of < 2 per channel: kept
    solve(sticky, s, s[:, sig1])
    report = solve(sticky, s, s[:, sig2])
    assert torch.equal(sticky.matches['stage4'].perm, torch.argsort(sig1))
    assert report['stage4']['kept'] == 1.0 and report['stage4']['changed'] == 0.0


# ------------------------------------------------------------- options
def test_bilinear_spatial_align_interpolates_the_larger_map():
    """spatial_align='bilinear': the larger map is interpolated (not pooled)
    to the smaller's size, for the statistics and the loss alike. 6 -> 4
    (a non-integer factor: at 2x bilinear equals 2x2 average pooling)."""
    s = features(n=4, c=5, hw=6, dtype=torch.float64)
    t = features(n=4, c=7, hw=4, seed=3, dtype=torch.float64)
    a, b = align_spatial(s, t, 'bilinear')
    ref = F.interpolate(s, size=(4, 4), mode='bilinear', align_corners=False)
    assert torch.equal(a, ref) and b is t
    pooled, _ = align_spatial(s, t)  # the default
    assert not torch.allclose(a, pooled)
    b2, a2 = align_spatial(t, s, 'bilinear')  # either side may be larger
    assert torch.equal(a2, ref) and b2 is t
    with pytest.raises(ValueError, match='spatial_align'):
        align_spatial(s, t, 'nearest')
    m = kcd(5, 7, spatial_align='bilinear', hw=6)
    m.matches['stage4'].accumulate(s, t)
    same = ChannelMatch(5, 7)
    same.accumulate(ref, t)  # equal sizes: no alignment
    assert torch.allclose(m.matches['stage4'].correlation(),
                          same.correlation(), atol=1e-12)
    m.update()
    s_al, t_al = m.matches['stage4'].align(s.float(), t.float())
    assert s_al.shape == t_al.shape == (4, 5, 4, 4)
    assert torch.allclose(s_al, ref.float(), atol=1e-6)


def test_class_profile_statistic():
    """statistic='class_profile': R = cos of the class-mean profiles of the
    channels' spatial means; a positively rescaled channel permutation is
    recovered; labels are required."""
    c, k = 10, 4
    s = features(n=16, c=c, seed=8, dtype=torch.float64)
    labels = torch.arange(16) % k
    sigma = torch.randperm(c, generator=torch.Generator().manual_seed(4))
    scale = torch.rand(c, generator=torch.Generator().manual_seed(5),
                       dtype=s.dtype) + 0.5
    t = s[:, sigma] * scale.view(1, -1, 1, 1)
    m = kcd(c, c, statistic='class_profile', num_classes=k)
    for part_s, part_t, part_y in zip(s.chunk(3), t.chunk(3), labels.chunk(3)):
        m.accumulate({'stage4': part_s}, {'stage4': part_t}, part_y)
    r = m.matches['stage4'].correlation()
    # by hand: class means of the spatial means, then column cosines
    onehot = F.one_hot(labels, k).double()
    prof_s = (onehot.t() @ s.mean((2, 3))) / onehot.sum(0)[:, None]
    prof_t = (onehot.t() @ t.mean((2, 3))) / onehot.sum(0)[:, None]
    ref = F.normalize(prof_t, dim=0).t() @ F.normalize(prof_s, dim=0)
    assert torch.allclose(r, ref, atol=1e-12)
    report = m.update()
    assert torch.equal(m.matches['stage4'].perm, torch.argsort(sigma))
    assert report['stage4']['matched_corr'] == pytest.approx(1.0, abs=1e-9)
    # the default statistic differs (rows = images x positions, centred)
    assert not torch.allclose(r, ChannelMatch(c, c).correlation(
        _stats(s, t)), atol=1e-3)
    with pytest.raises(RuntimeError, match='labels'):
        m.accumulate({'stage4': s}, {'stage4': t})
    with pytest.raises(ValueError, match='labels'):
        m.accumulate({'stage4': s}, {'stage4': t}, labels + k)


def _stats(s, t):
    one = ChannelMatch(s.shape[1], t.shape[1])
    one.accumulate(s, t)
    return {n: getattr(one, n) for n in one._stat_names}


def test_stats_momentum_averages_the_cost_across_refreshes():
    """stats_momentum=μ: the second solve uses μ·R₁ + (1 − μ)·R₂, kept in a
    persistent buffer; the default keeps no such buffer (checkpoints as
    before) and solves from the last pass alone."""
    c = 8
    s = features(c=c, seed=11)
    sig1 = torch.randperm(c, generator=torch.Generator().manual_seed(1))
    sig2 = torch.randperm(c, generator=torch.Generator().manual_seed(2))
    r1 = ChannelMatch(c, c).correlation(_stats(s, s[:, sig1]))
    r2 = ChannelMatch(c, c).correlation(_stats(s, s[:, sig2]))
    m = kcd(c, c, stats_momentum=0.9)
    solve(m, s, s[:, sig1])
    match = m.matches['stage4']
    assert torch.allclose(match.corr_ema, r1, atol=1e-12)  # first: R₁ itself
    solve(m, s, s[:, sig2])
    avg = 0.9 * r1 + 0.1 * r2
    assert torch.allclose(match.corr_ema, avg, atol=1e-12)
    # the old assignment still wins on the average (momentum 0 switches:
    # test_margin_keeps_previous_assignment_and_online_refresh_changes)
    assert torch.equal(match.perm, torch.argsort(sig1))
    assert 'matches.stage4.corr_ema' in m.state_dict()
    assert set(kcd(c, c).state_dict()) == {
        'matches.stage4.solved', 'matches.stage4.score', 'matches.stage4.perm'}
    # orthogonal mode solves from the average too
    q = kcd(c, c, 'orthogonal', stats_momentum=0.5)
    solve(q, s, s[:, sig1])
    solve(q, s, s[:, sig2])
    u, _, vh = torch.linalg.svd((0.5 * r1 + 0.5 * r2).t())
    assert torch.allclose(q.matches['stage4'].transform.double(), u @ vh,
                          atol=1e-5)


# ------------------------------------------------------------- state
def test_state_dict_round_trip_and_unsolved_error():
    c = 8
    sigma = torch.randperm(c, generator=torch.Generator().manual_seed(3))
    s = features(c=c)
    for mode in ('permute', 'orthogonal'):
        m = kcd(c, c, mode, taps=('fpn0', 'fpn1'))
        for tap in ('fpn0', 'fpn1'):
            m.matches[tap].accumulate(s, s[:, sigma])
        m.update()
        state = m.state_dict()
        key = 'perm' if mode == 'permute' else 'transform'
        assert f'matches.fpn0.{key}' in state and 'matches.fpn1.solved' in state
        assert not any(k.endswith('.cross') for k in state)  # pass-local sums
        fresh = kcd(c, c, mode, taps=('fpn0', 'fpn1'))
        with pytest.raises(RuntimeError, match='KCDHook'):
            fresh({'fpn0': s, 'fpn1': s}, {'fpn0': s, 'fpn1': s})
        fresh.load_state_dict(state)
        assert fresh.solved
        for k, v in state.items():
            assert torch.equal(fresh.state_dict()[k], v), k
        out = fresh({'fpn0': s, 'fpn1': s}, {'fpn0': s[:, sigma],
                                               'fpn1': s[:, sigma]})
        assert float(out['loss_kcd']) < 1e-9
    # statistics were reset by update(): nothing left to solve from
    with pytest.raises(RuntimeError, match='no channel statistics'):
        m.update()


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match='mode'):
        KCD(mode='rotate')
    with pytest.raises(KeyError, match='taps'):
        KCD(taps=('stage3', )).prepare({'stage4': torch.Size([1, 2, 1, 1])},
                                       {'stage4': torch.Size([1, 2, 1, 1])})
    with pytest.raises(KeyError, match='loss'):
        KCD(loss=dict(type='mmgpd.NoSuchLoss'))
    with pytest.raises(ValueError, match='statistic'):
        KCD(statistic='covariance')
    with pytest.raises(ValueError, match='num_classes'):
        KCD(statistic='class_profile')
    with pytest.raises(ValueError, match='spatial_align'):
        KCD(spatial_align='nearest')
    with pytest.raises(ValueError, match='stats_momentum'):
        KCD(stats_momentum=1.0)


# ------------------------------------------------------------- two ranks
C_DIST = 8
SIGMA_SEED = 13


def _dist_data():
    """Rank 0 and rank 1 halves. On rank 1's half alone channels 0-3 are
    constant (no correlation to solve from): only the all-reduced statistics
    identify the permutation there."""
    s = features(n=8, c=C_DIST, seed=21, dtype=torch.float64)
    s1 = features(n=8, c=C_DIST, seed=22, dtype=torch.float64)
    s1[:, :4] = 1.5
    sigma = torch.randperm(C_DIST, generator=torch.Generator().manual_seed(
        SIGMA_SEED))
    return [(s, s[:, sigma]), (s1, s1[:, sigma])], sigma


def _worker(rank, port, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    try:
        halves, _ = _dist_data()
        m = kcd(C_DIST, C_DIST)
        s, t = halves[rank]
        m.accumulate({'stage4': s}, {'stage4': t})
        m.update()
        torch.save(m.state_dict(), f'{out}/rank{rank}.pth')
    finally:
        dist.destroy_process_group()


def test_same_permutation_on_two_gloo_ranks(tmp_path):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / 'rank0.pth')
    r1 = torch.load(tmp_path / 'rank1.pth')
    halves, sigma = _dist_data()
    assert torch.equal(r0['matches.stage4.perm'], r1['matches.stage4.perm'])
    assert torch.equal(r0['matches.stage4.perm'], torch.argsort(sigma))
    # one process on the union gives the same
    one = kcd(C_DIST, C_DIST)
    for s, t in halves:
        one.accumulate({'stage4': s}, {'stage4': t})
    one.update()
    assert torch.equal(one.matches['stage4'].perm, r0['matches.stage4.perm'])
    # ...while rank 1's half alone does not identify it (the test is not vacuous)
    alone = kcd(C_DIST, C_DIST)
    alone.accumulate({'stage4': halves[1][0]}, {'stage4': halves[1][1]})
    alone.update()
    assert not torch.equal(alone.matches['stage4'].perm, torch.argsort(sigma))
