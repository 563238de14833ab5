"""`make demo-det`: GPD for detection on the generated shapes set, end to end.

1. generates the shapes set (``data/shapes_64``, COCO format, once) and trains
   a GPD detector config with MMEngine's Runner: ``--detector retinanet``
   (default: ``configs/gpd_det/retinanet_r18_fpn_shapes.py``, RetinaNet-R18-FPN
   student + 2x dynamic teacher, hard strategy), ``faster-rcnn``
   (``faster-rcnn_r18_fpn_shapes.py``: T_d replays S's proposals and RoIs) or
   ``mask-rcnn`` (``mask-rcnn_r18_fpn_shapes.py``: boxes and instance masks);
2. extracts the student with ``tools/extract_student.py`` (CBR of T_d) into a
   plain mmdet config + weights-only checkpoint;
3. tests it with mmdet's own test loop (plain ``CocoDataset`` + ``CocoMetric``,
   no mmgpd type involved);
4. prints S / T_d mAP, the gap and the extracted student's mAP (Mask R-CNN:
   its mask mAP too), and writes the gap plot.

    python tools/demo_det.py [--detector {retinanet,faster-rcnn,mask-rcnn}]
        [--work-dir work_dirs/demo_det[_<detector>]] [--epochs N] [--quick]
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

import mmgpd  # noqa: E402,F401  (compat layer first)
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

#: --detector -> (GPD config, title)
DETECTORS = {
    'retinanet': ('configs/gpd_det/retinanet_r18_fpn_shapes.py',
                  'RetinaNet-R18-FPN'),
    'faster-rcnn': ('configs/gpd_det/faster-rcnn_r18_fpn_shapes.py',
                    'Faster R-CNN R18-FPN'),
    'mask-rcnn': ('configs/gpd_det/mask-rcnn_r18_fpn_shapes.py',
                  'Mask R-CNN R18-FPN'),
}
KEYS = ('gpd/bbox_mAP_student', 'gpd/bbox_mAP_dynamic_teacher', 'gpd/gap_dynamic')
#: Mask R-CNN: the models' mask mAP (PerModelMetric keys)
SEGM_KEYS = {'student': 'coco/segm_mAP',
             'dynamic_teacher': 'dynamic_teacher/coco/segm_mAP'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--detector', choices=sorted(DETECTORS),
                        default='retinanet',
                        help='which GPD shapes config to train (default: '
                        'retinanet)')
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/demo_det (retinanet), '
                        'work_dirs/demo_det_<detector> (the others)')
    parser.add_argument('--data-root', default=None,
                        help="where the shapes set is generated (default: the "
                        "config's data/shapes_64/; --quick: inside --work-dir)")
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs (default: the config\'s)')
    parser.add_argument('--quick', action='store_true',
                        help='smoke test: 1 epoch on 8 small images')
    return parser.parse_args(argv)


def _set_data_root(cfg, root, quick):
    if root is None:
        return
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key].dataset
        dataset.data_root = root
        if quick:
            dataset.update(num_train=8, num_val=4, img_size=64)
    cfg.val_evaluator.metric.ann_file = osp.join(
        root, 'annotations/instances_val.json')
    cfg.test_evaluator = cfg.val_evaluator


def _score_thr_zero(model_cfg):
    """Quick runs: keep every detection of a barely trained detector."""
    test_cfg = model_cfg.test_cfg
    if 'rcnn' in test_cfg:  # two-stage: the RoI head's threshold
        test_cfg.rcnn.score_thr = 0.0
    else:
        test_cfg.score_thr = 0.0


def main(argv=None):
    args = parse_args(argv)
    cfg_file, title = DETECTORS[args.detector]
    if args.work_dir is None:
        suffix = '' if args.detector == 'retinanet' else f'_{args.detector}'
        args.work_dir = osp.join(ROOT, f'work_dirs/demo_det{suffix}')
    gpd_dir = osp.join(args.work_dir, 'gpd')
    cfg = Config.fromfile(osp.join(ROOT, cfg_file))
    cfg.work_dir = gpd_dir
    root = args.data_root
    if args.quick and root is None:
        root = osp.join(args.work_dir, 'shapes_quick/')
    _set_data_root(cfg, root, args.quick)
    if args.quick:
        cfg.train_cfg.max_epochs = 1
        _score_thr_zero(cfg.model.architecture)
        cfg.param_scheduler = []
    elif args.epochs is not None:
        cfg.train_cfg.max_epochs = args.epochs
        for sched in cfg.param_scheduler:
            if sched.get('type') == 'CosineAnnealingLR':
                sched.T_max = sched.end = args.epochs
    epochs = cfg.train_cfg.max_epochs
    cfg.train_cfg.val_interval = 1 if args.quick else max(1, epochs // 3)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs,
                                        max_keep_ckpts=1)
    # mmdet's runtime names its visualizer 'visualizer': a global instance that a
    # second Runner in the same process would reuse (with the first run's log
    # dir). Without a name each Runner gets its own (named after the run).
    cfg.visualizer.pop('name', None)
    os.makedirs(args.work_dir, exist_ok=True)
    cfg_path = osp.join(args.work_dir, 'gpd_det.py')
    cfg.dump(cfg_path)  # the run's config, for extract_student.py
    runner = Runner.from_cfg(Config.fromfile(cfg_path))
    runner.train()
    hub = runner.message_hub
    gap = {k.split('/')[-1]: hub.get_scalar(f'val/{k}').current() for k in KEYS}
    segm = {name: hub.get_scalar(f'val/{k}').current()
            for name, k in SEGM_KEYS.items()
            if f'val/{k}' in hub.log_scalars}

    import extract_student
    out = osp.join(args.work_dir, 'student')
    extract_student.main([cfg_path, osp.join(gpd_dir, f'epoch_{epochs}.pth'),
                          '--out', out, '--force'])
    plain = Config.fromfile(osp.join(out, 'student.py'))
    plain.work_dir = osp.join(args.work_dir, 'extracted_student_test')
    plain.visualizer.pop('name', None)
    plain.load_from = osp.join(out, 'student.pth')
    metrics = Runner.from_cfg(plain).test()

    import plot_gap
    png = plot_gap.main([gpd_dir, '--out', osp.join(args.work_dir, 'gap.png'),
                         '--title', f'GPD on shapes: {title} S vs T_d'])

    def row(label, box, mask=None, fmt='.3f'):
        cells = [label, format(box, fmt)]
        if segm:
            cells.append('' if mask is None else format(mask, fmt))
        return '| ' + ' | '.join(cells) + ' |'
    lines = [
        '',
        f'GPD detection demo (generated shapes set, {title}, ratio 2)',
        f'| model (last validation, epoch {epochs}) | bbox mAP |' +
        (' segm mAP |' if segm else ''),
        '|---|---|' + ('---|' if segm else ''),
        row('student S (hard strategy view)', gap['bbox_mAP_student'],
            segm.get('student')),
        row('dynamic teacher T_d', gap['bbox_mAP_dynamic_teacher'],
            segm.get('dynamic_teacher')),
        row('gap T_d − S', gap['gap_dynamic'],
            segm['dynamic_teacher'] - segm['student'] if segm else None,
            '+.3f'),
        row('extracted student, plain mmdet test', metrics['coco/bbox_mAP'],
            metrics.get('coco/segm_mAP')),
        '',
        f'gap plot: {png}',
        f'extracted student: {out}/student.py + student.pth',
    ]
    print('\n'.join(lines))
    return dict(gap=gap, segm=segm, extracted=metrics, png=png)


if __name__ == '__main__':
    main()
