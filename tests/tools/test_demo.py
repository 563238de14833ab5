"""`make demo`'s Python entry, shortened (--quick: 1 epoch on 128 images)."""
import os.path as osp
import sys

from ..conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))


def test_demo_end_to_end(tmp_path, capsys):
    import demo
    out = demo.main(['--quick', '--work-dir', str(tmp_path)])
    printed = capsys.readouterr().out
    assert 'dynamic teacher T_d' in printed and 'gap T_d' in printed
    # The extracted student, tested by plain mmpretrain, is the student the
    # GPD run validated last (same checkpoint, same data).
    assert abs(out['extracted']['accuracy/top1'] - out['gap']['acc_student']) < 1e-6
    assert osp.isfile(out['png']) and open(out['png'], 'rb').read(8) == \
        b'\x89PNG\r\n\x1a\n'
    assert osp.isfile(tmp_path / 'gpd' / 'student_latest.pth')
    import torch
    ckpt = torch.load(tmp_path / 'gpd' / 'student_latest.pth', weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}


def test_demo_det_end_to_end(tmp_path, capsys):
    """`make demo-det`, shortened: train, extract, plain mmdet test, plot."""
    import demo_det
    out = demo_det.main(['--quick', '--work-dir', str(tmp_path)])
    printed = capsys.readouterr().out
    assert 'dynamic teacher T_d' in printed and 'plain mmdet test' in printed
    assert out['extracted']['coco/bbox_mAP'] == \
        __import__('pytest').approx(out['gap']['bbox_mAP_student'], abs=1e-6)
    assert osp.isfile(tmp_path / 'shapes_quick' / 'meta.json')  # not in data/
    assert open(out['png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'mmgpd' not in (tmp_path / 'student' / 'student.py').read_text()


def test_demo_det_faster_rcnn_quick(tmp_path, capsys):
    """`make demo-det DEMO_ARGS="--detector faster-rcnn"`, shortened: the
    two-stage path (T_d replays S's proposals) trains, extracts and tests in
    mmdet's loop with the run's student mAP."""
    import demo_det
    import pytest
    out = demo_det.main(['--detector', 'faster-rcnn', '--quick',
                         '--work-dir', str(tmp_path)])
    printed = capsys.readouterr().out
    assert 'Faster R-CNN R18-FPN' in printed and 'plain mmdet test' in printed
    assert out['extracted']['coco/bbox_mAP'] == pytest.approx(
        out['gap']['bbox_mAP_student'], abs=1e-6)
    assert out['segm'] == {}  # boxes only
    text = (tmp_path / 'student' / 'student.py').read_text()
    assert 'mmgpd' not in text and "type='FasterRCNN'" in text
    with pytest.raises(SystemExit):
        demo_det.parse_args(['--detector', 'yolo'])
