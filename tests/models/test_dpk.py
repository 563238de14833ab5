"""DPK (mmgpd.models.methods.dpk): mixing, π = 1 − CKA, loss domain, the
reconstructed options (position embedding, token / target normalisation,
reconstruction loss, CKA rows, π's update interval, spatial alignment), state."""
import pytest
import torch
import torch.nn.functional as F

from mmgpd.models.losses.cka import linear_cka
from mmgpd.models.methods.dpk import DPK, sincos_pos_embed, token_normalize

CS, CT = 6, 10


def feats(n=4, c=CS, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g)


def dpk(cs=CS, ct=CT, h=4, w=4, tap='stage4', **kw):
    kw.setdefault('embed_dim', 16)
    kw.setdefault('num_heads', 2)
    kw.setdefault('enc_depth', 1)
    kw.setdefault('dec_depth', 1)
    torch.manual_seed(0)
    m = DPK(taps=(tap, ), **kw)
    m.prepare({tap: torch.Size([2, cs, h, w])}, {tap: torch.Size([2, ct, h, w])})
    return m


def encoder_input(m, tap='stage4'):
    """Capture what enters the encoder on the next forward."""
    seen = []
    m.blocks[tap].encoder.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].detach().clone()))
    return seen


def student_tokens(m, f_s, tap='stage4'):
    block = m.blocks[tap]
    x, (gh, gw) = block.tokens(block.embed_s, f_s)
    return x + sincos_pos_embed(gh, gw, block.embed_dim)


def teacher_tokens(m, f_t, tap='stage4'):
    block = m.blocks[tap]
    x, (gh, gw) = block.tokens(block.embed_t, f_t)
    return x + sincos_pos_embed(gh, gw, block.embed_dim)


def test_ratio_zero_puts_no_teacher_token_in_the_input():
    m = dpk(ratio=0.0)
    f_s = feats().requires_grad_(True)
    f_t = feats(c=CT, seed=1)
    seen = encoder_input(m)
    out = m({'stage4': f_s}, {'stage4': f_t})
    out['loss_dpk'].backward()
    with torch.no_grad():
        ref = student_tokens(m, f_s)
    assert torch.allclose(seen[0], ref, atol=1e-6)
    # the input does not depend on the teacher's features at all
    m({'stage4': f_s}, {'stage4': 100 * feats(c=CT, seed=7)})
    assert torch.equal(seen[1], seen[0])
    for name, p in m.blocks['stage4'].embed_t.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
    assert torch.count_nonzero(m.blocks['stage4'].embed_s.weight.grad) > 0
    assert f_s.grad is not None and torch.count_nonzero(f_s.grad) > 0
    assert float(out['dpk_ratio_stage4']) == 0.0


def test_ratio_one_gives_only_teacher_tokens():
    m = dpk(ratio=1.0)
    f_s, f_t = feats().requires_grad_(True), feats(c=CT, seed=1)
    seen = encoder_input(m)
    m({'stage4': f_s}, {'stage4': f_t})['loss_dpk'].backward()
    with torch.no_grad():
        assert torch.allclose(seen[0], teacher_tokens(m, f_t), atol=1e-6)
    assert f_s.grad is None or torch.count_nonzero(f_s.grad) == 0
    # MAE-style loss domain: no student token to reconstruct -> 0, not NaN
    m2 = dpk(ratio=1.0, loss_on='student_tokens')
    loss = m2({'stage4': feats()}, {'stage4': f_t})['loss_dpk']
    assert float(loss.detach()) == 0.0


def loss_and_replay(m, f_s, f_t, seed, tokens):
    """``(loss, block, mask)``: DPK's loss on one tap with the global RNG at
    ``seed``, and the block with the mask it drew (drawn again from ``seed``:
    ``tokens`` per image, N = 4)."""
    torch.manual_seed(seed)
    loss = m({'stage4': f_s}, {'stage4': f_t})['loss_dpk']
    block = m.blocks['stage4']
    torch.manual_seed(seed)
    return loss, block, block.draw_mask(4, tokens, 0.5, 'bernoulli', True,
                                        'cpu')


