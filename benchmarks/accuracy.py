"""Accuracy of GPD against its baselines on real data: scikit-learn's digits.

Two regimes on the fixed stratified split of ``mmgpd.DigitsDataset`` (1347
train / 450 test images, upscaled to 16x16):

* ``full``: the whole training split;
* ``low``: 10 % of the training labels (``train_fraction=0.1``, one fixed
  stratified subset, ``subset_seed=0``, 135 images), more epochs.

Per regime a static teacher (``configs/bench/digits_teacher.py``, ResNet_CIFAR-34
of width 32) is trained once (seed 0), then the student of
``configs/baselines/resnet_digits.py`` (ResNet_CIFAR-18, width 16) with five
methods over the seeds (default 0..4):

========== =========================================== ==========================
method     config                                      what
========== =========================================== ==========================
student    configs/bench/digits_student.py             the plain student alone
kd         configs/bench/digits_kd.py                  + KD from T_s
dkd        configs/bench/digits_dkd.py                 + DKD from T_s
gpd        configs/bench/digits_gpd.py                 GPD* (no T_s, ratio 2)
dkd_gpd    configs/bench/digits_dkd_gpd.py             DKD + GPD
========== =========================================== ==========================

Every run goes through the repository's own code path: ``tools/train.py``'s
``main`` (MMEngine Runner) on the config, with the regime applied as
``--cfg-options`` that are *the same for every method* of a regime (data,
resolution, epochs, schedule; only ``randomness.seed`` and the teacher
checkpoint vary). The accuracy reported for a method is the test accuracy
(last epoch, never the best) of the **extracted student**: for the distillation
runs the plain student checkpoint ``GPDHook`` wrote (``student_latest.pth``, CBR
of T_d for GPD), tested by plain mmpretrain (``tools/test.py``'s ``main`` on
``configs/bench/digits_student.py``, no mmgpd type); for the student alone its
own last validation. Each distillation run also records the hook's
``gpd/acc_student`` and checks that both agree.

Runs execute in ``--jobs`` worker processes (spawned, one torch thread each).
The full regime's seed-0 runs validate every epoch; their logs give the gap
plots (``tools/plot_gap.py``): T_d - S and T_s - S over training.

    python -m benchmarks.accuracy [--quick] [--seeds 0 1 2 3 4] [--jobs 2]
        [--work-dir work_dirs/bench/accuracy] [--out-json F] [--plot-dir D]
"""
import argparse
import concurrent.futures as cf
import math
import multiprocessing as mp
import os
import os.path as osp
import statistics
import sys
import time
import uuid
from collections import OrderedDict

from mmgpd.utils.fileio import atomic_write_json

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(ROOT, 'configs', 'bench')
TEACHER_CONFIG = osp.join(CONFIG_DIR, 'digits_teacher.py')
STUDENT_CONFIG = osp.join(CONFIG_DIR, 'digits_student.py')

#: name -> (label, config, needs the static teacher, has a dynamic teacher)
METHODS = OrderedDict([
    ('student', ('student alone', 'digits_student.py', False, False)),
    ('kd', ('KD', 'digits_kd.py', True, False)),
    ('dkd', ('DKD', 'digits_dkd.py', True, False)),
    ('gpd', ('GPD* (from scratch)', 'digits_gpd.py', False, True)),
    ('dkd_gpd', ('DKD + GPD', 'digits_dkd_gpd.py', True, True)),
])

#: (with GPD, its baseline): the comparisons GPD is judged by.
GPD_COMPARISONS = (('gpd', 'student'), ('dkd_gpd', 'dkd'))

#: Two accuracies "agree" when they differ by less than this (points): far
#: below one test image (100 / 450 = 0.22), far above float32 rounding of the
#: metrics (mmpretrain's Accuracy is float32, GPDHook's float64).
AGREE_TOL = 1e-3

#: One fixed low-data subset for every seed and method.
SUBSET_SEED = 0
#: Resolution: 8x8 digits upscaled x2 (16x16); random crop of 16 with 1 px
#: padding (half an original pixel, as 2 px at the default 32x32).
UPSCALE = 2
TEACHER_SEED = 0

