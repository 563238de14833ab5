"""Does the gap matter? Student accuracy against teacher size, every method.

All five papers behind mmgpd argue about the teacher-student gap: a student
learns worse from a teacher that is too far ahead (GPD, PESF-KD), or can be
made to learn better the larger the teacher (DPK); KCD re-expresses the
teacher's features, ReviewKD fuses them. This benchmark measures, side by side
and by the same commands, how the student's accuracy moves with the static
teacher's size for every method mmgpd implements.

Setting (scikit-learn digits, the data and 16x16 resolution of
:mod:`benchmarks.accuracy`, its two regimes ``full`` and ``low`` = 10 % of the
training labels, its run machinery in :mod:`benchmarks.common`):

* **student**: ResNet_CIFAR-18 of base width 4 (:data:`STUDENT`, 45 k
  parameters; 98.1 % full / 93.4 % at 10 % alone), far narrower than the
  teachers; reported alone;
* **static teachers** (:data:`LADDER`): ResNet_CIFAR-18 width 8 and 16,
  ResNet_CIFAR-34 width 16 and 32 (4x to 118x the student's parameters),
  each trained once per regime (seed 0) by the same command
  (``configs/bench/digits_teacher.py`` with the architecture as
  ``--cfg-options``) and reported;
* **methods**, one schedule per regime (:data:`REGIMES`), nothing tuned per
  method, every one the unchanged config of ``configs/bench/`` with the
  student / teacher architecture given as ``--cfg-options``: the student
  alone; KD, DKD, ReviewKD, DPK, KCD, PESF-KD (:data:`STATIC_METHODS`) at
  every teacher, each also + GPD at the smallest and the largest teacher
  (:data:`PLUS_GPD_AT`; ``--plus-gpd all``: at every teacher); GPD* (no
  static teacher) at the expansion ratios :data:`RATIOS`.

Every accuracy is the test top-1 (%, last epoch) of the **extracted student**
(plain mmpretrain test of GPDHook's ``student_latest.pth`` on
``configs/bench/digits_student.py`` at the student's width), exactly as in
:mod:`benchmarks.accuracy`. Seeds: :data:`BASE_SEEDS` for every cell,
:data:`DECISIVE_SEEDS` for the cells a single-comparison claim rests on
(:func:`decisive_cells`). Verdicts: :func:`benchmarks.common.verdict` /
:func:`~benchmarks.common.contrast`, "better" / "worse" only when
|Δ| > 2 standard errors.

Outputs (``--out-json``; ``--out-dir``: ``capacity_gap.md``,
``capacity_gap_claims.md``, the PNGs): a table per regime (method x teacher:
mean ± std and Δ vs the student alone, with its verdict), the GPD* ratio
table (accuracy, cost per iteration), the teachers, the cost of every cell, a
plot of student accuracy against teacher accuracy (one line per method, error
bars = std over seeds; ``capacity_gap.png``), the T_d − S and T_s − S gap
curves of the full regime's seed-0 KD + GPD runs and GPD*'s
(``capacity_gap_curves.png``), and the claims list (:data:`CLAIMS`): each
paper's claim judged by a stated rule on these numbers as supported,
contradicted, or not decided (with the claims the sweep cannot test,
:data:`NOT_MEASURED`).

    python -m benchmarks.capacity_gap [--quick] [--jobs 2] [--regimes full low]
        [--teachers ...] [--methods ...] [--ratios ...] [--plus-gpd ends|all|none]
        [--work-dir work_dirs/bench/capacity_gap] [--out-json F] [--out-dir D]
        [--plan]        # list the runs and the estimated wall time, run nothing
        [--calibrate]   # measure the per-iteration costs of the estimate

Budget (issue 15: all of ``make bench`` within 2 hours on this 2-core
machine): :func:`estimate` sums, over the runs, iterations x the cell's
measured CPU ms per iteration (:data:`ITER_MS`, from ``--calibrate``) +
:data:`HOOK_MS`, plus a measured per-run overhead; the default sweep is 282
runs, ~72 CPU-minutes, ~37 min in 2 processes of one thread (``--plan``);
``--plus-gpd all`` ~48 min. The test suite checks it stays below
:data:`BUDGET_S`.
"""
import argparse
import os
import os.path as osp
import statistics
import sys
import time
from collections import OrderedDict

from benchmarks.accuracy import (CONFIG_DIR, ROOT, STUDENT_CONFIG,
                                 SUBSET_SEED, TEACHER_CONFIG, UPSCALE,
                                 data_options, train_options)
from benchmarks.common import AGREE_TOL, contrast, execute, mean_std, verdict
from mmgpd.utils.fileio import atomic_write_json, atomic_write_text

# --------------------------------------------------------------------------- #
# The sweep
# --------------------------------------------------------------------------- #
#: The student: ResNet_CIFAR-(depth) of base width (stem = base; stages
#: w, 2w, 4w, 8w channels).
STUDENT = dict(depth=18, width=4)

#: The static teachers that can be swept, in order of capacity: name ->
#: (depth, width) of a ResNet_CIFAR (parameters: 0.18 M, 0.70 M, 1.34 M,
#: 3.00 M, 5.33 M; the student 0.045 M).
TEACHERS = OrderedDict([
    ('r18w8', (18, 8)),
    ('r18w16', (18, 16)),
    ('r34w16', (34, 16)),
    ('r34w24', (34, 24)),
    ('r34w32', (34, 32)),
])
#: The default ladder: four teachers growing in width and depth, from 4x to
#: 118x the student's parameters, the largest being the accuracy part's
#: teacher (``configs/bench/digits_teacher.py``). ``r34w24`` (67x) is the
#: cheaper alternative top (``--teachers``; ~3 min less, :func:`estimate`).
LADDER = ('r18w8', 'r18w16', 'r34w16', 'r34w32')

#: Static-teacher methods: name -> (label, config alone, config + GPD); the
#: + GPD variant is ``<name>_gpd``.
STATIC_METHODS = OrderedDict([
    ('kd', ('KD', 'digits_kd.py', 'digits_kd_gpd.py')),
    ('dkd', ('DKD', 'digits_dkd.py', 'digits_dkd_gpd.py')),
    ('reviewkd', ('ReviewKD', 'digits_reviewkd.py', 'digits_reviewkd_gpd.py')),
    ('dpk', ('DPK', 'digits_dpk.py', 'digits_dpk_gpd.py')),
    ('kcd', ('KCD', 'digits_kcd.py', 'digits_kcd_gpd.py')),
    ('pesf', ('PESF-KD', 'digits_pesf.py', 'digits_pesf_gpd.py')),
])

#: Expansion ratios of GPD* (no static teacher; ``configs/bench/digits_gpd.py``
#: with ``model.distiller.ratio``).
RATIOS = (1.5, 2, 3, 4)
#: The ratio of "GPD*" in the claims (the paper's and the configs' default).
MAIN_RATIO = 2

#: The regimes: the data of :mod:`benchmarks.accuracy` (16x16, full / 10 %
#: labels, the same fixed subset), one schedule per regime for every method
#: (the baseline config's SGD lr 0.1, momentum 0.9, wd 5e-4, cosine to 0,
#: batch 64, last partial batch dropped). Epochs, from the student alone
#: (ResNet_CIFAR-18 width 4; 3 seeds each, this machine, 2026-12-02): full
#: 8 / 10 / 15 epochs -> 96.5 / 98.1 / 98.4 %; 10 %: 50 / 60 / 100 epochs ->
#: 72.8 / 84.6 / 93.4 % (iterations, not epochs, limit the 2-batch epochs of
#: the 10 % regime). 10 and 100 keep the student within ~0.3 points of its
#: 15-epoch / converged accuracy at the cost that fits :data:`BUDGET_S`.
REGIMES = OrderedDict([
    ('full', dict(train_fraction=1.0, epochs=10, train_indices=None)),
    ('low', dict(train_fraction=0.1, epochs=100, train_indices=None)),
])
#: --quick: both regimes, every cell, one seed, the smallest and the largest
#: teacher, tiny schedules (a smoke test: the numbers mean nothing).
QUICK_REGIMES = OrderedDict([
    ('full', dict(train_fraction=1.0, epochs=1, train_indices=64)),
    ('low', dict(train_fraction=0.1, epochs=1, train_indices=None)),
])
QUICK_TEACHERS = ('r18w8', 'r34w32')