def test_mixed_input_and_loss_domain_by_hand():
    m = dpk(ratio=0.5, loss_on='student_tokens', patch_size=2, h=5, w=5)
    f_s, f_t = feats(h=5, w=5), feats(c=CT, h=5, w=5, seed=1)
    seen = encoder_input(m)
    # 3x3 token grid (5 padded to 6)
    loss, block, mask = loss_and_replay(m, f_s, f_t, 3, 9)
    assert 0 < int(mask.sum()) < mask.numel()
    with torch.no_grad():
        xs, xt = student_tokens(m, f_s), teacher_tokens(m, f_t)
        expect = torch.where(mask[..., None], xt, xs)
        assert torch.allclose(seen[0], expect, atol=1e-6)
        recon = block(f_s, f_t, mask)
    assert recon.shape == f_t.shape
    pix = mask.view(4, 1, 3, 3).repeat_interleave(2, 2).repeat_interleave(2, 3)
    pix = pix[..., :5, :5].expand(-1, CT, -1, -1)
    ref = (recon - f_t).pow(2)[~pix].mean()
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5)


def test_all_positions_loss_and_gradients_reach_every_trainable_part():
    m = dpk(ratio=0.5)
    f_s = feats().requires_grad_(True)
    f_t = feats(c=CT, seed=1).requires_grad_(True)
    loss, block, mask = loss_and_replay(m, f_s, f_t, 1, 16)
    with torch.no_grad():
        ref = (block(f_s, f_t, mask) - f_t).pow(2).mean()
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-6)
    loss.backward()
    assert f_t.grad is None  # the teacher is a constant (stop-gradient)
    assert torch.count_nonzero(f_s.grad) > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_dynamic_ratio_is_one_minus_cka_clipped_and_smoothed():
    f_s = feats(n=8, seed=2)
    # identical representations (up to an orthogonal channel map and scale):
    # CKA = 1, π = 0
    q, _ = torch.linalg.qr(torch.randn(CS, CS, generator=torch.Generator()
                                       .manual_seed(4)))
    f_same = 3.0 * torch.einsum('oc,nchw->nohw', q, f_s)
    m = dpk(ct=CS)
    m.train()
    m({'stage4': f_s}, {'stage4': f_same})
    assert float(m.blocks['stage4'].cka) == pytest.approx(1.0, abs=1e-6)
    assert float(m.blocks['stage4'].ratio) == pytest.approx(0.0, abs=1e-6)
    # related features: π = 1 − CKA of the raw maps (clipped: below)
    f_t = feats(n=8, c=CT, seed=5)
    f_t[:, :CS] += f_s
    c = float(linear_cka(f_s, f_t))
    assert 0.2 < c < 0.9
    m = dpk(ratio_clip=(0.0, 1.0))
    m.train()
    m({'stage4': f_s}, {'stage4': f_t})
    assert float(m.blocks['stage4'].ratio) == pytest.approx(1 - c, rel=1e-6)
    m = dpk(ratio_clip=(0.1, 0.3))
    m.train()
    m({'stage4': f_s}, {'stage4': f_t})
    assert float(m.blocks['stage4'].ratio) == pytest.approx(0.3)
    m = dpk(ratio_momentum=0.9, ratio_init=0.5, ratio_clip=(0.0, 1.0))
    m.train()
    m({'stage4': f_s}, {'stage4': f_t})
    assert float(m.blocks['stage4'].ratio) == pytest.approx(
        0.9 * 0.5 + 0.1 * (1 - c), rel=1e-6)
    # rows = positions, biased estimator: the same formula on (N·H·W, C)
    m = dpk(cka_rows='positions', cka_estimator='biased', ratio_clip=(0.0, 1.0))
    m.train()
    m({'stage4': f_s}, {'stage4': f_t})
    rows_s = f_s.permute(0, 2, 3, 1).reshape(-1, CS)
    rows_t = f_t.permute(0, 2, 3, 1).reshape(-1, CT)
    assert float(m.blocks['stage4'].ratio) == pytest.approx(
        1 - float(linear_cka(rows_s, rows_t, 'biased')), rel=1e-6)


def test_ratio_not_updated_in_eval_or_when_fixed():
    m = dpk()
    m.eval()
    m({'stage4': feats()}, {'stage4': feats(c=CT, seed=1)})
    assert float(m.blocks['stage4'].ratio) == 0.5
    m = dpk(ratio=0.25)
    m.train()
    m({'stage4': feats()}, {'stage4': feats(c=CT, seed=1)})
    assert float(m.blocks['stage4'].ratio) == 0.25


