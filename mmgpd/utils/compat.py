"""Compatibility layer for the pinned OpenMMLab stack on current libraries.

mmengine 0.10.7, mmpretrain 1.2.0 and mmdet 3.3.0 predate torch 2.6, setuptools 82
and NumPy 2.  :func:`apply_compat_patches` absorbs the breakages that this causes.
It runs when :mod:`mmgpd` is imported and at the top of every tool, before any
config is parsed.  Each patch is narrow, idempotent and individually tested
(``tests/test_compat.py``):

``local_checkpoint_loader``
    torch >= 2.6 defaults ``torch.load(weights_only=True)``, so mmengine's local
    loader cannot read the full training checkpoints that mmengine itself writes
    (message hub -> ``HistoryBuffer``, NumPy scalars, ...), and ``--resume`` /
    ``load_from`` fail with "Unsupported global".  mmengine's loader for *local
    paths* (scheme ``''``) is re-registered to unpickle the file fully: a local
    file named in a config or on the command line is a trusted training
    checkpoint.  ``torch.load``'s own default and mmengine's remote loaders
    (http, ...) are left as they are, so weights-only loading is not turned off
    process-wide.

``package_utils_without_pkg_resources``
    setuptools >= 82 no longer ships ``pkg_resources``, which mmengine's
    ``is_installed`` / ``get_installed_path`` / ``package2module`` import to
    resolve every ``mmpretrain::`` / ``mmdet::`` base config.  They are replaced
    by equivalents built on :mod:`importlib.metadata` (also in the modules that
    imported them by name).

``numpy_in1d``
    NumPy 2.4 removed ``np.in1d``, which mmpretrain 1.2.0's retrieval metrics call.
    When it is missing it is restored as ``np.isin(...).ravel()``, its documented
    replacement.

``distributed_on_cpu``
    ``--launcher pytorch`` on a machine with no GPU: mmengine's
    ``_init_dist_pytorch`` calls ``torch.cuda.set_device`` and configs ask for
    NCCL, and the Runner wraps the model in DDP with ``device_ids=[local_rank]``,
    which PyTorch rejects for CPU modules.  Without CUDA, the process group is
    initialised with gloo and no device, and ``device_ids`` is dropped for
    modules whose parameters are on the CPU.  Machines with GPUs are untouched.
    ``sync_bn`` (the Runner's ``convert_sync_batchnorm``) turns the dynamic
    teacher's carried batch norms into carried SyncBNs instead of plain ones,
    which would drop the carry scale and the student's statistics.

``atomic_local_put``
    mmengine writes checkpoints (and every local file) in place, so a run
    killed while saving leaves a truncated ``epoch_N.pth`` that ``--resume``
    trips on.  Local writes go to a temporary file that is renamed into place.
"""
import importlib
import importlib.metadata
import importlib.util
import os.path as osp
from typing import Callable, Dict, List

__all__ = ['apply_compat_patches', 'applied_patches']

_APPLIED: List[str] = []


# --------------------------------------------------------------------------- #
# torch.load(weights_only=True) vs. mmengine's full training checkpoints
# --------------------------------------------------------------------------- #
def load_from_local(filename, map_location=None):
    """mmengine's local checkpoint loader, unpickling the trusted local file fully.

    Args:
        filename (str): Path of a local checkpoint (``~`` is expanded).
        map_location: Same as :func:`torch.load`.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        FileNotFoundError: If ``filename`` is not a file.
    """
    import torch
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def _patch_local_checkpoint_loader() -> bool:
    from mmengine.runner import checkpoint as mmengine_checkpoint
    loaders = mmengine_checkpoint.CheckpointLoader._schemes
    if loaders.get('') is load_from_local:
        return False
    mmengine_checkpoint.CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
    return True


# --------------------------------------------------------------------------- #
# pkg_resources-free mmengine.utils.package_utils
# --------------------------------------------------------------------------- #
def _distribution(package: str):
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_installed(package: str) -> bool:
    """Whether ``package`` is installed or importable (mmengine semantics).

    Args:
        package (str): Distribution or module name, e.g. ``'mmpretrain'``.
    """
    if _distribution(package) is not None:
        return True
    spec = importlib.util.find_spec(package)
    return spec is not None and spec.origin is not None


def package2module(package: str) -> str:
    """Top-level module of the distribution ``package`` (e.g. mmcv-full -> mmcv).

    Raises:
        importlib.metadata.PackageNotFoundError: If ``package`` is not installed.
        ValueError: If the distribution does not name its top-level module.
    """
    dist = _distribution(package)
    if dist is None:
        raise importlib.metadata.PackageNotFoundError(package)
    top_level = dist.read_text('top_level.txt')
    if top_level and top_level.strip():
        return top_level.split('\n')[0].strip()
    raise ValueError(f'can not infer the module name of {package}')


def get_installed_path(package: str) -> str:
    """Directory of the installed package ``package`` (mmengine semantics).

    Regular, editable and ``PYTHONPATH`` installs are all located through the
    import system, so the answer is the directory that ``import`` would use.

    Raises:
        importlib.metadata.PackageNotFoundError: If ``package`` cannot be found.
        RuntimeError: If ``package`` is a namespace package.
    """
    module = package.replace('-', '_')
    if importlib.util.find_spec(module) is None and _distribution(package):
        module = package2module(package)  # e.g. mmcv-full -> mmcv
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise importlib.metadata.PackageNotFoundError(package)
    if spec.origin is None:
        raise RuntimeError(f'{package} is a namespace package, which is invalid '
                           'for `get_install_path`')
    return osp.dirname(spec.origin)


