"""Accuracy of GPD against its baselines on real data: scikit-learn's digits.

Two regimes on the fixed stratified split of ``mmgpd.DigitsDataset`` (1347
train / 450 test images, upscaled to 16x16):

* ``full``: the whole training split;
* ``low``: 10 % of the training labels (``train_fraction=0.1``, one fixed
  stratified subset, ``subset_seed=0``, 135 images), more epochs.

Per regime a static teacher (``configs/bench/digits_teacher.py``, ResNet_CIFAR-34
of width 32) is trained once (seed 0), then the student of
``configs/baselines/resnet_digits.py`` (ResNet_CIFAR-18, width 16) with five
methods over the seeds (default 0..7, :data:`SEEDS`):

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

Runs execute in ``--jobs`` worker processes (spawned, one torch thread each;
``benchmarks.common.execute`` / ``run_training``, shared with
``benchmarks.capacity_gap``).
The full regime's seed-0 runs validate every epoch; their logs give the gap
plots (``tools/plot_gap.py``): T_d - S and T_s - S over training.

    python -m benchmarks.accuracy [--quick] [--seeds 0 1 2 3 4 5 6 7] [--jobs 2]
        [--work-dir work_dirs/bench/accuracy] [--out-json F] [--plot-dir D]
"""
import argparse
import os.path as osp
import sys
import time
from collections import OrderedDict

from benchmarks.common import AGREE_TOL  # noqa: F401  (re-exported)
from benchmarks.common import execute as _execute
from benchmarks.common import mean_std, run_training, verdict
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

#: Seeds of the student runs: 8 (issue 15: verdicts must not rest on 5; the
#: 10 % GPD* result over seeds 0-4, +1.47, fell to +0.52 over seeds 5-7).
SEEDS = tuple(range(8))

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
#: 100 of a 150-epoch run). Cost: the 52 runs of 5 seeds took 26 min 51 s on
#: 2 cores (results/bench.md, 2026-11-22: 3165 s of run CPU time, ~590 s per
#: seed over both regimes, 215 s for the two teachers), so the 82 runs of the
#: 8 default seeds take ~(8 x 590 + 215) / 2 s = ~41 min in 2 processes
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
            test_options=None, test_config=None, depends=None,
            threads=threads,
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
                    test_config=STUDENT_CONFIG,
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
# Runs and statistics: benchmarks.common (shared with benchmarks.capacity_gap)
# --------------------------------------------------------------------------- #
run_spec = run_training


def execute(specs, jobs: int, threads: int, log=print,
            resume: bool = False) -> dict:
    """:func:`benchmarks.common.execute`: teachers first, then the costliest
    runs (:func:`estimated_cost`) first."""
    return _execute(specs, jobs, threads, log=log, cost=estimated_cost,
                    tag='accuracy', resume=resume)


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
                        help='seeds of the student runs (default 0..7; '
                        '--quick: 0)')
    parser.add_argument('--jobs', type=int, default=2,
                        help='parallel worker processes (default 2)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads per worker (default 1)')
    parser.add_argument('--resume', action='store_true',
                        help='reuse the runs an earlier, interrupted run '
                        'finished in --work-dir (same config and options)')
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
        [0] if args.quick else list(SEEDS))
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
                      log=lambda s: print(s, flush=True), resume=args.resume)
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
