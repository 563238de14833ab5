"""Linear CKA (mmgpd.models.losses.cka) against a direct NumPy HSIC written
from the formulas (explicit H = I − 11ᵀ/n, zeroed diagonals, float64)."""
import numpy as np
import pytest
import torch

from mmgpd.models.losses.cka import cka_from_terms, hsic_terms, linear_cka


def np_hsic0(k, l):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def np_hsic1(k, l):
    n = k.shape[0]
    kt = k.copy()
    lt = l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return (np.trace(kt @ lt)
            + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 * (one @ kt @ lt @ one) / (n - 2)) / (n * (n - 3))


def np_cka(x, y, hsic):
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def rand(n, d, seed):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)))


@pytest.mark.parametrize('estimator,hsic', [('unbiased', np_hsic1),
                                            ('biased', np_hsic0)])
@pytest.mark.parametrize('n,dx,dy', [(6, 40, 30),     # Gram route (n small)
                                     (200, 5, 3)])    # feature-space route
def test_hsic_terms_match_direct_formula(estimator, hsic, n, dx, dy):
    x, y = rand(n, dx, 0), rand(n, dy, 1)
    y = y + 0.5 * x[:, :dy]  # correlated, so HSIC(K, L) is not ~0
    terms = hsic_terms(x, y, estimator)
    xn, yn = x.numpy(), y.numpy()
    ref = [hsic(xn @ xn.T, yn @ yn.T), hsic(xn @ xn.T, xn @ xn.T),
           hsic(yn @ yn.T, yn @ yn.T)]
    np.testing.assert_allclose(terms.numpy(), ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        float(linear_cka(x, y, estimator)), np_cka(xn, yn, hsic), rtol=1e-9)


def test_both_routes_agree():
    """n·(d_x + d_y) vs d_x·d_y decides the route; force each on one input."""
    import mmgpd.models.losses.cka as cka
    x, y = rand(12, 9, 2), rand(12, 7, 3)
    k, l = x @ x.t(), y @ y.t()
    assert torch.allclose(cka._unbiased_from_gram(k, l),
                          cka._unbiased_from_features(x, y), rtol=1e-10)
    assert torch.allclose(cka._biased(x, y, True), cka._biased(x, y, False),
                          rtol=1e-10)


@pytest.mark.parametrize('estimator', ['unbiased', 'biased'])
def test_cka_of_x_with_itself_is_one(estimator):
    x = rand(16, 24, 4)
    assert float(linear_cka(x, x, estimator)) == pytest.approx(1.0, abs=1e-12)
    # (n, C, H, W) maps are flattened per example
    f = rand(8, 3 * 2 * 2, 5).view(8, 3, 2, 2).float()
    assert float(linear_cka(f, f)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize('estimator', ['unbiased', 'biased'])
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scale(estimator):
    x, y = rand(20, 10, 6), rand(20, 7, 7)
    y = y + x[:, :7]
    base = float(linear_cka(x, y, estimator))
    assert 0.2 < base < 0.99  # not a degenerate case
    q, _ = torch.linalg.qr(rand(10, 10, 8))  # random orthogonal
    assert float(linear_cka(x @ q, y, estimator)) == pytest.approx(base, rel=1e-10)
    assert float(linear_cka(x, 3.7 * y, estimator)) == pytest.approx(base, rel=1e-10)
    assert float(linear_cka(-0.01 * (x @ q), y, estimator)) == \
        pytest.approx(base, rel=1e-10)
    # ...but not to a non-isotropic scaling (the property is not vacuous)
    d = torch.diag(torch.linspace(0.1, 10.0, 10, dtype=torch.float64))
    assert abs(float(linear_cka(x @ d, y, estimator)) - base) > 1e-3


def test_minibatch_sum_of_terms():
    """Summing the three HSICs over minibatches (what an all-reduce does) is
    the minibatch CKA, not the mean of per-batch CKAs."""
    x, y = rand(24, 6, 9), rand(24, 5, 10)
    y[:, :3] += 2 * x[:, :3]
    parts = [hsic_terms(x[i:i + 8], y[i:i + 8]) for i in (0, 8, 16)]
    summed = cka_from_terms(sum(parts))
    ref = []
    for i in (0, 8, 16):
        xn, yn = x[i:i + 8].numpy(), y[i:i + 8].numpy()
        ref.append([np_hsic1(xn @ xn.T, yn @ yn.T), np_hsic1(xn @ xn.T, xn @ xn.T),
                    np_hsic1(yn @ yn.T, yn @ yn.T)])
    ref = np.sum(ref, axis=0)
    assert float(summed) == pytest.approx(ref[0] / np.sqrt(ref[1] * ref[2]),
                                          rel=1e-10)


def test_errors_and_degenerate():
    with pytest.raises(ValueError, match='n >= 4'):
        hsic_terms(rand(3, 2, 0), rand(3, 2, 1))
    with pytest.raises(ValueError, match='rows'):
        hsic_terms(rand(5, 2, 0), rand(6, 2, 1))
    with pytest.raises(ValueError, match='estimator'):
        hsic_terms(rand(5, 2, 0), rand(5, 2, 1), 'debiased')
    const = torch.ones(6, 3, dtype=torch.float64)
    assert float(linear_cka(const, rand(6, 3, 2), 'biased')) == 0.0
