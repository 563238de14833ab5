"""Helpers shared by the benchmark modules: arguments, machine, output."""
import argparse
import contextlib
import datetime
import math
import os
import platform

__all__ = ['base_parser', 'machine_info', 'markdown_table', 'fmt', 'finish',
           'quiet_logs', 'num_threads']


def quiet_logs():
    """Import mmgpd (its compat layer first) and silence MMEngine's
    per-parameter init chatter."""
    import logging

    from mmengine.logging import MMLogger

    import mmgpd  # noqa: F401
    MMLogger.get_current_instance().setLevel(logging.WARNING)


def base_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: ``--quick``, ``--out-json``,
    ``--device``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--quick', action='store_true',
                        help='a small, fast subset (smoke test)')
    parser.add_argument('--out-json', metavar='PATH',
                        help='also write the result (rows + table) as JSON')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--threads', type=int,
                        help='torch.set_num_threads for the run (default: as '
                        'given; restored afterwards)')
    return parser


@contextlib.contextmanager
def num_threads(n=None):
    """``torch.set_num_threads(n)`` inside the block (nothing when None)."""
    import torch
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = 'cpu') -> dict:
    """CPU model, core / thread counts, torch version, GPU (if used), date."""
    import torch
    info = dict(
        cpu=_cpu_model(), cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(), torch=torch.__version__,
        python=platform.python_version(), device=device,
        date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'))
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
        info['cuda'] = torch.version.cuda
    return info


def fmt(value, spec: str = '.2e') -> str:
    """A table cell: numbers with ``spec``, None as '—', strings as they are."""
    if value is None:
        return '—'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return format(value, spec)
    return str(value)


def markdown_table(rows, columns) -> str:
    """``columns``: ``(key, header, spec)`` triples; ``spec`` formats numbers."""
    lines = ['| ' + ' | '.join(h for _, h, _ in columns) + ' |',
             '|' + '|'.join('---' for _ in columns) + '|']
    for row in rows:
        lines.append('| ' + ' | '.join(fmt(row.get(k), s) for k, _, s in columns)
                     + ' |')
    return '\n'.join(lines)


def finish(result: dict, out_json=None) -> dict:
    """Print the markdown table and write ``result`` as JSON if asked."""
    print(result['table'])
    if out_json:
        from mmgpd.utils.fileio import atomic_write_json
        atomic_write_json(out_json, result)
    return result
