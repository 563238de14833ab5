"""torch.compile'd GPD training vs eager: equal losses, step-time ratio.

What MMEngine's Runner does with ``compile=True`` (``Runner._maybe_compile``):
``model.train_step = torch.compile(model.train_step)`` — data preprocessing,
S / T_d forwards, the loss terms, backward and the optimizer step in one
compiled call (Dynamo splits it at its graph breaks: ``loss.backward()``,
``stack_batch``'s size bookkeeping, the optimizer's step; the pieces between
run as Inductor kernels, the rest eagerly).

Per setting (``benchmarks.cost``'s: ``digits`` = ResNet_CIFAR-18 width 16 at
32², ``imagenet`` = mmpretrain's ResNet-18 at 224²), GPD* (ratio 2, hard
strategy, no static teacher) is built twice from one seed — eager and compiled
— each with its own SGD ``OptimWrapper`` (constant lr: an lr schedule changes
a Python float the compiled step guards on). Then

1. ``--check-steps`` steps on the same batches: the loss terms of both, and
   their largest relative difference (Inductor reorders fp32 reductions:
   ~1e-6, growing slowly with the steps). The compiled model's first step
   includes compilation (its time is reported as ``compile_s``).
2. ``--repeats`` timed rounds, each one step of either model in turn (the
   order alternating) on one batch: medians, ``ratio`` = median compiled ÷
   median eager, ``paired`` = median of the per-round ratios.

Usage::

    python -m benchmarks.compile_ratio [--settings digits,imagenet]
        [--batch N] [--repeats 10] [--check-steps 3] [--threads 1]
        [--memory-formats contiguous,channels_last]
        [--out-json results/compile_ratio.json] [--quick]
"""
import copy
import statistics
import time

import torch

from benchmarks.common import (base_parser, finish, machine_info,
                               markdown_table, num_threads, quiet_logs)

#: batch per setting (the ImageNet-size one kept small: CPU, 1 thread)
BATCH = {'digits': 64, 'imagenet': 2}
QUICK_BATCH = {'digits': 16, 'imagenet': 2}


def build(spec, seed: int = 0, channels_last: bool = False):
    """GPD* (ratio 2) and its SGD wrapper, from ``seed``."""
    from mmengine.optim import OptimWrapper

    from benchmarks.cost import DISTILLERS
    from mmgpd.registry import MODELS
    torch.manual_seed(seed)
    model = MODELS.build(dict(
        type='mmgpd.GPD', architecture=copy.deepcopy(spec['student']),
        data_preprocessor=copy.deepcopy(spec['data_preprocessor']),
        distiller=dict(type='mmgpd.GPDDistiller', **DISTILLERS['gpd']),
        channels_last=channels_last)).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(optimizer=torch.optim.SGD(
        params, lr=1e-3, momentum=0.9, weight_decay=1e-4))
    return model, optim


def compile_like_runner(model, **options):
    """``Runner._maybe_compile('train_step')``: the bound method replaced."""
    model.train_step = torch.compile(model.train_step, **options)
    return model


def _losses(log):
    return {k: float(v.detach()) for k, v in log.items()}


def max_rel_diff(a: dict, b: dict) -> float:
    """Largest ``|a - b| / max(|b|, 1e-12)`` over the loss terms."""
    assert set(a) == set(b), (sorted(a), sorted(b))
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in b)


