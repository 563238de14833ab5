"""Extract the deployable student from a GPD training checkpoint (CBR).

    python tools/extract_student.py CONFIG CHECKPOINT --out DIR
        [--source student|dynamic_teacher] [--ema] [--force] [--tol 1e-5]

Writes into DIR (atomically: a temporary directory renamed at the end, so a
failure leaves nothing behind):

* ``student.py`` — a plain config of the student alone (no mmgpd type, nothing
  inherited): model, data preprocessor, default scope and the test / val
  sections that need no mmgpd type;
* ``student.pth`` — ``{'state_dict', 'meta'}``, tensors and plain data only:
  loads with ``torch.load(weights_only=True)``, mmpretrain's ``get_model`` /
  inferencers, ``load_from`` and ``init_cfg=dict(type='Pretrained', ...)``.

Before writing, the student is rebuilt from the written config and checkpoint
and checked on a probe batch against the checkpoint's student view (relative
deviation ≤ ``--tol``); the figure is printed.

``--source student`` (default): the student GPD trained (hard strategy: CBR of
the dynamic teacher with the student's own BN statistics).
``--source dynamic_teacher``: CBR of the dynamic teacher.
``--ema``: the EMA weights (runs with mmengine's EMAHook); otherwise the raw
training weights.
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmgpd  # noqa: E402,F401  (compat layer before any config is parsed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the GPD training config')
    parser.add_argument('checkpoint', help='a GPD training checkpoint')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--source', choices=('student', 'dynamic_teacher'),
                        default='student')
    parser.add_argument('--ema', action='store_true',
                        help='extract from the EMA weights')
    parser.add_argument('--force', action='store_true',
                        help='replace an existing output directory')
    parser.add_argument('--tol', type=float, default=1e-5,
                        help='max relative deviation of the written student')
    return parser.parse_args(argv)


class _Steps:

    def __init__(self, total):
        self.total, self.i, self.t0 = total, 0, time.time()

    def __call__(self, msg):
        self.i += 1
        print(f'[{self.i}/{self.total}] {msg} ({time.time() - self.t0:.1f} s)',
              flush=True)


def reference_view(algorithm, source):
    """The student view of the checkpoint that the written student must match."""
    from mmgpd.models.export import folds_dynamic_teacher
    from mmgpd.reparam import HardStudent
    if folds_dynamic_teacher(algorithm, source):
        return HardStudent(algorithm.dynamic_teacher).eval()
    return algorithm.student.eval()


def extract(args):
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmgpd.models.export import (ExtractionError, load_gpd, plain_checkpoint,
                                     plain_student_config, save_atomic,
                                     student_from_algorithm)
    from mmgpd.registry import MODELS
    from mmgpd.reparam import default_forward, max_relative_deviation
    from mmgpd.reparam.ir import default_probe_inputs

    out = osp.abspath(args.out)
    if osp.exists(out) and not args.force:
        raise ExtractionError(f'--out {out} exists; pass --force to replace it')
    if not osp.isfile(args.config):
        raise ExtractionError(f'{args.config}: no such config file')
    step = _Steps(5)
    cfg = Config.fromfile(args.config)
    step(f'parsed {args.config}')
    algorithm, meta = load_gpd(cfg, args.checkpoint, ema=args.ema)
    step(f'loaded {args.checkpoint} into the GPD algorithm')
    student = student_from_algorithm(algorithm, args.source)
    student_cfg = plain_student_config(cfg)
    step(f'CBR: extracted a {type(student).__name__} from the {args.source}')

    parent = osp.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.', dir=parent)
    try:
        cfg_path, ckpt_path = osp.join(tmp, 'student.py'), osp.join(tmp, 'student.pth')
        Config(student_cfg).dump(cfg_path)
        ckpt = plain_checkpoint(student, dict(
            source=args.source, ema=args.ema, gpd_config=osp.basename(args.config),
            gpd_checkpoint=osp.basename(args.checkpoint),
            epoch=meta.get('epoch'), iter=meta.get('iter'),
            ratio=(float(algorithm.distiller.ir_kwargs['ratio'])
                   if algorithm.dynamic_teacher is not None else None),
            # classes etc. (mmengine's Runner saves them): DetInferencer reads them
            **({'dataset_meta': meta['dataset_meta']}
               if meta.get('dataset_meta') else {})))
        save_atomic(ckpt, ckpt_path)
        step('wrote student.py and student.pth')

        # Verify what was written: a fresh model from the plain config, weights
        # through torch.load(weights_only=True).
        written_cfg = Config.fromfile(cfg_path)
        init_default_scope(written_cfg.default_scope)
        rebuilt = MODELS.build(written_cfg.model)
        loaded = torch.load(ckpt_path, map_location='cpu', weights_only=True)
        rebuilt.load_state_dict(loaded['state_dict'], strict=True)
        rebuilt.eval()
        probe = default_probe_inputs(rebuilt,
                                     generator=torch.Generator().manual_seed(0))
        forward = default_forward
        if getattr(rebuilt, 'roi_head', None) is not None:
            # a two-stage detector: RPN maps + RoI head on fixed probe boxes
            from mmgpd.models.tasks.detection import _ir_forward as forward
        view = reference_view(algorithm, args.source)
        with torch.no_grad():
            dev = max_relative_deviation(
                forward(rebuilt, probe),
                view.call(forward, probe) if forward is not default_forward
                and hasattr(view, 'call') else forward(view, probe))
        if not dev <= args.tol:
            raise ExtractionError(
                f'the written student deviates from the checkpoint\'s student '
                f'view by {dev:.3g} (relative), above --tol {args.tol:g}')
        loaded['meta']['max_relative_deviation'] = dev
        save_atomic(loaded, ckpt_path)
        step(f'verified: max relative deviation {dev:.2e} (tol {args.tol:g})')

        if osp.exists(out):  # --force: swap in, then drop the old one
            old = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.old.', dir=parent)
            os.rmdir(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f'student config: {osp.join(out, "student.py")}\n'
          f'student checkpoint: {osp.join(out, "student.pth")}\n'
          f'max relative deviation: {dev:.2e}')
    return dict(out=out, deviation=dev)


def main(argv=None):
    import logging

    from mmengine.logging import MMLogger

    from mmgpd.models.export import ExtractionError
    args = parse_args(argv)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # no weight-init tables while rebuilding
    try:
        return extract(args)
    except ExtractionError as exc:
        sys.exit(f'extract_student.py: error: {exc}')
    finally:
        logger.setLevel(level)


if __name__ == '__main__':
    main()
