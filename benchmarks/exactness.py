"""Exactness of IR and CBR over the supported model families (fp32).

For every model of the zoo (:mod:`mmgpd.testing`), width ratio (2, 3 and a
fractional one), with and without branches and with symmetry-breaking noise 0
and 1e-6 (``zero_sum``, GPD's default), one row:

* ``ir_eval``: IR deviation at init, ``max|T_d(x) − S(x)| / max|S(x)|`` of the
  raw outputs (``mode='tensor'``: logits, detector head maps) in eval mode,
  measured with the core's own :func:`~mmgpd.reparam.max_relative_deviation`
  on a batch other than the one IR traced;
* ``ir_train``: the same in train mode (batch statistics, same RNG draws), next
  to ``s_fp32_train``: how far the fp32 student is from its own fp64 output in
  train mode (its rounding floor, which untrained deep nets amplify);
* ``cbr_out``: ``extract_student(T_d)`` vs S, outputs, eval mode;
* ``cbr_weight``: ``max|W_extracted − W_S| / max|W_S|`` over every float
  tensor of the state dict (the worst tensor).

With noise 1e-6 ``zero_sum`` noise cancels over the input replicas, so T_d
still computes S exactly, but CBR reads the first replica block, which carries
the noise: ``cbr_*`` show the noise, not a rule error.

Usage::

    python -m benchmarks.exactness [--quick] [--out-json PATH] [--device cpu|cuda]
        [--models resnet18,deit_tiny] [--no-train]
"""
import copy
import gc
import time

import torch

from benchmarks.common import (base_parser, finish, fmt, machine_info,
                               markdown_table, num_threads, quiet_logs)

#: (model, input size): 64² CNNs and DeiTs, 32² CIFAR, 128² detectors
MODELS = (('resnet18', 64), ('resnet50', 64), ('resnet18_cifar', 32),
          ('mobilenet_v2', 64), ('deit_tiny', 64), ('deit_small', 64),
          ('retinanet_r18_fpn', 128), ('fcos_r50_fpn_gn', 128))
QUICK_MODELS = (('resnet18_cifar', 32), )
NOISES = (0.0, 1e-6)
#: fractional ratio of the CNNs / detectors (transformers: (h + 1) / h)
FRACTIONAL = {'retinanet_r18_fpn': 2.5, 'fcos_r50_fpn_gn': 2.5}

COLUMNS = [('model', 'model', ''), ('ratio_str', 'ratio', ''),
           ('branches', 'branches', ''), ('noise', 'noise', 'g'),
           ('ir_eval', 'IR dev. (eval)', '.1e'),
           ('ir_train', 'IR dev. (train)', '.1e'),
           ('s_fp32_train', 'S fp32 floor (train)', '.1e'),
           ('cbr_out', 'CBR out. dev.', '.1e'),
           ('cbr_weight', 'CBR weight dev.', '.1e'),
           ('ir_seconds', 'IR s', '.2f'), ('error', 'error', '')]


def ratio_str(ratio: float) -> str:
    """2 → '2', 1.5 → '1.5', 4/3 → '4/3'."""
    if float(ratio).is_integer():
        return str(int(ratio))
    for den in range(2, 13):
        num = ratio * den
        if abs(num - round(num)) < 1e-9:
            return f'{ratio:g}' if den in (2, 4, 5, 10) else \
                f'{int(round(num))}/{den}'
    return f'{ratio:g}'


def run(model, x, train: bool, seed: int = 0):
    """Raw outputs (no grad) in train / eval mode, the same RNG draws."""
    from mmgpd.reparam import default_forward
    model.train(train)
    torch.manual_seed(seed)
    with torch.no_grad():
        return default_forward(model, x)