#: Every training run drops the last partial batch (the same for every method
#: of a regime): 1347 = 21 x 64 + 3 and 135 = 2 x 64 + 7 would end each epoch
#: with a batch of 3 / 7 images, iterations that cost nearly as much as full
#: ones at these widths and give BN and DPK's CKA (which skips its π update
#: below 4 examples) their noisiest statistics.
DROP_LAST = ['train_dataloader.drop_last=True']

#: The teachers at which every static-teacher method also runs + GPD:
#: ``'ends'`` = the smallest and the largest (the two ends of the gap, what
#: the GPD claims compare), so that the sweep fits :data:`BUDGET_S`;
#: ``--plus-gpd all`` runs every teacher size (+ ~12 min, see
#: :func:`estimate`).
PLUS_GPD_AT = 'ends'

BASE_SEEDS = (0, 1, 2)
DECISIVE_SEEDS = (0, 1, 2, 3, 4)
TEACHER_SEED = 0

#: The gap curves: the full regime's seed-0 runs of these cells validate every
#: epoch (``kd_gpd`` at every teacher; GPD* at :data:`MAIN_RATIO`).
PLOT_REGIME, PLOT_SEED = 'full', 0
CURVE_METHODS = ('kd_gpd', 'gpd')


def label_of(method: str) -> str:
    if method == 'student':
        return 'student alone'
    if method == 'gpd':
        return 'GPD* (no static teacher)'
    base = method[:-4] if method.endswith('_gpd') else method
    label = STATIC_METHODS[base][0]
    return f'{label} + GPD' if method.endswith('_gpd') else label


def methods_order(sweep):
    """Row order of the tables: student, each method alone then + GPD, GPD*."""
    out = ['student']
    for m in sweep['methods']:
        out += [m] + ([f'{m}_gpd'] if sweep['plus_gpd'] else [])
    return out + ['gpd']


def make_sweep(teachers=None, methods=None, ratios=None,
               plus_gpd=PLUS_GPD_AT):
    """What a run covers: ``teachers`` (kept in capacity order),
    static-teacher ``methods``, GPD* ``ratios``, and ``plus_gpd``: the
    teachers at which each method also runs + GPD (``'ends'``: the smallest
    and the largest; ``'all'``; ``'none'``)."""
    teachers = [t for t in TEACHERS if t in (teachers or LADDER)]
    methods = [m for m in STATIC_METHODS
               if m in (STATIC_METHODS if methods is None else methods)]
    ratios = [int(r) if float(r).is_integer() else float(r)
              for r in (ratios or RATIOS)]
    if plus_gpd not in ('ends', 'all', 'none'):
        raise ValueError(f'capacity_gap: plus_gpd {plus_gpd!r}: one of '
                         "'ends', 'all', 'none'")
    at = {'ends': [teachers[0], teachers[-1]] if teachers else [],
          'all': list(teachers), 'none': []}[plus_gpd]
    return dict(teachers=teachers, methods=methods, ratios=ratios,
                plus_gpd=sorted(set(at), key=teachers.index))


def variant_of_ratio(ratio) -> str:
    return f'x{ratio:g}'


# --------------------------------------------------------------------------- #
# Claims: each paper's claim as a comparison of cells, judged by a stated rule
# --------------------------------------------------------------------------- #
#: Teacher placeholders resolved per run: the smallest / largest teacher swept.
T_MIN, T_MAX = '<smallest teacher>', '<largest teacher>'

#: A claim: ``kind`` 'pair' (one contrast of cells, ``terms``: [(coef, method,
#: variant)], expected sign of Δ ``expect``), 'each' (one verdict per
#: ``over`` item: ``terms`` with '{t}' / '{m}' / '{r}' filled in, then the
#: counting rule of :func:`judge_many`) or 'gap' (T_s − S vs T_d − S of + GPD
#: runs). ``needs_growth``: only decidable where the largest teacher is more
#: accurate than the smallest (else the "gap" does not grow).
CLAIMS = [
    dict(id='kd_gap', paper='GPD (Guo et al., ICLR 2025); PESF-KD (Rao et '
         'al., TMM 2023): the capacity-gap premise',
         text='with KD, the largest teacher gives a worse student than the '
         'smallest (a teacher too far ahead hurts)',
         kind='pair', terms=[(1, 'kd', T_MAX), (-1, 'kd', T_MIN)],
         expect='worse', needs_growth=True),
    dict(id='dpk_grows', paper='DPK (Qiu et al., ICLR 2023)',
         text='with DPK, the largest teacher gives a better student than the '
         'smallest (student accuracy grows with the teacher\'s)',
         kind='pair', terms=[(1, 'dpk', T_MAX), (-1, 'dpk', T_MIN)],
         expect='better', needs_growth=True),
    dict(id='dpk_vs_kd_gap', paper='DPK (Qiu et al., ICLR 2023)',
         text='DPK\'s advantage over KD is larger with the largest teacher '
         'than with the smallest ((DPK − KD) at T_max − (DPK − KD) at T_min)',
         kind='pair', terms=[(1, 'dpk', T_MAX), (-1, 'kd', T_MAX),
                             (-1, 'dpk', T_MIN), (1, 'kd', T_MIN)],
         expect='better', needs_growth=True),
    dict(id='pesf_large', paper='PESF-KD (Rao et al., TMM 2023)',
         text='with the largest teacher, PESF-KD (adapter-softened teacher) '
         'gives a better student than KD',
         kind='pair', terms=[(1, 'pesf', T_MAX), (-1, 'kd', T_MAX)],
         expect='better'),
    dict(id='gpd_scratch', paper='GPD (Guo et al., ICLR 2025)',
         text=f'GPD* (dynamic teacher only, ratio {MAIN_RATIO}) gives a better '
         'student than the student alone',
         kind='pair', terms=[(1, 'gpd', variant_of_ratio(MAIN_RATIO)),
                             (-1, 'student', None)],
         expect='better'),
    dict(id='gpd_ratios', paper='GPD (Guo et al., ICLR 2025): any expansion '
         'ratio',
         text='GPD* beats the student alone at every expansion ratio',
         kind='each', over='ratios',
         terms=[(1, 'gpd', '{r}'), (-1, 'student', None)], expect='better'),
    dict(id='gpd_plus', paper='GPD (Guo et al., ICLR 2025)',
         text='adding GPD to a static-teacher method gives a better student '
         '({m} + GPD vs {m}, at every teacher + GPD ran with)',
         kind='each', over='plus_gpd', per_method=True,
         terms=[(1, '{m}_gpd', '{t}'), (-1, '{m}', '{t}')], expect='better'),
    dict(id='gpd_gap', paper='GPD (Guo et al., ICLR 2025)',
         text='GPD\'s gain over the static-teacher method is larger with the '
         'largest teacher than with the smallest (mean over the methods of '
         '(m + GPD − m) at T_max − the same at T_min)',
         kind='pair', pooled_methods=True,
         terms=[(1, '{m}_gpd', T_MAX), (-1, '{m}', T_MAX),
                (-1, '{m}_gpd', T_MIN), (1, '{m}', T_MIN)],
         expect='better', needs_growth=True),
    dict(id='gpd_close', paper='GPD (Guo et al., ICLR 2025)',
         text='the dynamic teacher stays closer to the student than the '
         'static one: at the end of training |T_d − S| < |T_s − S| (each + '
         'GPD method, largest teacher; last validation of each seed)',
         kind='gap', expect='better'),
    dict(id='kd_helps', paper='KD (Hinton et al., 2015)',
         text='KD gives a better student than the student alone (every '
         'teacher)',
         kind='each', over='teachers',
         terms=[(1, 'kd', '{t}'), (-1, 'student', None)], expect='better'),
    dict(id='dkd_vs_kd', paper='DKD (Zhao et al., CVPR 2022)',
         text='DKD gives a better student than KD (every teacher)',
         kind='each', over='teachers',
         terms=[(1, 'dkd', '{t}'), (-1, 'kd', '{t}')], expect='better'),
    dict(id='reviewkd_vs_kd', paper='ReviewKD (Chen et al., CVPR 2021)',
         text='ReviewKD gives a better student than KD (every teacher)',
         kind='each', over='teachers',
         terms=[(1, 'reviewkd', '{t}'), (-1, 'kd', '{t}')], expect='better'),
    dict(id='kcd_helps', paper='KCD (Han et al., 2021)',
         text='KCD\'s channel-matched feature distillation gives a better '
         'student than the student alone (every teacher)',
         kind='each', over='teachers',
         terms=[(1, 'kcd', '{t}'), (-1, 'student', None)], expect='better'),
]

