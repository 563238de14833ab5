"""The benchmark modules' quick modes run and report what they claim."""
import json
import math

import pytest

from benchmarks import cost, exactness


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_exactness_quick(tmp_path):
    out = tmp_path / 'exactness.json'
    result = exactness.main(['--quick', '--out-json', str(out), '--threads', '1'])
    assert json.loads(out.read_text())['rows'] == json.loads(
        json.dumps(result['rows'], default=str))
    rows = result['rows']
    # one model, one ratio: with / without branches x noise 0 / 1e-6
    assert {(r['branches'], r['noise']) for r in rows} == {
        ('no', 0.0), ('no', 1e-6), ('yes', 0.0), ('yes', 1e-6)}
    for r in rows:
        assert r['error'] is None, r
        for key in ('ir_eval', 'ir_train', 's_fp32_train', 'cbr_out',
                    'cbr_weight'):
            assert _finite(r[key]) and r[key] >= 0, (key, r)
        assert r['noise_mode'] == 'zero_sum'
        assert r['ir_eval'] <= 1e-5, r  # zero-sum noise keeps T_d == S
        if r['noise'] == 0:  # CBR folds back the very weights
            assert r['cbr_out'] <= 1e-5 and r['cbr_weight'] <= 1e-6, r
    assert '| resnet18_cifar | 2 |' in result['table']


def _check_cost(result, out, settings):
    assert json.loads(out.read_text())['benchmark'] == 'cost'
    rows = {(r['setting'], r['method']): r for r in result['rows']}
    for setting in settings:
        for name in cost.METHODS + cost.PARTS:
            r = rows[(setting, name)]
            assert r['ms'] > 0 and all(t > 0 for t in r['runs_ms'])
            assert r['x_student'] > 0
        for name, parts in cost.PARTS_OF.items():
            r = rows[(setting, name)]
            assert r['parts'] == list(parts)
            assert r['x_parts'] > 0 and r['x_parts_paired'] > 0
            assert r['parts_ms'] == pytest.approx(
                sum(rows[(setting, p)]['ms'] for p in parts))
    machine = result['machine']
    assert machine['torch'] and machine['cpu'] and machine['date']
    assert 'x parts' in result['table']


def test_cost_quick_digits(tmp_path):
    out = tmp_path / 'cost.json'
    result = cost.main(['--quick', '--settings', 'digits', '--threads', '1',
                        '--out-json', str(out)])
    _check_cost(result, out, ['digits'])
    rows = {r['method']: r for r in result['rows']}
    for name in cost.METHODS + cost.PARTS:
        # KCD's solve holds a few C_t x C_s matrices: below the RSS resolution
        if name != 'part_kcd_assignment':
            assert rows[name]['step_peak_mb'] > 0, name
        assert rows[name]['resident_mb'] >= 0, name
    for name, (part, n) in cost.SHARE_OF.items():  # DPK's encoder-decoder
        assert rows[name]['part_share'] == pytest.approx(
            n * rows[part]['ms'] / rows[name]['ms'])
        assert 0 < rows[name]['part_share'] < 1
    for name in cost.PARTS_OF:  # GPD needs T_d's activations at least
        assert rows[name]['x_parts_mem'] > 0
        assert rows[name]['step_peak_mb'] > rows['part_student']['step_peak_mb']
    assert result['settings']['digits']['memory_method']


@pytest.mark.slow
def test_cost_quick_imagenet(tmp_path):
    out = tmp_path / 'cost.json'
    result = cost.main(['--quick', '--settings', 'imagenet', '--threads', '1',
                        '--no-memory', '--out-json', str(out)])
    _check_cost(result, out, ['imagenet'])
    assert result['settings']['imagenet']['batch'] == 4


def test_cost_quick_faster_rcnn(tmp_path):
    """The two-stage setting: the plain detector, GPD and GPD's parts only
    (the classification methods are skipped), at 128² in quick mode."""
    out = tmp_path / 'cost.json'
    result = cost.main(['--quick', '--settings', 'faster_rcnn', '--threads',
                        '1', '--no-memory', '--repeats', '1',
                        '--out-json', str(out)])
    assert json.loads(out.read_text())['benchmark'] == 'cost'
    rows = {r['method']: r for r in result['rows']}
    assert set(rows) == set(cost.DET_UNITS)
    for r in rows.values():
        assert r['setting'] == 'faster_rcnn' and r['ms'] > 0
    gpd = rows['gpd']
    assert gpd['parts'] == ['part_dynamic_teacher', 'part_student']
    assert gpd['parts_ms'] == pytest.approx(
        rows['part_dynamic_teacher']['ms'] + rows['part_student']['ms'])
    assert gpd['x_parts'] > 0
    # T_d (2x wide) costs more than the student alone
    assert rows['part_dynamic_teacher']['ms'] > rows['part_student']['ms']
    details = result['settings']['faster_rcnn']
    assert (details['batch'], details['size']) == (2, 128)
    assert 'Faster R-CNN' in details['model']


def test_cost_quick_amp_on_the_cpu():
    """``--amp`` on the CPU: mmgpd.AmpOptimWrapper in bf16 (fp16 refused)."""
    names = 'student,gpd,part_dynamic_teacher,part_student'
    result = cost.main(['--quick', '--settings', 'digits', '--threads', '1',
                        '--amp', '--no-memory', '--methods', names])
    assert result['options']['amp'] == 'bfloat16'
    assert '(AMP bfloat16)' in result['table']
    rows = {r['method']: r for r in result['rows']}
    assert set(rows) == set(names.split(','))
    assert rows['gpd']['x_parts'] > 0
    with pytest.raises(SystemExit):
        cost.main(['--quick', '--amp', '--amp-dtype', 'float16'])
