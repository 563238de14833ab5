"""PerModelMetric: one metric (e.g. mmdet's CocoMetric) for each model GPD holds.

GPD's ``predict`` puts the evaluated model's predictions in the usual field
(``pred_instances``) and, with ``evaluate_teachers``, the other models' in
``pred_instances_<name>``. This wrapper runs a separate instance of the inner
metric on each and reports::

    <inner keys>                 the evaluated model (e.g. 'coco/bbox_mAP')
    <name>/<inner keys>          every other model present, e.g.
                                 'dynamic_teacher/coco/bbox_mAP'

which :class:`~mmgpd.engine.GPDHook` (``metric_key``) turns into the gap.
"""
import copy
from typing import Dict, Optional, Sequence

from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS as MMENGINE_METRICS

from mmgpd.registry import METRICS

OTHER_MODELS = ('student', 'dynamic_teacher', 'static_teacher')


@METRICS.register_module()
class PerModelMetric(BaseMetric):
    """Evaluate ``metric`` once per model.

    Args:
        metric (dict): Config of the inner metric (built in the current
            default scope, e.g. ``dict(type='CocoMetric', ...)`` under mmdet).
        pred_field (str): The prediction field the inner metric reads.
            Defaults to ``'pred_instances'``.
        models (Sequence[str]): Names whose ``<pred_field>_<name>`` fields are
            scored too. Defaults to student, dynamic and static teacher.
    """

    #: Unused (keys come from the inner metrics); set so mmengine does not warn.
    default_prefix = 'per_model'

    def __init__(self, metric: dict, pred_field: str = 'pred_instances',
                 models: Sequence[str] = OTHER_MODELS,
                 collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.pred_field = pred_field
        self.metric_cfg = copy.deepcopy(dict(metric))
        self.metrics: Dict[str, BaseMetric] = {
            name: MMENGINE_METRICS.build(copy.deepcopy(self.metric_cfg))
            for name in ('', ) + tuple(models)
        }

    @classmethod
    def plain_cfg(cls, cfg: dict) -> dict:
        """The inner metric's config (a plain student evaluates only itself)."""
        return copy.deepcopy(cfg['metric'])

    @property
    def dataset_meta(self):
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, meta):
        self._dataset_meta = meta
        for metric in getattr(self, 'metrics', {}).values():
            metric.dataset_meta = meta

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        self.metrics[''].process(data_batch, data_samples)
        for name, metric in self.metrics.items():
            key = f'{self.pred_field}_{name}'
            if not name or not data_samples or key not in data_samples[0]:
                continue
            swapped = [dict(s, **{self.pred_field: s[key]}) for s in data_samples]
            metric.process(data_batch, swapped)

    def compute_metrics(self, results: list) -> dict:  # pragma: no cover
        raise NotImplementedError('PerModelMetric evaluates its inner metrics')

    def evaluate(self, size: int) -> dict:
        out = {}
        for name, metric in self.metrics.items():
            if name and not metric.results:
                continue  # that model gave no predictions (same on every rank)
            for key, value in metric.evaluate(size).items():
                out[f'{name}/{key}' if name else key] = value
        return out