#: Claims of the papers this sweep has no cells for (listed as undecided).
NOT_MEASURED = [
    ('KCD (Han et al., 2021)', 'a channel-matched teacher target beats an '
     'unmatched one', 'the sweep has no unmatched feature-loss baseline'),
    ('DPK (Qiu et al., ICLR 2023)', 'the dynamic prior-knowledge ratio '
     '(π = 1 − CKA) beats a fixed one', 'the sweep runs DPK only at the '
     'dynamic ratio'),
]

OPPOSITE = {'better': 'worse', 'worse': 'better'}


def _fill(terms, m=None, t=None, r=None, t_min=None, t_max=None):
    out = []
    for coef, method, variant in terms:
        method = method.replace('{m}', m) if m else method
        if variant == '{t}':
            variant = t
        elif variant == '{r}':
            variant = r
        elif variant == T_MIN:
            variant = t_min
        elif variant == T_MAX:
            variant = t_max
        out.append((coef, method, variant))
    return out


def claim_cells(claim, sweep):
    """The (method, variant) cells a claim reads (for seeds and the plan)."""
    teachers, ratios = sweep['teachers'], sweep['ratios']
    t_min, t_max = teachers[0], teachers[-1]
    methods = sweep['methods']
    cells = []
    if claim['kind'] == 'pair':
        for m in (methods if claim.get('pooled_methods') else [None]):
            cells += [(me, v) for _, me, v in _fill(
                claim['terms'], m=m, t_min=t_min, t_max=t_max)]
    elif claim['kind'] == 'each':
        for m in (methods if claim.get('per_method') else [None]):
            for item in _items(claim, sweep):
                cells += [(me, v) for _, me, v in _fill(
                    claim['terms'], m=m, t=item, r=item)]
    return cells


def _items(claim, sweep):
    """What an 'each' claim iterates over: teachers, + GPD teachers, ratios."""
    return {'teachers': sweep['teachers'], 'plus_gpd': sweep['plus_gpd'],
            'ratios': [variant_of_ratio(r) for r in sweep['ratios']]}[
                claim['over']]


def decisive_cells(sweep):
    """Cells a single-comparison claim rests on (not pooled), among those the
    sweep runs: they get :data:`DECISIVE_SEEDS`."""
    present = set(cells_of(sweep))
    cells = set()
    for claim in CLAIMS:
        if claim['kind'] == 'pair' and not claim.get('pooled_methods'):
            cells.update(claim_cells(claim, sweep))
    return cells & present


# --------------------------------------------------------------------------- #
# Run specifications
# --------------------------------------------------------------------------- #
def arch_options(prefix: str, depth: int, width: int) -> list:
    """``--cfg-options`` setting a ResNet_CIFAR classifier's depth and width
    under ``prefix`` (``'model.'``, ``'model.architecture.'``,
    ``'model.teacher.'``)."""
    return [f'{prefix}backbone.depth={depth}',
            f'{prefix}backbone.stem_channels={width}',
            f'{prefix}backbone.base_channels={width}',
            f'{prefix}head.in_channels={8 * width}']


def student_arch(prefix):
    return arch_options(prefix, STUDENT['depth'], STUDENT['width'])


def cells_of(sweep):
    """Every (method, variant) cell of a regime, in table order."""
    cells = [('student', None)]
    for m in sweep['methods']:
        cells += [(m, t) for t in sweep['teachers']]
        cells += [(f'{m}_gpd', t) for t in sweep['plus_gpd']]
    cells += [('gpd', variant_of_ratio(r)) for r in sweep['ratios']]
    return cells


def config_of(method: str) -> str:
    if method == 'student':
        return STUDENT_CONFIG
    if method == 'gpd':
        return osp.join(CONFIG_DIR, 'digits_gpd.py')
    base = method[:-4] if method.endswith('_gpd') else method
    _, alone, with_gpd = STATIC_METHODS[base]
    return osp.join(CONFIG_DIR, with_gpd if method.endswith('_gpd') else alone)


def run_key(regime, method, variant, seed):
    return f'{regime}/{method}/{variant or "-"}/seed{seed}'


def make_specs(regimes, sweep, work_dir, threads, base_seeds=BASE_SEEDS,
               decisive_seeds=DECISIVE_SEEDS):
    """Teacher and student run specs; a student spec names its teacher."""
    decisive = decisive_cells(sweep)
    specs = []
    for rname, regime in regimes.items():
        tspecs = {}
        for t in sweep['teachers']:
            depth, width = TEACHERS[t]
            tdir = osp.join(work_dir, rname, 'teacher', t)
            tspecs[t] = dict(
                key=f'{rname}/teacher/{t}', regime=rname, method='teacher',
                variant=t, seed=TEACHER_SEED, config=TEACHER_CONFIG,
                work_dir=tdir, threads=threads, test_options=None,
                test_config=None, depends=None,
                options=train_options(regime, TEACHER_SEED, False)
                + DROP_LAST + arch_options('model.', depth, width),
                checkpoint=osp.join(tdir, f'epoch_{regime["epochs"]}.pth'))
            specs.append(tspecs[t])
        for method, variant in cells_of(sweep):
            seeds = (decisive_seeds if (method, variant) in decisive
                     else base_seeds)
            for seed in seeds:
                plot_run = (rname == PLOT_REGIME and seed == PLOT_SEED
                            and method in CURVE_METHODS and (
                                method != 'gpd'
                                or variant == variant_of_ratio(MAIN_RATIO)))
                opts = train_options(regime, seed, plot_run) + DROP_LAST
                if method == 'student':
                    opts += student_arch('model.')
                else:
                    opts += student_arch('model.architecture.')
                teacher = None
                if method == 'gpd':
                    opts.append(f'model.distiller.ratio={variant[1:]}')
                elif method != 'student':
                    teacher = tspecs[variant]
                    opts += arch_options('model.teacher.', *TEACHERS[variant])
                    opts.append(f'model.teacher_ckpt={teacher["checkpoint"]}')
                spec = dict(
                    key=run_key(rname, method, variant, seed), regime=rname,
                    method=method, variant=variant, seed=seed,
                    config=config_of(method), threads=threads,
                    work_dir=osp.join(work_dir, rname, method,
                                      variant or '-', f'seed{seed}'),
                    options=opts, val_every_epoch=plot_run,
                    test_config=STUDENT_CONFIG,
                    test_options=(None if method == 'student' else
                                  data_options(regime) + student_arch('model.')),
                    depends=teacher['key'] if teacher else None)
                specs.append(spec)
    for spec in specs:
        spec['cost'] = estimated_cost_ms(spec, regimes[spec['regime']]) / 1e3
    return specs


