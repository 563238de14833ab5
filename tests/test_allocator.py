"""mmgpd.utils.allocator: freed large blocks are reused, not re-faulted."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import resource, sys, torch
    sys.path.insert(0, {root!r})
    from mmgpd.utils.allocator import tune_cpu_allocator

    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):  # a 48 MiB activation, allocated and freed
            x = torch.empty(12 * 1024 * 1024)
            x.fill_(1.0)
            del x
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults()
    plain = faults()
    print(tune_cpu_allocator(), plain, faults(), faults())
''')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc')
def test_tuned_allocator_stops_refaulting_freed_blocks():
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, '-c', SCRIPT.format(root=root)],
                         capture_output=True, text=True, check=True).stdout
    applied, plain, tuned_first, tuned = out.split()
    assert applied == 'True'
    # untuned: above glibc's largest adaptive threshold (32 MiB) each block
    # is mmapped afresh: 12288 pages faulted in every time
    assert int(plain) > 10 * 12000
    # tuned: after the first allocation the heap block is reused
    assert int(tuned) < 100


def test_switch_turns_it_off(monkeypatch):
    import mmgpd.utils.allocator as allocator
    monkeypatch.setattr(allocator, '_applied', None)
    monkeypatch.setenv(allocator.ENV_SWITCH, '0')
    assert allocator.tune_cpu_allocator() is False
    monkeypatch.setattr(allocator, '_applied', None)


SCOPED = textwrap.dedent('''
    import resource, sys, torch
    sys.path.insert(0, {root!r})
    from mmgpd.utils import allocator

    def faults(mib=48):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):  # an activation, allocated and freed
            x = torch.empty(mib * 1024 * 1024 // 4)
            x.fill_(1.0)
            del x
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def anon_mib():
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    return int(line.split()[1]) / 1024

    faults()
    plain = faults()
    with allocator.heap_reuse() as outer:
        with allocator.heap_reuse() as inner:  # only the outermost acts
            faults(), faults()
            inside = faults()
            kept = anon_mib()  # the freed 48 MiB block stays resident
    after = anon_mib()  # ... and is returned on exit
    print(outer.acting, inner.acting, plain, inside, kept - after)
''')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc')
def test_heap_reuse_is_scoped():
    """Inside ``heap_reuse`` freed blocks are reused instead of mapped and
    faulted in afresh; on exit the heap they occupy is returned to the
    system (IR runs inside it: ``inverse_reparameterize``)."""
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, '-c', SCOPED.format(root=root)],
                         capture_output=True, text=True, check=True).stdout
    outer, inner, plain, inside, returned = out.split()
    assert (outer, inner) == ('True', 'False')
    # untuned: above glibc's largest adaptive threshold (32 MiB) each block
    # is mmapped afresh: 12288 pages faulted in every time
    assert int(plain) > 10 * 12000
    assert int(inside) < 100
    assert float(returned) > 40  # MiB


def test_heap_reuse_does_nothing_when_switched_off(monkeypatch):
    import mmgpd.utils.allocator as allocator
    monkeypatch.setattr(allocator, '_applied', None)
    monkeypatch.setenv(allocator.ENV_SWITCH, '0')
    with allocator.heap_reuse() as scope:
        assert scope.acting is False
    assert allocator.heap_reuse._depth == 0