def test_batch_too_small_for_the_estimator_keeps_ratio_and_trains():
    """A last batch of 3 images (the unbiased HSIC needs 4 rows) must not
    crash training: π and the logged CKA stay, the loss is still computed."""
    f_s, f_t = feats(n=8, seed=2), feats(n=8, c=CT, seed=5)
    m = dpk(ratio_clip=(0.0, 1.0))
    m.train()
    m({'stage4': f_s}, {'stage4': f_t})
    ratio, cka = float(m.blocks['stage4'].ratio), float(m.blocks['stage4'].cka)
    out = m({'stage4': f_s[:3]}, {'stage4': f_t[:3]})
    assert float(m.blocks['stage4'].ratio) == ratio
    assert float(m.blocks['stage4'].cka) == cka
    assert torch.isfinite(out['loss_dpk'])
    # the biased estimator takes 3 rows (needs 2) and does update
    m = dpk(cka_estimator='biased', ratio_clip=(0.0, 1.0))
    m.train()
    m({'stage4': f_s[:3]}, {'stage4': f_t[:3]})
    assert float(m.blocks['stage4'].ratio) == pytest.approx(
        1 - float(linear_cka(f_s[:3], f_t[:3], 'biased')), rel=1e-6)
    # rows = positions: 1 image x 4 x 4 positions is enough for 'unbiased'
    m = dpk(cka_rows='positions', ratio_clip=(0.0, 1.0))
    m.train()
    m({'stage4': f_s[:1]}, {'stage4': f_t[:1]})
    assert float(m.blocks['stage4'].ratio) != 0.5


def test_mask_sampling_options():
    block = dpk().blocks['stage4']
    torch.manual_seed(0)
    bern = block.draw_mask(64, 256, 0.3, 'bernoulli', True, 'cpu')
    assert abs(float(bern.float().mean()) - 0.3) < 0.01
    fixed = block.draw_mask(5, 49, 0.3, 'fixed_count', True, 'cpu')
    assert fixed.sum(1).tolist() == [15] * 5  # round(0.3 · 49)
    assert not torch.equal(fixed[0], fixed[1])
    shared = block.draw_mask(5, 49, 0.3, 'bernoulli', False, 'cpu')
    assert all(torch.equal(shared[0], row) for row in shared)
    assert not block.draw_mask(3, 49, 0.0, 'bernoulli', True, 'cpu').any()


def test_state_dict_round_trip_resumes_exactly():
    m = dpk(ratio_momentum=0.5)
    m.train()
    f_s, f_t = feats(n=8), feats(n=8, c=CT, seed=1)
    m({'stage4': f_s}, {'stage4': f_t})
    state = m.state_dict()
    assert 'blocks.stage4.ratio' in state and 'blocks.stage4.cka' in state
    fresh = dpk(ratio_momentum=0.5)
    fresh.load_state_dict(state)
    fresh.train()
    assert float(fresh.blocks['stage4'].ratio) == float(m.blocks['stage4'].ratio)
    torch.manual_seed(9)
    a = m({'stage4': f_s}, {'stage4': f_t})
    torch.manual_seed(9)
    b = fresh({'stage4': f_s}, {'stage4': f_t})
    assert torch.equal(a['loss_dpk'], b['loss_dpk'])
    assert torch.equal(m.blocks['stage4'].ratio, fresh.blocks['stage4'].ratio)


def test_shapes_widths_and_pooling():
    m = dpk(cs=3, ct=7, h=4, w=4, patch_size=2)
    out = m({'stage4': feats(c=3, h=8, w=8)}, {'stage4': feats(c=7, seed=1)})
    assert out['loss_dpk'].dim() == 0 and torch.isfinite(out['loss_dpk'])
    pos = sincos_pos_embed(3, 5, 8)
    assert pos.shape == (15, 8)
    assert torch.allclose(pos[0], torch.tensor([0., 0., 1., 1., 0., 0., 1., 1.]))


# ------------------------------------------------------------- options
def test_default_options_add_no_state():
    """The defaults keep the state dict of before the options existed."""
    keys = {k.split('stage4.', 1)[1] for k in dpk().state_dict()}
    assert 'pos' not in keys and 'ratio_step' not in keys
    assert not any(k.startswith('token_norm') for k in keys)