def command_line(spec: dict) -> str:
    """The equivalent ``tools/train.py`` command (for the record)."""
    rel = osp.relpath(spec['config'], ROOT)
    return (f'python tools/train.py {rel} --work-dir {spec["work_dir"]} '
            f'--cfg-options ' + ' '.join(spec['options']))


# --------------------------------------------------------------------------- #
# Cost model (budget): measured per-iteration costs, see ITER_MS
# --------------------------------------------------------------------------- #
#: Measured CPU ms per training iteration of every cell
#: (``python -m benchmarks.capacity_gap --calibrate --teachers r18w8 r18w16
#: r34w16 r34w24 r34w32 --plus-gpd all``): batch 64 at 16x16, one thread,
#: data loading included, each config built by tools/train.py's Runner with
#: the sweep's options (random-init teachers) and stepped 66 times in one
#: process (median after 3 warm-up steps), on this 2-core AMD EPYC machine on
#: 2026-12-02 02:11-02:19 UTC (load average 0.8-1.5: other work shared it;
#: under heavier load, 4-5, the same cells cost 10-80 % more). ``HOOK_MS``:
#: what MMEngine's hooks add per iteration (the student alone: ~24 ms per
#: iteration in the real pipeline vs ~19.6 ms stepped directly, both under
#: load). ``RUN_OVERHEAD_S``: CPU s of a run besides its iterations (runner
#: build, IR, validation, checkpoints, the extracted student's test; the
#: 1-iteration runs of --quick).
ITER_MS = {
    'student': 15.7,
    'teacher': {'r18w8': 27.1, 'r18w16': 51.9, 'r34w16': 87.0, 'r34w24': 184.3,
                'r34w32': 226.9},
    'gpd': {'x1.5': 37.6, 'x2': 39.9, 'x3': 57.5, 'x4': 63.5},
    'kd': {'r18w8': 21.8, 'r18w16': 25.2, 'r34w16': 35.0, 'r34w24': 56.7,
           'r34w32': 98.2},
    'dkd': {'r18w8': 29.0, 'r18w16': 35.0, 'r34w16': 39.9, 'r34w24': 69.7,
            'r34w32': 74.0},
    'reviewkd': {'r18w8': 43.7, 'r18w16': 52.7, 'r34w16': 60.2, 'r34w24': 90.9,
                 'r34w32': 100.8},
    'dpk': {'r18w8': 30.3, 'r18w16': 37.0, 'r34w16': 43.5, 'r34w24': 67.9,
            'r34w32': 84.5},
    'kcd': {'r18w8': 22.7, 'r18w16': 27.0, 'r34w16': 35.7, 'r34w24': 57.6,
            'r34w32': 69.2},
    'pesf': {'r18w8': 22.4, 'r18w16': 28.3, 'r34w16': 35.1, 'r34w24': 56.2,
             'r34w32': 71.9},
    'kd_gpd': {'r18w8': 55.4, 'r18w16': 54.6, 'r34w16': 71.5, 'r34w24': 90.8,
               'r34w32': 109.0},
    'dkd_gpd': {'r18w8': 47.6, 'r18w16': 52.7, 'r34w16': 56.6, 'r34w24': 72.4,
                'r34w32': 90.0},
    'reviewkd_gpd': {'r18w8': 120.1, 'r18w16': 136.1, 'r34w16': 139.8,
                     'r34w24': 173.4, 'r34w32': 193.6},
    'dpk_gpd': {'r18w8': 70.2, 'r18w16': 74.8, 'r34w16': 81.2, 'r34w24': 96.4,
                'r34w32': 116.3},
    'kcd_gpd': {'r18w8': 47.2, 'r18w16': 49.7, 'r34w16': 60.1, 'r34w24': 78.0,
                'r34w32': 98.4},
    'pesf_gpd': {'r18w8': 47.7, 'r18w16': 51.5, 'r34w16': 59.4, 'r34w24': 85.3,
                 'r34w32': 92.6},
}
HOOK_MS = 5.0
RUN_OVERHEAD_S = dict(student=1.1, teacher=1.2, alone=2.0, gpd=2.5)
#: Validation of S, T_d and T_s on the 450 test images (the gap-curve runs
#: validate every epoch).
VAL_S = 0.4
#: The capacity gap's share of `make bench`'s 2 hours (see the module
#: docstring): the estimate of the default sweep must stay below it.
BUDGET_S = 45 * 60


def step_cost_ms(method: str, variant) -> float:
    """Estimated CPU ms per iteration of one run (:data:`ITER_MS` +
    :data:`HOOK_MS`); a cell without a measurement (a teacher added to
    :data:`TEACHERS` later) counts as the method's costliest measured one."""
    if method == 'student':
        return ITER_MS['student'] + HOOK_MS
    known = ITER_MS[method]
    return known.get(variant, max(known.values())) + HOOK_MS


def iterations(regime: dict) -> int:
    """Training iterations of a regime (batch 64, the last partial batch
    dropped: :data:`DROP_LAST`)."""
    n = regime.get('train_indices') or (
        1347 if regime['train_fraction'] >= 1.0 else 135)
    return regime['epochs'] * max(1, n // 64)


def estimated_cost_ms(spec: dict, regime: dict) -> float:
    """Estimated CPU ms of a run: iterations x step + overhead."""
    method = spec['method']
    kind = ('student' if method == 'student' else 'teacher'
            if method == 'teacher' else 'gpd' if method == 'gpd'
            or method.endswith('_gpd') else 'alone')
    val = VAL_S * 1e3 * (regime['epochs'] - 1) if spec.get(
        'val_every_epoch') else 0.0
    return (iterations(regime) * step_cost_ms(method, spec['variant'])
            + 1e3 * RUN_OVERHEAD_S[kind] + val)


def estimate(specs, regimes, jobs: int) -> dict:
    """Estimated CPU time of all runs and the wall time in ``jobs`` processes
    (a greedy longest-first schedule respecting the teacher dependencies is
    approximated by total / jobs, plus the longest teacher chain)."""
    cpu = sum(estimated_cost_ms(s, regimes[s['regime']]) for s in specs) / 1e3
    teachers = [estimated_cost_ms(s, regimes[s['regime']]) / 1e3
                for s in specs if s['method'] == 'teacher']
    return dict(runs=len(specs), cpu_s=cpu,
                wall_s=cpu / jobs + (max(teachers) / 2 if teachers else 0.0))


def calibrate(sweep, work_dir, steps: int = 63, warmup: int = 3,
              log=print) -> dict:
    """Measure :data:`ITER_MS`: CPU ms per training iteration of every cell.

    Each cell's config is built as the sweep builds it (tools/train.py's
    option handling, MMEngine's Runner; random-init teachers saved under
    ``work_dir``, KCD's transform solved by its hook) and stepped
    ``warmup + steps`` times in this process on the full regime's data
    (batch 64, 16x16, last partial batch dropped), without MMEngine's
    per-iteration hooks (see :data:`HOOK_MS`); returns the medians (ms) in
    :data:`ITER_MS`'s layout. Run it in a process of one thread on an
    otherwise idle machine to refresh the budget.
    """
    import logging

    import torch
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.runner import Runner
    from mmpretrain.registry import MODELS
    if osp.join(ROOT, 'tools') not in sys.path:
        sys.path.insert(0, osp.join(ROOT, 'tools'))
    import train as train_tool

    os.makedirs(work_dir, exist_ok=True)
    ckpts = {}
    for t in sweep['teachers']:
        depth, width = TEACHERS[t]
        ckpts[t] = osp.join(work_dir, f'teacher_{t}.pth')
        torch.save({'state_dict': MODELS.build(_classifier(depth, width))
                    .state_dict()}, ckpts[t])
    regime = dict(REGIMES['full'], epochs=1)
    specs = make_specs({'full': regime}, sweep, work_dir, 1,
                       base_seeds=(0, ), decisive_seeds=(0, ))
    out = {}
    for spec in specs:
        opts = [f'model.teacher_ckpt={ckpts[spec["variant"]]}'
                if o.startswith('model.teacher_ckpt=') else o
                for o in spec['options']]
        args = train_tool.parse_args([spec['config'], '--work-dir',
                                      spec['work_dir'], '--cfg-options',
                                      *opts, 'experiment_name=calibrate-'
                                      f'{spec["method"]}-{spec["variant"]}-'
                                      f'{time.time_ns()}'])
        cfg = train_tool.merge_args(Config.fromfile(spec['config']), args)
        runner = Runner.from_cfg(cfg)
        MMLogger.get_current_instance().setLevel(logging.WARNING)
        runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
        loader = runner.train_loop.dataloader
        for hook in runner.hooks:
            if type(hook).__name__ == 'KCDHook':
                hook.before_train(runner)
        runner.model.train()
        times = []
        while len(times) < warmup + steps:
            for batch in loader:
                t0 = time.process_time()
                runner.model.train_step(batch, runner.optim_wrapper)
                times.append(time.process_time() - t0)
                if len(times) == warmup + steps:
                    break
        ms = 1e3 * statistics.median(times[warmup:])
        if spec['method'] == 'student':
            out['student'] = round(ms, 1)
        else:
            out.setdefault(spec['method'], {})[spec['variant']] = round(ms, 1)
        log(f'[capacity_gap] calibrate {spec["method"]}/{spec["variant"]}: '
            f'{ms:.1f} ms / iteration')
        del runner
    return out


def _classifier(depth: int, width: int) -> dict:
    return dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=depth,
                      num_stages=4, out_indices=(3, ), stem_channels=width,
                      base_channels=width, style='pytorch'),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='mmpretrain.LinearClsHead', num_classes=10,
                  in_channels=8 * width,
                  loss=dict(type='mmpretrain.CrossEntropyLoss')))


