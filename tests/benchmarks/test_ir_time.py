"""benchmarks.ir_time: IR seconds with / without noise, side by side."""
import json

import pytest

from benchmarks import ir_time


def test_ir_time_quick(tmp_path):
    out = tmp_path / 'ir_time.json'
    result = ir_time.main(['--quick', '--threads', '1', '--out-json', str(out)])
    (row, ) = result['rows']
    assert row['model'] == 'resnet18' and row['ratio'] == 2
    assert row['ir_s'] > 0 and row['ir_noise_s'] > 0
    assert row['x_noise'] == pytest.approx(row['ir_noise_s'] / row['ir_s'])
    assert len(row['runs']) == 2  # one round of each, alternating
    assert 'with ÷ without noise' in result['table']
    assert json.loads(out.read_text())['benchmark'] == 'ir_time'


def test_ir_time_refuses_unknown_models():
    with pytest.raises(SystemExit):
        ir_time.main(['--models', 'resnet7'])
