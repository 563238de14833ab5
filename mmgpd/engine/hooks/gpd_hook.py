"""GPDHook: the gap at every validation, the deployable student, the GPD schedule."""
import copy
import os.path as osp
import random
from typing import Dict, Optional

import numpy as np
import torch
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmgpd.models.export import plain_checkpoint, save_atomic, student_from_algorithm
from mmgpd.registry import HOOKS

NAMES = ('student', 'dynamic_teacher', 'static_teacher')


@HOOKS.register_module()
class GPDHook(Hook):
    """Report S / T_d / T_s accuracy and the gaps; export the student; schedule GPD.

    At every validation it adds to the metrics (and so to MMEngine's logs, json
    scalars and visualizer backends)::

        gpd/acc_student, gpd/acc_dynamic_teacher, gpd/acc_static_teacher,
        gpd/gap_dynamic (T_d − S), gpd/gap_static (T_s − S)

    (top-1, %; counted from the ``pred_label_<name>`` fields GPD's classification
    ``predict`` attaches) and the models' sharpness (PESF-KD's measure: the
    mean over the validation set of log Σ_k exp(z_k), from the
    ``sharpness_<name>`` fields)::

        gpd/sharpness_student, gpd/sharpness_dynamic_teacher,
        gpd/sharpness_static_teacher, gpd/sharpness_adapted_static_teacher

    (the last with PESF-KD: T_s's logits through the adapter S distils
    from). With ``metric_key`` (detectors: e.g.
    ``'coco/bbox_mAP'`` of :class:`~mmgpd.evaluation.PerModelMetric`) the
    per-model scores are read from the metrics instead, and reported as
    ``gpd/bbox_mAP_student``, ``gpd/bbox_mAP_dynamic_teacher`` ... and the
    same ``gpd/gap_dynamic`` / ``gpd/gap_static``.

    It writes the extracted student as a plain mmpretrain / mmdet
    checkpoint: ``<work_dir>/student_latest.pth`` and, when the student's
    accuracy improves, ``student_best.pth`` (atomically).  Its state (best
    accuracy) and the Python / NumPy / torch RNG states travel in training
    checkpoints, so ``--resume`` continues the run exactly.

    Args:
        gpd_start_epoch (int): First epoch (0-based) with the GPD terms on.
            Defaults to 0.
        gpd_stop_epoch (int, optional): First epoch with them off again.
            Defaults to None (never).
        save_student (bool): Write the student files. Defaults to True.
        metric_key (str, optional): Metric whose per-model values
            (``<name>/<metric_key>``; the evaluated model's is ``metric_key``)
            are the scores. Defaults to None (count top-1).
    """
    priority = 'NORMAL'  # after RuntimeInfoHook, before LoggerHook / CheckpointHook

    def __init__(self, gpd_start_epoch: int = 0,
                 gpd_stop_epoch: Optional[int] = None, save_student: bool = True,
                 metric_key: Optional[str] = None):
        if gpd_stop_epoch is not None and gpd_stop_epoch <= gpd_start_epoch:
            raise ValueError('GPDHook: gpd_stop_epoch must be after gpd_start_epoch')
        self.gpd_start_epoch = gpd_start_epoch
        self.gpd_stop_epoch = gpd_stop_epoch
        self.save_student = save_student
        self.metric_key = metric_key
        self.best_acc = -1.0
        self._counts: Dict[str, torch.Tensor] = {}
        self._sharpness: Dict[str, torch.Tensor] = {}

    @staticmethod
    def _algorithm(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train_epoch(self, runner):
        epoch = runner.epoch
        on = epoch >= self.gpd_start_epoch and (
            self.gpd_stop_epoch is None or epoch < self.gpd_stop_epoch)
        self._algorithm(runner).distiller.gpd_enabled = on

    def before_val_epoch(self, runner):
        self._counts = {}
        self._sharpness = {}

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for sample in outputs or ():
            for key in sample.keys():
                if key.startswith('sharpness_'):
                    total = self._sharpness.setdefault(
                        key[len('sharpness_'):],
                        torch.zeros(2, dtype=torch.float64))
                    total += torch.tensor(
                        [float(sample.get(key).view(-1)[0]), 1.0],
                        dtype=torch.float64)
        if self.metric_key is not None:
            return  # the scores come from the metrics
        for sample in outputs or ():
            gt = sample.gt_label.view(-1)[0]
            for name in NAMES:
                key = f'pred_label_{name}'
                if key in sample:
                    hit = float(sample.get(key).view(-1)[0] == gt)
                    count = self._counts.setdefault(name, torch.zeros(2))
                    count += torch.tensor([hit, 1.0])

    def _counted_accuracy(self) -> Dict[str, float]:
        acc = {}
        for name in NAMES:
            if name not in self._counts:
                continue
            count = self._counts[name].clone()
            all_reduce(count)
            acc[name] = 100.0 * float(count[0] / count[1].clamp_min(1))
        return acc

    def _mean_sharpness(self) -> Dict[str, float]:
        out = {}
        for name in sorted(self._sharpness):
            total = self._sharpness[name].clone()
            all_reduce(total)
            out[f'gpd/sharpness_{name}'] = float(total[0] / total[1].clamp_min(1))
        return out

    def _metric_scores(self, runner, metrics) -> Dict[str, float]:
        evaluated = self._algorithm(runner).eval_model
        scores = {}
        for name in NAMES:
            key = self.metric_key if name == evaluated else \
                f'{name}/{self.metric_key}'
            if key in metrics:
                scores[name] = float(metrics[key])
        if evaluated not in scores and metrics:
            raise KeyError(f'GPDHook.metric_key: {self.metric_key!r} is not '
                           f'among the validation metrics {sorted(metrics)}')
        return scores

    def after_val_epoch(self, runner, metrics=None):
        if metrics is None:
            metrics = {}
        if self.metric_key is None:
            scores, label = self._counted_accuracy(), 'acc'
        else:
            scores = self._metric_scores(runner, metrics)
            label = self.metric_key.split('/')[-1]
        results = {f'gpd/{label}_{name}': value for name, value in scores.items()}
        if 'student' in scores:
            for name, short in (('dynamic_teacher', 'dynamic'),
                                ('static_teacher', 'static')):
                if name in scores:
                    results[f'gpd/gap_{short}'] = scores[name] - scores['student']
        results.update(self._mean_sharpness())
        if not scores:
            runner.logger.warning('GPDHook: no per-model scores this validation '
                                  '(no predictions to evaluate?)')
        for key, value in results.items():
            metrics[key] = value
            runner.message_hub.update_scalar(f'val/{key}', value)
        if self.save_student and is_main_process():
            self._save(runner, scores.get('student'), label)

    def _save(self, runner, student_acc, label='acc'):
        algorithm = self._algorithm(runner)
        student = student_from_algorithm(algorithm, 'student')
        meta = dict(epoch=runner.epoch, iter=runner.iter, source='gpd_student')
        meta['accuracy_top1' if label == 'acc' else label] = student_acc
        dataset_meta = _dataset_meta(runner)
        if dataset_meta is not None:  # classes, for DetInferencer & co.
            meta['dataset_meta'] = dataset_meta
        ckpt = plain_checkpoint(student, meta)
        save_atomic(ckpt, osp.join(runner.work_dir, 'student_latest.pth'))
        if student_acc is not None and student_acc > self.best_acc:
            self.best_acc = student_acc
            save_atomic(ckpt, osp.join(runner.work_dir, 'student_best.pth'))

    # --resume continues exactly: the best accuracy and the RNG streams
    # (random crops, dropout, DataLoader seeds) as they were at the checkpoint.
    def before_save_checkpoint(self, runner, checkpoint):
        meta = checkpoint.setdefault('meta', {})
        meta['gpd_best_acc'] = self.best_acc
        meta['gpd_rng_state'] = dict(python=random.getstate(),
                                     numpy=np.random.get_state(),
                                     torch=torch.get_rng_state())

    def after_load_checkpoint(self, runner, checkpoint):
        meta = checkpoint.get('meta', {})
        self.best_acc = meta.get('gpd_best_acc', self.best_acc)
        rng = meta.get('gpd_rng_state')
        if rng is not None and getattr(runner, '_resume', False):
            random.setstate(rng['python'])
            np.random.set_state(rng['numpy'])
            torch.set_rng_state(rng['torch'])


def _dataset_meta(runner) -> Optional[dict]:
    try:
        meta = runner.train_dataloader.dataset.metainfo
    except Exception:  # noqa: BLE001 - no train dataloader (test-only runs)
        return None
    return copy.deepcopy(dict(meta)) if meta else None
