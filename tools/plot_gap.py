"""Plot the accuracies and the teacher-student gaps of GPD (and baseline) runs.

Reads the scalar log MMEngine's ``LocalVisBackend`` writes during training
(``<work_dir>/<timestamp>/vis_data/scalars.json``, one JSON object a line) and
draws one PNG with two panels:

* top: top-1 accuracy over training of the student S (``gpd/acc_student``, or
  ``accuracy/top1`` for a plain run without the GPD keys), the dynamic teacher
  T_d (``gpd/acc_dynamic_teacher``) and the static teacher T_s
  (``gpd/acc_static_teacher``) where logged — for detection runs the bbox mAP
  (``gpd/bbox_mAP_<model>``, or ``coco/bbox_mAP`` for a plain run);
* bottom: the gaps T_d - S (``gpd/gap_dynamic``) and T_s - S
  (``gpd/gap_static``) where logged; a run without gap keys adds nothing here.

Several runs may be given (e.g. a GPD run beside a KD run); each gets its own
colour and label. Usage::

    python tools/plot_gap.py WORK_DIR_OR_JSON [WORK_DIR_OR_JSON ...]
        [--out gap.png] [--labels A B ...] [--title T]

A work dir stands for the newest ``<timestamp>/vis_data/scalars.json`` under
it that holds validation entries (``vis_data/<timestamp>.json`` is read where
``scalars.json`` is missing). The PNG is written atomically and its path
printed; a missing input or one without validation entries ends the program
with a non-zero status and a message naming the path.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

#: Accuracy series of the top panel: (log key, legend name, line style).
ACC_SERIES = (
    ('gpd/acc_student', 'S', '-'),
    ('gpd/acc_dynamic_teacher', 'T_d', '--'),
    ('gpd/acc_static_teacher', 'T_s', ':'),
)
#: Key used for S when a run logs no GPD accuracies (a plain run).
PLAIN_ACC_KEY = 'accuracy/top1'
#: Detection runs: the same series with mAP (GPDHook(metric_key='coco/bbox_mAP')).
DET_SERIES = tuple((k.replace('/acc_', '/bbox_mAP_'), n, st)
                   for k, n, st in ACC_SERIES)
PLAIN_DET_KEY = 'coco/bbox_mAP'
#: Gap series of the bottom panel: (log key, legend name, line style).
GAP_SERIES = (
    ('gpd/gap_dynamic', 'T_d − S', '--'),
    ('gpd/gap_static', 'T_s − S', ':'),
)
#: Keys that mark a log line as a validation entry worth plotting.
VAL_KEYS = frozenset([PLAIN_ACC_KEY, PLAIN_DET_KEY] + [
    k for k, _, _ in ACC_SERIES + DET_SERIES + GAP_SERIES])
#: Keys only training lines carry.
TRAIN_KEYS = frozenset(['lr', 'loss', 'iter'])


class PlotGapError(Exception):
    """An input that cannot be plotted; the message names the path."""


def _read_records(path):
    """Read a JSON-lines scalar log, skipping blank or malformed lines.

    Args:
        path (str): Path of the log.

    Returns:
        list[dict]: The parsed objects, in file order.
    """
    records = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:  # e.g. a half-written last line of a live run
                continue
            if isinstance(obj, dict):
                records.append(obj)
    return records


def _is_val(record):
    return not (TRAIN_KEYS & record.keys()) and bool(VAL_KEYS & record.keys())


def load_val_log(path):
    """Load the validation entries of a scalar log in step (epoch) order.

    A validation entry is a line without training keys (``lr``, ``loss``,
    ``iter``) that carries ``accuracy/top1`` or one of the ``gpd/*`` accuracy
    or gap keys. Entries are sorted by ``step`` (the epoch for epoch-based
    runs); where a step occurs twice the later line wins.

    Args:
        path (str): A ``scalars.json`` (or ``<timestamp>.json``) file.

    Returns:
        list[dict]: The validation entries, ordered by ``step``; each has a
        ``step`` key (its 1-based position if the log had none).

    Raises:
        PlotGapError: If ``path`` is not a file.
    """
    if not osp.isfile(path):
        raise PlotGapError(f'{path}: no such file')
    by_step = {}
    for i, record in enumerate(r for r in _read_records(path) if _is_val(r)):
        record = dict(record)
        record.setdefault('step', i + 1)
        by_step[record['step']] = record
    return [by_step[s] for s in sorted(by_step)]


def _is_epoch_based(path):
    """Whether the training lines of a log count epochs (else iterations)."""
    train = [r for r in _read_records(path) if TRAIN_KEYS & r.keys()]
    return not train or any('epoch' in r for r in train)


def _candidate_logs(work_dir):
    """Scalar logs under ``work_dir``, newest timestamp first."""
    logs = []
    for vis_dir in glob.glob(osp.join(work_dir, '*', 'vis_data')):
        stamp = osp.basename(osp.dirname(vis_dir))
        for name in ('scalars.json', f'{stamp}.json'):
            if osp.isfile(osp.join(vis_dir, name)):
                logs.append((stamp, osp.join(vis_dir, name)))
                break
    return [p for _, p in sorted(logs, reverse=True)]


def resolve_log(path):
    """Find the scalar log to plot for a work dir or a json file.

    Args:
        path (str): A run's work dir or a scalar log file.

    Returns:
        tuple[str, list[dict]]: The log file and its validation entries.

    Raises:
        PlotGapError: If ``path`` does not exist, holds no scalar log, or its
            log has no validation entries.
    """
    if not osp.exists(path):
        raise PlotGapError(f'{path}: does not exist')
    if osp.isfile(path):
        entries = load_val_log(path)
        if not entries:
            raise PlotGapError(
                f'{path}: contains no validation entries '
                f'({PLAIN_ACC_KEY} or gpd/* keys)')
        return path, entries
    logs = _candidate_logs(path)
    if not logs:
        raise PlotGapError(
            f'{path}: no <timestamp>/vis_data/scalars.json under this work dir')
    for log in logs:  # newest first; skip e.g. test-only or aborted runs
        entries = load_val_log(log)
        if entries:
            return log, entries
    raise PlotGapError(
        f'{path}: contains no validation entries ({PLAIN_ACC_KEY} or gpd/* '
        f'keys) in {", ".join(logs)}')


def default_label(path):
    """The work dir name of a run given as a work dir or as its log file."""
    path = osp.abspath(path)
    if osp.isdir(path):
        return osp.basename(path.rstrip(os.sep)) or path
    parent = osp.dirname(path)
    if osp.basename(parent) == 'vis_data':
        return osp.basename(osp.dirname(osp.dirname(parent)))
    return osp.splitext(osp.basename(path))[0]


def _series(entries, key):
    points = [(e['step'], e[key]) for e in entries
              if isinstance(e.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def plot(runs, out, title=None, xlabel='epoch'):
    """Draw the accuracy and gap panels of some runs into one PNG.

    The PNG is first saved to a temporary file beside ``out`` and then moved
    into place, so ``out`` is never left half-written.

    Args:
        runs (Sequence[tuple[str, list[dict]]]): ``(label, entries)`` pairs,
            ``entries`` as returned by :func:`load_val_log`.
        out (str): Path of the PNG to write; missing parent dirs are created.
        title (str, optional): Figure title. Defaults to None.
        xlabel (str): Label of the shared x axis. Defaults to ``'epoch'``.

    Returns:
        str: ``out``.
    """
    fig, (ax_acc, ax_gap) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 7),
        gridspec_kw=dict(height_ratios=(3, 2)))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    any_gap, detection = False, False
    for i, (label, entries) in enumerate(runs):
        color = colors[i % len(colors)]
        det = any(DET_SERIES[0][0] in e or PLAIN_DET_KEY in e for e in entries)
        detection |= det
        series, plain_key = (DET_SERIES, PLAIN_DET_KEY) if det else (
            ACC_SERIES, PLAIN_ACC_KEY)
        for key, name, style in series:
            if key == series[0][0] and not any(key in e for e in entries):
                key = plain_key  # a plain run: its only model is S
            xs, ys = _series(entries, key)
            if xs:
                ax_acc.plot(xs, ys, style, marker='o', markersize=3,
                            color=color, label=f'{label}: {name}')
        for key, name, style in GAP_SERIES:
            xs, ys = _series(entries, key)
            if xs:
                any_gap = True
                ax_gap.plot(xs, ys, style, marker='o', markersize=3,
                            color=color, label=f'{label}: {name}')
    ax_acc.set_ylabel('bbox mAP' if detection else 'top-1 accuracy (%)')
    ax_acc.set_title('mAP' if detection else 'accuracy')
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize='small', loc='best')
    ax_gap.axhline(0.0, color='grey', linewidth=0.8)
    ax_gap.set_ylabel('gap (points)')
    ax_gap.set_title('teacher − student gap')
    ax_gap.set_xlabel(xlabel)
    ax_gap.grid(alpha=0.3)
    if any_gap:
        ax_gap.legend(fontsize='small', loc='best')
    else:
        ax_gap.text(0.5, 0.5, 'no gap logged', ha='center', va='center',
                    transform=ax_gap.transAxes, color='grey')
    ax_gap.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    from mmgpd.utils.fileio import atomic_write
    try:
        atomic_write(out, lambda f: fig.savefig(f, format='png', dpi=120))
    finally:
        plt.close(fig)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Plot S/T_d/T_s accuracy and the teacher-student gaps '
        'of one or more runs from their MMEngine scalar logs.')
    parser.add_argument(
        'inputs', nargs='+', metavar='WORK_DIR_OR_JSON',
        help='a run work dir (newest <timestamp>/vis_data/scalars.json is '
        'used) or a scalars json file')
    parser.add_argument('--out', default='gap.png', help='PNG to write')
    parser.add_argument(
        '--labels', nargs='+', help='one label per input (default: the work '
        'dir names)')
    parser.add_argument('--title', help='figure title')
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.inputs):
        parser.error(f'--labels got {len(args.labels)} labels for '
                     f'{len(args.inputs)} inputs')
    return args


def main(argv=None):
    """Command line entry point.

    Args:
        argv (list[str], optional): Arguments without the program name;
            ``sys.argv[1:]`` when None.

    Returns:
        str: Path of the written PNG.

    Raises:
        SystemExit: With a message naming the path when an input is missing
            or has no validation entries (nothing is written then).
    """
    args = parse_args(argv)
    labels = args.labels or [default_label(p) for p in args.inputs]
    runs, by_epoch = [], []
    for path, label in zip(args.inputs, labels):
        try:
            log, entries = resolve_log(path)
        except (PlotGapError, OSError) as exc:
            sys.exit(f'plot_gap: error: {exc}')
        runs.append((label, entries))
        by_epoch.append(_is_epoch_based(log))
    xlabel = ('epoch' if all(by_epoch) else
              'iteration' if not any(by_epoch) else 'epoch / iteration')
    out = plot(runs, args.out, title=args.title, xlabel=xlabel)
    print(out)
    return out


if __name__ == '__main__':
    main()
