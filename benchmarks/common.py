"""Helpers shared by the benchmark modules: arguments, machine, output; the
training-run machinery of the digits benchmarks (``accuracy``,
``capacity_gap``): one run through ``tools/train.py`` in a worker process of
one thread, the scheduler, mean ± std and the 2-standard-error verdict."""
import argparse
import contextlib
import datetime
import math
import os
import platform

__all__ = ['base_parser', 'machine_info', 'markdown_table', 'fmt', 'finish',
           'quiet_logs', 'num_threads', 'AGREE_TOL', 'run_training',
           'execute', 'mean_std', 'contrast', 'verdict']


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


# --------------------------------------------------------------------------- #
# Training runs on digits (benchmarks.accuracy, benchmarks.capacity_gap)
# --------------------------------------------------------------------------- #
#: Two accuracies "agree" when they differ by less than this (points): far
#: below one test image (100 / 450 = 0.22), far above float32 rounding of the
#: metrics (mmpretrain's Accuracy is float32, GPDHook's float64).
AGREE_TOL = 1e-3

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TOOLS = os.path.join(_ROOT, 'tools')


def _scalar(hub, key):
    try:
        return float(hub.get_scalar(f'val/{key}').current())
    except (KeyError, AttributeError):
        return None


def _step_ms(hub):
    """Median wall time of a training iteration (ms; data loading included),
    from MMEngine's IterTimerHook history."""
    try:
        times = hub.get_scalar('train/time').data[0]
    except (KeyError, AttributeError):
        return None
    if len(times) == 0:
        return None
    import statistics
    return 1000.0 * float(statistics.median(times))


def _redirect_output(path):
    """Send this process's stdout / stderr (fds 1, 2) to ``path``."""
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return saved


def _restore_output(saved):
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])


def run_training(spec: dict) -> dict:
    """Train one config with ``tools/train.py``; test its extracted student.

    ``spec`` keys: ``key``, ``config``, ``work_dir``, ``options`` (the
    ``--cfg-options`` of training), ``threads``, ``test_options`` (None: the
    run is a plain model whose last validation is its accuracy; else the
    ``--cfg-options`` of a plain mmpretrain test of GPDHook's
    ``student_latest.pth``) and ``test_config`` (the plain student config of
    that test).

    Returns the run's accuracies (%: ``accuracy_top1`` of its last validation,
    GPDHook's ``gpd/*`` fields, ``extracted_acc``), its log dir, timings
    (``train_s`` wall, ``cpu_s`` process CPU, ``step_ms`` median iteration)
    and ``iters``. Output goes to ``<work_dir>/run.log``.
    """
    import sys
    import time
    import uuid

    import torch
    torch.set_num_threads(spec['threads'])
    os.makedirs(spec['work_dir'], exist_ok=True)
    log = os.path.join(spec['work_dir'], 'run.log')
    saved = _redirect_output(log)
    try:
        if _TOOLS not in sys.path:
            sys.path.insert(0, _TOOLS)
        import test as test_tool  # tools/test.py
        import train as train_tool  # tools/train.py
        name = f'bench-{spec["key"].replace("/", "-")}-{uuid.uuid4().hex[:8]}'
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        runner = train_tool.main([
            spec['config'], '--work-dir', spec['work_dir'], '--cfg-options',
            *spec['options'], f'experiment_name={name}'])
        train_s = time.perf_counter() - t0
        hub = runner.message_hub
        out = dict(key=spec['key'], log_dir=runner.log_dir, train_s=train_s,
                   train_cpu_s=time.process_time() - cpu0,
                   iters=int(runner.iter), step_ms=_step_ms(hub),
                   accuracy_top1=_scalar(hub, 'accuracy/top1'))
        for k in ('acc_student', 'acc_dynamic_teacher', 'acc_static_teacher',
                  'gap_dynamic', 'gap_static'):
            out[k] = _scalar(hub, f'gpd/{k}')
        del runner
        out['extracted_acc'] = out['accuracy_top1']
        out['extracted_source'] = 'last validation of the plain model'
        if spec['test_options'] is not None:
            ckpt = os.path.join(spec['work_dir'], 'student_latest.pth')
            t1 = time.perf_counter()
            metrics = test_tool.main([
                spec['test_config'], ckpt, '--work-dir',
                os.path.join(spec['work_dir'], 'extracted_test'),
                '--cfg-options', *spec['test_options'],
                f'experiment_name={name}-test'])
            out['test_s'] = time.perf_counter() - t1
            out['extracted_acc'] = float(metrics['accuracy/top1'])
            out['extracted_source'] = (
                'student_latest.pth (GPDHook), plain mmpretrain test of '
                + os.path.relpath(spec['test_config'], _ROOT))
            out['extracted_checkpoint'] = ckpt
        out['cpu_s'] = time.process_time() - cpu0
        from mmgpd.utils.fileio import atomic_write_json
        atomic_write_json(os.path.join(spec['work_dir'], RESULT_FILE),
                          dict(out, fingerprint=fingerprint(spec)))
        return out
    finally:
        _restore_output(saved)


