"""``mmgpd.AmpOptimWrapper``: MMEngine's ``AmpOptimWrapper``, also on the CPU.

MMEngine's wrapper refuses to be built without an accelerator (an assert on
CUDA / NPU / MLU / MUSA). On those devices this class *is* MMEngine's (same
``__init__``, loss scaler and autocast). Without one it runs CPU autocast,
which supports ``bfloat16`` only: ``dtype=None`` means ``'bfloat16'``, and
``'float16'`` is refused with an error naming ``optim_wrapper.dtype``. The
loss scaler is ``torch.amp.GradScaler('cpu')`` with the same ``loss_scale``
settings (bf16 has fp32's exponent range, so scaling is a no-op in effect; it
is kept so that checkpoints and ``clip_grad`` (unscale first) behave as on
the GPU).

Under GPD's hard strategy the student owns no parameters: the optimizer's
param groups hold T_d's one parameter set, so the loss scaler unscales and
``clip_grad`` clips each tensor once (tests/engine/test_amp.py).
"""
from typing import Union

import torch
from mmengine.device import (is_cuda_available, is_mlu_available,
                             is_musa_available, is_npu_available)
from mmengine.optim import AmpOptimWrapper as _MMEngineAmpOptimWrapper
from mmengine.optim import OptimWrapper

from mmgpd.registry import OPTIM_WRAPPERS

__all__ = ['AmpOptimWrapper']


def _accelerator() -> bool:
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


@OPTIM_WRAPPERS.register_module()
class AmpOptimWrapper(_MMEngineAmpOptimWrapper):
    """Automatic mixed precision on GPUs (MMEngine's) and on the CPU (bf16).

    Args:
        loss_scale (float | str | dict): As MMEngine's: ``'dynamic'``, an
            initial scale, or ``GradScaler`` keyword arguments. Defaults to
            ``'dynamic'``.
        dtype (str | torch.dtype, optional): Autocast dtype. On the CPU only
            ``'bfloat16'`` (the default there). Defaults to None (fp16 on
            CUDA, bf16 on the CPU).
        use_fsdp (bool): As MMEngine's (accelerators only). Defaults to False.
        **kwargs: Passed to :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None,
                 use_fsdp: bool = False,
                 **kwargs):
        if _accelerator():
            super().__init__(loss_scale=loss_scale, dtype=dtype,
                             use_fsdp=use_fsdp, **kwargs)
            return
        if isinstance(dtype, str):
            if dtype not in self.valid_dtypes:
                raise ValueError(f'optim_wrapper.dtype must be one of '
                                 f'{self.valid_dtypes}, got {dtype!r}')
            dtype = getattr(torch, dtype)
        if dtype is None:
            dtype = torch.bfloat16
        if dtype != torch.bfloat16:
            raise ValueError(
                f'optim_wrapper.dtype={dtype}: CPU autocast (no GPU here) runs '
                "bfloat16 only; set optim_wrapper.dtype='bfloat16' "
                '(tools/train.py --amp --amp-dtype bfloat16)')
        if use_fsdp:
            raise ValueError('optim_wrapper.use_fsdp=True needs a GPU')
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler('cpu')
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler('cpu', **loss_scale)
        else:
            raise TypeError('optim_wrapper.loss_scale must be a float, a dict '
                            f'or "dynamic", got {loss_scale!r}')
        self.cast_dtype = dtype
