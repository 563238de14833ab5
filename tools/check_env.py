"""Check that the installed OpenMMLab stack imports and runs on this machine.

Prints the version matrix and runs ``mmcv.ops.nms`` on CPU; exits non-zero with
the failing component named if anything is missing.
"""
import importlib
import sys


def main():
    versions = {}
    for name in ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmpretrain',
                 'mmdet', 'numpy', 'sklearn', 'setuptools'):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception as exc:  # noqa: BLE001 - report any import failure
            sys.exit(f'check_env: cannot import {name}: {exc!r}')
    for mod in ('mmcv.ops', 'mmpretrain.models', 'mmdet.models', 'mmdet.apis'):
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001
            sys.exit(f'check_env: cannot import {mod}: {exc!r}')
    import torch
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    if keep.tolist() != [0, 2]:
        sys.exit(f'check_env: mmcv.ops.nms gave {keep.tolist()}, expected [0, 2]')
    for name, ver in versions.items():
        print(f'{name:12s} {ver}')
    print('check_env: OK (mmcv.ops.nms runs on CPU)')


if __name__ == '__main__':
    main()
