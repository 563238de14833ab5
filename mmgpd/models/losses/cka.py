"""Linear centred kernel alignment (CKA), full-batch and minibatch forms.

For representations ``X ∈ R^{n×d_x}`` and ``Y ∈ R^{n×d_y}`` of the same ``n``
examples (rows), with linear kernels ``K = X Xᵀ`` and ``L = Y Yᵀ``::

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))

Two HSIC estimators:

* **biased** (Gretton et al. 2005; Kornblith et al. 2019):
  ``HSIC₀(K, L) = tr(K H L H) / (n − 1)²`` with ``H = I − 11ᵀ/n``; ``n >= 2``.
* **unbiased** (Song et al. 2012), the one minibatch CKA uses (Nguyen, Raghu &
  Kornblith, ICLR 2021)::

      HSIC₁(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2·1ᵀK̃L̃1 / (n−2)]
                    / (n (n − 3))

  with ``K̃``, ``L̃`` the kernels with their diagonals zeroed; ``n >= 4``.

**Minibatch CKA** sums each HSIC over k minibatches before taking the ratio::

    CKA_mb = Σ_i HSIC₁(K_i, L_i) / sqrt(Σ_i HSIC₁(K_i, K_i) · Σ_i HSIC₁(L_i, L_i))

:func:`hsic_terms` returns the three HSICs of one minibatch, so callers sum
them over minibatches (and over ranks: an all-reduce of the three numbers is
exactly the minibatch form over the ranks' minibatches) and then call
:func:`cka_from_terms`.

Linear CKA is invariant to orthogonal transforms and isotropic scaling of
either side, and ``d_x`` may differ from ``d_y``.

Computation: every term needs only ``K``/``L`` products, which are evaluated
either from the ``n × n`` Gram matrices (cheap when ``n`` is small, e.g. rows
= images of flattened ``C·H·W`` feature maps) or in feature space from
``Xᵀ Y`` (``d_x × d_y``; cheap when ``n`` is large, e.g. rows = positions),
whichever is cheaper; both give the same numbers (tested).
"""
import torch

__all__ = ['hsic_terms', 'cka_from_terms', 'linear_cka', 'ESTIMATORS',
           'MIN_ROWS']

ESTIMATORS = ('unbiased', 'biased')
#: the fewest rows (examples) each HSIC estimator is defined for
MIN_ROWS = {'unbiased': 4, 'biased': 2}


def _check(x: torch.Tensor, y: torch.Tensor, estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f'CKA estimator must be one of {ESTIMATORS}, got '
                         f'{estimator!r}')
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f'CKA takes (n, d) matrices, got {tuple(x.shape)} and '
                         f'{tuple(y.shape)} (flatten the features first)')
    if x.shape[0] != y.shape[0]:
        raise ValueError(f'CKA: X has {x.shape[0]} rows, Y {y.shape[0]}: the '
                         'rows must be the same examples')
    need = MIN_ROWS[estimator]
    if x.shape[0] < need:
        raise ValueError(f'the {estimator} HSIC estimator needs n >= {need} '
                         f'examples, got n = {x.shape[0]} (use a larger batch, '
                         "rows = positions, or estimator='biased')")


def _unbiased_from_gram(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    k = k - torch.diag_embed(torch.diagonal(k))
    l = l - torch.diag_embed(torch.diagonal(l))
    k1, l1 = k.sum(1), l.sum(1)
    trace = (k * l).sum()  # tr(K̃L̃), both symmetric
    return (trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2))
            - 2.0 * (k1 @ l1) / (n - 2)) / (n * (n - 3))


def _unbiased_from_features(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """HSIC₁ without forming n × n matrices.

    With ``k_i = ‖x_i‖²``, ``l_i = ‖y_i‖²``:
    ``tr(K̃L̃) = ‖XᵀY‖²_F − Σ k_i l_i``, ``K̃1 = X(Xᵀ1) − k``, ``1ᵀK̃1 = ‖Xᵀ1‖² − Σ k_i``.
    """
    n = x.shape[0]
    kd, ld = (x * x).sum(1), (y * y).sum(1)
    sx, sy = x.sum(0), y.sum(0)
    trace = (x.t() @ y).pow(2).sum() - (kd * ld).sum()
    k1, l1 = x @ sx - kd, y @ sy - ld
    return (trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2))
            - 2.0 * (k1 @ l1) / (n - 2)) / (n * (n - 3))


def _biased(x: torch.Tensor, y: torch.Tensor, gram: bool) -> torch.Tensor:
    """``tr(KHLH) / (n−1)²`` = ``‖X_cᵀ Y_c‖²_F / (n−1)²`` (centred columns)."""
    n = x.shape[0]
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    value = ((x @ x.t()) * (y @ y.t())).sum() if gram else \
        (x.t() @ y).pow(2).sum()
    return value / (n - 1) ** 2


def hsic_terms(x: torch.Tensor, y: torch.Tensor,
               estimator: str = 'unbiased') -> torch.Tensor:
    """``[HSIC(K, L), HSIC(K, K), HSIC(L, L)]`` of one minibatch.

    Args:
        x (Tensor): (n, d_x) representations, one row per example.
        y (Tensor): (n, d_y) representations of the same examples.
        estimator (str): ``'unbiased'`` (HSIC₁, n >= 4) or ``'biased'``
            (HSIC₀, n >= 2). Defaults to ``'unbiased'``.

    Returns:
        Tensor: (3,) in float64 (sums of squares of activations overflow
        float16 / lose float32 precision).
    """
    _check(x, y, estimator)
    x, y = x.double(), y.double()
    n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
    # Gram route: O(n²(d_x + d_y)); feature route: O(n(d_x d_y + d_x² + d_y²)).
    gram = n * (dx + dy) <= dx * dy + dx * dx + dy * dy
    if estimator == 'biased':
        return torch.stack([_biased(x, y, gram), _biased(x, x, gram),
                            _biased(y, y, gram)])
    if gram:
        k, l = x @ x.t(), y @ y.t()
        return torch.stack([_unbiased_from_gram(k, l), _unbiased_from_gram(k, k),
                            _unbiased_from_gram(l, l)])
    return torch.stack([_unbiased_from_features(x, y),
                        _unbiased_from_features(x, x),
                        _unbiased_from_features(y, y)])


def cka_from_terms(terms: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``terms[0] / sqrt(terms[1] · terms[2])`` of (summed) :func:`hsic_terms`.

    A degenerate side (a constant representation: HSIC(K, K) <= 0) gives 0.
    The unbiased estimate may fall slightly outside [0, 1] on small samples;
    it is not clipped here.
    """
    denom = terms[1] * terms[2]
    if float(denom) <= eps:
        return terms.new_zeros(())
    return terms[0] / denom.sqrt()


def linear_cka(x: torch.Tensor, y: torch.Tensor,
               estimator: str = 'unbiased') -> torch.Tensor:
    """Linear CKA of one minibatch (see the module docstring).

    Args:
        x (Tensor): (n, ...) representations; flattened to (n, d_x).
        y (Tensor): (n, ...) representations of the same examples.
        estimator (str): ``'unbiased'`` or ``'biased'``.

    Returns:
        Tensor: scalar (float64).
    """
    return cka_from_terms(hsic_terms(x.flatten(1), y.flatten(1), estimator))