# --------------------------------------------------------------------------- #
# Statistics and report
# --------------------------------------------------------------------------- #
def count_params(depth: int, width: int) -> int:
    """Parameters of the ResNet_CIFAR classifier (10 classes)."""
    import mmgpd  # noqa: F401
    from mmpretrain.registry import MODELS
    model = MODELS.build(_classifier(depth, width))
    return sum(p.numel() for p in model.parameters())


def summarize(specs, results, regimes, sweep):
    """Rows: the teachers and every (regime, method, variant) cell."""
    teacher_rows, rows = [], []
    for rname in regimes:
        for t in sweep['teachers']:
            r = results[f'{rname}/teacher/{t}']
            teacher_rows.append(dict(
                regime=rname, teacher=t, depth=TEACHERS[t][0],
                width=TEACHERS[t][1], acc=r['extracted_acc'],
                step_ms=r.get('step_ms')))
        by_cell = OrderedDict()
        for s in specs:
            if s['regime'] == rname and s['method'] != 'teacher':
                by_cell.setdefault((s['method'], s['variant']), []).append(s)
        base_runs = [results[s['key']] for s in by_cell[('student', None)]]
        base_accs = [r['extracted_acc'] for r in base_runs]
        base_ms = _median([r.get('step_ms') for r in base_runs])
        tacc = {t['teacher']: t['acc'] for t in teacher_rows
                if t['regime'] == rname}
        for (method, variant), cell_specs in by_cell.items():
            runs = [results[s['key']] for s in cell_specs]
            accs = [r['extracted_acc'] for r in runs]
            mean, std = mean_std(accs)
            own = [r['acc_student'] if r['acc_student'] is not None
                   else r['accuracy_top1'] for r in runs]
            row = dict(
                regime=rname, method=method, variant=variant,
                label=label_of(method), teacher=(variant if variant in tacc
                                                 else None),
                ratio=(float(variant[1:]) if method == 'gpd' else None),
                n=len(accs), mean=mean, std=std,
                per_seed={str(s['seed']): a for s, a in zip(cell_specs, accs)},
                agree=all(abs(a - b) < AGREE_TOL for a, b in zip(accs, own)),
                step_ms=_median([r.get('step_ms') for r in runs]),
                cpu_s=sum(r.get('cpu_s', 0.0) for r in runs))
            row['teacher_acc'] = tacc.get(row['teacher'])
            row['x_student'] = (row['step_ms'] / base_ms
                                if row['step_ms'] and base_ms else None)
            if method != 'student':
                row['delta'], row['se'], row['verdict'] = verdict(accs,
                                                                  base_accs)
            for key in ('gap_dynamic', 'gap_static'):
                vals = [r[key] for r in runs if r.get(key) is not None]
                if vals:
                    row[f'{key}_last'] = vals
            rows.append(row)
    return teacher_rows, rows


def _median(values):
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def _find(rows, regime, method, variant):
    for r in rows:
        if (r['regime'], r['method'], r['variant']) == (regime, method,
                                                       variant):
            return r
    return None


def _cell(rows, regime, method, variant):
    row = _find(rows, regime, method, variant)
    if row is None:
        raise KeyError(f'capacity_gap: no cell {regime}/{method}/{variant}')
    return row


def _accs(row):
    return list(row['per_seed'].values())


def judge(word, expect):
    """One verdict against the expected direction."""
    if word == expect:
        return 'supported'
    if word == OPPOSITE.get(expect):
        return 'contradicted'
    return 'cannot decide'


def judge_many(words, expect):
    """The counting rule of an 'each' claim: supported where more than half of
    the comparisons go the expected way and none the other; contradicted
    where more than half go the other way and none the expected one; else
    cannot decide (mixed or mostly no clear difference)."""
    k = sum(w == expect for w in words)
    j = sum(w == OPPOSITE.get(expect) for w in words)
    n = len(words)
    if k > n / 2 and j == 0:
        return 'supported'
    if j > n / 2 and k == 0:
        return 'contradicted'
    return 'cannot decide'


def _fmt_delta(delta, se, word):
    se_txt = f', se {se:.2f}' if se is not None else ''
    return f'Δ {delta:+.2f}{se_txt} → {word}'


def _groups(rows, rname, terms, scale=1.0):
    return [(coef * scale, _accs(_cell(rows, rname, me, v)))
            for coef, me, v in terms]


def evaluate_claims(rows, teacher_rows, regimes, sweep):
    """Every claim in every regime: dict(id, paper, text, regime, outcome,
    evidence, ...). A claim whose cells this sweep did not run is 'cannot
    decide' with the evidence 'not run in this sweep'."""
    out = []
    teachers, ratios, methods = (sweep['teachers'], sweep['ratios'],
                                 sweep['methods'])
    t_min, t_max = teachers[0], teachers[-1]
    for rname in regimes:
        tacc = {t['teacher']: t['acc'] for t in teacher_rows
                if t['regime'] == rname}
        growth = tacc[t_max] > tacc[t_min]
        growth_txt = (f'T_s {t_min} {tacc[t_min]:.2f} %, {t_max} '
                      f'{tacc[t_max]:.2f} %')
        for claim in CLAIMS:
            per = methods if claim.get('per_method') else [None]
            for m in per:
                item = dict(id=claim['id'] + (f':{m}' if m else ''),
                            paper=claim['paper'], regime=rname,
                            expect=claim['expect'],
                            text=claim['text'].replace(
                                '{m}', STATIC_METHODS[m][0] if m else ''))
                try:
                    item.update(_evaluate(claim, rows, rname, m, sweep))
                except KeyError as exc:
                    item.update(outcome='cannot decide', missing=str(exc),
                                evidence='not run in this sweep (cells '
                                'missing)')
                    out.append(item)
                    continue
                if claim.get('needs_growth') and not growth:
                    item['outcome'] = 'cannot decide'
                    item['evidence'] += ('; but the largest teacher is not '
                                         'more accurate than the smallest '
                                         f'here ({growth_txt})')
                out.append(item)
    return out


