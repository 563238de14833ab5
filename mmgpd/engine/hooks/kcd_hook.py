"""KCDHook: fits KCD's teacher-side channel transforms (offline / online)."""
import random
from typing import Dict, List, Tuple

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmgpd.registry import HOOKS

MODES = ('offline', 'online')


@HOOKS.register_module()
class KCDHook(Hook):
    """Solve the channel assignment of every :class:`~mmgpd.models.KCD` method
    of a GPD algorithm from the models' tapped features.

    A *refresh*: every model in eval mode (no BN statistics move, no dropout),
    ``num_batches`` batches of the training dataloader through the
    preprocessor (``training=False``: no batch augments), under no_grad, the
    distilled model's taps (S, and T_d with GPD — folded to the student's
    width when ``model.distiller.fold_dynamic_teacher_taps``, exactly as the
    loss sees them) and the static teacher's accumulated into each KCD's
    statistics; then every KCD solves (its statistics all-reduced, so every
    rank solves the same problem). The Python / NumPy / torch RNG states are
    saved and restored around the pass, so a refresh draws nothing from the
    training's random streams.

    * ``mode='offline'``: one refresh in ``before_train`` from the initial
      student, fixed afterwards;
    * ``mode='online'``: the same, then a refresh after every ``interval``-th
      training epoch (before the epoch's checkpoint is written).

    A resumed run (or ``load_from`` a KCD checkpoint) restores the solved
    transforms from the checkpoint and skips the initial refresh, so
    ``--resume`` continues exactly. Both variants are reconstructed from the
    paper's description (KCD's method section was not readable).

    The batches' (N,) labels (``task.gt``; None for detection) go to each
    KCD's statistics too (read by ``statistic='class_profile'`` only). How the
    statistics are averaged across refreshes is the method's
    ``stats_momentum``.

    **Fixed in this reconstruction** (not options): refreshes happen at epoch
    ends only — a refresh iterates the training dataloader, which must not be
    re-entered in the middle of an epoch (with persistent workers a second
    iterator resets the running one); the offline source is the distilled
    model as it stands in ``before_train`` (its initialisation, or the weights
    of ``load_from``: a student pretrained without KD is reached that way, a
    student after warm-up epochs is not); the pass runs the models in eval
    mode on the training dataloader's batches without batch augments.

    Logged per refresh (message hub, ``kcd/<target>/<tap>/matched_corr``,
    ``…/changed``): the mean matched correlation and the share of student
    channels whose teacher channel changed.

    Args:
        mode (str): ``'offline'`` or ``'online'``. Defaults to ``'offline'``.
        interval (int): Epochs between online refreshes. Defaults to 1.
        num_batches (int): Batches per refresh (per rank). Defaults to 20.
    """
    priority = 'NORMAL'  # after_train_epoch before CheckpointHook (VERY_LOW)

    def __init__(self, mode: str = 'offline', interval: int = 1,
                 num_batches: int = 20):
        if mode not in MODES:
            raise ValueError(f'KCDHook.mode must be one of {MODES}, got {mode!r}')
        if interval < 1 or num_batches < 1:
            raise ValueError('KCDHook.interval and num_batches must be >= 1, got '
                             f'{interval} and {num_batches}')
        self.mode = mode
        self.interval = interval
        self.num_batches = num_batches

    @staticmethod
    def _algorithm(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    @staticmethod
    def kcd_methods(algorithm) -> List[Tuple[str, torch.nn.Module]]:
        """``[(target, KCD instance)]`` of the algorithm's distiller."""
        from mmgpd.models.methods.kcd import KCD
        distiller = algorithm.distiller
        return [(target, m) for target in distiller.methods
                for m in distiller.methods_of(target) if isinstance(m, KCD)]

    def before_train(self, runner) -> None:
        methods = self.kcd_methods(self._algorithm(runner))
        if not methods:
            raise RuntimeError('KCDHook: model.distiller.method has no '
                               "mmgpd.KCD (remove the hook or add the method)")
        if all(m.solved for _, m in methods):
            runner.logger.info('KCDHook: channel transforms restored from the '
                               'checkpoint; no initial refresh')
            return
        self.refresh(runner)

    def after_train_epoch(self, runner) -> None:
        if self.mode == 'online' and (runner.epoch + 1) % self.interval == 0:
            self.refresh(runner)

    # ---------------------------------------------------------------- refresh
    def refresh(self, runner) -> Dict[str, Dict[str, Dict[str, float]]]:
        """One statistics pass and solve (every rank must call it)."""
        algorithm = self._algorithm(runner)
        methods = self.kcd_methods(algorithm)
        rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        modes = {m: m.training for m in algorithm.modules()}
        try:
            algorithm.eval()
            for m in {id(m): m for _, m in methods}.values():
                m.reset_statistics()
            with torch.no_grad():
                for i, batch in enumerate(runner.train_dataloader):
                    if i >= self.num_batches:
                        break
                    self._accumulate(algorithm, methods, batch)
            report = {}
            for target, method in methods:
                report[target] = method.update()
        finally:
            for m, mode in modes.items():
                m.training = mode
            random.setstate(rng[0])
            np.random.set_state(rng[1])
            torch.set_rng_state(rng[2])
        for target, taps in report.items():
            for tap, values in taps.items():
                for key, value in values.items():
                    runner.message_hub.update_scalar(
                        f'kcd/{target}/{tap}/{key}', value)
                runner.logger.info(
                    f'KCDHook ({self.mode}, epoch {runner.epoch}): {target} '
                    f'{tap}: ' + ', '.join(f'{k} {v:.4f}' for k, v in
                                           values.items()))
        return report

    @staticmethod
    def _accumulate(algorithm, methods, batch) -> None:
        data = algorithm.data_preprocessor(batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        distiller, task = algorithm.distiller, algorithm.task
        gt = task.gt(samples, inputs.device)
        models = algorithm.models()
        teacher, _ = task.outputs(algorithm.teacher, inputs, samples,
                                  with_loss=False,
                                  taps=algorithm.tap_paths['static_teacher'])
        outs = {}
        for target, method in methods:
            if target not in outs:
                out, _ = task.outputs(models[target], inputs, samples,
                                      with_loss=False,
                                      taps=algorithm.tap_paths['student'])
                if target == 'dynamic_teacher' and \
                        distiller.fold_dynamic_teacher_taps:
                    out = {k: (distiller.fold(k, v) if k in distiller.tap_folds
                               else v) for k, v in out.items()}
                outs[target] = out
            method.accumulate(outs[target], teacher, gt)