def test_pos_embed_options():
    f_s, f_t = feats(), feats(c=CT, seed=1)
    m = dpk(ratio=0.0, pos_embed='none')
    seen = encoder_input(m)
    m({'stage4': f_s}, {'stage4': f_t})
    block = m.blocks['stage4']
    with torch.no_grad():
        raw, _ = block.tokens(block.embed_s, f_s)
    assert torch.allclose(seen[0], raw, atol=1e-6)  # no position at all
    m = dpk(ratio=0.0, pos_embed='learned')
    block = m.blocks['stage4']
    assert block.pos.shape == (1, 16, 4, 4)  # D x the probe's token grid
    seen = encoder_input(m)
    m({'stage4': f_s}, {'stage4': f_t})['loss_dpk'].backward()
    with torch.no_grad():
        raw, _ = block.tokens(block.embed_s, f_s)
        ref = raw + block.pos.flatten(2)[0].t()
    assert torch.allclose(seen[0], ref, atol=1e-6)
    assert torch.count_nonzero(block.pos.grad) > 0  # trained
    # another grid (detection inputs vary): the embedding resized bilinearly
    big_s, big_t = feats(h=6, w=6), feats(c=CT, h=6, w=6, seed=1)
    m({'stage4': big_s}, {'stage4': big_t})
    with torch.no_grad():
        raw, _ = block.tokens(block.embed_s, big_s)
        pos = F.interpolate(block.pos, size=(6, 6), mode='bilinear',
                            align_corners=False)
    assert torch.allclose(seen[1], raw + pos.flatten(2)[0].t(), atol=1e-6)


@pytest.mark.parametrize('norm', ['layer_norm', 'batch_norm'])
def test_token_norm_options(norm):
    m = dpk(ratio=0.0, token_norm=norm)
    m.train()
    block = m.blocks['stage4']
    f_s, f_t = feats().requires_grad_(True), feats(c=CT, seed=1)
    seen = encoder_input(m)
    m({'stage4': f_s}, {'stage4': f_t})['loss_dpk'].backward()
    x = seen[0] - sincos_pos_embed(4, 4, 16)  # (N, L, D) normalised tokens
    if norm == 'layer_norm':  # over D, per token
        assert torch.allclose(x.mean(-1), torch.zeros(4, 16), atol=1e-5)
        assert torch.allclose(x.var(-1, unbiased=False), torch.ones(4, 16),
                              atol=1e-3)
    else:  # over the batch and the token grid, per channel (training mode)
        assert torch.allclose(x.mean((0, 1)), torch.zeros(16), atol=1e-5)
        assert torch.allclose(x.var((0, 1), unbiased=False), torch.ones(16),
                              atol=1e-3)
    # π = 0: the teacher side's norm gets an exactly zero gradient as well
    for name, p in block.token_norm_t.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
    assert any(torch.count_nonzero(p.grad) > 0
               for p in block.token_norm_s.parameters())