def run_setting(name: str, spec, batch: int, check_steps: int, repeats: int,
                channels_last: bool = False):
    from benchmarks.cost import make_batch
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    spec = dict(spec, quick_batch=batch, batch=batch)
    eager, eager_ow = build(spec, channels_last=channels_last)
    compiled, compiled_ow = build(spec, channels_last=channels_last)
    compile_like_runner(compiled)
    batches = [make_batch(spec, False, seed=i) for i in range(check_steps)]
    per_step, diffs, first_s = [], [], None
    for i, data in enumerate(batches):
        ref = _losses(eager.train_step(copy.deepcopy(data), eager_ow))
        t0 = time.perf_counter()
        got = _losses(compiled.train_step(copy.deepcopy(data), compiled_ow))
        if i == 0:
            first_s = time.perf_counter() - t0
        per_step.append(dict(eager=ref, compiled=got))
        diffs.append(max_rel_diff(got, ref))
    # one more compiled step before timing (a recompile on the 2nd call is
    # counted as compilation, not as step time)
    t0 = time.perf_counter()
    compiled.train_step(copy.deepcopy(batches[0]), compiled_ow)
    extra_s = time.perf_counter() - t0
    times = {'eager': [], 'compiled': []}
    units = {'eager': (eager, eager_ow), 'compiled': (compiled, compiled_ow)}
    data = batches[0]
    for r in range(repeats):
        order = ('eager', 'compiled') if r % 2 == 0 else ('compiled', 'eager')
        for key in order:
            model, ow = units[key]
            d = copy.deepcopy(data)
            t0 = time.perf_counter()
            model.train_step(d, ow)
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = statistics.median(c / e for c, e in zip(times['compiled'],
                                                     times['eager']))
    counters = torch._dynamo.utils.counters
    breaks = dict(counters['graph_break'])
    return dict(
        setting=name, describe=spec['describe'], batch=batch,
        memory_format='channels_last' if channels_last else 'contiguous',
        size=spec['size'], check_steps=check_steps,
        max_rel_loss_diff=max(diffs), rel_loss_diff_per_step=diffs,
        losses=per_step, compile_s=first_s, second_call_s=extra_s,
        eager_ms=1000 * med['eager'], compiled_ms=1000 * med['compiled'],
        ratio=med['compiled'] / med['eager'], paired=paired,
        repeats=repeats, times_s=times,
        graph_breaks=sum(breaks.values()),
        graph_break_reasons=sorted({k.splitlines()[0][:160] for k in breaks}),
        unique_graphs=int(counters['stats'].get('unique_graphs', 0)))


def main(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument('--settings', default='digits,imagenet')
    parser.add_argument('--batch', type=int,
                        help='batch size for every setting (default: '
                        f'{BATCH}, --quick {QUICK_BATCH})')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--check-steps', type=int, default=3)
    parser.add_argument('--memory-formats', default='contiguous',
                        help='comma-separated: contiguous, channels_last '
                        '(model.channels_last of both models)')
    args = parser.parse_args(argv)
    if args.device != 'cpu':
        parser.error('compile_ratio runs on the CPU (Inductor C++) only')
    if args.check_steps < 1 or args.repeats < 1:
        parser.error('--check-steps and --repeats must be >= 1')
    from benchmarks.cost import SETTINGS
    names = [s for s in args.settings.split(',') if s]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        parser.error(f'--settings: unknown {unknown}; choose from '
                     f'{sorted(SETTINGS)}')
    threads = args.threads or 1
    formats = [f for f in args.memory_formats.split(',') if f]
    if not formats or set(formats) - {'contiguous', 'channels_last'}:
        parser.error('--memory-formats: contiguous and / or channels_last')
    rows = []
    quiet_logs()
    with num_threads(threads):
        from mmengine.registry import init_default_scope
        init_default_scope('mmpretrain')
        for name in names:
            batch = args.batch or (QUICK_BATCH if args.quick else BATCH)[name]
            for fmt in formats:
                rows.append(run_setting(
                    name, SETTINGS[name](), batch, args.check_steps,
                    args.repeats, channels_last=fmt == 'channels_last'))
    table = markdown_table(
        [dict(r, input=f"{r['batch']}x3x{r['size']}x{r['size']}")
         for r in rows],
        [('setting', 'setting', ''), ('input', 'input', ''),
         ('memory_format', 'memory format', ''),
         ('eager_ms', 'eager ms/step', '.1f'),
         ('compiled_ms', 'compiled ms/step', '.1f'),
         ('ratio', 'compiled / eager', '.3f'), ('paired', 'paired', '.3f'),
         ('compile_s', 'compile s', '.0f'),
         ('max_rel_loss_diff', 'max rel loss diff', '.1e'),
         ('graph_breaks', 'graph breaks', 'd')])
    result = dict(rows=rows, table=table, threads=threads,
                  machine=machine_info('cpu'), quick=args.quick)
    return finish(result, args.out_json)


if __name__ == '__main__':
    main()
