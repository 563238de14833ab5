"""benchmarks.capacity_gap: the sweep's runs, the claims rules, the report.

Fast tests (by default): the run specifications of the real sweep (every
regime x method x teacher cell, the same options for every method of a
regime), the verdict / claim rules on hand-made numbers, the report and plot
from synthetic rows, the budget estimate, and one tiny real sweep (one regime,
two teachers, KD alone and + GPD, GPD*: 8 trainings through tools/train.py).
Slow: ``python -m benchmarks.run_all --quick --parts capacity_gap`` (every
cell of both regimes, ~60 tiny trainings) into a temporary directory.
"""
import json
import os
import os.path as osp

import pytest

from benchmarks import capacity_gap as cg
from benchmarks import common, run_all

PNG = b'\x89PNG\r\n\x1a\n'
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: Options a run of a regime may add to the regime's common ones: the seed,
#: the validation interval of the gap-curve runs, the architectures, the
#: teacher checkpoint and GPD*'s ratio.
VARYING = ('randomness.seed=', 'train_cfg.val_interval=', 'model.teacher_ckpt=',
           'model.teacher.', 'model.architecture.', 'model.backbone.',
           'model.head.', 'model.distiller.ratio=')


def _opt(spec, prefix):
    return [o for o in spec['options'] if o.startswith(prefix)]


# --------------------------------------------------------------------------- #
# Run specifications
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize('plus_gpd', ['ends', 'all'])
def test_specs_cover_every_cell_with_the_same_commands(tmp_path, plus_gpd):
    sweep = cg.make_sweep(plus_gpd=plus_gpd)
    at = (list(cg.LADDER) if plus_gpd == 'all'
          else [list(cg.LADDER)[0], list(cg.LADDER)[-1]])
    assert sweep['plus_gpd'] == at
    specs = cg.make_specs(cg.REGIMES, sweep, str(tmp_path), threads=1)
    by_key = {s['key']: s for s in specs}
    assert len(by_key) == len(specs)
    decisive = cg.decisive_cells(sweep)
    n_cells = (1 + len(cg.STATIC_METHODS) * (len(cg.LADDER) + len(at))
               + len(cg.RATIOS))
    for regime in cg.REGIMES:
        teachers = [s for s in specs
                    if s['regime'] == regime and s['method'] == 'teacher']
        assert [s['variant'] for s in teachers] == list(cg.LADDER)
        cells = {(s['method'], s['variant']) for s in specs
                 if s['regime'] == regime and s['method'] != 'teacher'}
        assert len(cells) == n_cells
        for m in cg.STATIC_METHODS:
            for t in cg.LADDER:
                assert (m, t) in cells
                assert ((f'{m}_gpd', t) in cells) == (t in at)
        for r in cg.RATIOS:
            assert ('gpd', cg.variant_of_ratio(r)) in cells
        for method, variant in cells:
            seeds = sorted(s['seed'] for s in specs if s['regime'] == regime
                           and (s['method'], s['variant']) == (method, variant))
            want = (cg.DECISIVE_SEEDS if (method, variant) in decisive
                    else cg.BASE_SEEDS)
            assert seeds == list(want), (method, variant)
            assert len(seeds) >= 3
        # one schedule per regime: every run shares the options that are not
        # its seed / architecture / teacher / ratio
        common_opts = {tuple(o for o in s['options']
                             if not o.startswith(VARYING))
                       for s in specs if s['regime'] == regime}
        assert len(common_opts) == 1, common_opts
        assert 'train_dataloader.drop_last=True' in next(iter(common_opts))
    # the decisive cells are those of the single-comparison claims
    assert {('student', None), ('gpd', 'x2'), ('kd', 'r18w8'),
            ('kd', 'r34w32'), ('dpk', 'r18w8'), ('dpk', 'r34w32'),
            ('pesf', 'r34w32')} == decisive
    for s in specs:
        assert osp.isfile(s['config']), s['config']
        if s['method'] == 'teacher':
            d, w = cg.TEACHERS[s['variant']]
            assert f'model.backbone.depth={d}' in s['options']
            assert f'model.head.in_channels={8 * w}' in s['options']
            assert s['test_options'] is None
            continue
        # the student has the student's width in training and in the test of
        # its extracted checkpoint
        sd, sw = cg.STUDENT['depth'], cg.STUDENT['width']
        prefix = 'model.' if s['method'] == 'student' else 'model.architecture.'
        assert f'{prefix}backbone.base_channels={sw}' in s['options']
        assert f'{prefix}backbone.depth={sd}' in s['options']
        if s['method'] == 'student':
            assert s['test_options'] is None and s['depends'] is None
            continue
        assert f'model.backbone.base_channels={sw}' in s['test_options']
        assert s['test_config'].endswith('configs/bench/digits_student.py')
        if s['method'] == 'gpd':
            assert _opt(s, 'model.distiller.ratio=') == [
                f'model.distiller.ratio={s["variant"][1:]}']
            assert s['depends'] is None and not _opt(s, 'model.teacher')
            continue
        teacher = by_key[s['depends']]
        assert teacher['method'] == 'teacher'
        assert teacher['variant'] == s['variant']
        assert teacher['regime'] == s['regime']
        assert _opt(s, 'model.teacher_ckpt=') == [
            f'model.teacher_ckpt={teacher["checkpoint"]}']
        d, w = cg.TEACHERS[s['variant']]
        assert f'model.teacher.backbone.base_channels={w}' in s['options']
        base = s['method'][:-4] if s['method'].endswith('_gpd') else s['method']
        assert osp.basename(s['config']) == cg.STATIC_METHODS[base][
            2 if s['method'].endswith('_gpd') else 1]
    # the gap curves: full regime, seed 0, KD + GPD at every teacher and GPD*
    curves = sorted(s['key'] for s in specs if s.get('val_every_epoch'))
    assert curves == sorted(
        [cg.run_key('full', 'kd_gpd', t, 0) for t in at]
        + [cg.run_key('full', 'gpd', 'x2', 0)])


