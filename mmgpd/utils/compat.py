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
    modules whose parameters are on the CPU.  ``SyncBatchNorm`` in training
    refuses CPU inputs; in a process group of more than one process its
    statistics (and their gradients) are all-reduced over the group's backend
    (gloo) instead, as torch's CUDA kernel does.  Machines with GPUs are
    untouched.

``carried_sync_batchnorm``
    mmengine's Runner calls ``revert_sync_batchnorm`` when it is not
    distributed (every SyncBN becomes a plain ``_BatchNormXd``) and, with
    ``cfg.sync_bn``, ``convert_sync_batchnorm`` under DDP (every batch norm
    becomes a new SyncBN).  Both would drop what a dynamic teacher's carried
    batch norms hold besides a batch norm's tensors: the carry scale and the
    hard-strategy student's running statistics.  The carried norms become the
    carried ``CarriedBatchNormXd`` / ``CarriedSyncBatchNorm`` instead (the same
    tensors), and the student a ``HardStudent`` runs (not a registered
    submodule) is reverted / converted with the model, so S and T_d normalise
    alike.  Everything else goes to mmengine's functions unchanged.

``ssd_head_predict``
    mmdet 3.3.0's ``BaseDenseHead._predict_by_feat_single`` reads
    ``self.loss_cls``, which ``SSDHead`` never builds (it skips
    ``AnchorHead.__init__``), so every SSD prediction (test loop,
    ``DetInferencer``) fails with "'SSDHead' object has no attribute
    'loss_cls'" (open-mmlab/mmdetection#11063, #11780; unmerged fix #11524).
    ``SSDHead`` gets a class attribute ``loss_cls = None``: the check then
    reads ``getattr(None, 'custom_cls_channels', False)``, False, and scores
    are the softmax as intended. Set when ``mmdet.models.dense_heads.ssd_head``
    is imported (a one-shot import hook), so importing mmgpd does not import
    mmdet's models.

``atomic_local_put``
    mmengine writes checkpoints (and every local file) in place, so a run
    killed while saving leaves a truncated ``epoch_N.pth`` that ``--resume``
    trips on.  Local writes go to a temporary file that is renamed into place.
