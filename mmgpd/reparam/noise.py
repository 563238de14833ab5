"""Symmetry-breaking noise on the dynamic teacher's widened weights.

IR replicates every widened channel exactly, so replicas would get equal
gradients and stay equal forever; N(0, std) noise on the widened weights
breaks that symmetry (``inverse_reparameterize(noise=...)``).

Cost: drawing the N(0, 1) values dominates (one per replicated weight past
the first replica: tens of millions for a ResNet-50 at ratio 2; ~3.7 ns each
in ``normal_`` on one core, against ~0.5 ns to add them).  IR's layout
planning is Python-bound and leaves the other cores idle, so the values are
drawn *ahead*, on a background thread while IR plans
(:meth:`NoiseStream.drawing_ahead`), and only added once T_d is built
(:func:`add_noise`, a thread pool of ``torch.get_num_threads()`` workers,
which also draw what was not drawn ahead).

Determinism: the values depend on the generator only, never on the thread
count, the scheduling or which thread drew a value: the stream is cut into
fixed chunks, chunk ``i`` drawn by its own ``torch.Generator`` seeded
``base + i`` (``base`` from the caller's generator), and every weight tensor
takes a fixed slice of it (or, past the pre-drawn length, its own seeded
stream).
"""
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Optional

import torch

from .indexing import is_cyclic

__all__ = ['add_noise', 'NoiseStream', 'expected_draws', 'NOISE_MODES']

#: ``'zero_sum'`` (GPD's default here) or ``'iid'`` (the reference code)
NOISE_MODES = ('zero_sum', 'iid')
#: values per chunk of the stream (4 MB of float32, ~4 ms to draw)
CHUNK = 1 << 20
#: at most this many values are drawn ahead (256 MB); later tensors draw their
#: own when the noise is added
MAX_AHEAD = 1 << 26


def expected_draws(student, ratio: float, mode: str) -> int:
    """An estimate, from the student alone, of how many N(0, 1) values
    :func:`add_noise` will use: per weight of two or more dims, ``r (r - 1)``
    per student value for ``'zero_sum'`` at an integer ratio ``r`` (n - 1 of
    every n input replicas, times r output replicas), ``r²`` otherwise (a
    whole teacher-size tensor)."""
    r = float(ratio)
    per = r * (r - 1) if mode == 'zero_sum' and r.is_integer() else r * r
    return int(per * sum(p.numel() for p in student.parameters()
                         if p.dim() >= 2))