def weight_deviation(extracted, student) -> float:
    """Worst ``max|a − b| / max|b|`` over the float tensors of two state dicts."""
    ref, got = student.state_dict(), extracted.state_dict()
    worst = 0.0
    for key, b in ref.items():
        if not b.is_floating_point():
            continue
        a = got[key].float()
        b = b.float()
        scale = b.abs().max().item()
        diff = (a - b).abs().max().item()
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def measure(name: str, size: int, ratio: float, branches: bool, noise: float,
            device: torch.device, train: bool = True) -> dict:
    """One row of the table (errors are caught into ``row['error']``)."""
    from mmgpd.reparam import (extract_student, inverse_reparameterize,
                               max_relative_deviation)
    from mmgpd.testing import build, has_branch_convs, input_for
    row = dict(model=name, size=size, ratio=float(ratio),
               ratio_str=ratio_str(ratio),
               branches=('yes' if branches else 'no')
               if has_branch_convs(name) else 'n/a',
               noise=noise, noise_mode='zero_sum', ir_eval=None, ir_train=None,
               s_fp32_train=None, cbr_out=None, cbr_weight=None,
               ir_seconds=None, error=None)
    try:
        student = build(name).to(device)
        probe = input_for(name, size, seed=1).to(device)  # traced by IR
        x = input_for(name, size, seed=0).to(device)  # measured on
        t0 = time.perf_counter()
        teacher = inverse_reparameterize(
            student, ratio, branches=True if branches else None, noise=noise,
            noise_mode='zero_sum', example_inputs=probe, verify=False,
            generator=torch.Generator().manual_seed(0))
        row['ir_seconds'] = time.perf_counter() - t0
        s_eval = run(student, x, False)
        row['ir_eval'] = max_relative_deviation(run(teacher, x, False), s_eval)
        extracted = extract_student(teacher)
        row['cbr_out'] = max_relative_deviation(run(extracted, x, False), s_eval)
        row['cbr_weight'] = weight_deviation(extracted, student)
        del extracted
        if train:  # last: batch statistics move the running buffers
            s64 = copy.deepcopy(student).double()
            s_train = run(student, x, True)
            row['s_fp32_train'] = max_relative_deviation(
                s_train, run(s64, x.double(), True))
            del s64
            row['ir_train'] = max_relative_deviation(run(teacher, x, True),
                                                     s_train)
    except Exception as exc:
        row['error'] = f'{type(exc).__name__}: {exc}'.splitlines()[0][:200]
    finally:
        gc.collect()
    return row


def plan(quick: bool, models=None):
    """``(name, size, ratio, branches)`` of every row before the noise split."""
    from mmgpd.testing import has_branch_convs, ratios_for
    chosen = QUICK_MODELS if quick else MODELS
    if models:
        sizes = dict(MODELS)
        chosen = [(m, sizes.get(m, 64)) for m in models]
    out = []
    for name, size in chosen:
        ratios = [2] if quick else ratios_for(name, FRACTIONAL.get(name, 1.5))
        for ratio in ratios:
            for branches in ((False, True) if has_branch_convs(name) else
                             (False, )):
                out.append((name, size, ratio, branches))
    return out


def main(argv=None) -> dict:
    """Run the table; returns ``dict(rows, table, machine, settings)``."""
    parser = base_parser(__doc__.split('\n')[0])
    parser.add_argument('--models', help='comma-separated zoo names (default: '
                        'all supported families; --quick: resnet18_cifar)')
    parser.add_argument('--no-train', action='store_true',
                        help='skip the train-mode columns')
    args = parser.parse_args(argv)
    quiet_logs()
    with num_threads(args.threads):
        return _run(args)


def _run(args) -> dict:
    device = torch.device(args.device)
    rows = []
    t0 = time.perf_counter()
    models = args.models.split(',') if args.models else None
    for name, size, ratio, branches in plan(args.quick, models):
        for noise in NOISES:
            row = measure(name, size, ratio, branches, noise, device,
                          train=not args.no_train)
            rows.append(row)
            print(f"{name:18s} r={row['ratio_str']:4s} branches="
                  f"{row['branches']:3s} noise={noise:g}: IR {row['ir_eval']} "
                  f"train {row['ir_train']} CBR {row['cbr_out']} / "
                  f"{row['cbr_weight']}" +
                  (f" ERROR {row['error']}" if row['error'] else ''),
                  flush=True)
    finite = [r for r in rows if r['error'] is None]
    worst = {key: max((r[key] for r in finite if r[key] is not None
                       and r['noise'] == 0), default=None)
             for key in ('ir_eval', 'ir_train', 'cbr_out', 'cbr_weight')}
    worst['ir_eval_noisy'] = max((r['ir_eval'] for r in finite
                                  if r['noise'] > 0), default=None)
    table = markdown_table(rows, COLUMNS)
    w = {k: fmt(v, '.1e') for k, v in worst.items()}
    summary = (f'\nWorst over noise-0 rows: IR eval {w["ir_eval"]}, IR train '
               f'{w["ir_train"]}, CBR outputs {w["cbr_out"]}, CBR weights '
               f'{w["cbr_weight"]}; IR eval with 1e-6 zero_sum noise '
               f'{w["ir_eval_noisy"]}. {len(rows) - len(finite)} row(s) failed.')
    result = dict(
        benchmark='exactness', rows=rows, table=table + '\n' + summary,
        worst=worst, machine=machine_info(args.device),
        settings=dict(quick=args.quick, dtype='float32', batch=2,
                      noises=list(NOISES), noise_mode='zero_sum',
                      metric='max|a-b|/max|b| (mmgpd.reparam.'
                      'max_relative_deviation)'),
        seconds=time.perf_counter() - t0)
    return finish(result, args.out_json)


if __name__ == '__main__':
    main()
