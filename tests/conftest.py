"""Shared pytest set-up: mmgpd (and so its compat layer) is imported first."""
import os
import sys

import pytest

import mmgpd  # noqa: F401  (applies mmgpd.utils.compat)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_python(tmp_path):
    """Run a Python snippet in a fresh interpreter; returns CompletedProcess."""
    import subprocess

    def _run(code, timeout=300):
        env = dict(os.environ)
        env.pop('PYTHONPATH', None)
        return subprocess.run([sys.executable, '-c', code], cwd=tmp_path,
                              env=env, capture_output=True, text=True,
                              timeout=timeout)

    return _run


# Property-based tests: random examples locally, a fixed reproducible set in CI.
from hypothesis import settings  # noqa: E402

settings.register_profile('ci', derandomize=True, print_blob=True)
if os.environ.get('CI'):
    settings.load_profile('ci')


def _initial_threads():
    import torch
    return torch.get_num_threads()


_THREADS = _initial_threads()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tests that pin torch to one thread (benchmarks, CPU training; module
    fixtures included) must not change the thread count, hence the fp32
    reduction order, of later tests: every test ends with the session's."""
    import torch
    yield
    torch.set_num_threads(_THREADS)