def test_target_norm_token_standardises_each_patch():
    x = feats(n=2, c=3, h=5, w=4, seed=3)
    y = token_normalize(x, 1)  # per position over the channels
    assert torch.allclose(y.mean(1), torch.zeros(2, 5, 4), atol=1e-5)
    y = token_normalize(x, 2)  # each 2x2 patch over its 3·4 values
    assert y.shape == x.shape
    patch = y[:, :, 2:4, 0:2]
    assert torch.allclose(patch.mean((1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(patch.var((1, 2, 3), unbiased=False), torch.ones(2),
                          atol=1e-4)
    m = dpk(ratio=0.5, target_norm='token', patch_size=2)
    f_s, f_t = feats(), 5.0 * feats(c=CT, seed=1) + 3.0
    loss, block, mask = loss_and_replay(m, f_s, f_t, 2, 4)
    with torch.no_grad():
        ref = (block(f_s, f_t, mask) - token_normalize(f_t, 2)).pow(2).mean()
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize('kind', ['smooth_l1', 'l1'])
def test_recon_loss_options(kind):
    m = dpk(ratio=0.5, recon_loss=kind)
    f_s, f_t = feats(), 3.0 * feats(c=CT, seed=1)
    loss, block, mask = loss_and_replay(m, f_s, f_t, 4, 16)
    with torch.no_grad():
        recon = block(f_s, f_t, mask)
    ref = F.smooth_l1_loss(recon, f_t) if kind == 'smooth_l1' else \
        F.l1_loss(recon, f_t)
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-6)
    assert float(ref) != pytest.approx(float((recon - f_t).pow(2).mean()),
                                       rel=1e-3)


def test_cka_rows_pooled_reads_the_spatial_means():
    f_s = feats(n=8, seed=2)
    f_t = feats(n=8, c=CT, seed=5)
    f_t[:, :CS] += f_s
    m = dpk(cka_rows='pooled', ratio_clip=(0.0, 1.0))
    m.train()
    m({'stage4': f_s}, {'stage4': f_t})
    expect = 1 - float(linear_cka(f_s.mean((2, 3)), f_t.mean((2, 3))))
    assert float(m.blocks['stage4'].ratio) == pytest.approx(expect, rel=1e-6)
    assert expect != pytest.approx(1 - float(linear_cka(f_s, f_t)), rel=1e-3)


def test_ratio_interval_updates_every_kth_training_forward():
    """ratio_interval=3: π moves on training forwards 1, 4, 7 only; eval
    forwards do not count; the counter is checkpointed."""
    def pair(i):  # related features: 0 < CKA < 1, a different one each i
        f_s, f_t = feats(n=8, seed=10 + i), feats(n=8, c=CT, seed=20 + i)
        f_t[:, :CS] += f_s
        return f_s, f_t

    m = dpk(ratio_interval=3, ratio_clip=(0.0, 1.0))
    ratios = []
    for i in range(7):
        m.train()
        f_s, f_t = pair(i)
        m({'stage4': f_s}, {'stage4': f_t})
        ratios.append(float(m.blocks['stage4'].ratio))
        m.eval()
        m({'stage4': f_t[:, :CS]}, {'stage4': f_t})
    assert ratios[0] == pytest.approx(1 - float(linear_cka(*pair(0))),
                                      rel=1e-6)  # the first forward updates
    moved = [i for i in range(1, 7) if ratios[i] != ratios[i - 1]]
    assert moved == [3, 6]
    assert ratios[3] == pytest.approx(1 - float(linear_cka(*pair(3))),
                                      rel=1e-6)
    state = m.state_dict()
    assert int(state['blocks.stage4.ratio_step']) == 7
    fresh = dpk(ratio_interval=3, ratio_clip=(0.0, 1.0))
    fresh.load_state_dict(state)
    assert int(fresh.blocks['stage4'].ratio_step) == 7


def test_bilinear_spatial_align():
    m = dpk(ratio=0.5, h=4, w=4, spatial_align='bilinear')
    f_s, f_t = feats(h=6, w=6), feats(c=CT, seed=1)
    torch.manual_seed(5)
    loss = m({'stage4': f_s}, {'stage4': f_t})['loss_dpk']
    torch.manual_seed(5)
    small = F.interpolate(f_s, size=(4, 4), mode='bilinear', align_corners=False)
    ref = m({'stage4': small}, {'stage4': f_t})['loss_dpk']
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match='ratio'):
        DPK(ratio='gap')
    with pytest.raises(ValueError, match='ratio'):
        DPK(ratio=1.5)
    with pytest.raises(ValueError, match='ratio_clip'):
        DPK(ratio_clip=(0.5, 0.2))
    with pytest.raises(ValueError, match='loss_on'):
        DPK(loss_on='teacher_tokens')
    with pytest.raises(ValueError, match='embed_dim'):
        DPK(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match='patch_size'):
        DPK(taps=('fpn0', 'fpn1'), patch_size=dict(fpn0=2))
    for key, value in (('pos_embed', 'rope'), ('token_norm', 'group_norm'),
                       ('target_norm', 'pixel'), ('recon_loss', 'huber'),
                       ('spatial_align', 'nearest'), ('cka_rows', 'tokens'),
                       ('ratio_interval', 0)):
        with pytest.raises(ValueError, match=key):
            DPK(**{key: value})
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        DPK(taps=('pooled', )).prepare({'pooled': torch.Size([2, 8])},
                                       {'pooled': torch.Size([2, 8])})