def test_quick_plan_is_every_cell_at_two_teachers():
    out = cg.main(['--quick', '--plan'])
    assert out['plan'] and out['sweep']['teachers'] == list(cg.QUICK_TEACHERS)
    assert out['sweep']['plus_gpd'] == list(cg.QUICK_TEACHERS)
    # 2 regimes x (2 teachers + student + 6 x 2 x 2 + 4 ratios), one seed
    assert out['runs'] == 2 * (2 + 1 + 24 + 4)


def test_budget_estimate_of_the_full_sweep():
    """The documented sizing: the default sweep's estimated wall time in two
    processes stays within its share of `make bench`'s two hours."""
    out = cg.main(['--plan'])
    # every default cell has a measured cost (no fallback in the estimate)
    for method, by_variant in cg.ITER_MS.items():
        if method == 'gpd':
            assert {cg.variant_of_ratio(r) for r in cg.RATIOS} <= set(
                by_variant)
        elif method != 'student':
            assert set(cg.LADDER) <= set(by_variant), method
    assert set(cg.ITER_MS) == {'student', 'teacher', 'gpd'} | set(
        cg.STATIC_METHODS) | {f'{m}_gpd' for m in cg.STATIC_METHODS}
    est = out['estimate']
    assert est['runs'] == out['runs'] == len(out['specs'])
    assert est['wall_s'] <= cg.BUDGET_S, est
    # the estimate is a sum over the runs of iterations x cost + overhead
    regimes = cg.REGIMES
    assert est['cpu_s'] == pytest.approx(sum(
        cg.estimated_cost_ms(s, regimes[s['regime']])
        for s in out['specs']) / 1e3)


def test_calibrate_measures_every_cell(tmp_path):
    """--calibrate's layout is ITER_MS's: a positive ms per iteration for the
    teacher, the student, KD and GPD* (2 steps each)."""
    sweep = cg.make_sweep(['r18w8'], ['kd'], [2], 'none')
    ms = cg.calibrate(sweep, str(tmp_path), steps=2, warmup=1,
                      log=lambda s: None)
    assert set(ms) == {'teacher', 'student', 'kd', 'gpd'}
    assert set(ms['teacher']) == set(ms['kd']) == {'r18w8'}
    assert set(ms['gpd']) == {'x2'}
    assert ms['student'] > 0
    for key in ('teacher', 'kd', 'gpd'):
        assert all(v > 0 for v in ms[key].values())
    for key in ms:  # every cell the sweep can run has a cost
        assert (set(ms[key]) <= set(cg.ITER_MS[key])
                if isinstance(ms[key], dict) else key in cg.ITER_MS)