def _evaluate(claim, rows, rname, m, sweep):
    """One claim (for method ``m`` where per method) in one regime."""
    teachers, ratios, methods = (sweep['teachers'], sweep['ratios'],
                                 sweep['methods'])
    t_min, t_max = teachers[0], teachers[-1]
    expect = claim['expect']
    if claim['kind'] == 'pair':
        pooled = methods if claim.get('pooled_methods') else [None]
        if not pooled:
            raise KeyError('no static-teacher method')
        groups = []
        for pm in pooled:
            groups += _groups(rows, rname, _fill(
                claim['terms'], m=pm, t_min=t_min, t_max=t_max),
                scale=1.0 / len(pooled))
        delta, se, word = contrast(groups)
        return dict(delta=delta, se=se, verdict=word,
                    outcome=judge(word, expect),
                    evidence=_fmt_delta(delta, se, word))
    if claim['kind'] == 'each':
        items = _items(claim, sweep)
        if not items:
            raise KeyError('no cells')
        words, parts = [], []
        for it in items:
            delta, se, word = contrast(_groups(rows, rname, _fill(
                claim['terms'], m=m, t=it, r=it)))
            words.append(word)
            parts.append(f'{it}: {delta:+.2f}'
                         + (f' ± {se:.2f}' if se is not None else '')
                         + f' {word}')
        return dict(verdicts=words, outcome=judge_many(words, expect),
                    evidence=_count_txt(words, expect) + ' (Δ ± se: '
                    + '; '.join(parts) + ')')
    if claim['kind'] == 'gap':
        if not methods or t_max not in sweep['plus_gpd']:
            raise KeyError('no + GPD cells')
        words, parts = [], []
        for pm in methods:
            row = _cell(rows, rname, f'{pm}_gpd', t_max)
            gs = row.get('gap_static_last') or []
            gd = row.get('gap_dynamic_last') or []
            _, _, word = contrast([(1, [abs(g) for g in gs]),
                                   (-1, [abs(g) for g in gd])]) \
                if gs and gd else (None, None, 'one seed, no verdict')
            words.append(word)
            parts.append(f'{STATIC_METHODS[pm][0]}: T_s − S '
                         f'{mean_std(gs)[0]:+.2f}, T_d − S '
                         f'{mean_std(gd)[0]:+.2f} ({word})')
        return dict(verdicts=words, outcome=judge_many(words, expect),
                    evidence=f'at {t_max}, ' + _count_txt(words, expect)
                    + ': ' + '; '.join(parts))
    raise ValueError(f'capacity_gap: claim {claim["id"]}: unknown kind '
                     f'{claim["kind"]!r}')


def _count_txt(words, expect):
    return (f'{sum(w == expect for w in words)} of {len(words)} {expect}, '
            f'{sum(w == OPPOSITE[expect] for w in words)} '
            f'{OPPOSITE[expect]}')


def _fmt(mean, std, n):
    return f'{mean:.2f} ± {std:.2f}' if n > 1 else f'{mean:.2f}'


ARROW = {'better': ' ↑', 'worse': ' ↓'}
REGIME_NAMES = {'full': 'full training set (1347 images)',
                'low': '10 % of the training labels (135 images)'}


def markdown(rows, teacher_rows, regimes, sweep, quick, params):
    """The tables: teachers, one per regime, GPD* ratios, cost per step."""
    teachers, ratios = sweep['teachers'], sweep['ratios']
    out = []
    sd, sw = STUDENT['depth'], STUDENT['width']
    out.append(f'Student: ResNet_CIFAR-{sd}, width {sw} '
               f'({params["student"] / 1e3:.0f} k parameters). Static '
               'teachers, trained once per regime (seed 0) by the same '
               'command:')
    out.append('')
    out.append('| teacher | architecture | parameters | ' + ' | '.join(
        f'top-1 {r} (%)' for r in regimes) + ' |')
    out.append('|---|---|---|' + '---|' * len(regimes))
    for t in teachers:
        d, w = TEACHERS[t]
        accs = [next(x['acc'] for x in teacher_rows
                     if x['regime'] == r and x['teacher'] == t)
                for r in regimes]
        out.append(f'| {t} | ResNet_CIFAR-{d}, width {w} | '
                   f'{params[t] / 1e6:.2f} M | '
                   + ' | '.join(f'{a:.2f}' for a in accs) + ' |')
    out.append('')
    out.append('Cells: test top-1 of the extracted student (%), mean ± std '
               'over the seeds, (Δ vs the student alone, n seeds); ↑ / ↓: '
               'better / worse by more than 2 standard errors (Welch), '
               'else no clear difference.')
    for rname, regime in regimes.items():
        out.append('')
        out.append(f'**{REGIME_NAMES.get(rname, rname)}**, '
                   f'{regime["epochs"]} epochs'
                   + (f', first {regime["train_indices"]} images'
                      if regime.get('train_indices') else '') + ':')
        out.append('')
        tacc = {x['teacher']: x['acc'] for x in teacher_rows
                if x['regime'] == rname}
        out.append('| method | ' + ' | '.join(
            f'T_s {t} ({tacc[t]:.2f})' for t in teachers) + ' |')
        out.append('|---|' + '---|' * len(teachers))
        base = _cell(rows, rname, 'student', None)
        out.append(f'| student alone (no teacher) | '
                   f'{_fmt(base["mean"], base["std"], base["n"])} '
                   f'(n={base["n"]}) |' + ' |' * (len(teachers) - 1))
        for method in methods_order(sweep)[1:-1]:
            cells = []
            for t in teachers:
                r = _find(rows, rname, method, t)
                cells.append('—' if r is None else
                             f'{_fmt(r["mean"], r["std"], r["n"])} '
                             f'({r["delta"]:+.2f}'
                             f'{ARROW.get(r["verdict"], "")}, n={r["n"]})')
            out.append(f'| {label_of(method)} | ' + ' | '.join(cells) + ' |')
        out.append('')
        out.append(f'GPD* (no static teacher), {REGIME_NAMES.get(rname, rname)}'
                   ': expansion ratio, accuracy, cost per training iteration '
                   '(median ms, 1 thread; × the student alone\'s):')
        out.append('')
        out.append('| ratio | top-1 (%) | Δ vs student (se) | verdict | '
                   'ms / iter | × student |')
        out.append('|---|---|---|---|---|---|')
        out.append(f'| student alone | '
                   f'{_fmt(base["mean"], base["std"], base["n"])} '
                   f'(n={base["n"]}) | | | {_ms(base["step_ms"])} | 1.00 |')
        for ratio in ratios:
            r = _cell(rows, rname, 'gpd', variant_of_ratio(ratio))
            se = f' ({r["se"]:.2f})' if r['se'] is not None else ''
            out.append(f'| {ratio:g} | {_fmt(r["mean"], r["std"], r["n"])} '
                       f'(n={r["n"]}) | {r["delta"]:+.2f}{se} | '
                       f'{r["verdict"]} | {_ms(r["step_ms"])} | '
                       f'{_x(r["x_student"])} |')
    first = next(iter(regimes))
    out.append('')
    out.append(f'Cost per training iteration, {first} regime (median ms over '
               'the seeds, 1 thread, 2 processes sharing the 2 cores; × the '
               'student alone\'s):')
    out.append('')
    out.append('| method | ' + ' | '.join(f'T_s {t}' for t in teachers) + ' |')
    out.append('|---|' + '---|' * len(teachers))
    for method in methods_order(sweep)[1:-1]:
        cells = []
        for t in teachers:
            r = _find(rows, first, method, t)
            cells.append('—' if r is None else
                         f'{_ms(r["step_ms"])} ({_x(r["x_student"])})')
        out.append(f'| {label_of(method)} | ' + ' | '.join(cells) + ' |')
    if quick:
        out.append('')
        out.append('(--quick: a smoke test with tiny schedules and one seed; '
                   'these numbers mean nothing.)')
    return '\n'.join(out)