#: The regimes of the real benchmark. Same schedule for every method of a
#: regime (SGD lr 0.1, momentum 0.9, wd 5e-4, cosine to 0, batch 64: the
#: baseline config's). Epochs: the plain student has converged (16x16, full:
#: 99.1-99.3 % from epoch 14 of a 20-epoch run; 10 %: 95.3-95.8 % from epoch
#: 100 of a 150-epoch run), and the 52 runs take ~30 min on 2 idle cores
#: (CPU time per full-set epoch, 1 thread: student 1.4 s, KD / DKD 4 s, GPD*
#: 6.3 s, DKD + GPD 8.5 s, teacher 8 s; a 10 % epoch ~0.13 of that).
REGIMES = OrderedDict([
    ('full', dict(train_fraction=1.0, epochs=15, train_indices=None)),
    ('low', dict(train_fraction=0.1, epochs=100, train_indices=None)),
])
#: --quick: both regimes, every method, one seed, tiny schedules (smoke test).
QUICK_REGIMES = OrderedDict([
    ('full', dict(train_fraction=1.0, epochs=1, train_indices=128)),
    ('low', dict(train_fraction=0.1, epochs=2, train_indices=None)),
])
#: Regime whose seed-0 runs validate every epoch (for the gap plots).
PLOT_REGIME = 'full'
PLOT_SEED = 0
#: The gap plots: (file name, [(method, label)], title).
PLOTS = (
    ('gap_kd_vs_dkd_gpd.png', [('kd', 'KD'), ('dkd_gpd', 'DKD+GPD')],
     'digits, full training set, seed 0: KD vs DKD+GPD'),
    ('gap_student_vs_gpd.png', [('student', 'student alone'),
                                ('gpd', 'GPD*')],
     'digits, full training set, seed 0: student alone vs GPD*'),
)


# --------------------------------------------------------------------------- #
# Run specifications
# --------------------------------------------------------------------------- #
def data_options(regime: dict) -> list:
    """``--cfg-options`` of the data: the same for training and plain tests."""
    opts = [
        f'train_dataloader.dataset.upscale={UPSCALE}',
        f'val_dataloader.dataset.upscale={UPSCALE}',
        f'test_dataloader.dataset.upscale={UPSCALE}',
    ]
    return opts


def train_options(regime: dict, seed: int, val_every_epoch: bool) -> list:
    """``--cfg-options`` of one training run (identical across methods)."""
    epochs = regime['epochs']
    opts = data_options(regime) + [
        f'train_dataloader.dataset.pipeline.0.crop_size={8 * UPSCALE}',
        f'train_dataloader.dataset.pipeline.0.padding={UPSCALE // 2}',
        f'train_dataloader.dataset.train_fraction={regime["train_fraction"]}',
        f'train_dataloader.dataset.subset_seed={SUBSET_SEED}',
        f'train_cfg.max_epochs={epochs}',
        f'param_scheduler.T_max={epochs}',
        f'train_cfg.val_interval={1 if val_every_epoch else epochs}',
        f'default_hooks.checkpoint.interval={epochs}',
        'default_hooks.checkpoint.save_best=None',
        f'randomness.seed={seed}',
    ]
    if regime.get('train_indices'):
        opts.append(f'train_dataloader.dataset.indices={regime["train_indices"]}')
    return opts


def make_specs(regimes: dict, seeds, work_dir: str, threads: int):
    """Teacher and student run specs; a student spec names its teacher."""
    specs = []
    for rname, regime in regimes.items():
        tdir = osp.join(work_dir, rname, 'teacher')
        teacher = dict(
            key=f'{rname}/teacher', regime=rname, method='teacher',
            seed=TEACHER_SEED, config=TEACHER_CONFIG, work_dir=tdir,
            options=train_options(regime, TEACHER_SEED, False),
            test_options=None, depends=None, threads=threads,
            checkpoint=osp.join(tdir, f'epoch_{regime["epochs"]}.pth'))
        specs.append(teacher)
        for method, (_, cfg, needs_teacher, _) in METHODS.items():
            for seed in seeds:
                wd = osp.join(work_dir, rname, method, f'seed{seed}')
                plot_run = rname == PLOT_REGIME and seed == PLOT_SEED
                opts = train_options(regime, seed, plot_run)
                if needs_teacher:
                    opts.append(f'model.teacher_ckpt={teacher["checkpoint"]}')
                specs.append(dict(
                    key=f'{rname}/{method}/seed{seed}', regime=rname,
                    method=method, seed=seed, config=osp.join(CONFIG_DIR, cfg),
                    work_dir=wd, options=opts, threads=threads,
                    test_options=(None if method == 'student'
                                  else data_options(regime)),
                    depends=teacher['key'] if needs_teacher else None,
                    val_every_epoch=plot_run))
    return specs