_PACKAGE_UTILS = {
    'is_installed': is_installed,
    'get_installed_path': get_installed_path,
    'package2module': package2module,
}
# Modules that imported these functions by name.
_PACKAGE_UTILS_USERS = ('mmengine.utils.package_utils', 'mmengine.utils',
                        'mmengine.config.config', 'mmengine.hub.hub')


def _patch_package_utils() -> bool:
    changed = False
    for mod_name in _PACKAGE_UTILS_USERS:
        module = importlib.import_module(mod_name)
        for name, func in _PACKAGE_UTILS.items():
            if hasattr(module, name) and getattr(module, name) is not func:
                setattr(module, name, func)
                changed = True
    return changed


# --------------------------------------------------------------------------- #
# NumPy 2: np.in1d
# --------------------------------------------------------------------------- #
def in1d(ar1, ar2, assume_unique=False, invert=False):
    """``np.in1d``: whether each element of flattened ``ar1`` is in ``ar2`` (1-D)."""
    import numpy as np
    return np.isin(ar1, ar2, assume_unique=assume_unique, invert=invert).ravel()


def _patch_numpy_in1d() -> bool:
    import numpy as np
    if 'in1d' in np.__dict__:
        return False
    np.in1d = in1d
    return True


# --------------------------------------------------------------------------- #
# torch.distributed on CPU (gloo)
# --------------------------------------------------------------------------- #
def _patch_distributed_on_cpu() -> bool:
    import torch
    from mmengine.dist import utils as dist_utils
    from mmengine.model.wrappers import distributed as wrappers
    changed = False
    init = dist_utils._init_dist_pytorch
    if not getattr(init, '_mmgpd_cpu', False):

        def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
            if torch.cuda.is_available() or init_backend != 'torch':
                return init(backend, init_backend=init_backend, **kwargs)
            import torch.distributed as torch_dist
            torch_dist.init_process_group(
                backend='gloo' if backend == 'nccl' else backend, **kwargs)

        _init_dist_pytorch._mmgpd_cpu = True
        dist_utils._init_dist_pytorch = _init_dist_pytorch
        changed = True
    ddp_init = wrappers.MMDistributedDataParallel.__init__
    if not getattr(ddp_init, '_mmgpd_cpu', False):

        def __init__(self, module, detect_anomalous_params=False, **kwargs):
            if kwargs.get('device_ids') is not None and all(
                    p.device.type == 'cpu' for p in module.parameters()):
                kwargs['device_ids'] = None
            ddp_init(self, module, detect_anomalous_params=detect_anomalous_params,
                     **kwargs)

        __init__._mmgpd_cpu = True
        wrappers.MMDistributedDataParallel.__init__ = __init__
        changed = True
    from mmengine.runner import runner as runner_mod
    convert = runner_mod.convert_sync_batchnorm
    if not getattr(convert, '_mmgpd', False):

        def convert_sync_batchnorm(module, implementation='torch'):
            from torch.nn.modules.batchnorm import _BatchNorm

            from mmgpd.reparam.layers import _CarriedBatchNormMixin, to_sync_batchnorm
            if isinstance(module, _CarriedBatchNormMixin):
                return to_sync_batchnorm(module)
            if isinstance(module, _BatchNorm):
                return convert(module, implementation)
            for name, child in module.named_children():
                module.add_module(name, convert_sync_batchnorm(child, implementation))
            return module

        convert_sync_batchnorm._mmgpd = True
        runner_mod.convert_sync_batchnorm = convert_sync_batchnorm
        changed = True
    return changed


# --------------------------------------------------------------------------- #
# Atomic local writes (checkpoints)
# --------------------------------------------------------------------------- #
def _patch_atomic_local_put() -> bool:
    from mmengine.fileio.backends import local_backend
    put = local_backend.LocalBackend.put
    if getattr(put, '_mmgpd', False):
        return False

    def atomic_put(self, obj: bytes, filepath) -> None:
        from mmgpd.utils.fileio import atomic_write
        atomic_write(str(filepath), lambda f: f.write(obj))

    atomic_put._mmgpd = True
    local_backend.LocalBackend.put = atomic_put
    return True


_PATCHES: Dict[str, Callable[[], bool]] = {
    'local_checkpoint_loader': _patch_local_checkpoint_loader,
    'package_utils_without_pkg_resources': _patch_package_utils,
    'numpy_in1d': _patch_numpy_in1d,
    'distributed_on_cpu': _patch_distributed_on_cpu,
    'atomic_local_put': _patch_atomic_local_put,
}
_NEEDS = {
    'local_checkpoint_loader': 'mmengine',
    'package_utils_without_pkg_resources': 'mmengine',
    'numpy_in1d': 'numpy',
    'distributed_on_cpu': 'mmengine',
    'atomic_local_put': 'mmengine',
}


def apply_compat_patches() -> List[str]:
    """Apply every compatibility patch whose library is installed (idempotent).

    Returns:
        list[str]: Names of the patches that changed something in this call.
    """
    changed = []
    for name, patch in _PATCHES.items():
        if importlib.util.find_spec(_NEEDS[name]) is None:
            continue
        if patch():
            changed.append(name)
            if name not in _APPLIED:
                _APPLIED.append(name)
    return changed


def applied_patches() -> List[str]:
    """Names of the patches applied so far in this process."""
    return list(_APPLIED)