def claims_markdown(claims, quick):
    """The claims list: supported / contradicted / cannot decide, each with
    its evidence, after the rules that sorted them."""
    out = []
    out.append('Claims of the papers, judged from these numbers. Rules: a '
               'single comparison supports a claim when its verdict goes the '
               'claimed way (|Δ| > 2 se), contradicts it when it goes the '
               'other way, else cannot decide; a claim over several teachers '
               '/ ratios / methods is supported when more than half of its '
               'comparisons go the claimed way and none the other '
               '(contradicted: the mirror image), else cannot decide; a claim '
               'about a growing teacher cannot be decided where the largest '
               'teacher is not more accurate than the smallest.')
    for outcome, title in (('supported', 'Supported'),
                           ('contradicted', 'Contradicted'),
                           ('cannot decide', 'Cannot decide')):
        out.append('')
        out.append(f'*{title}:*')
        out.append('')
        items = [c for c in claims if c['outcome'] == outcome]
        for c in items:
            out.append(f'* {c["paper"]}: {c["text"]} — {c["regime"]}: '
                       f'{c["evidence"]}')
        if outcome == 'cannot decide':
            for paper, text, why in NOT_MEASURED:
                out.append(f'* {paper}: {text} — not measured: {why}')
        elif not items:
            out.append('* (none)')
    if quick:
        out.append('')
        out.append('(--quick: a smoke test with tiny schedules and one seed; '
                   'these numbers mean nothing.)')
    return '\n'.join(out)


def _ms(v):
    return f'{v:.0f}' if v is not None else '—'