# --------------------------------------------------------------------------- #
# Verdicts and claims on hand-made numbers
# --------------------------------------------------------------------------- #
def test_contrast_is_welch_with_coefficients():
    # Δ = 2 - 0 = 2, se = sqrt(1/3 + 0) (sample std 1 over 3 values)
    delta, se, word = common.contrast([(1, [1.0, 2.0, 3.0]), (-1, [0.0] * 3)])
    assert delta == pytest.approx(2.0) and se == pytest.approx(3 ** -0.5)
    assert word == 'better'
    # difference of differences: (a - b) - (c - d), each var / n summed
    groups = [(1, [4.0, 6.0]), (-1, [1.0, 1.0]), (-1, [2.0, 2.0]),
              (1, [0.0, 2.0])]
    delta, se, word = common.contrast(groups)
    assert delta == pytest.approx((5 - 1) - (2 - 1))
    assert se == pytest.approx((2.0 / 2 + 2.0 / 2) ** 0.5)  # s² = 2 for both
    assert word == 'better'  # 3 > 2 * 1.414
    assert common.contrast([(1, [1.0, 3.0]), (-1, [2.0, 2.0])])[2] == \
        'no clear difference'
    assert common.contrast([(1, [1.0]), (-1, [2.0, 2.0])])[2] == \
        'one seed, no verdict'
    # verdict() is the two-group contrast
    assert common.verdict([99.0, 99.2, 99.1], [98.0, 98.1, 98.2]) == \
        common.contrast([(1, [99.0, 99.2, 99.1]), (-1, [98.0, 98.1, 98.2])])


def test_judge_rules():
    assert cg.judge('better', 'better') == 'supported'
    assert cg.judge('worse', 'better') == 'contradicted'
    assert cg.judge('no clear difference', 'better') == 'cannot decide'
    assert cg.judge('one seed, no verdict', 'worse') == 'cannot decide'
    assert cg.judge_many(['better', 'better', 'no clear difference'],
                         'better') == 'supported'
    # one the other way: mixed, never supported
    assert cg.judge_many(['better', 'better', 'worse'], 'better') == \
        'cannot decide'
    # half is not more than half
    assert cg.judge_many(['better', 'no clear difference'], 'better') == \
        'cannot decide'
    assert cg.judge_many(['worse', 'worse', 'no clear difference'],
                         'better') == 'contradicted'


def _synthetic(sweep, regimes=('full', 'low'), teacher_acc=None):
    """Rows as summarize() makes them, from per-cell per-seed accuracies:
    student 90 ± 1; every method +1 over the student; KD loses 3 points from
    the smallest to the largest teacher; DPK gains 3; PESF-KD at the largest
    teacher = KD there (no difference); GPD* +2; + GPD no change."""
    teacher_acc = teacher_acc or {t: 95.0 + i for i, t in
                                  enumerate(sweep['teachers'])}
    spread = [-1.0, 0.0, 1.0]
    rows, teacher_rows = [], []
    last = sweep['teachers'][-1]
    for rname in regimes:
        for t in sweep['teachers']:
            teacher_rows.append(dict(regime=rname, teacher=t,
                                     acc=teacher_acc[t]))
        for method, variant in cg.cells_of(sweep):
            mean = 90.0
            if method == 'gpd':
                mean += 2.0
            elif method != 'student':
                base = method[:-4] if method.endswith('_gpd') else method
                i = sweep['teachers'].index(variant)
                mean += 1.0
                if base == 'kd' or (base == 'pesf' and variant == last):
                    mean -= i  # 3 points worse at the largest of 4 teachers
                if base == 'dpk':
                    mean += i
            accs = [mean + d for d in spread]
            row = dict(regime=rname, method=method, variant=variant,
                       label=cg.label_of(method),
                       teacher=variant if method not in ('student', 'gpd')
                       else None, n=3, mean=mean, std=1.0,
                       per_seed={str(k): a for k, a in enumerate(accs)},
                       agree=True, step_ms=10.0, x_student=1.0,
                       teacher_acc=teacher_acc.get(variant))
            if method != 'student':
                row['delta'], row['se'], row['verdict'] = common.verdict(
                    accs, [90.0 + d for d in spread])
            if method.endswith('_gpd'):
                # PESF-KD's students beat their teacher: T_s − S < 0; the
                # claim compares distances |T_s − S| vs |T_d − S|
                row['gap_static_last'] = ([-4.0, -4.5, -5.0]
                                          if base == 'pesf' else
                                          [4.0, 4.5, 5.0])
                row['gap_dynamic_last'] = [0.0, -0.5, 0.2]
            rows.append(row)
    return rows, teacher_rows


