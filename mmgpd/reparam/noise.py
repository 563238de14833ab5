"""Symmetry-breaking noise on the dynamic teacher's widened weights.

IR replicates every widened channel exactly, so replicas would get equal
gradients and stay equal forever; N(0, std) noise on the widened weights
breaks that symmetry (``inverse_reparameterize(noise=...)``).

Cost: drawing the noise dominates (one N(0, 1) value per replicated weight
past the first replica: tens of millions for a ResNet-50 at ratio 2).  Each weight tensor gets its own random stream, seeded in a fixed
order from the caller's generator, and the tensors are filled by a thread
pool of ``torch.get_num_threads()`` workers (``torch.randn`` on the CPU is
single-threaded; the GIL is released inside the kernels).  The result depends
on the generator only, never on the thread count or the scheduling.
"""
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from .indexing import is_cyclic

__all__ = ['add_noise', 'NOISE_MODES']

#: ``'zero_sum'`` (GPD's default here) or ``'iid'`` (the reference code)
NOISE_MODES = ('zero_sum', 'iid')


def add_noise(teacher, noisy, std, generator, mode):
    """Add N(0, std) to the widened weights to break the replicas' symmetry.

    ``'iid'`` (the reference code): independent noise everywhere; T_d(x) moves
    away from S(x) by about ``std · sqrt(fan_in)`` per layer.  ``'zero_sum'``:
    the noise on the input replicas of each student channel sums to zero, so it
    cancels on the (exactly replicated) activations and T_d(x) == S(x) still,
    while replicas' weights — hence their gradients from the first step on —
    differ.  Weights with no input replicas (the stem, depthwise convs) get
    none in this mode.

    Args:
        teacher (nn.Module): T_d, modified in place.
        noisy (list): ``(module path, tensor name, input DimMap or None)``
            of every widened weight (``Builder.noisy``).
        std (float): The noise's standard deviation.
        generator (torch.Generator, optional): Seeds one stream per tensor
            (the global RNG when None).
        mode (str): One of :data:`NOISE_MODES`.
    """
    tasks = []
    for path, name, in_dim in noisy:
        if mode == 'zero_sum' and in_dim is None:
            continue
        module = teacher.get_submodule(path)
        p = getattr(module, name)
        if getattr(module, 'transposed', False) is True:
            p = p.transpose(0, 1)  # a view: (C_out, C_in, k...) order
        tasks.append((p, in_dim if mode == 'zero_sum' else None))
    if not tasks:
        return
    seeds = torch.randint(0, 2**62, (len(tasks),), generator=generator).tolist()
    # one scratch buffer per thread for the draws (drawing into fresh memory
    # costs as much again as the draw: the pages are faulted in and zeroed)
    scratch = {}

    def fill(task, seed):
        p, in_dim = task
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            if in_dim is not None and _add_cyclic_zero_sum(
                    p, in_dim, std, g, scratch.setdefault(
                        threading.get_ident(), [None])):
                return
            noise = _draw_noise(tuple(p.shape), in_dim, g)
            p.add_(noise.mul_(std).to(p))

    workers = min(torch.get_num_threads(), len(tasks))
    shared = len({t[0].data_ptr() for t in tasks}) < len(tasks)
    if workers <= 1 or shared:  # a tensor listed twice: no concurrent add_
        for task, seed in zip(tasks, seeds):
            fill(task, seed)
        return
    # largest first, so that the workers end together (each tensor keeps its
    # own seed: the order of the work does not change the result)
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i][0].numel())
    with ThreadPoolExecutor(workers) as pool:
        # re-raises a worker's error
        list(pool.map(fill, [tasks[i] for i in order],
                      [seeds[i] for i in order]))


def _add_cyclic_zero_sum(p, in_dim, std, generator, scratch=None) -> bool:
    """``p += std · e`` in place for whole cyclic input replicas
    (``index = j mod C``, ``n = C_in' / C``, ``p`` contiguous); False (nothing
    done) for any other layout.

    ``e = Hᵀ z`` with ``H`` the (n-1) x n Helmert rows (:func:`_helmert`) and
    ``z`` n - 1 iid N(0, 1) draws per student position: the law of n centred
    iid draws, N(0, I - 11ᵀ/n), from n - 1 of every n values (half at ratio
    2), added slice by slice without a noise tensor of ``p``'s size.  Drawn
    in fp32 (4x cheaper than fp64 on CPU; the replicas' sum is zero up to fp32
    rounding of values ~std, far below the rounding of ``p + std · e``), into
    ``scratch[0]`` (a one-item list holding a float32 buffer, grown as
    needed; the values are those of ``torch.randn`` on the same generator).
    """
    index, c, width = in_dim.index, in_dim.student_size, p.shape[1]
    if width % c or not p.is_contiguous() or not is_cyclic(index, c):
        return False
    n = width // c
    view = p.view(p.shape[0], n, -1)
    helmert = _helmert(n)
    shape = (p.shape[0], view.shape[2])
    numel = shape[0] * shape[1]
    scratch = [None] if scratch is None else scratch
    if scratch[0] is None or scratch[0].numel() < numel:
        scratch[0] = torch.empty(numel, dtype=torch.float32)
    for k in range(n - 1):
        z = scratch[0][:numel].view(shape).normal_(generator=generator).to(p)
        for j in range(k + 2):  # row k is non-zero on columns 0..k+1
            view[:, j].add_(z, alpha=std * float(helmert[k, j]))
    return True


def _draw_noise(shape, in_dim, generator) -> torch.Tensor:
    """N(0, 1) noise of ``shape`` = (C_out, C_in', ...), centred over the
    input replicas of each student channel when ``in_dim`` is given (any
    layout; :func:`_add_cyclic_zero_sum` covers the usual one faster).

    Drawn in fp32 and input-dim first, so that the replica means are one
    ``index_add_`` / ``index_select`` over rows (scattering along an inner
    dim is several times slower).

    Returns:
        Tensor: (C_out, C_in', ...), a transposed view when centred.
    """
    if in_dim is None:
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    index, c, width = in_dim.index, in_dim.student_size, shape[1]
    noise = torch.randn((width, shape[0]) + shape[2:], generator=generator,
                        dtype=torch.float32)
    rows = noise.view(width, -1)
    index = index.to(noise.device)
    sums = torch.zeros(c, rows.shape[1]).index_add_(0, index, rows)
    counts = torch.bincount(index, minlength=c).to(sums.dtype)
    rows.sub_(sums.div_(counts[:, None]).index_select(0, index))
    return noise.transpose(0, 1)


def _helmert(n: int) -> torch.Tensor:
    """(n-1, n): orthonormal rows spanning the vectors that sum to zero."""
    h = torch.zeros(n - 1, n, dtype=torch.float64)
    for k in range(1, n):
        h[k - 1, :k] = 1.0
        h[k - 1, k] = -float(k)
        h[k - 1] /= math.sqrt(k * (k + 1))
    return h