#: a finished run's result (with its spec's fingerprint), in its work dir
RESULT_FILE = 'result.json'


def fingerprint(spec: dict) -> str:
    """What decides a run's result: its config (path and text), training and
    test options, test config. Work dir and threads are left out."""
    import hashlib
    import json
    h = hashlib.sha256()
    for path in (spec['config'], spec.get('test_config')):
        h.update(str(path).encode())
        if path and os.path.isfile(path):
            with open(path, 'rb') as f:
                h.update(f.read())
    h.update(json.dumps([spec.get('key'), list(spec['options']),
                         spec.get('test_options')], default=str).encode())
    return h.hexdigest()


def finished_result(spec: dict):
    """The saved result of ``spec``'s earlier run when its fingerprint
    matches (``--resume``), else None."""
    import json
    path = os.path.join(spec['work_dir'], RESULT_FILE)
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if saved.pop('fingerprint', None) != fingerprint(spec):
        return None
    return saved


def _init_worker(threads):
    os.environ['OMP_NUM_THREADS'] = str(threads)
    os.environ['MKL_NUM_THREADS'] = str(threads)
    import torch
    torch.set_num_threads(threads)
    import mmgpd  # noqa: F401  (compat layer, once per worker)


def execute(specs, jobs: int, threads: int, log=print, cost=None,
            tag: str = 'bench', resume: bool = False) -> dict:
    """Run every spec in ``jobs`` spawned worker processes, teachers first.

    A spec with ``depends`` (the key of another spec, e.g. its static
    teacher's training) starts once that run has finished. Specs whose
    ``method`` is ``'teacher'`` go first, then the costliest first by
    ``cost(spec)`` (default ``spec.get('cost', 0)``), so that few slots idle
    at the end. Each worker is a spawned process with ``threads`` torch
    threads (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set before it starts).

    With ``resume``, a spec whose work dir holds the result of a finished run
    with the same :func:`fingerprint` (config text, options) is not run again:
    its saved result is used (an interrupted sweep continues where it
    stopped; code changes are not in the fingerprint, so start from a clean
    work dir after them).

    Returns ``{key: result}`` (:func:`run_training`'s, plus ``wall_s``); failed
    runs raise ``RuntimeError`` naming each and its log, after the running
    ones finished.
    """
    import concurrent.futures as cf
    import multiprocessing as mp
    import time

    cost = cost or (lambda s: s.get('cost', 0.0))
    results, failures = {}, []
    if resume:
        for spec in specs:
            saved = finished_result(spec)
            if saved is not None:
                results[spec['key']] = saved
        if results:
            log(f'[{tag}] --resume: {len(results)} of {len(specs)} runs '
                'finished earlier, reused')
    pending = sorted((s for s in specs if s['key'] not in results),
                     key=lambda s: (s['method'] != 'teacher', -cost(s)))
    total = len(specs)
    ctx = mp.get_context('spawn')
    env_threads = {k: os.environ.get(k) for k in ('OMP_NUM_THREADS',
                                                  'MKL_NUM_THREADS')}
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = str(threads)
    t_start = time.perf_counter()
    try:
        pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                      initializer=_init_worker,
                                      initargs=(threads, ))
        try:
            running = {}
            while pending or running:
                # Start what is ready, in order (teachers come first), keeping
                # at most ``jobs`` runs queued so that dependents start early.
                for spec in list(pending):
                    if len(running) >= jobs:
                        break
                    dep = spec.get('depends')
                    if dep is not None and dep not in results:
                        if any(f[0] == dep for f in failures):
                            pending.remove(spec)
                            failures.append((spec['key'], 'teacher failed'))
                        continue
                    pending.remove(spec)
                    running[pool.submit(run_training, spec)] = (
                        spec, time.perf_counter())
                if not running:
                    break
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    spec, t0 = running.pop(fut)
                    try:
                        res = fut.result()
                    except Exception as exc:  # noqa: BLE001 - report, go on
                        failures.append((spec['key'], f'{type(exc).__name__}: '
                                         f'{exc} (log: {spec["work_dir"]}/run.log)'))
                        log(f'[{tag}] FAILED {spec["key"]}: {exc}')
                        continue
                    res['wall_s'] = time.perf_counter() - t0
                    results[spec['key']] = res
                    acc = res['extracted_acc']
                    log(f'[{tag}] {len(results)}/{total} {spec["key"]}: '
                        f'{acc:.2f} % ({res["wall_s"]:.0f} s; '
                        f'{time.perf_counter() - t_start:.0f} s elapsed)')
        except BaseException:
            # Ctrl-C or a scheduler error: do not wait for the running runs.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    finally:
        for k, v in env_threads.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if pending and not failures:
        failures.append(('scheduler', f'{len(pending)} runs never started'))
    if failures:
        raise RuntimeError(f'{tag} benchmark: failed runs: ' + '; '.join(
            f'{k}: {why}' for k, why in failures))
    return results