def _claims_by_id(claims, regime='full'):
    return {c['id']: c for c in claims if c['regime'] == regime}


def test_claims_follow_the_rules_on_synthetic_numbers():
    sweep = cg.make_sweep()
    rows, teacher_rows = _synthetic(sweep)
    claims = cg.evaluate_claims(rows, teacher_rows, ['full', 'low'], sweep)
    got = _claims_by_id(claims)
    # KD: 91 at r18w8, 88 at r34w32, std 1, n 3: Δ -3, se 0.82 -> worse
    assert got['kd_gap']['verdict'] == 'worse'
    assert got['kd_gap']['delta'] == pytest.approx(-3.0)
    assert got['kd_gap']['outcome'] == 'supported'
    assert got['dpk_grows']['outcome'] == 'supported'
    # (DPK - KD) at T_max - the same at T_min = (+6) - 0: se sqrt(4/3)
    assert got['dpk_vs_kd_gap']['delta'] == pytest.approx(6.0)
    assert got['dpk_vs_kd_gap']['se'] == pytest.approx((4 / 3) ** 0.5)
    assert got['dpk_vs_kd_gap']['outcome'] == 'supported'
    assert got['pesf_large']['verdict'] == 'no clear difference'
    assert got['pesf_large']['outcome'] == 'cannot decide'
    assert got['gpd_scratch']['outcome'] == 'supported'  # +2, se 0.82
    assert got['gpd_ratios']['outcome'] == 'supported'
    # KD vs the student: +1, 0, -1 (no clear difference), -2 (worse): one
    # 'worse' of four is not more than half -> cannot decide
    assert got['kd_helps']['verdicts'] == ['no clear difference'] * 3 + [
        'worse']
    assert got['kd_helps']['outcome'] == 'cannot decide'
    # + GPD changes nothing: cannot decide for every method
    for m in cg.STATIC_METHODS:
        assert got[f'gpd_plus:{m}']['outcome'] == 'cannot decide'
        # at the two ends of the teacher ladder (the default plus_gpd)
        assert got[f'gpd_plus:{m}']['verdicts'] == ['no clear difference'] * 2
    assert got['gpd_gap']['delta'] == pytest.approx(0.0)
    assert got['gpd_gap']['outcome'] == 'cannot decide'
    # |T_s - S| ~4.5 vs |T_d - S| ~0.23 over 3 seeds: better for all 6
    # methods (PESF-KD's T_s - S is negative: the distance counts)
    assert got['gpd_close']['outcome'] == 'supported'
    assert got['gpd_close']['verdicts'] == ['better'] * 6
    # DKD vs KD: DKD = 91 everywhere, KD 91..88: better at the two largest
    # teachers only (2 of 4 is not more than half) -> cannot decide
    assert got['dkd_vs_kd']['verdicts'][0] == 'no clear difference'
    assert got['dkd_vs_kd']['outcome'] == 'cannot decide'
    # every claim in every regime, once
    assert len(claims) == 2 * (len(cg.CLAIMS) - 1 + len(cg.STATIC_METHODS))
    md = cg.claims_markdown(claims, quick=False)
    sup = md.split('*Supported:*')[1].split('*Contradicted:*')[0]
    undecided = md.split('*Cannot decide:*')[1]
    assert 'with KD, the largest teacher gives a worse student' in sup
    assert 'PESF-KD (adapter-softened teacher)' in undecided
    for paper, text, _ in cg.NOT_MEASURED:
        assert text in undecided


def test_growth_guard_and_missing_cells():
    sweep = cg.make_sweep()
    # the largest teacher is not more accurate than the smallest
    flat = {t: 95.0 for t in sweep['teachers']}
    rows, teacher_rows = _synthetic(sweep, regimes=('full', ), teacher_acc=flat)
    got = _claims_by_id(cg.evaluate_claims(rows, teacher_rows, ['full'], sweep))
    for cid in ('kd_gap', 'dpk_grows', 'dpk_vs_kd_gap', 'gpd_gap'):
        assert got[cid]['outcome'] == 'cannot decide', cid
        assert 'not more accurate than the smallest' in got[cid]['evidence']
    assert got['gpd_scratch']['outcome'] == 'supported'  # no teacher involved
    # a sweep without DPK / PESF-KD / + GPD: their claims are 'not run'
    small = cg.make_sweep(methods=['kd'], plus_gpd='none')
    rows, teacher_rows = _synthetic(small, regimes=('full', ))
    got = _claims_by_id(cg.evaluate_claims(rows, teacher_rows, ['full'],
                                           small))
    assert got['kd_gap']['outcome'] == 'supported'
    for cid in ('dpk_grows', 'pesf_large', 'gpd_plus:kd', 'gpd_close',
                'dkd_vs_kd'):
        assert got[cid]['outcome'] == 'cannot decide'
        assert got[cid]['evidence'].startswith('not run in this sweep')


