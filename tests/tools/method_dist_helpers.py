"""A test-only hook, imported by the distributed KCD / DPK test's config."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class DumpMethodState(Hook):
    """Save this rank's static-teacher method state (parameters and buffers)
    and the per-iteration DPK ratios to methods_rank<R>.pth."""
    priority = 'LOWEST'

    def __init__(self):
        self.ratios = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.ratios.append({k: float(v) for k, v in outputs.items()
                            if k.startswith('dpk_ratio')})

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        state = {k: v.detach().clone() for k, v in
                 model.distiller.methods.state_dict().items()}
        torch.save(dict(state=state, ratios=self.ratios),
                   osp.join(runner.work_dir, f'methods_rank{get_rank()}.pth'))
