"""CPU allocator tuning for training steps (glibc malloc).

glibc serves large blocks (above a threshold that adapts up to 32 MiB) with
``mmap`` and unmaps them on ``free``, so a training step that allocates and
frees the same large activations every iteration page-faults them in again
each time (and zeroes every page).  A GPD step holds S's and T_d's graphs at
once: measured on digits (ResNet_CIFAR-18, batch 64, 1 thread) 43 k minor
faults per GPD* step and 68 k with branches, against 24-27 k for T_d's own
step and none for S's.  :func:`tune_cpu_allocator` fixes both thresholds so
that freed blocks stay in the heap and are reused (what PyTorch's CUDA caching
allocator does on GPUs): then no step faults.  The process keeps its peak
heap instead of returning it to the system.
"""
import ctypes
import ctypes.util
import os

__all__ = ['tune_cpu_allocator', 'release_free_heap', 'heap_reuse',
           'ENV_SWITCH']

#: ``MMGPD_MALLOC_TUNING=0`` turns :func:`tune_cpu_allocator` off
ENV_SWITCH = 'MMGPD_MALLOC_TUNING'
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks below this come from the heap (glibc caps the value at HEAP_MAX/2
#: on some builds; mallopt reports failure then and nothing changes)
MMAP_THRESHOLD = 1 << 30
#: free memory at the heap's top kept up to this before it is returned
TRIM_THRESHOLD = 1 << 32
#: where glibc's adaptive thresholds end up after large frees (its
#: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, and twice that for trimming):
#: what :func:`heap_reuse` leaves behind
GLIBC_MMAP_THRESHOLD_MAX = 32 << 20
GLIBC_TRIM_THRESHOLD_MAX = 64 << 20
#: what tuning sets (mallopt takes an int: the trim threshold clamped)
_TUNED = (MMAP_THRESHOLD, min(TRIM_THRESHOLD, 2**31 - 1))

_applied = None


def _libc():
    name = ctypes.util.find_library('c')
    try:
        return ctypes.CDLL(name or 'libc.so.6')
    except OSError:
        return None


def tune_cpu_allocator(force: bool = False) -> bool:
    """Fix glibc's mmap / trim thresholds (once per process).

    Returns:
        bool: True when the thresholds are set (now or earlier); False on a
        non-glibc libc, when ``MMGPD_MALLOC_TUNING=0``, or when mallopt
        refuses.
    """
    global _applied
    if _applied is not None and not force:
        return _applied
    _applied = False
    if _switched_off():
        return False
    _applied = _set_thresholds(*_TUNED)
    return _applied


def release_free_heap() -> bool:
    """Return every free page of the heap to the system (glibc
    ``malloc_trim(0)``), so that the process's RSS counts live memory only.

    Without it, memory freed inside the heap stays resident and is silently
    reused by the next allocations: an RSS difference across a build can
    then come out negative.  Returns False where there is no glibc.
    """
    try:
        trim = _libc().malloc_trim
    except AttributeError:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    trim(0)
    return True


class heap_reuse:
    """Keep freed blocks in the heap for the duration of a ``with`` block.

    IR allocates and frees many activation-size tensors (the planner's tags,
    the teacher's weights, the noise): untuned, each one above glibc's
    adaptive mmap threshold is mapped afresh and page-faulted in (one
    ResNet-18 IR at ratio 2, 1 thread: 72-91 k minor faults untuned, 51-65 k
    inside the block, which still faults IR's own peak in once; 2-5 k in a
    process whose heap stays tuned).  On entry the
    mmap / trim thresholds are raised as :func:`tune_cpu_allocator` does; on
    exit the free heap is returned to the system (``malloc_trim``) and the
    thresholds are left where glibc's adaptive ones end up after large frees
    (32 MiB / 64 MiB), since glibc cannot report or restore its adaptive
    state.  Nothing is done when :func:`tune_cpu_allocator` already applied
    (the process keeps its tuning), with ``MMGPD_MALLOC_TUNING=0``, or without
    glibc.  Re-entrant: only the outermost block acts.
    """
    _depth = 0

    def __enter__(self):
        cls = type(self)
        cls._depth += 1
        self.acting = (cls._depth == 1 and not _applied
                       and not _switched_off() and _set_thresholds(*_TUNED))
        return self

    def __exit__(self, *exc):
        type(self)._depth -= 1
        if self.acting:
            _set_thresholds(GLIBC_MMAP_THRESHOLD_MAX, GLIBC_TRIM_THRESHOLD_MAX)
            release_free_heap()
        return False


def _switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, '1') == '0'


def _set_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """``mallopt`` both thresholds; False where there is no glibc or it
    refuses."""
    try:
        mallopt = _libc().mallopt
    except AttributeError:  # no libc, or not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return (mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
            and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1)