def test_report_and_plot_from_synthetic_rows(tmp_path):
    sweep = cg.make_sweep()
    rows, teacher_rows = _synthetic(sweep)
    params = {t: 1000 * (i + 1) for i, t in enumerate(sweep['teachers'])}
    params['student'] = 45000
    md = cg.markdown(rows, teacher_rows, cg.REGIMES, sweep, False, params)
    for rname in cg.REGIMES:
        assert cg.REGIME_NAMES[rname] in md
    for method in cg.methods_order(sweep)[1:-1]:
        assert f'| {cg.label_of(method)} |' in md
    # KD at the largest teacher: 88 ± 1, Δ -2 vs the student, worse (↓)
    assert '88.00 ± 1.00 (-2.00 ↓, n=3)' in md
    assert '| 2 | 92.00 ± 1.00 (n=3) | +2.00 (0.82) | better |' in md
    png = cg.plot_accuracy(rows, teacher_rows, cg.REGIMES, sweep,
                           str(tmp_path / 'p' / 'capacity_gap.png'))
    assert open(png, 'rb').read(8) == PNG
    assert os.listdir(tmp_path / 'p') == ['capacity_gap.png']


# --------------------------------------------------------------------------- #
# Real runs
# --------------------------------------------------------------------------- #
def _check_result(result, regimes, sweep):
    rows = {(r['regime'], r['method'], r['variant']): r
            for r in result['rows']}
    for regime in regimes:
        for cell in cg.cells_of(sweep):
            row = rows[(regime, ) + cell]
            assert 0.0 <= row['mean'] <= 100.0
            assert all(0.0 <= v <= 100.0 for v in row['per_seed'].values())
            assert row['n'] == 1 and row['step_ms'] > 0
        for t in sweep['teachers']:
            acc = next(x['acc'] for x in result['teachers']
                       if (x['regime'], x['teacher']) == (regime, t))
            assert 0.0 <= acc <= 100.0
    assert len(rows) == len(regimes) * len(cg.cells_of(sweep))
    # the extracted student (plain mmpretrain test) is the run's own student
    assert result['all_extracted_agree']
    for key, run in result['runs'].items():
        method = key.split('/')[1]
        if method in ('teacher', 'student'):
            assert run['acc_student'] is None
            continue
        assert osp.isfile(run['extracted_checkpoint'])
        assert abs(run['extracted_acc'] - run['acc_student']) < \
            common.AGREE_TOL
        has_td = method == 'gpd' or method.endswith('_gpd')
        assert (run['acc_dynamic_teacher'] is not None) == has_td
        assert (run['acc_static_teacher'] is not None) == (method != 'gpd')
    # one seed: no claim is decided
    assert result['claims']
    assert all(c['outcome'] == 'cannot decide' for c in result['claims'])


def test_tiny_real_sweep(tmp_path, capsys):
    """One regime, two teachers, KD alone, GPD* at ratio 2 (no + GPD cells:
    the slow --quick test has them): six trainings through tools/train.py,
    the tables, the claims and both plots."""
    out_json = tmp_path / 'out' / 'capacity_gap.json'
    result = cg.main(['--quick', '--regimes', 'full', '--teachers', 'r18w8',
                      'r18w16', '--methods', 'kd', '--ratios', '2',
                      '--plus-gpd', 'none', '--work-dir', str(tmp_path / 'runs'),
                      '--out-json', str(out_json)])
    sweep = result['sweep']
    assert sweep['methods'] == ['kd'] and sweep['ratios'] == [2]
    assert sweep['plus_gpd'] == [] and len(result['runs']) == 6
    _check_result(result, ['full'], cg.make_sweep(['r18w8', 'r18w16'],
                                                  ['kd'], [2], 'none'))
    out_dir = out_json.parent
    assert sorted(os.listdir(out_dir)) == [
        'capacity_gap.json', 'capacity_gap.md', 'capacity_gap.png',
        'capacity_gap_claims.md', 'capacity_gap_curves.png']
    data = json.loads(out_json.read_text())
    assert data['rows'] == json.loads(json.dumps(result['rows']))
    table = (out_dir / 'capacity_gap.md').read_text()
    assert '| KD |' in table and '| 2 |' in table and 'r18w16' in table
    claims = (out_dir / 'capacity_gap_claims.md').read_text()
    assert '*Cannot decide:*' in claims and 'not run in this sweep' in claims
    for png in result['plots']:
        assert open(png, 'rb').read(8) == PNG
    # --resume: the six finished runs are reused, nothing trains again
    capsys.readouterr()
    again = cg.main(['--quick', '--regimes', 'full', '--teachers', 'r18w8',
                     'r18w16', '--methods', 'kd', '--ratios', '2',
                     '--plus-gpd', 'none', '--work-dir', str(tmp_path / 'runs'),
                     '--out-json', str(tmp_path / 'again.json'), '--resume'])
    assert '6 of 6 runs finished earlier, reused' in capsys.readouterr().out
    assert json.loads(json.dumps(again['rows'])) == data['rows']
    from benchmarks.common import RESULT_FILE
    saved = [d for d, _, files in os.walk(tmp_path / 'runs')
             if RESULT_FILE in files]
    assert len(saved) == 6


