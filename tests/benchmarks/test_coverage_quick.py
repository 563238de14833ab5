"""benchmarks.coverage: the quick sweep writes a well-formed table, and every
family that the committed ``results/coverage.json`` lists as exact stays exact."""
import json
import math
import os.path as osp

import pytest
import torch

from benchmarks import coverage

COMMITTED = osp.join(coverage.RESULTS_DIR, 'coverage.json')


def _exact_families():
    if not osp.isfile(COMMITTED):
        return []
    with open(COMMITTED, encoding='utf-8') as f:
        return [r['family'] for r in json.load(f)['rows']
                if r['status'] == 'exact']


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp('coverage')
    torch.set_num_threads(1)
    result = coverage.main(['--quick', '--out-dir', str(out), '--threads', '1'])
    return out, result


def test_quick_writes_table_and_json(quick):
    out, result = quick
    data = json.loads((out / 'coverage.json').read_text())
    md = (out / 'coverage.md').read_text()
    rows = data['rows']
    assert [r['family'] for r in rows] == list(coverage.QUICK)
    assert data['rows'] == json.loads(json.dumps(result['rows'], default=str))
    statuses = set(coverage.STATUSES)
    for r in rows:
        assert r['status'].split(' (r=')[0] in statuses, r
        assert r['status'] == 'exact' or r['reason'], r
        assert r['status'] == 'does not build' or r['r2'] and r['rf'], r
        for m in (r['r2'], r['rf']):
            if m and m['status'] == 'exact':
                assert m['eval'] <= coverage.TOL and m['cbr'] <= coverage.TOL
                assert math.isfinite(m['train']) and m['ir_s'] > 0
                assert m['params_x'] > 1
        assert f'| {r["family"]} |' in md
    s = data['summary']
    assert s['registered'] == len(rows) and s['built'] <= len(rows)
    assert data['summary_line'] in md and 'exact at both ratios' in md
    assert md.count('\n|') == len(rows) + 2  # header, rule, one row each
    # the summary agrees with the rows
    assert s['exact'] == sum(r['status'] == 'exact' for r in rows)


def test_every_registered_backbone_has_an_entry():
    names = coverage.registered_backbones()
    assert len(names) >= 60 and 'ResNet' in names and 'CSPNet' not in names
    assert set(coverage.QUICK) <= set(coverage.FAMILIES)
    assert not set(names) - set(coverage.FAMILIES), 'add them to FAMILIES'


@pytest.mark.slow
@pytest.mark.parametrize('family', _exact_families())
def test_listed_exact_stays_exact(family):
    """IR at ratio 2 (self-check, eval deviation on another batch, CBR)."""
    torch.set_num_threads(1)
    model, shape = coverage.build_classifier(family)
    probe, x = (torch.randn(2, *shape, generator=torch.Generator()
                            .manual_seed(seed)) for seed in (1, 0))
    row = coverage.measure_ratio(model, 2, probe, x)
    assert row['status'] == 'exact', row
