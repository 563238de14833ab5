"""Distillation losses against independent NumPy (float64) hand computations."""
import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from mmgpd.models.losses import DKDLoss, KDLoss, SoftTargetCrossEntropy
from mmgpd.registry import MODELS

N, C = 6, 10


# ----------------------------------------------------------------- NumPy refs
def np_log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def np_kl(log_q, log_p):
    """Per-row KL(q || p) from log-probabilities; 0 * log 0 counts as 0."""
    q = np.exp(log_q)
    return np.where(q > 0, q * (log_q - log_p), 0.).sum(axis=1)


def np_kd(s, t, T):
    """Unscaled KL(softmax(t/T) || softmax(s/T)) per sample."""
    return np_kl(np_log_softmax(t / T), np_log_softmax(s / T))


def np_tckd(s, t, y, T):
    """mdistiller's TCKD: binary [p_target, 1 - p_target] KL times T^2."""
    def binary(x):
        p = np.exp(np_log_softmax(x / T))
        pt = p[np.arange(len(y)), y]
        return np.stack([pt, 1 - pt], axis=1)
    bs, bt = binary(s), binary(t)
    return (bt * np.log(bt / bs)).sum(axis=1) * T**2


def np_nckd(s, t, y, T):
    """mdistiller's NCKD: target logit masked with -1000, KL times T^2."""
    mask = np.eye(s.shape[1])[y] * 1000.
    return np_kl(np_log_softmax(t / T - mask), np_log_softmax(s / T - mask)) * T**2


def np_sce(s, t, smoothing, T):
    log_p = np_log_softmax(s / T)
    q = np.exp(np_log_softmax(t / T))
    per = (1 - smoothing) * (-q * log_p).sum(1) + smoothing * (-log_p).mean(1)
    return per.mean()


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    s = rng.normal(scale=3., size=(N, C))
    t = rng.normal(scale=3., size=(N, C))
    y = rng.integers(0, C, size=N)
    return s, t, y


def as_tensors(s, t, y):
    return torch.from_numpy(s), torch.from_numpy(t), torch.from_numpy(y)


def close(loss, expected):
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-10,
                               atol=1e-12)


# ------------------------------------------------------------------------ KD
@pytest.mark.parametrize('T', [1.0, 2.5])
def test_kd_matches_hand(data, T):
    s, t, y = data
    loss = KDLoss(temperature=T, loss_weight=0.7)(*as_tensors(s, t, y))
    close(loss, 0.7 * T**2 * np_kd(s, t, T).mean())


def test_kd_temperature_squared_scaling(data):
    s, t, _ = data
    loss = KDLoss(temperature=4.0)(torch.from_numpy(s), torch.from_numpy(t))
    close(loss, 16. * np_kd(s, t, 4.0).mean())


def test_kd_reductions(data):
    s, t, _ = data
    st, tt = torch.from_numpy(s), torch.from_numpy(t)
    per = 4. * np_kd(s, t, 2.0)
    close(KDLoss(2.0, reduction='none')(st, tt), per)
    close(KDLoss(2.0, reduction='sum')(st, tt), per.sum())


def test_kd_of_identical_logits_is_zero(data):
    s, _, _ = data
    x = torch.from_numpy(s)
    assert abs(KDLoss(temperature=3.0)(x, x.clone()).item()) < 1e-12


# ----------------------------------------------------------------------- DKD
def test_dkd_tckd_and_nckd_match_hand(data):
    s, t, y = data
    args = as_tensors(s, t, y)
    T = 4.0
    close(DKDLoss(alpha=1., beta=0., temperature=T)(*args),
          np_tckd(s, t, y, T).mean())
    close(DKDLoss(alpha=0., beta=1., temperature=T)(*args),
          np_nckd(s, t, y, T).mean())
    close(DKDLoss(alpha=0.5, beta=2., temperature=2., loss_weight=3.)(*args),
          3. * (0.5 * np_tckd(s, t, y, 2.) + 2. * np_nckd(s, t, y, 2.)).mean())