def test_resume_reuses_only_the_same_run(tmp_path):
    from benchmarks.common import (RESULT_FILE, fingerprint,
                                   finished_result)
    config = tmp_path / 'cfg.py'
    config.write_text('x = 1\n')
    spec = dict(key='full/kd/r18w8/seed0', config=str(config),
                options=['randomness.seed=0'], test_options=None,
                test_config=None, work_dir=str(tmp_path / 'run'), threads=1)
    assert finished_result(spec) is None  # nothing saved yet
    os.makedirs(spec['work_dir'])
    (tmp_path / 'run' / RESULT_FILE).write_text(json.dumps(
        dict(extracted_acc=97.5, fingerprint=fingerprint(spec))))
    assert finished_result(spec) == dict(extracted_acc=97.5)
    # threads and the work dir's name do not matter; options and the
    # config's text do
    assert finished_result(dict(spec, threads=2)) is not None
    assert finished_result(dict(spec, options=['randomness.seed=1'])) is None
    config.write_text('x = 2\n')
    assert finished_result(spec) is None


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    """``python -m benchmarks.run_all --quick --parts capacity_gap``."""
    tmp = tmp_path_factory.mktemp('cg_quick')
    results_before = {f: os.stat(osp.join(run_all.RESULTS_DIR, f)).st_mtime
                      for f in os.listdir(run_all.RESULTS_DIR)}
    readme_before = open(run_all.README).read()
    report = run_all.main(['--quick', '--out-dir', str(tmp / 'out'),
                           '--parts', 'capacity_gap', '--capacity-work-dir',
                           str(tmp / 'runs')])
    part = report['parts']['capacity_gap']
    assert part['error'] is None, part['error']
    return tmp, part['result'], report, results_before, readme_before


@pytest.mark.slow
def test_quick_every_cell_of_both_regimes(quick):
    _, result, _, _, _ = quick
    _check_result(result, list(cg.QUICK_REGIMES),
                  cg.make_sweep(list(cg.QUICK_TEACHERS)))


@pytest.mark.slow
def test_quick_files_in_the_temp_dir_only(quick):
    tmp, result, report, results_before, readme_before = quick
    out = tmp / 'out'
    for name in ('capacity_gap.json', 'capacity_gap.md',
                 'capacity_gap_claims.md', 'capacity_gap.png',
                 'capacity_gap_curves.png', 'bench.md', 'bench.json'):
        assert (out / name).is_file(), name
    assert result['plots'] == [str(out / 'capacity_gap.png'),
                               str(out / 'capacity_gap_curves.png')]
    # never results/ or the README
    assert report['readme'] is None
    assert open(run_all.README).read() == readme_before
    assert {f: os.stat(osp.join(run_all.RESULTS_DIR, f)).st_mtime
            for f in os.listdir(run_all.RESULTS_DIR)} == results_before
    md = (out / 'bench.md').read_text()
    assert '## Does the gap matter?' in md and '(capacity_gap.png)' in md
    assert '| capacity_gap |' in md and '--quick' in md
    assert 'Claims of the papers' in md and '*Cannot decide:*' in md
    bench = json.loads((out / 'bench.json').read_text())
    assert bench['parts']['capacity_gap']['wall_s'] > 0