class NoiseStream:
    """iid N(0, 1) float32 values, the first ``ahead`` of them drawable
    ahead of use on a background thread (:meth:`drawing_ahead`).

    Value ``k < len(self)`` is value ``k % CHUNK`` of chunk ``k // CHUNK``,
    drawn by ``torch.Generator().manual_seed(base + k // CHUNK)``; whichever
    thread needs a chunk first draws it (one lock per chunk), so the values
    never depend on the timing.

    Args:
        generator (torch.Generator, optional): Gives ``base``: its next draw
            (the global RNG's when None), read without advancing it.
        ahead (int): Values that may be drawn ahead (capped at
            :data:`MAX_AHEAD`, rounded up to whole chunks).
    """

    def __init__(self, generator: Optional[torch.Generator], ahead: int):
        # base: the generator's next draw, read from a copy of its state so
        # that IR's other draws (new branches) are those of a run without
        # noise; the caller's generator is advanced past it by add_noise
        fork = torch.Generator()
        fork.set_state((generator or torch.default_generator).get_state())
        self.base = int(torch.randint(0, 2**62, (1,), generator=fork))
        self.generator = generator
        self.chunks = math.ceil(min(max(ahead, 0), MAX_AHEAD) / CHUNK)
        # pages are faulted in by the drawing thread, off IR's critical path
        self._values = torch.empty(self.chunks * CHUNK, dtype=torch.float32)
        self._locks = [threading.Lock() for _ in range(self.chunks)]
        self._drawn = [False] * self.chunks
        self._stop_at = self.chunks

    @contextmanager
    def drawing_ahead(self):
        """Draw chunks on a background thread while the block runs (a
        Python-bound one: IR's planning), its torch ops on one thread.

        Only with two or more torch threads (a spare core).  One thread for
        the block: an OpenMP region of two threads waits on the core that the
        drawing holds (ResNet-18's planning: 90 ms alone, 139 ms beside the
        drawing with two threads, ~100 ms with one).  The drawing stops at
        the end of the block (within one chunk) so that what follows gets
        every core; :meth:`take` draws the rest.
        """
        threads = torch.get_num_threads()
        if threads <= 1 or not self.chunks:
            yield
            return
        self._stop_at = self.chunks
        worker = threading.Thread(target=self._draw_ahead, name='ir-noise',
                                  daemon=True)
        torch.set_num_threads(1)
        worker.start()
        try:
            yield
        finally:
            self._stop_at = 0
            worker.join()
            torch.set_num_threads(threads)

    def __len__(self) -> int:
        return self.chunks * CHUNK

    def seed(self, key: int) -> int:
        """The seed of a stream of its own for ``key >= 0`` (never a chunk's)."""
        return self.base + self.chunks + key

    def _draw(self, i: int):
        with self._locks[i]:
            if not self._drawn[i]:
                g = torch.Generator().manual_seed(self.base + i)
                self._values[i * CHUNK:(i + 1) * CHUNK].normal_(generator=g)
                self._drawn[i] = True

    def _draw_ahead(self):
        for i in range(self.chunks):
            if i >= self._stop_at:
                return
            self._draw(i)

    def take(self, offset: int, count: int) -> torch.Tensor:
        """Values ``[offset, offset + count)`` (inside ``len(self)``): a 1-D
        float32 view, each value handed out once (callers may overwrite)."""
        if offset < 0 or offset + count > len(self):
            raise IndexError(f'values [{offset}, {offset + count}) are past '
                             f'the {len(self)} drawn ahead')
        for i in range(offset // CHUNK, math.ceil((offset + count) / CHUNK)):
            self._draw(i)
        return self._values[offset:offset + count]


def add_noise(teacher, noisy, std, stream: NoiseStream, mode):
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
            of every widened weight (``Builder.noisy``), in a fixed order:
            the i-th tensor takes the i-th slice of ``stream``.
        std (float): The noise's standard deviation.
        stream (NoiseStream): The N(0, 1) values.
        mode (str): One of :data:`NOISE_MODES`.
    """
    tasks, offset = [], 0
    for path, name, in_dim in noisy:
        if mode == 'zero_sum' and in_dim is None:
            continue
        module = teacher.get_submodule(path)
        p = getattr(module, name)
        if getattr(module, 'transposed', False) is True:
            p = p.transpose(0, 1)  # a view: (C_out, C_in, k...) order
        in_dim = in_dim if mode == 'zero_sum' else None
        n = _cyclic_replicas(p, in_dim) if in_dim is not None else None
        count = p.numel() // n * (n - 1) if n else p.numel()
        if offset + count <= len(stream):  # a slice of the drawn-ahead values
            start, offset = offset, offset + count
        else:  # past them: a stream of its own
            start = None
        tasks.append((p, in_dim, n, count, start, stream.seed(len(tasks))))
    torch.randint(0, 2**62, (1,), generator=stream.generator)  # see base
    if not tasks:
        return
    scratch = {}  # per thread: a float32 buffer for the tensors' own streams

    def fill(task):
        p, in_dim, n, count, start, seed = task
        if start is not None:
            draws = stream.take(start, count)
        else:  # (drawing into fresh memory costs as much again: page faults)
            buf = scratch.get(threading.get_ident())
            if buf is None or buf.numel() < count:
                buf = scratch[threading.get_ident()] = torch.empty(count)
            draws = buf[:count].normal_(
                generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            if n:
                _add_cyclic_zero_sum(p, n, std, draws)
            else:
                p.add_(_shape_noise(tuple(p.shape), in_dim, draws).mul_(std)
                       .to(p))

    workers = min(torch.get_num_threads(), len(tasks))
    shared = len({t[0].data_ptr() for t in tasks}) < len(tasks)
    if workers <= 1 or shared:  # a tensor listed twice: no concurrent add_
        for task in tasks:
            fill(task)
        return
    # largest first, so that the workers end together (the order of the work
    # does not change the result: each tensor's values are fixed)
    with ThreadPoolExecutor(workers) as pool:
        # re-raises a worker's error
        list(pool.map(fill, sorted(tasks, key=lambda t: -t[3])))


def _cyclic_replicas(p, in_dim) -> Optional[int]:
    """n for whole cyclic input replicas (``index = j mod C``, ``C_in' =
    n C``) of a contiguous ``p``: the layout :func:`_add_cyclic_zero_sum`
    takes; None for any other."""
    index, c, width = in_dim.index, in_dim.student_size, p.shape[1]
    if width % c or not p.is_contiguous() or not is_cyclic(index, c):
        return None
    return width // c


def _add_cyclic_zero_sum(p, n, std, draws):
    """``p += std · e`` in place, zero-sum over the ``n`` cyclic input
    replicas (:func:`_cyclic_replicas`).

    ``e = Hᵀ z`` with ``H`` the (n-1) x n Helmert rows (:func:`_helmert`) and
    ``z`` n - 1 iid N(0, 1) values per student position: the law of n centred
    iid draws, N(0, I - 11ᵀ/n), from n - 1 of every n values (half at ratio
    2), added slice by slice without a noise tensor of ``p``'s size.  fp32
    values (the replicas' sum is zero up to fp32 rounding of values ~std, far
    below the rounding of ``p + std · e``).

    Args:
        draws (Tensor): ``p.numel() / n · (n - 1)`` N(0, 1) float32 values.
    """
    view = p.view(p.shape[0], n, -1)
    helmert = _helmert(n)
    shape = (p.shape[0], view.shape[2])
    z = draws.view(n - 1, *shape).to(p)
    for k in range(n - 1):
        for j in range(k + 2):  # row k is non-zero on columns 0..k+1
            view[:, j].add_(z[k], alpha=std * float(helmert[k, j]))


def _shape_noise(shape, in_dim, draws) -> torch.Tensor:
    """``draws`` (numel of ``shape`` N(0, 1) float32 values, overwritten) as
    noise of ``shape`` = (C_out, C_in', ...), centred over the input replicas
    of each student channel when ``in_dim`` is given (any layout;
    :func:`_add_cyclic_zero_sum` covers the usual one faster).

    Centred input-dim first, so that the replica means are one ``index_add_``
    / ``index_select`` over rows (scattering along an inner dim is several
    times slower).

    Returns:
        Tensor: (C_out, C_in', ...), a transposed view when centred.
    """
    if in_dim is None:
        return draws.view(shape)
    index, c, width = in_dim.index, in_dim.student_size, shape[1]
    noise = draws.view((width, shape[0]) + shape[2:])
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
