"""Train a model (GPD or plain mmpretrain) from a config, mmpretrain's CLI.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--amp-dtype {float16,bfloat16}] [--auto-scale-lr]
        [--cfg-options k=v ...] [--launcher pytorch]

``--amp`` uses ``mmgpd.AmpOptimWrapper`` (MMEngine's ``AmpOptimWrapper`` on
GPUs, which it is there; CPU autocast in bfloat16 without one) with a dynamic
loss scale; ``--amp-dtype`` sets ``optim_wrapper.dtype`` (default: float16 on
CUDA, bfloat16 on the CPU, the only dtype CPU autocast runs).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmgpd  # noqa: E402,F401  (compat layer before any config is parsed)
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmgpd.utils import cli  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest checkpoint '
        'of the work dir if no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'],
                        help='autocast dtype with --amp (optim_wrapper.dtype); '
                        'default float16 on CUDA, bfloat16 on the CPU')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not validate during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size')
    cli.add_runner_args(parser)
    return cli.parse(parser, argv)


def merge_args(cfg, args):
    """Apply the command line to the config (mmpretrain's conventions)."""
    cli.apply_runner_args(cfg, args, args.config)
    if args.amp_dtype is not None and not args.amp:
        raise SystemExit('train.py: --amp-dtype needs --amp')
    if args.amp:
        cfg.optim_wrapper.type = 'mmgpd.AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if args.amp_dtype is not None:
            cfg.optim_wrapper.dtype = args.amp_dtype
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    return cfg


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'train.py: config file {args.config} does not exist')
    cfg = merge_args(Config.fromfile(args.config), args)
    _tune_cpu_allocator()
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _tune_cpu_allocator():
    """Training on the CPU: keep freed activations in the heap instead of
    unmapping and page-faulting them in every step
    (:mod:`mmgpd.utils.allocator`; ``MMGPD_MALLOC_TUNING=0`` turns it off)."""
    import torch
    if not torch.cuda.is_available():
        from mmgpd.utils.allocator import tune_cpu_allocator
        tune_cpu_allocator()


if __name__ == '__main__':
    main()