def test_dkd_defaults_and_decomposition(data):
    """KD = TCKD + (1 - p_target of teacher) * NCKD per sample (DKD, Eq. 7)."""
    s, t, y = data
    loss = DKDLoss()
    assert (loss.alpha, loss.beta, loss.temperature, loss.loss_weight) == \
        (1., 8., 4., 1.)
    T = 4.0
    pt_teacher = np.exp(np_log_softmax(t / T))[np.arange(N), y]
    np.testing.assert_allclose(
        T**2 * np_kd(s, t, T),
        np_tckd(s, t, y, T) + (1 - pt_teacher) * np_nckd(s, t, y, T),
        rtol=1e-10)
    close(loss(*as_tensors(s, t, y)),
          (np_tckd(s, t, y, T) + 8. * np_nckd(s, t, y, T)).mean())


def test_dkd_requires_gt_label(data):
    s, t, y = data
    st, tt, yt = as_tensors(s, t, y)
    with pytest.raises(ValueError, match='gt_label'):
        DKDLoss()(st, tt, None)
    with pytest.raises(ValueError, match='gt_label'):
        DKDLoss()(st, tt, yt.double())
    with pytest.raises(ValueError, match='gt_label'):
        DKDLoss()(st, tt, yt[:, None])


# ----------------------------------------------------------------------- SCE
@pytest.mark.parametrize('smoothing,T', [(0.1, 1.0), (0.0, 2.0), (0.5, 3.0)])
def test_sce_matches_hand(data, smoothing, T):
    s, t, y = data
    loss = SoftTargetCrossEntropy(smoothing=smoothing, temperature=T,
                                  loss_weight=2.0)
    close(loss(*as_tensors(s, t, y)), 2.0 * np_sce(s, t, smoothing, T))


# -------------------------------------------------------------------- common
LOSSES = [KDLoss(temperature=4.0), DKDLoss(), SoftTargetCrossEntropy()]


@pytest.mark.parametrize('loss', LOSSES, ids=lambda m: type(m).__name__)
def test_teacher_gets_no_gradient(loss, data):
    s, t, y = data
    st = torch.tensor(s, dtype=torch.float32, requires_grad=True)
    tt = torch.tensor(t, dtype=torch.float32, requires_grad=True)
    out = loss(st, tt, torch.from_numpy(y))
    assert out.dim() == 0 and out.requires_grad
    out.backward()
    assert tt.grad is None
    assert st.grad is not None and st.grad.abs().sum() > 0


@pytest.mark.parametrize('loss', LOSSES, ids=lambda m: type(m).__name__)
def test_shape_mismatch_names_the_argument(loss):
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match='teacher_logits'):
        loss(torch.randn(4, 5), torch.randn(4, 6), y)
    with pytest.raises(ValueError, match='student_logits'):
        loss(torch.randn(4, 5, 1), torch.randn(4, 5, 1), y)


@pytest.mark.parametrize('cls', [KDLoss, DKDLoss, SoftTargetCrossEntropy])
def test_build_from_config_under_mmpretrain_scope(cls):
    import mmpretrain.registry
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        built = mmpretrain.registry.MODELS.build(
            dict(type=f'mmgpd.{cls.__name__}', loss_weight=0.5))
    assert type(built) is cls and built.loss_weight == 0.5
    with DefaultScope.overwrite_default_scope('mmgpd'):
        assert type(MODELS.build(dict(type=cls.__name__))) is cls


def test_build_dkd_from_config():
    import mmpretrain.registry
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dkd = mmpretrain.registry.MODELS.build(dict(type='mmgpd.DKDLoss', beta=2.0))
    assert isinstance(dkd, DKDLoss) and dkd.beta == 2.0


@pytest.mark.parametrize('cls,kwargs,name', [
    (KDLoss, dict(temperature=0), 'temperature'),
    (KDLoss, dict(loss_weight=-1), 'loss_weight'),
    (KDLoss, dict(reduction='mean'), 'reduction'),
    (DKDLoss, dict(temperature=-2.), 'temperature'),
    (DKDLoss, dict(loss_weight=-0.1), 'loss_weight'),
    (DKDLoss, dict(alpha=-1.), 'alpha'),
    (DKDLoss, dict(beta=-1.), 'beta'),
    (SoftTargetCrossEntropy, dict(smoothing=1.0), 'smoothing'),
    (SoftTargetCrossEntropy, dict(smoothing=-0.1), 'smoothing'),
    (SoftTargetCrossEntropy, dict(temperature=0.), 'temperature'),
    (SoftTargetCrossEntropy, dict(loss_weight=-1.), 'loss_weight'),
])
def test_bad_arguments_raise(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)