"""
import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import os.path as osp
import sys
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
    handle = wrappers.MMDistributedDataParallel._passing_sync_batchnorm_handle
    if not getattr(handle, '_mmgpd_cpu', False):

        def _passing_sync_batchnorm_handle(self, module):
            # torch refuses SyncBatchNorm in CPU modules; on the CPU it runs
            # through sync_batch_norm_cpu (SyncBatchNorm.forward, below)
            if self.device_type != 'cpu':
                handle(self, module)

        _passing_sync_batchnorm_handle._mmgpd_cpu = True
        wrappers.MMDistributedDataParallel._passing_sync_batchnorm_handle = \
            _passing_sync_batchnorm_handle
        changed = True
    sync_forward = torch.nn.SyncBatchNorm.forward
    if not getattr(sync_forward, '_mmgpd_cpu', False):

        def forward(self, input):
            if self.training and input.device.type == 'cpu':
                group = _cpu_sync_group(self)
                if group is not None:
                    return sync_batch_norm_cpu(self, input, group)
            return sync_forward(self, input)

        forward._mmgpd_cpu = True
        forward.__doc__ = sync_forward.__doc__
        torch.nn.SyncBatchNorm.forward = forward
        changed = True
    return changed


def _cpu_sync_group(bn):
    """The process group a training SyncBN on CPU syncs over, or None (one
    process, or no process group: torch's own fallback to batch norm)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = bn.process_group or dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def sync_batch_norm_cpu(bn, x, group):
    """``SyncBatchNorm`` in training on CPU tensors, synchronised over ``group``.

    The batch mean and (biased) variance of every channel are those of the
    inputs of all processes, all-reduced (``torch.distributed.nn``, so that
    their gradients are all-reduced too, like torch's CUDA SyncBN); running
    statistics move with the unbiased variance, as in ``F.batch_norm``.

    Args:
        bn (nn.SyncBatchNorm): The layer (its ``forward`` semantics).
        x (Tensor): (N, C, ...) input on the CPU.
        group: Process group of more than one process.
    """
    import torch
    from torch.distributed.nn.functional import all_reduce
    bn._check_input_dim(x)
    bn._check_non_zero_input_channels(x)
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            factor = 1.0 / bn.num_batches_tracked.item()
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = x.new_full((1, ), x.numel() / max(x.shape[1], 1))
    total = all_reduce(torch.cat([x.sum(dims), count]), group=group)
    n = total[-1]
    mean = total[:-1] / n
    centred = x - mean.reshape(shape)
    var = all_reduce((centred * centred).sum(dims), group=group) / n
    y = centred * torch.rsqrt(var + bn.eps).reshape(shape)
    if bn.weight is not None:
        y = y * bn.weight.reshape(shape)
    if bn.bias is not None:
        y = y + bn.bias.reshape(shape)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            unbiased = var.detach() * (n / (n - 1)) if n > 1 else var.detach()
            bn.running_mean.mul_(1 - factor).add_(factor * mean.detach())
            bn.running_var.mul_(1 - factor).add_(factor * unbiased)
    return y


# --------------------------------------------------------------------------- #
# The dynamic teacher's carried batch norms vs. mmengine's (Sync)BN conversions
# --------------------------------------------------------------------------- #
#: Modules that import revert_sync_batchnorm / convert_sync_batchnorm by name
#: (patched when already imported; later imports get the patched function).
_SYNC_BN_USERS = ('mmengine.model.utils', 'mmengine.model', 'mmengine.runner.runner',
                  'mmengine._strategy.single_device', 'mmengine._strategy.distributed',
                  'mmdet.apis.inference', 'mmdet.apis.det_inferencer')


def _hard_student_template(module):
    from mmgpd.reparam.sharing import HardStudent
    return module.template if isinstance(module, HardStudent) else None


def _carried_revert(revert):

    def revert_sync_batchnorm(module):
        from mmgpd.reparam.layers import _CarriedBatchNormMixin, to_batchnorm_xd
        if isinstance(module, _CarriedBatchNormMixin):
            return to_batchnorm_xd(module)
        template = _hard_student_template(module)
        if template is not None:  # the student's norms, in place
            revert_sync_batchnorm(template)
            return module
        return revert(module)  # recurses through this function (module global)

    revert_sync_batchnorm._mmgpd = revert
    revert_sync_batchnorm.__doc__ = revert.__doc__
    return revert_sync_batchnorm


def _carried_convert(convert):

    def convert_sync_batchnorm(module, implementation='torch'):
        from mmgpd.reparam.layers import _CarriedBatchNormMixin, to_sync_batchnorm
        if isinstance(module, _CarriedBatchNormMixin):
            if implementation not in ('torch', 'mmcv'):
                return convert(module, implementation)  # its ValueError
            # carried norms have a torch SyncBN base only (also for 'mmcv')
            return to_sync_batchnorm(module)
        template = _hard_student_template(module)
        if template is not None:
            convert_sync_batchnorm(template, implementation)
            return module
        return convert(module, implementation)

    convert_sync_batchnorm._mmgpd = convert
    convert_sync_batchnorm.__doc__ = convert.__doc__
    return convert_sync_batchnorm


def _patch_carried_sync_batchnorm() -> bool:
    import sys

    from mmengine.model import utils as model_utils
    from mmengine.runner import runner as _  # noqa: F401  (a user)
    changed = False
    patched = {}
    for name, wrap in (('revert_sync_batchnorm', _carried_revert),
                       ('convert_sync_batchnorm', _carried_convert)):
        func = getattr(model_utils, name)
        if getattr(func, '_mmgpd', None) is None:
            func = wrap(func)
            setattr(model_utils, name, func)
            changed = True
        patched[name] = func
    for mod_name in _SYNC_BN_USERS:
        module = sys.modules.get(mod_name)
        if module is None:
            continue
        for name, func in patched.items():
            if hasattr(module, name) and getattr(module, name) is not func:
                setattr(module, name, func)
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


# --------------------------------------------------------------------------- #
# SSDHead.loss_cls (mmdet 3.3.0 predicts with it; SSDHead has none)
# --------------------------------------------------------------------------- #
_SSD_MODULE = 'mmdet.models.dense_heads.ssd_head'


class _AfterImport(importlib.abc.MetaPathFinder):
    """A finder at the front of ``sys.meta_path`` that lets the other finders
    find module ``name`` and runs ``fix(module)`` right after the module's
    code has run (before anyone gets the module)."""

    def __init__(self, name: str, fix: Callable):
        self.name, self.fix = name, fix

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, fix = spec.loader, self.fix
        exec_module = loader.exec_module

        def exec_and_fix(module):
            exec_module(module)
            fix(module)
        loader.exec_module = exec_and_fix  # this module's own loader
        return spec


def _fix_ssd_head(module) -> bool:
    head = module.SSDHead
    if 'loss_cls' in vars(head):
        return False
    head.loss_cls = None
    return True


def _patch_ssd_head_predict() -> bool:
    module = sys.modules.get(_SSD_MODULE)
    if module is not None:
        return _fix_ssd_head(module)
    if any(isinstance(f, _AfterImport) and f.name == _SSD_MODULE
           for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _AfterImport(_SSD_MODULE, _fix_ssd_head))
    return True


_PATCHES: Dict[str, Callable[[], bool]] = {
    'local_checkpoint_loader': _patch_local_checkpoint_loader,
    'package_utils_without_pkg_resources': _patch_package_utils,
    'numpy_in1d': _patch_numpy_in1d,
    'distributed_on_cpu': _patch_distributed_on_cpu,
    'carried_sync_batchnorm': _patch_carried_sync_batchnorm,
    'atomic_local_put': _patch_atomic_local_put,
    'ssd_head_predict': _patch_ssd_head_predict,
}
_NEEDS = {
    'local_checkpoint_loader': 'mmengine',
    'package_utils_without_pkg_resources': 'mmengine',
    'numpy_in1d': 'numpy',
    'distributed_on_cpu': 'mmengine',
    'carried_sync_batchnorm': 'mmengine',
    'atomic_local_put': 'mmengine',
    'ssd_head_predict': 'mmdet',
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