#: Rough cost of a training step relative to the plain student (forward +
#: backward = 1): T_s forward ~2.7, T_d forward + backward ~4 (ratio 2).
RELATIVE_COST = dict(student=1.0, kd=3.7, dkd=3.7, gpd=5.0, dkd_gpd=7.7,
                     teacher=8.0)


def estimated_cost(spec: dict) -> float:
    """Relative cost of a run (for ordering only)."""
    epochs = int(next(o for o in spec['options']
                      if o.startswith('train_cfg.max_epochs=')).split('=')[1])
    frac = float(next(o for o in spec['options'] if o.startswith(
        'train_dataloader.dataset.train_fraction=')).split('=')[1])
    return RELATIVE_COST[spec['method']] * epochs * frac


def command_line(spec: dict) -> str:
    """The equivalent ``tools/train.py`` command (for the record)."""
    rel = osp.relpath(spec['config'], ROOT)
    return (f'python tools/train.py {rel} --work-dir {spec["work_dir"]} '
            f'--cfg-options ' + ' '.join(spec['options']))


# --------------------------------------------------------------------------- #
# Worker (runs in a spawned process)
# --------------------------------------------------------------------------- #
def _scalar(hub, key):
    try:
        return float(hub.get_scalar(f'val/{key}').current())
    except (KeyError, AttributeError):
        return None