# --------------------------------------------------------------------------- #
# Statistics: mean ± std over seeds, the 2-standard-error verdict
# --------------------------------------------------------------------------- #
def mean_std(values):
    """Mean and sample standard deviation (0 for one value)."""
    import statistics
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def contrast(groups):
    """A linear contrast of group means and its verdict.

    ``groups``: ``[(coefficient, values), ...]``. Δ = Σ c_i · mean_i; its
    standard error (groups independent, Welch) se = sqrt(Σ c_i² s_i² / n_i)
    with s_i the sample std. "better" / "worse" only when |Δ| > 2 se, else
    "no clear difference"; a group with fewer than two values gives
    "one seed, no verdict" (no spread to compare with).

    Returns ``(delta, se or None, word)``.
    """
    delta, var, single = 0.0, 0.0, False
    for c, values in groups:
        m, s = mean_std(values)
        delta += c * m
        var += c * c * s * s / len(values)
        single |= len(values) < 2
    if single:
        return delta, None, 'one seed, no verdict'
    se = math.sqrt(var)
    if se == 0.0:
        word = 'identical' if delta == 0 else ('better' if delta > 0 else 'worse')
    elif delta > 2 * se:
        word = 'better'
    elif delta < -2 * se:
        word = 'worse'
    else:
        word = 'no clear difference'
    return delta, se, word


def verdict(with_method, baseline):
    """Compare two lists of per-seed accuracies.

    Δ = difference of the means; se = its standard error (Welch). "better" /
    "worse" only when |Δ| > 2 se, else "no clear difference". With one seed
    there is no spread: "one seed, no verdict".
    """
    return contrast([(1.0, with_method), (-1.0, baseline)])