def _x(v):
    return f'{v:.2f}' if v is not None else '—'


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #
def plot_accuracy(rows, teacher_rows, regimes, sweep, out):
    """Student accuracy against teacher accuracy: one panel per regime, one
    line per method (+ GPD dashed, same colour), error bars = std over the
    seeds; the student alone (± std band) and GPD* as horizontal lines."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    teachers = sweep['teachers']
    fig, axes = plt.subplots(1, len(regimes), figsize=(7 * len(regimes), 6),
                             squeeze=False)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, rname in zip(axes[0], regimes):
        tacc = [next(x['acc'] for x in teacher_rows
                     if x['regime'] == rname and x['teacher'] == t)
                for t in teachers]
        for i, m in enumerate(sweep['methods']):
            lines = [(m, '-', teachers)] + (
                [(f'{m}_gpd', '--', sweep['plus_gpd'])]
                if sweep['plus_gpd'] else [])
            for method, style, at in lines:
                cells = [_cell(rows, rname, method, t) for t in at]
                ax.errorbar([tacc[teachers.index(t)] for t in at],
                            [c['mean'] for c in cells],
                            yerr=[c['std'] for c in cells], fmt='o' + style,
                            color=colors[i % len(colors)], capsize=3,
                            markersize=4, label=label_of(method))
        base = _cell(rows, rname, 'student', None)
        ax.axhline(base['mean'], color='black', lw=1.2,
                   label='student alone (band: ± std)')
        ax.axhspan(base['mean'] - base['std'], base['mean'] + base['std'],
                   color='black', alpha=0.08)
        gpd = _cell(rows, rname, 'gpd', variant_of_ratio(MAIN_RATIO))
        ax.axhline(gpd['mean'], color='black', ls=':', lw=1.2,
                   label=f'GPD* ×{MAIN_RATIO} (no static teacher)')
        ax.set_xlabel('static teacher accuracy (%, seed 0)')
        ax.set_ylabel('extracted student accuracy (%), mean ± std')
        ax.set_title(f'digits, {REGIME_NAMES.get(rname, rname)}')
        ax.set_xticks(tacc)
        ax.set_xticklabels([f'{a:.2f}\n{t}' for a, t in zip(tacc, teachers)],
                           fontsize=7)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc='best', ncol=2)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = out + '.tmp.png'
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def plot_curves(results, sweep, out):
    """T_d − S and T_s − S over training: the full regime's seed-0 KD + GPD
    run at every teacher and GPD* (tools/plot_gap.py's two panels)."""
    if osp.join(ROOT, 'tools') not in sys.path:
        sys.path.insert(0, osp.join(ROOT, 'tools'))
    import plot_gap
    keys = [(run_key(PLOT_REGIME, 'kd_gpd', t, PLOT_SEED), f'KD+GPD, T_s {t}')
            for t in sweep['plus_gpd']]
    keys.append((run_key(PLOT_REGIME, 'gpd', variant_of_ratio(MAIN_RATIO),
                         PLOT_SEED), f'GPD* ×{MAIN_RATIO}'))
    runs = []
    for key, label in keys:
        if key in results:
            _, entries = plot_gap.resolve_log(osp.join(
                results[key]['log_dir'], 'vis_data', 'scalars.json'))
            runs.append((label, entries))
    if not runs:
        return None
    return plot_gap.plot(runs, out, title=f'digits, {PLOT_REGIME} training '
                         f'set, seed {PLOT_SEED}: S, T_d, T_s and the gaps')


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Student accuracy against static-teacher size for every '
        'method (digits, full and 10 %% labels), mean ± std over seeds, and '
        'the papers\' claims judged from it.')
    parser.add_argument('--quick', action='store_true',
                        help='smoke test: one seed, two teachers, tiny '
                        'schedules')
    parser.add_argument('--jobs', type=int, default=2,
                        help='parallel worker processes (default 2)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads per worker (default 1)')
    parser.add_argument('--resume', action='store_true',
                        help='reuse the runs an earlier, interrupted sweep '
                        'finished in --work-dir (same config and options)')
    parser.add_argument('--work-dir', default=None,
                        help='run directories (default work_dirs/bench/'
                        'capacity_gap[_quick])')
    parser.add_argument('--out-json', default=None,
                        help='write the results here')
    parser.add_argument('--out-dir', default=None,
                        help='where capacity_gap.md, capacity_gap_claims.md '
                        'and the PNGs go (default: beside --out-json, else '
                        'the work dir)')
    parser.add_argument('--regimes', nargs='+', choices=list(REGIMES),
                        default=None, help='regimes to run (default both)')
    parser.add_argument('--teachers', nargs='+', choices=list(TEACHERS),
                        default=None, help='teacher sizes, at least two '
                        '(default all; --quick: %s)' % ' '.join(QUICK_TEACHERS))
    parser.add_argument('--methods', nargs='*', default=None,
                        choices=list(STATIC_METHODS),
                        help='static-teacher methods (default all)')
    parser.add_argument('--plus-gpd', choices=('ends', 'all', 'none'),
                        default=PLUS_GPD_AT,
                        help='teachers at which each static-teacher method '
                        'also runs + GPD: the smallest and the largest '
                        f'(ends), every one (all), none (default {PLUS_GPD_AT})')
    parser.add_argument('--ratios', nargs='+', type=float, default=None,
                        help='GPD* ratios (default 1.5 2 3 4; 2 required)')
    parser.add_argument('--seeds', type=int, default=None,
                        help='number of seeds of every cell (0..N-1; default '
                        f'{len(BASE_SEEDS)}, --quick: 1)')
    parser.add_argument('--decisive-seeds', type=int, default=None,
                        help='number of seeds of the decisive cells (default '
                        f'{len(DECISIVE_SEEDS)}, --quick: 1)')
    parser.add_argument('--epochs', nargs=2, type=int, metavar=('FULL', 'LOW'),
                        help='override the epochs of the two regimes')
    parser.add_argument('--plan', action='store_true',
                        help='list the runs and the estimated time; run '
                        'nothing')
    parser.add_argument('--calibrate', action='store_true',
                        help='measure the CPU ms per iteration of every cell '
                        '(ITER_MS) in this process, print / write them '
                        '(--out-json); train nothing to the end')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the sweep; returns ``dict(rows, teachers, claims, table, plots,
    runs, ...)``."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    base = QUICK_REGIMES if args.quick else REGIMES
    regimes = OrderedDict((k, dict(v)) for k, v in base.items()
                          if args.regimes is None or k in args.regimes)
    if args.epochs:
        for name, epochs in zip(('full', 'low'), args.epochs):
            if name in regimes:
                regimes[name]['epochs'] = epochs
    sweep = make_sweep(
        teachers=args.teachers or (QUICK_TEACHERS if args.quick else None),
        methods=args.methods if args.methods is not None else None,
        ratios=args.ratios, plus_gpd=args.plus_gpd)
    if args.methods is not None and not args.methods:
        sweep['methods'] = []
    if len(sweep['teachers']) < 2:
        raise SystemExit('capacity_gap: at least two teachers (the claims '
                         'compare the smallest with the largest)')
    for r in sweep['ratios']:
        if variant_of_ratio(r) not in ITER_MS['gpd']:
            raise SystemExit(f'capacity_gap: --ratios {r:g}: one of '
                             f'{", ".join(v[1:] for v in ITER_MS["gpd"])}')
    if MAIN_RATIO not in sweep['ratios']:
        raise SystemExit(f'capacity_gap: --ratios must include {MAIN_RATIO} '
                         '(GPD* of the claims and the plot)')
    n_base = args.seeds or (1 if args.quick else len(BASE_SEEDS))
    n_dec = max(n_base, args.decisive_seeds or (
        1 if args.quick else len(DECISIVE_SEEDS)))
    work_dir = osp.abspath(args.work_dir or osp.join(
        ROOT, 'work_dirs', 'bench',
        'capacity_gap_quick' if args.quick else 'capacity_gap'))
    out_dir = osp.abspath(args.out_dir or (
        osp.dirname(osp.abspath(args.out_json)) if args.out_json
        else work_dir))
    specs = make_specs(regimes, sweep, work_dir, args.threads,
                       base_seeds=tuple(range(n_base)),
                       decisive_seeds=tuple(range(n_dec)))
    est = estimate(specs, regimes, args.jobs)
    print(f'[capacity_gap] {len(specs)} runs ({len(regimes)} regimes, '
          f'{len(sweep["teachers"])} teachers, {len(sweep["methods"])} '
          f'static-teacher methods alone and + GPD at '
          f'{len(sweep["plus_gpd"])} teachers'
          f', GPD* at {len(sweep["ratios"])} ratios; {n_base} seeds, {n_dec} '
          f'in the decisive cells) in {args.jobs} processes x {args.threads} '
          f'thread(s); estimated {est["cpu_s"] / 60:.0f} min of CPU, '
          f'~{est["wall_s"] / 60:.0f} min wall; work dir {work_dir}',
          flush=True)
    if args.calibrate:
        import torch
        torch.set_num_threads(args.threads)
        ms = calibrate(sweep, osp.join(work_dir, 'calibrate'),
                       log=lambda s: print(s, flush=True))
        out = dict(benchmark='capacity_gap', calibrate=True, iter_ms=ms,
                   threads=args.threads, sweep=sweep)
        if args.out_json:
            out['json'] = atomic_write_json(args.out_json, out)
        return out
    if args.plan:
        for s in specs:
            print(f'  {s["key"]}: ~{s["cost"]:.0f} s')
        return dict(benchmark='capacity_gap', plan=True, estimate=est,
                    runs=len(specs), specs=specs, sweep=sweep)
    results = execute(specs, args.jobs, args.threads,
                      log=lambda s: print(s, flush=True), tag='capacity_gap',
                      resume=args.resume)
    teacher_rows, rows = summarize(specs, results, regimes, sweep)
    claims = evaluate_claims(rows, teacher_rows, regimes, sweep)
    params = {t: count_params(*TEACHERS[t]) for t in sweep['teachers']}
    params['student'] = count_params(STUDENT['depth'], STUDENT['width'])
    for row in teacher_rows:
        row['params'] = params[row['teacher']]
    plots = [plot_accuracy(rows, teacher_rows, regimes, sweep,
                           osp.join(out_dir, 'capacity_gap.png'))]
    if PLOT_REGIME in regimes:
        curves = plot_curves(results, sweep, osp.join(
            out_dir, 'capacity_gap_curves.png'))
        if curves:
            plots.append(curves)
    tables = markdown(rows, teacher_rows, regimes, sweep, args.quick, params)
    claims_md = claims_markdown(claims, args.quick)
    md = tables + '\n\n' + claims_md
    files = dict(
        table=atomic_write_text(osp.join(out_dir, 'capacity_gap.md'),
                                tables + '\n'),
        claims=atomic_write_text(osp.join(out_dir,
                                          'capacity_gap_claims.md'),
                                 claims_md + '\n'))
    wall = time.perf_counter() - t_start
    out = dict(
        benchmark='capacity_gap', quick=args.quick, jobs=args.jobs,
        threads=args.threads, wall_s=wall, estimate=est, sweep=sweep,
        settings=dict(
            dataset='mmgpd.DigitsDataset (scikit-learn digits, fixed '
            'stratified 1347 train / 450 test split)',
            upscale=UPSCALE, resolution=8 * UPSCALE, subset_seed=SUBSET_SEED,
            teacher_seed=TEACHER_SEED, regimes=regimes,
            teachers={t: TEACHERS[t] for t in sweep['teachers']},
            student=STUDENT, seeds=n_base, decisive_seeds=n_dec,
            decisive_cells=sorted(f'{m}/{v or "-"}'
                                  for m, v in decisive_cells(sweep)),
            schedule='configs/baselines/resnet_digits.py: SGD lr 0.1, '
            'momentum 0.9, wd 5e-4, batch 64, cosine to 0 over the epochs',
            accuracy='test top-1 (%) of the extracted student at the last '
            'epoch: plain mmpretrain test of GPDHook\'s student_latest.pth '
            '(distillation runs) or the plain model\'s last validation '
            '(student alone)',
            configs={m: [osp.join('configs/bench', c)
                         for c in STATIC_METHODS[m][1:]]
                     for m in sweep['methods']}),
        teachers=teacher_rows, rows=rows, claims=claims, table=md,
        plots=plots, files=files,
        runs={s['key']: dict(results[s['key']], command=command_line(s))
              for s in specs},
        all_extracted_agree=all(r['agree'] for r in rows),
        cpu_s_total=sum(r.get('cpu_s', 0.0) for r in results.values()))
    print()
    print(md)
    print(f'\n[capacity_gap] wall time {wall:.0f} s (estimated '
          f'{est["wall_s"]:.0f} s); CPU time of the runs '
          f'{out["cpu_s_total"]:.0f} s', flush=True)
    if args.out_json:
        out['json'] = atomic_write_json(args.out_json, out)
    return out


if __name__ == '__main__':
    main()