def _redirect_output(path):
    """Send this process's stdout / stderr (fds 1, 2) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return saved


def _restore_output(saved):
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])


def run_spec(spec: dict) -> dict:
    """Train one config with ``tools/train.py``; test its extracted student.

    Returns the run's accuracies (%), its log dir and timings. Output goes to
    ``<work_dir>/run.log``.
    """
    import torch
    torch.set_num_threads(spec['threads'])
    os.makedirs(spec['work_dir'], exist_ok=True)
    log = osp.join(spec['work_dir'], 'run.log')
    saved = _redirect_output(log)
    try:
        if osp.join(ROOT, 'tools') not in sys.path:
            sys.path.insert(0, osp.join(ROOT, 'tools'))
        import test as test_tool  # tools/test.py
        import train as train_tool  # tools/train.py
        name = f'bench-{spec["key"].replace("/", "-")}-{uuid.uuid4().hex[:8]}'
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        runner = train_tool.main([
            spec['config'], '--work-dir', spec['work_dir'], '--cfg-options',
            *spec['options'], f'experiment_name={name}'])
        train_s = time.perf_counter() - t0
        hub = runner.message_hub
        out = dict(key=spec['key'], log_dir=runner.log_dir, train_s=train_s,
                   accuracy_top1=_scalar(hub, 'accuracy/top1'))
        for k in ('acc_student', 'acc_dynamic_teacher', 'acc_static_teacher',
                  'gap_dynamic', 'gap_static'):
            out[k] = _scalar(hub, f'gpd/{k}')
        del runner
        out['extracted_acc'] = out['accuracy_top1']
        out['extracted_source'] = 'last validation of the plain model'
        if spec['test_options'] is not None:
            ckpt = osp.join(spec['work_dir'], 'student_latest.pth')
            t1 = time.perf_counter()
            metrics = test_tool.main([
                STUDENT_CONFIG, ckpt, '--work-dir',
                osp.join(spec['work_dir'], 'extracted_test'), '--cfg-options',
                *spec['test_options'], f'experiment_name={name}-test'])
            out['test_s'] = time.perf_counter() - t1
            out['extracted_acc'] = float(metrics['accuracy/top1'])
            out['extracted_source'] = (
                'student_latest.pth (GPDHook), plain mmpretrain test of '
                'configs/bench/digits_student.py')
            out['extracted_checkpoint'] = ckpt
        out['cpu_s'] = time.process_time() - cpu0
        return out
    finally:
        _restore_output(saved)


def _init_worker(threads):
    os.environ['OMP_NUM_THREADS'] = str(threads)
    os.environ['MKL_NUM_THREADS'] = str(threads)
    import torch
    torch.set_num_threads(threads)
    import mmgpd  # noqa: F401  (compat layer, once per worker)


# --------------------------------------------------------------------------- #
# Scheduling
# --------------------------------------------------------------------------- #
def execute(specs, jobs: int, threads: int, log=print) -> dict:
    """Run every spec in ``jobs`` spawned worker processes, teachers first.

    A student run that needs a teacher is started once its teacher has
    finished. Returns ``{key: result}``; a failed run raises ``RuntimeError``
    naming it and its log (after the running ones finished).
    """
    results, failures = {}, []
    # Teachers first, then the longest runs first (fewer idle slots at the end).
    pending = sorted(specs, key=lambda s: (s['method'] != 'teacher',
                                           -estimated_cost(s)))
    total = len(specs)
    ctx = mp.get_context('spawn')
    env_threads = {k: os.environ.get(k) for k in ('OMP_NUM_THREADS',
                                                  'MKL_NUM_THREADS')}
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = str(threads)
    t_start = time.perf_counter()
    try:
        pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                      initializer=_init_worker,
                                      initargs=(threads, ))
        try:
            running = {}
            while pending or running:
                # Start what is ready, in order (teachers come first), keeping
                # at most ``jobs`` runs queued so that dependents start early.
                for spec in list(pending):
                    if len(running) >= jobs:
                        break
                    dep = spec['depends']
                    if dep is not None and dep not in results:
                        if any(f[0] == dep for f in failures):
                            pending.remove(spec)
                            failures.append((spec['key'], 'teacher failed'))
                        continue
                    pending.remove(spec)
                    running[pool.submit(run_spec, spec)] = (spec,
                                                            time.perf_counter())
                if not running:
                    break
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    spec, t0 = running.pop(fut)
                    try:
                        res = fut.result()
                    except Exception as exc:  # noqa: BLE001 - report, go on
                        failures.append((spec['key'], f'{type(exc).__name__}: '
                                         f'{exc} (log: {spec["work_dir"]}/run.log)'))
                        log(f'[accuracy] FAILED {spec["key"]}: {exc}')
                        continue
                    res['wall_s'] = time.perf_counter() - t0
                    results[spec['key']] = res
                    acc = res['extracted_acc']
                    log(f'[accuracy] {len(results)}/{total} {spec["key"]}: '
                        f'{acc:.2f} % ({res["wall_s"]:.0f} s; '
                        f'{time.perf_counter() - t_start:.0f} s elapsed)')
        except BaseException:
            # Ctrl-C or a scheduler error: do not wait for the running runs.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    finally:
        for k, v in env_threads.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if pending and not failures:
        failures.append(('scheduler', f'{len(pending)} runs never started'))
    if failures:
        raise RuntimeError('accuracy benchmark: failed runs: ' + '; '.join(
            f'{k}: {why}' for k, why in failures))
    return results


# --------------------------------------------------------------------------- #
# Statistics and report
# --------------------------------------------------------------------------- #
def mean_std(values):
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def verdict(with_gpd, baseline):
    """Compare two lists of per-seed accuracies.

    Δ = difference of the means; se = its standard error (Welch). "better" /
    "worse" only when |Δ| > 2 se, else "no clear difference". With one seed
    there is no spread: "one seed, no verdict".
    """
    m1, s1 = mean_std(with_gpd)
    m0, s0 = mean_std(baseline)
    delta = m1 - m0
    n1, n0 = len(with_gpd), len(baseline)
    if n1 < 2 or n0 < 2:
        return delta, None, 'one seed, no verdict'
    se = math.sqrt(s1 ** 2 / n1 + s0 ** 2 / n0)
    if se == 0.0:
        word = 'identical' if delta == 0 else ('better' if delta > 0 else 'worse')
    elif delta > 2 * se:
        word = 'better'
    elif delta < -2 * se:
        word = 'worse'
    else:
        word = 'no clear difference'
    return delta, se, word


def summarize(specs, results, regimes, seeds):
    """Rows (one per regime x method, plus the teachers) and comparisons."""
    rows, comparisons = [], []
    for rname in regimes:
        teacher = results[f'{rname}/teacher']
        rows.append(dict(
            regime=rname, method='teacher', label='static teacher T_s '
            '(ResNet_CIFAR-34, width 32; seed 0)', n=1,
            mean=teacher['extracted_acc'], std=0.0,
            per_seed={str(TEACHER_SEED): teacher['extracted_acc']},
            agree=True))
        per_method = {}
        for method, (label, _, _, _) in METHODS.items():
            runs = [results[f'{rname}/{method}/seed{s}'] for s in seeds]
            accs = [r['extracted_acc'] for r in runs]
            per_method[method] = accs
            mean, std = mean_std(accs)
            own = [r['acc_student'] if r['acc_student'] is not None
                   else r['accuracy_top1'] for r in runs]
            agree = all(abs(a - b) < AGREE_TOL for a, b in zip(accs, own))
            row = dict(regime=rname, method=method, label=label, n=len(accs),
                       mean=mean, std=std,
                       per_seed={str(s): a for s, a in zip(seeds, accs)},
                       student_acc_in_run={str(s): a for s, a in zip(seeds, own)},
                       agree=agree)
            gaps = [r['gap_dynamic'] for r in runs if r['gap_dynamic'] is not None]
            if gaps:
                row['gap_dynamic_last'] = mean_std(gaps)[0]
            gaps = [r['gap_static'] for r in runs if r['gap_static'] is not None]
            if gaps:
                row['gap_static_last'] = mean_std(gaps)[0]
            rows.append(row)
        for ours, base in GPD_COMPARISONS:
            delta, se, word = verdict(per_method[ours], per_method[base])
            comparisons.append(dict(regime=rname, method=ours, baseline=base,
                                    delta=delta, se=se, verdict=word))
    return rows, comparisons


def _fmt(mean, std, n):
    return f'{mean:.2f} ± {std:.2f}' if n > 1 else f'{mean:.2f}'


def markdown(rows, comparisons, regimes, seeds, quick):
    """The results as markdown: one table per regime, then the verdicts."""
    out = []
    names = {'full': 'full training set (1347 images)',
             'low': '10 % of the training labels (135 images)'}
    for rname, regime in regimes.items():
        out.append(f'**{names.get(rname, rname)}**, {regime["epochs"]} epochs'
                   + (f', first {regime["train_indices"]} images'
                      if regime.get('train_indices') else '') + ':')
        out.append('')
        out.append('| method | test top-1 (%), mean ± std | Δ vs student '
                   'alone | per seed | last T_d − S | last T_s − S |')
        out.append('|---|---|---|---|---|---|')
        base = next(r for r in rows if r['regime'] == rname
                    and r['method'] == 'student')
        for r in (r for r in rows if r['regime'] == rname):
            per = ', '.join(f'{v:.2f}' for v in r['per_seed'].values())
            delta = ('' if r['method'] in ('teacher', 'student')
                     else f'{r["mean"] - base["mean"]:+.2f}')
            gd = (f'{r["gap_dynamic_last"]:+.2f}' if 'gap_dynamic_last' in r
                  else '')
            gs = (f'{r["gap_static_last"]:+.2f}' if 'gap_static_last' in r
                  else '')
            out.append(f'| {r["label"]} | {_fmt(r["mean"], r["std"], r["n"])}'
                       f' | {delta} | {per} | {gd} | {gs} |')
        out.append('')
    out.append('Where GPD helps (Δ of the means; "better" / "worse" only when '
               '|Δ| > 2 standard errors of the difference over the seeds):')
    out.append('')
    label = {m: v[0] for m, v in METHODS.items()}
    for c in comparisons:
        se = f', se {c["se"]:.2f}' if c['se'] is not None else ''
        out.append(f'* {c["regime"]}: {label[c["method"]]} vs '
                   f'{label[c["baseline"]]}: Δ {c["delta"]:+.2f}{se} → '
                   f'**{c["verdict"]}**')
    no_help = [c for c in comparisons if c['verdict'] != 'better']
    if no_help and len(seeds) > 1:
        out.append('')
        out.append('GPD does **not** measurably help in: ' + '; '.join(
            f'{c["regime"]} ({label[c["method"]]} vs {label[c["baseline"]]}: '
            f'{c["verdict"]})' for c in no_help) + '.')
    if quick:
        out.append('')
        out.append('(--quick: a smoke test with tiny schedules; these numbers '
                   'mean nothing.)')
    return '\n'.join(out)


def make_plots(results, plot_dir, log=print):
    """Gap plots of the full regime's seed-0 runs (validated every epoch)."""
    if osp.join(ROOT, 'tools') not in sys.path:
        sys.path.insert(0, osp.join(ROOT, 'tools'))
    import plot_gap
    written = []
    for fname, members, title in PLOTS:
        keys = [f'{PLOT_REGIME}/{m}/seed{PLOT_SEED}' for m, _ in members]
        if not all(k in results for k in keys):
            continue
        runs = []
        for key, (_, label) in zip(keys, members):
            _, entries = plot_gap.resolve_log(osp.join(
                results[key]['log_dir'], 'vis_data', 'scalars.json'))
            runs.append((label, entries))
        out = plot_gap.plot(runs, osp.join(plot_dir, fname), title=title)
        log(f'[accuracy] plot: {out}')
        written.append(out)
    return written


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='GPD vs student / KD / DKD on scikit-learn digits (full and '
        '10 %% training labels), mean ± std over seeds.')
    parser.add_argument('--quick', action='store_true',
                        help='smoke test: one seed, tiny schedules (~1-2 min)')
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='seeds of the student runs (default 0 1 2 3 4; '
                        '--quick: 0)')
    parser.add_argument('--jobs', type=int, default=2,
                        help='parallel worker processes (default 2)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads per worker (default 1)')
    parser.add_argument('--work-dir', default=None,
                        help='run directories (default work_dirs/bench/accuracy'
                        ', --quick: work_dirs/bench/accuracy_quick)')
    parser.add_argument('--out-json', default=None, help='write the results here')
    parser.add_argument('--plot-dir', default=None,
                        help='where the gap PNGs go (default: beside --out-json'
                        ', else the work dir)')
    parser.add_argument('--regimes', nargs='+', choices=list(REGIMES),
                        default=list(REGIMES), help='regimes to run')
    parser.add_argument('--epochs', nargs=2, type=int, metavar=('FULL', 'LOW'),
                        help='override the epochs of the two regimes')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the sweep; returns ``dict(rows, comparisons, table, plots, runs, ...)``."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    seeds = args.seeds if args.seeds is not None else (
        [0] if args.quick else [0, 1, 2, 3, 4])
    if len(set(seeds)) != len(seeds):
        raise SystemExit('accuracy: --seeds must be distinct')
    base = QUICK_REGIMES if args.quick else REGIMES
    regimes = OrderedDict((k, dict(v)) for k, v in base.items()
                          if k in args.regimes)
    if args.epochs:
        for name, epochs in zip(('full', 'low'), args.epochs):
            if name in regimes:
                regimes[name]['epochs'] = epochs
    work_dir = osp.abspath(args.work_dir or osp.join(
        ROOT, 'work_dirs', 'bench',
        'accuracy_quick' if args.quick else 'accuracy'))
    plot_dir = args.plot_dir or (osp.dirname(osp.abspath(args.out_json))
                                 if args.out_json else work_dir)

    specs = make_specs(regimes, seeds, work_dir, args.threads)
    print(f'[accuracy] {len(specs)} runs ({len(regimes)} regimes, '
          f'{len(METHODS)} methods x {len(seeds)} seeds + teachers) in '
          f'{args.jobs} processes x {args.threads} thread(s); work dir '
          f'{work_dir}', flush=True)
    results = execute(specs, args.jobs, args.threads,
                      log=lambda s: print(s, flush=True))
    rows, comparisons = summarize(specs, results, regimes, seeds)
    plots = make_plots(results, plot_dir, log=lambda s: print(s, flush=True))
    md = markdown(rows, comparisons, regimes, seeds, args.quick)
    wall = time.perf_counter() - t_start
    out = dict(
        benchmark='accuracy', quick=args.quick, seeds=seeds,
        jobs=args.jobs, threads=args.threads, wall_s=wall,
        settings=dict(
            dataset='mmgpd.DigitsDataset (scikit-learn digits, fixed '
            'stratified 1347 train / 450 test split)',
            upscale=UPSCALE, resolution=8 * UPSCALE, subset_seed=SUBSET_SEED,
            teacher_seed=TEACHER_SEED,
            regimes=regimes,
            schedule='configs/baselines/resnet_digits.py: SGD lr 0.1, '
            'momentum 0.9, wd 5e-4, batch 64, cosine to 0 over the epochs',
            accuracy='test top-1 (%) of the extracted student at the last '
            'epoch: plain mmpretrain test of GPDHook\'s student_latest.pth '
            '(distillation runs) or the plain model\'s last validation '
            '(student alone)',
            configs={m: osp.join('configs/bench', v[1])
                     for m, v in METHODS.items()},
            teacher_config='configs/bench/digits_teacher.py'),
        rows=rows, comparisons=comparisons, table=md, plots=plots,
        runs={k: dict(v, command=command_line(s)) for s in specs
              for k, v in results.items() if k == s['key']},
        all_extracted_agree=all(r['agree'] for r in rows),
        cpu_s_total=sum(r.get('cpu_s', 0.0) for r in results.values()))
    print()
    print(md)
    print(f'\n[accuracy] wall time {wall:.0f} s; CPU time of the runs '
          f'{out["cpu_s_total"]:.0f} s', flush=True)
    if args.out_json:
        out['json'] = atomic_write_json(args.out_json, out)
    return out


if __name__ == '__main__':
    main()
