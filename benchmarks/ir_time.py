"""IR time: how long building the dynamic teacher takes, with and without noise.

For each model (``--models``; default ResNet-18 at ratio 2, and ResNet-50 at
ratio 2 with branches, the issue's hard case) IR is built with the default
probe (2 images at 64²) and noise 0 and 1e-6 (``zero_sum``, GPD's default),
alternating the two settings round by round so that machine noise hits both
alike.  Reported: median seconds of each, the ratio with ÷ without noise
(goal ≤ 1.3) and the absolute goal of ≤ 1 s for ResNet-50 r=2 + branches.

Usage::

    python -m benchmarks.ir_time [--models resnet18,resnet50_branches]
        [--repeats 5] [--threads 1] [--quick] [--out-json results/ir_time.json]
"""
import statistics
import time

import torch

from benchmarks.common import (base_parser, finish, machine_info, markdown_table,
                               num_threads, quiet_logs)

#: name -> (ResNet depth, ratio, branches)
MODELS = {
    'resnet18': (18, 2, None),
    'resnet18_branches': (18, 2, True),
    'resnet50': (50, 2, None),
    'resnet50_branches': (50, 2, True),
}
NOISE = 1e-6
GOAL_RATIO = 1.3
GOAL_R50_BRANCHES_S = 1.0

COLUMNS = [('model', 'model', ''), ('ratio', 'ratio', 'g'),
           ('branches', 'branches', ''),
           ('ir_s', 'IR s (no noise)', '.2f'),
           ('ir_noise_s', f'IR s (noise {NOISE:g})', '.2f'),
           ('x_noise', 'with ÷ without noise', '.2f')]


def classifier(depth: int):
    """An mmpretrain ImageClassifier (ResNet-``depth``, GAP, 1000 classes)."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    init_default_scope('mmpretrain')
    model = PRETRAIN_MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='ResNet', depth=depth),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000,
                  in_channels=2048 if depth >= 50 else 512)))
    model.init_weights()
    return model


def time_ir(student, ratio, branches, noise) -> float:
    """Seconds of one ``inverse_reparameterize`` (verification included)."""
    from mmgpd.reparam import inverse_reparameterize
    generator = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    inverse_reparameterize(student, ratio, branches=branches, noise=noise,
                           generator=generator)
    return time.perf_counter() - t0


def parse_args(argv=None):
    parser = base_parser(__doc__.split('\n')[0])
    parser.add_argument('--models', default='resnet18,resnet50_branches',
                        help=f'comma-separated, from {sorted(MODELS)}')
    parser.add_argument('--repeats', type=int,
                        help='measured rounds (default 5; --quick: 1)')
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    unknown = set(args.models.split(',')) - set(MODELS)
    if unknown:
        parser.error(f'--models: unknown {sorted(unknown)}; choose from '
                     f'{sorted(MODELS)}')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet_logs()
    if args.device != 'cpu':
        raise SystemExit('benchmarks.ir_time: IR builds on the CPU (the '
                         'student is moved afterwards); use --device cpu')
    names = ['resnet18'] if args.quick else args.models.split(',')
    rows, t_start = [], time.perf_counter()
    with num_threads(args.threads):
        for name in names:
            depth, ratio, branches = MODELS[name]
            student = classifier(depth)
            time_ir(student, ratio, branches, NOISE)  # warm-up (allocator)
            plain, noisy = [], []
            for i in range(args.repeats):  # alternate, the start rotating
                order = ((0.0, plain), (NOISE, noisy))
                for noise, out in (order if i % 2 == 0 else order[::-1]):
                    out.append(time_ir(student, ratio, branches, noise))
            ir_s, ir_noise_s = statistics.median(plain), statistics.median(noisy)
            rows.append(dict(model=name, ratio=ratio, branches=bool(branches),
                             ir_s=ir_s, ir_noise_s=ir_noise_s,
                             x_noise=ir_noise_s / ir_s, runs=plain + noisy))
            print(f'{name}: IR {ir_s:.2f} s, with noise {ir_noise_s:.2f} s',
                  flush=True)
        machine = machine_info('cpu')  # inside: the threads it ran on
    r50 = next((r for r in rows if r['model'] == 'resnet50_branches'), None)
    goals = (f'goals: with ÷ without noise ≤ {GOAL_RATIO} '
             f'({"met" if all(r["x_noise"] <= GOAL_RATIO for r in rows) else "NOT met"})')
    if r50:
        ok = r50['ir_noise_s'] <= GOAL_R50_BRANCHES_S
        goals += (f'; ResNet-50 r=2 + branches with noise ≤ '
                  f'{GOAL_R50_BRANCHES_S:g} s ({"met" if ok else "NOT met"}: '
                  f'{r50["ir_noise_s"]:.2f} s)')
    header = (f"* default probe (2 images, 64²), verification included; "
              f"medians of {args.repeats} alternating rounds after one "
              f"warm-up; {machine['cpu']}, {machine['torch_threads']} torch "
              f"threads, torch {machine['torch']}, {machine['date']}\n* {goals}")
    result = dict(benchmark='ir_time', rows=rows,
                  table=header + '\n\n' + markdown_table(rows, COLUMNS),
                  machine=machine, noise=NOISE, repeats=args.repeats,
                  goal_ratio=GOAL_RATIO,
                  goal_r50_branches_s=GOAL_R50_BRANCHES_S,
                  seconds=time.perf_counter() - t_start)
    return finish(result, args.out_json)


if __name__ == '__main__':
    main()
