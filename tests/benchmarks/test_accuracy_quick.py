"""benchmarks.accuracy --quick (and the run_all report / README block).

The quick sweep trains, for real and through tools/train.py + tools/test.py,
both regimes x (teacher + 5 methods) x 1 seed with tiny schedules (~1-2 min on
2 CPU cores), so it is marked slow.
"""
import json
import os.path as osp

import pytest

from benchmarks import accuracy, run_all

PNG = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    """``python -m benchmarks.run_all --quick --parts accuracy``: runs
    ``benchmarks.accuracy.main(['--quick', ...])`` once for every test here."""
    tmp = tmp_path_factory.mktemp('acc_quick')
    out_dir = tmp / 'out'
    report = run_all.main(['--quick', '--out-dir', str(out_dir), '--parts',
                           'accuracy', '--accuracy-work-dir',
                           str(tmp / 'runs')])
    part = report['parts']['accuracy']
    assert part['error'] is None, part['error']
    return tmp, out_dir / 'accuracy.json', part['result'], report


@pytest.mark.slow
def test_rows_for_every_method_and_regime(quick):
    _, _, result, _ = quick
    regimes = list(accuracy.QUICK_REGIMES)
    got = {(r['regime'], r['method']) for r in result['rows']}
    assert got == {(g, m) for g in regimes
                   for m in ['teacher', *accuracy.METHODS]}
    for row in result['rows']:
        assert 0.0 <= row['mean'] <= 100.0
        assert all(0.0 <= v <= 100.0 for v in row['per_seed'].values())
        assert row['n'] == 1
    # the verdicts: one per GPD comparison and regime, never a claim from 1 seed
    assert len(result['comparisons']) == 2 * len(regimes)
    assert all(c['verdict'] == 'one seed, no verdict'
               for c in result['comparisons'])
    for regime in regimes:
        assert f'{regime}' in result['table']
    for label, *_ in accuracy.METHODS.values():
        assert label in result['table']


@pytest.mark.slow
def test_extracted_student_is_the_runs_own_student(quick):
    _, _, result, _ = quick
    assert result['all_extracted_agree']
    for key, run in result['runs'].items():
        method = key.split('/')[1]
        if method in ('teacher', 'student'):
            assert run['acc_student'] is None  # plain mmpretrain runs
            continue
        # plain mmpretrain test of GPDHook's student_latest.pth == the
        # student accuracy the GPD run itself reported at its last validation
        assert osp.isfile(run['extracted_checkpoint'])
        assert abs(run['extracted_acc'] - run['acc_student']) < accuracy.AGREE_TOL
        assert abs(run['extracted_acc'] - run['accuracy_top1']) < accuracy.AGREE_TOL
        has_td = method in ('gpd', 'dkd_gpd')
        has_ts = method in ('kd', 'dkd', 'dkd_gpd')
        assert (run['acc_dynamic_teacher'] is not None) == has_td
        assert (run['acc_static_teacher'] is not None) == has_ts
        if has_td:
            assert abs(run['gap_dynamic'] - (run['acc_dynamic_teacher']
                                             - run['acc_student'])) < 1e-6


@pytest.mark.slow
def test_json_and_plots_written(quick):
    _, out_json, result, report = quick
    data = json.loads(out_json.read_text())
    assert data['rows'] == json.loads(json.dumps(result['rows']))
    assert data['quick'] is True and data['seeds'] == [0]
    # the same options for every run of a regime (fair comparison): only the
    # seed, the teacher checkpoint and the validation interval of the plot
    # runs differ
    varying = ('model.teacher_ckpt=', 'randomness.seed=',
               'train_cfg.val_interval=')
    for regime in accuracy.QUICK_REGIMES:
        opts = {tuple(o for o in run['command'].split('--cfg-options ')[1]
                      .split() if not o.startswith(varying))
                for key, run in data['runs'].items()
                if key.startswith(f'{regime}/')}
        assert len(opts) == 1, opts
    assert len(result['plots']) == len(accuracy.PLOTS)
    for png in result['plots']:
        assert osp.dirname(png) == str(out_json.parent)
        assert open(png, 'rb').read(8) == PNG
    # run_all's report: bench.md / bench.json beside the PNGs, README untouched
    out_dir = out_json.parent
    md = (out_dir / 'bench.md').read_text()
    assert report['bench_md'] == str(out_dir / 'bench.md')
    assert report['readme'] is None
    assert 'GPD* (from scratch)' in md and '(gap_kd_vs_dkd_gpd.png)' in md
    assert 'torch' in md and 'accuracy' in md and '--quick' in md
    bench = json.loads((out_dir / 'bench.json').read_text())
    assert bench['quick'] is True and bench['machine']['cpu_count'] >= 1
    assert bench['parts']['accuracy']['wall_s'] > 0
    assert bench['parts']['accuracy']['result']['rows'] == data['rows']
    block = run_all.readme_block(md)
    assert block.startswith('## Benchmarks') and '71.87' in block
    assert '](results/gap_kd_vs_dkd_gpd.png)' in block


