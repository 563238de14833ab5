"""Benchmark the reparameterization core.

Prints, for mmpretrain classifiers (``--models``: ResNet-18 by default;
EfficientNet-b0 and Swin-tiny for the zoo issue; batch 32 at 224² by default):

* the per-step cost of deriving the student's weights from the dynamic teacher
  (CBR incl. the branch merge: ``derive_student_state``, forward and backward)
  as a fraction of one student forward + backward (goal ≤ 5 %);
* the time to extract a plain ResNet-50 student from its teacher (goal ≤ 1 s);
* the time IR itself takes.

All figures are medians of ``--repeats`` runs measured side by side in one
process.  Usage::

    python tools/benchmark_reparam.py [--models resnet18,efficientnet_b0,swin_tiny]
        [--batch 32] [--size 224] [--ratio 2] [--repeats 5]
        [--device cpu|cuda] [--out results.json]
"""
import argparse
import json
import os.path as osp
import platform
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmgpd  # noqa: E402,F401  (compat layer first)
import torch  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from mmgpd.reparam import (derive_student_state, extract_student,  # noqa: E402
                           inverse_reparameterize)


#: name -> (backbone config, last stage channels)
BACKBONES = {
    'resnet18': (dict(type='ResNet', depth=18), 512),
    'resnet50': (dict(type='ResNet', depth=50), 2048),
    'efficientnet_b0': (dict(type='EfficientNet', arch='b0'), 1280),
    'swin_tiny': (dict(type='SwinTransformer', arch='tiny', img_size=224), 768),
}


def classifier(name):
    import logging

    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init chatter
    init_default_scope('mmpretrain')
    if isinstance(name, int):
        name = f'resnet{name}'
    backbone, channels = BACKBONES[name]
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=channels)))
    model.init_weights()
    return model


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default='resnet18',
                        help=f'comma-separated, from {sorted(BACKBONES)}')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--ratio', type=float, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--ir-repeats', type=int, default=3,
                        help='timed IR builds per model and branch setting')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available()
                        else 'cpu')
    parser.add_argument('--out', help='also write the figures as JSON here')
    args = parser.parse_args()
    device = torch.device(args.device)
    results = dict(machine=platform.processor() or platform.machine(),
                   device=str(device), threads=torch.get_num_threads(),
                   torch=torch.__version__, batch=args.batch, size=args.size,
                   ratio=args.ratio, repeats=args.repeats, rows=[])

    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (args.batch, ), device=device)
    for name in args.models.split(','):
        _bench_model(name, x, y, device, args, results)
    _bench_extract(device, args, results)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)
    return results


def _bench_model(name, x, y, device, args, results):
    student = classifier(name).to(device).train()

    def student_step():
        student.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(student(x, mode='tensor'), y)
        loss.backward()

    t_student, _ = timed(student_step, device, args.repeats)
    print(f'{name} student forward+backward, batch {args.batch} at '
          f'{args.size}²: {t_student * 1e3:.1f} ms (median of {args.repeats})')

    for branches in (None, True):
        t_ir, _ = timed(lambda: inverse_reparameterize(
            student, args.ratio, branches=branches,
            example_inputs=x[:2]), device, args.ir_repeats, warmup=0)
        teacher = inverse_reparameterize(student, args.ratio, branches=branches,
                                         example_inputs=x[:2]).to(device)
        params = [p for p in teacher.parameters()]

        def derive_fwd():
            with torch.no_grad():
                derive_student_state(teacher)

        def derive_fwd_bwd():
            state = derive_student_state(teacher)
            loss = sum(v.sum() for v in state.values() if v.requires_grad)
            torch.autograd.grad(loss, params, allow_unused=True)

        t_fwd, _ = timed(derive_fwd, device, args.repeats * 4)
        t_both, _ = timed(derive_fwd_bwd, device, args.repeats * 4)
        row = dict(model=name, branches=bool(branches), ir_s=t_ir,
                   student_step_ms=t_student * 1e3, derive_ms=t_fwd * 1e3,
                   derive_fwd_bwd_ms=t_both * 1e3,
                   derive_fraction=t_both / t_student)
        results['rows'].append(row)
        print(f'  branches={bool(branches)!s:5}  IR {t_ir:.2f} s  derive '
              f'{t_fwd * 1e3:.2f} ms, with backward {t_both * 1e3:.2f} ms = '
              f'{100 * t_both / t_student:.2f} % of a student step (goal ≤ 5 %)')



def _bench_extract(device, args, results):
    r50 = classifier(50).to(device)
    teacher50 = inverse_reparameterize(r50, args.ratio, branches=True,
                                       example_inputs=torch.randn(
                                           2, 3, 64, 64, device=device))
    t_ext, _ = timed(lambda: extract_student(teacher50), device, args.repeats)
    results['extract_resnet50_s'] = t_ext
    print(f'extract a ResNet-50 student (ratio {args.ratio:g}, branches): '
          f'{t_ext:.3f} s (goal ≤ 1 s)')


if __name__ == '__main__':
    main()
