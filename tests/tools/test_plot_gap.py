"""Tests for tools/plot_gap.py (pure log reading and plotting; fast)."""
import importlib.util
import json
import os
import os.path as osp

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def plot_gap():
    spec = importlib.util.spec_from_file_location(
        'plot_gap', osp.join(REPO_ROOT, 'tools', 'plot_gap.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_line(epoch, it):
    return dict(lr=0.1, data_time=0.01, loss=2.0 - 0.1 * epoch, time=0.2,
                epoch=epoch, iter=it, step=it)


def write_log(work_dir, lines, stamp='20240101_000000'):
    vis = osp.join(str(work_dir), stamp, 'vis_data')
    os.makedirs(vis, exist_ok=True)
    path = osp.join(vis, 'scalars.json')
    with open(path, 'w') as f:
        for line in lines:
            f.write(json.dumps(line) + '\n')
    return path


def gpd_lines(epochs=5):
    lines = []
    for ep in range(1, epochs + 1):
        lines += [_train_line(ep, 10 * ep - 5), _train_line(ep, 10 * ep)]
        s, td, ts = 50 + 5 * ep, 60 + 5 * ep, 80.0
        lines.append({'accuracy/top1': s, 'gpd/acc_student': s,
                      'gpd/acc_dynamic_teacher': td,
                      'gpd/acc_static_teacher': ts,
                      'gpd/gap_dynamic': td - s, 'gpd/gap_static': ts - s,
                      'data_time': 0.01, 'time': 0.1, 'step': ep})
    return lines


def plain_lines(epochs=5):
    lines = []
    for ep in range(1, epochs + 1):
        lines.append(_train_line(ep, 10 * ep))
        lines.append({'accuracy/top1': 40 + 6 * ep, 'data_time': 0.01,
                      'time': 0.1, 'step': ep})
    return lines


def assert_png(path):
    assert osp.isfile(path)
    with open(path, 'rb') as f:
        data = f.read()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


def leftovers(directory):
    return [n for n in os.listdir(directory) if n.endswith(('.png', '.tmp'))]


def test_plot_gpd_beside_plain_run(plot_gap, tmp_path, capsys):
    gpd_dir, kd_dir = tmp_path / 'gpd_run', tmp_path / 'kd_run'
    write_log(gpd_dir, gpd_lines())
    # an older timestamp that must be ignored in favour of the newest one
    write_log(kd_dir, plain_lines(2), stamp='20230101_000000')
    write_log(kd_dir, plain_lines())
    out = tmp_path / 'figs' / 'gap.png'
    result = plot_gap.main([str(gpd_dir), str(kd_dir), '--out', str(out),
                            '--title', 'GPD vs KD'])
    assert result == str(out)
    assert_png(out)
    assert str(out) in capsys.readouterr().out
    assert leftovers(out.parent) == ['gap.png']


def test_json_file_and_labels(plot_gap, tmp_path):
    log = write_log(tmp_path / 'run', gpd_lines(3))
    out = tmp_path / 'one.png'
    plot_gap.main([log, '--out', str(out), '--labels', 'GPD'])
    assert_png(out)
    assert plot_gap.default_label(log) == 'run'
    assert plot_gap.default_label(str(tmp_path / 'run')) == 'run'
    with pytest.raises(SystemExit):
        plot_gap.main([log, '--out', str(out), '--labels', 'A', 'B'])


def test_load_val_log_epoch_order(plot_gap, tmp_path):
    lines = gpd_lines()
    train = [ln for ln in lines if 'lr' in ln]
    val = [ln for ln in lines if 'lr' not in ln]
    shuffled = train[:3] + [val[3], val[0], val[4], val[2], val[1]] + train[3:]
    log = write_log(tmp_path / 'run', shuffled)
    with open(log, 'a') as f:
        f.write('{"accuracy/top1": 9')  # a half-written last line
    entries = plot_gap.load_val_log(log)
    assert [e['step'] for e in entries] == [1, 2, 3, 4, 5]
    assert entries == val
    assert all('lr' not in e and 'loss' not in e for e in entries)

    plain = plot_gap.load_val_log(write_log(tmp_path / 'plain', plain_lines()))
    assert [e['accuracy/top1'] for e in plain] == [46, 52, 58, 64, 70]


def test_missing_path_exits(plot_gap, tmp_path):
    missing = str(tmp_path / 'no_such_run')
    out = tmp_path / 'gap.png'
    with pytest.raises(SystemExit) as excinfo:
        plot_gap.main([missing, '--out', str(out)])
    assert excinfo.value.code not in (0, None)
    assert missing in str(excinfo.value.code)
    assert leftovers(tmp_path) == []


def test_log_without_val_entries_exits(plot_gap, tmp_path):
    good = tmp_path / 'good'
    write_log(good, gpd_lines())
    bad = tmp_path / 'train_only'
    log = write_log(bad, [_train_line(1, 10), _train_line(1, 20)])
    out = tmp_path / 'gap.png'
    for arg in (str(bad), log):
        with pytest.raises(SystemExit) as excinfo:
            plot_gap.main([str(good), arg, '--out', str(out)])
        assert excinfo.value.code not in (0, None)
        assert arg in str(excinfo.value.code)
        assert 'no validation entries' in str(excinfo.value.code)
    empty_dir = tmp_path / 'empty_run'
    empty_dir.mkdir()
    with pytest.raises(SystemExit) as excinfo:
        plot_gap.main([str(empty_dir), '--out', str(out)])
    assert str(empty_dir) in str(excinfo.value.code)
    assert leftovers(tmp_path) == []


def test_failed_save_leaves_no_partial_png(plot_gap, tmp_path, monkeypatch):
    write_log(tmp_path / 'run', gpd_lines())
    out = tmp_path / 'gap.png'

    def broken_savefig(self, fname, **kwargs):
        fname.write(PNG_SIGNATURE)  # partial data, then a failure
        raise OSError('disk full')

    monkeypatch.setattr(plot_gap.plt.Figure, 'savefig', broken_savefig)
    with pytest.raises(OSError, match='disk full'):
        plot_gap.main([str(tmp_path / 'run'), '--out', str(out)])
    assert leftovers(tmp_path) == []