def test_readme_block_only_touches_markers(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('# x\n\nintro\n\n## License\n\nApache\n')
    md = tmp_path / 'bench.md'
    md.write_text('# mmgpd benchmarks\n\n## Accuracy\n\n| a |\n|---|\n| 1 |\n\n'
                  '![p](gap.png)\n')
    run_all.update_readme(str(readme), str(md))
    text = readme.read_text()
    assert text.startswith('# x\n\nintro\n\n<!-- bench:begin -->\n## Benchmarks')
    assert text.endswith('<!-- bench:end -->\n\n## License\n\nApache\n')
    assert '### Accuracy' in text and '](results/gap.png)' in text
    assert '70.07' in text and '72.71' in text
    before = text
    md.write_text('# mmgpd benchmarks\n\n## Accuracy\n\nnew\n')
    run_all.update_readme(str(readme), str(md))
    text = readme.read_text()
    assert text.count('<!-- bench:begin -->') == 1 and 'new' in text
    outside = lambda t: (t.split('<!-- bench:begin -->')[0],  # noqa: E731
                         t.split('<!-- bench:end -->')[1])
    assert outside(text) == outside(before)


def test_verdict_needs_two_standard_errors():
    assert accuracy.verdict([99.0, 99.2, 99.1], [98.0, 98.1, 98.2])[2] == 'better'
    assert accuracy.verdict([98.0, 98.1, 98.2], [99.0, 99.2, 99.1])[2] == 'worse'
    assert accuracy.verdict([98.0, 99.0, 98.5], [98.2, 98.9, 98.4])[2] == \
        'no clear difference'
    assert accuracy.verdict([98.0], [97.0])[2] == 'one seed, no verdict'


def test_run_all_report_and_quick_never_writes_results(tmp_path, monkeypatch):
    """run_all with stand-in parts: every part timed and tabled, a failing
    part recorded (not fatal), --quick into a fresh temporary directory."""
    import sys
    import types
    calls = []

    def fake(name, fail=False):
        def main(argv):
            calls.append((name, list(argv)))
            if fail:
                raise RuntimeError('boom')
            return dict(rows=[dict(x=1)], table=f'| {name} |\n|---|\n| 1 |')
        return types.SimpleNamespace(main=main)

    monkeypatch.setitem(sys.modules, 'benchmarks.exactness', fake('exactness'))
    monkeypatch.setitem(sys.modules, 'benchmarks.coverage', fake('coverage'))
    monkeypatch.setitem(sys.modules, 'benchmarks.ir_time', fake('ir_time'))
    monkeypatch.setitem(sys.modules, 'benchmarks.cost', fake('cost', fail=True))
    monkeypatch.setitem(sys.modules, 'benchmarks.accuracy', fake('accuracy'))
    monkeypatch.setitem(sys.modules, 'benchmarks.capacity_gap',
                        fake('capacity_gap'))
    monkeypatch.setattr(run_all.tempfile, 'tempdir', str(tmp_path))
    readme_before = open(run_all.README).read()
    report = run_all.main(['--quick', '--device', 'cpu'])
    out_dir = report['out_dir']
    assert osp.dirname(out_dir) == str(tmp_path)  # a new temp dir
    assert out_dir != run_all.RESULTS_DIR and report['readme'] is None
    assert open(run_all.README).read() == readme_before
    assert [c[0] for c in calls] == ['exactness', 'coverage', 'ir_time',
                                     'cost', 'accuracy', 'capacity_gap']
    for name, argv in calls:
        assert '--quick' in argv
        assert argv[argv.index('--out-json') + 1] == osp.join(out_dir,
                                                             f'{name}.json')
    assert report['failed'] == ['cost']
    md = open(osp.join(out_dir, 'bench.md')).read()
    assert '| exactness |' in md and 'FAILED: RuntimeError: boom' in md
    assert md.count(' min ') >= 7  # six parts and the total
    data = json.load(open(osp.join(out_dir, 'bench.json')))
    assert set(data['parts']) == {'exactness', 'coverage', 'ir_time', 'cost',
                                  'accuracy', 'capacity_gap'}
    assert data['parts']['cost']['error'] == 'RuntimeError: boom'
    with pytest.raises(SystemExit):
        run_all.main(['--quick', '--out-dir', run_all.RESULTS_DIR])


def test_run_all_update_reruns_only_the_named_parts(tmp_path, monkeypatch):
    """--update: the named part is rerun, the others kept from bench.json
    (their wall time, date and commit); the total sums the parts."""
    import sys
    import types
    calls = []

    def fake(name, value):
        def main(argv):
            calls.append(name)
            return dict(rows=[], table=f'| {name} {value} |\n|---|')
        return types.SimpleNamespace(main=main)

    for name in run_all.PARTS:
        monkeypatch.setitem(sys.modules, f'benchmarks.{name}', fake(name, 'v1'))
    out = tmp_path / 'bench'
    first = run_all.main(['--out-dir', str(out), '--no-readme'])
    assert calls == list(run_all.PARTS)
    with pytest.raises(SystemExit, match='no .*bench.json'):
        run_all.main(['--update', '--out-dir', str(tmp_path / 'none'),
                      '--parts', 'ir_time'])
    calls.clear()
    monkeypatch.setitem(sys.modules, 'benchmarks.ir_time', fake('ir_time', 'v2'))
    second = run_all.main(['--update', '--out-dir', str(out), '--parts',
                           'ir_time', '--no-readme'])
    assert calls == ['ir_time']
    data = json.load(open(out / 'bench.json'))
    assert list(data['parts']) == list(run_all.PARTS)
    for name in run_all.PARTS:
        old = json.loads(json.dumps(first['parts'][name], default=str))
        if name == 'ir_time':
            assert data['parts'][name]['result']['table'].startswith('| ir_time v2')
        else:
            assert data['parts'][name] == old
        assert data['parts'][name]['date'] and data['parts'][name]['commit']
    assert data['total_wall_s'] == pytest.approx(
        sum(p['wall_s'] for p in data['parts'].values()))
    md = open(out / 'bench.md').read()
    assert '| ir_time v2 |' in md and '| exactness v1 |' in md
    assert second['readme'] is None
