"""`make bench`: every benchmark, one report.

Runs, in this order, each in this process with its own ``main(argv)``:

1. :mod:`benchmarks.exactness` — IR / CBR deviations over the model zoo;
2. :mod:`benchmarks.coverage` — IR over every mmpretrain backbone: exact or
   refused (also writes ``<out-dir>/coverage.md``);
3. :mod:`benchmarks.ir_time` — IR seconds with and without noise (ResNet-18
   r=2, ResNet-50 r=2 + branches);
4. :mod:`benchmarks.cost` — time and memory per training step;
5. :mod:`benchmarks.accuracy` — GPD vs student / KD / DKD on digits (full and
   10 % training labels, 8 seeds) and the gap plots;
6. :mod:`benchmarks.capacity_gap` — does the gap matter? A narrow student's
   accuracy against the static teacher's size (four teachers) for every
   method alone and + GPD, GPD* at four ratios, 3-5 seeds per cell, both
   regimes; the table, the plot, the gap curves and the papers' claims judged
   from the data (also ``capacity_gap.md`` / ``capacity_gap_claims.md``);

then writes ``<out-dir>/bench.md`` and ``<out-dir>/bench.json`` (atomically),
with the date, the machine (CPU model, cores, torch version) and the wall time
of each part, prints the tables and, for a full run into the default
``results/``, rewrites README.md's results block (between
``<!-- bench:begin -->`` and ``<!-- bench:end -->``) from ``bench.md``.

    python -m benchmarks.run_all [--quick] [--out-dir results] [--device cpu]
        [--jobs 2] [--parts exactness coverage ir_time cost accuracy
        capacity_gap]
        [--no-readme]
    python -m benchmarks.run_all --readme-only     # README block from results/bench.md
    python -m benchmarks.run_all --update --parts ir_time   # rerun one part

``--update`` reruns only ``--parts`` and keeps every other part of the
existing ``<out-dir>/bench.json`` (its tables, wall time, date and commit):
each part records when and at which commit it ran, and ``bench.md`` shows it.
The README block is rewritten when the merged report holds every part.

``--quick`` (smoke test, a few minutes) writes into a fresh temporary directory
unless ``--out-dir`` is given, never into ``results/``, and never touches the
README.
"""
import argparse
import gc
import importlib
import json
import os
import os.path as osp
import platform
import re
import sys
import tempfile
import time
import traceback

from mmgpd.utils.allocator import release_free_heap
from mmgpd.utils.fileio import atomic_write_text

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS_DIR = osp.join(ROOT, 'results')
README = osp.join(ROOT, 'README.md')
PARTS = ('exactness', 'coverage', 'ir_time', 'cost', 'accuracy',
         'capacity_gap')
BEGIN, END = '<!-- bench:begin -->', '<!-- bench:end -->'

TITLES = dict(
    exactness='Exactness of IR and CBR (fp32)',
    coverage='IR coverage of the mmpretrain zoo (one small arch per backbone)',
    ir_time='IR time, with and without symmetry-breaking noise',
    cost='Cost per training step',
    accuracy='Accuracy on real data: scikit-learn digits',
    capacity_gap='Does the gap matter? Student accuracy against teacher size '
    '(digits)')

#: The paper's numbers (ImageNet-1k top-1 %, Guo et al., ICLR 2025, Tables 1-3;
#: ../shared/reference): (setting, baseline name, baseline, GPD name, GPD).
PAPER = (
    ('ResNet-18 from scratch, no static teacher', 'ResNet-18', 70.07,
     'GPD*', 71.87),
    ('ResNet-34 → ResNet-18', 'DKD', 71.70, 'DKD + GPD', 72.71),
    ('ResNet-34 → ResNet-18', 'ReviewKD', 71.61, 'ReviewKD + GPD', 72.50),
    ('ResNet-50 → MobileNet (v1)', 'DKD', 72.05, 'DKD + GPD', 73.63),
    ('ResNet-18 fine-tuning (pretrained 69.75)', 'longer fine-tuning', 70.23,
     'GPD*', 71.12),
)


# --------------------------------------------------------------------------- #
# Machine, files
# --------------------------------------------------------------------------- #
def machine() -> dict:
    """Date, CPU model, cores, torch version (and the GPU if one is used)."""
    from benchmarks.common import machine_info
    return machine_info('cpu')


def previous_parts(out_dir: str, rerun) -> dict:
    """The parts of ``<out_dir>/bench.json`` that ``rerun`` does not name."""
    path = osp.join(out_dir, 'bench.json')
    if not osp.exists(path):
        raise SystemExit(f'run_all --update: no {path} to update')
    with open(path, encoding='utf-8') as f:
        old = json.load(f).get('parts', {})
    return {name: p for name, p in old.items()
            if name in PARTS and name not in rerun}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


# --------------------------------------------------------------------------- #
# Parts
# --------------------------------------------------------------------------- #
def part_argv(name: str, args, out_dir: str) -> list:
    """Command line of one part."""
    argv = ['--out-json', osp.join(out_dir, f'{name}.json')]
    if args.quick:
        argv.append('--quick')
    if name == 'accuracy':
        work = args.accuracy_work_dir or osp.join(
            ROOT, 'work_dirs', 'bench',
            'accuracy_quick' if args.quick else 'accuracy')
        argv += ['--work-dir', work, '--plot-dir', out_dir,
                 '--jobs', str(args.jobs)]
        if args.resume:
            argv.append('--resume')
    elif name == 'capacity_gap':
        work = args.capacity_work_dir or osp.join(
            ROOT, 'work_dirs', 'bench',
            'capacity_gap_quick' if args.quick else 'capacity_gap')
        argv += ['--work-dir', work, '--out-dir', out_dir,
                 '--jobs', str(args.jobs)]
        if args.resume:
            argv.append('--resume')
    elif name == 'coverage':  # coverage.md beside coverage.json
        argv += ['--device', args.device, '--out-dir', out_dir]
    elif name == 'cost':  # the two-stage detector setting too (issue 16)
        argv += ['--device', args.device, '--settings',
                 'imagenet,digits' if args.quick
                 else 'imagenet,digits,faster_rcnn']
    else:
        argv += ['--device', args.device]
    return argv


def git_commit() -> str:
    """The checkout's short commit (``+dirty`` with uncommitted changes to
    tracked files), or ``unknown`` outside git."""
    import subprocess
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        dirty = subprocess.run(['git', 'status', '--porcelain',
                                '--untracked-files=no'], cwd=ROOT,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return head.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')


def run_part(name: str, argv: list) -> dict:
    """``benchmarks.<name>.main(argv)``, timed; a failure is recorded."""
    print(f'\n===== {name}: python -m benchmarks.{name} {" ".join(argv)}',
          flush=True)
    started = machine()['date']
    commit = git_commit()
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f'benchmarks.{name}')
        result = module.main(argv)
        error = None
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: go on
        if isinstance(exc, KeyboardInterrupt):
            raise
        result = None
        error = f'{type(exc).__name__}: {exc}'
        traceback.print_exc()
    wall = time.perf_counter() - t0
    print(f'===== {name}: {"FAILED" if error else "done"} in {wall:.0f} s',
          flush=True)
    # a part runs in this process: return its freed heap (the cost part tunes
    # the allocator to keep it, ~17 GB at ImageNet size) before the next
    # part's workers need the memory
    gc.collect()
    release_free_heap()
    return dict(name=name, argv=argv, wall_s=wall, error=error, result=result,
                date=started, commit=commit)


def _table(result) -> str:
    if not isinstance(result, dict):
        return ''
    return result.get('table') or result.get('markdown') or ''


def render_markdown(parts, info, total_s, quick, out_dir) -> str:
    """``bench.md``: header (date, machine, wall times) and every table."""
    lines = ['# mmgpd benchmarks', '']
    lines.append(f'`make bench` (`python -m benchmarks.run_all'
                 f'{" --quick" if quick else ""}`), written {info["date"]}; '
                 'each part ran from the commit and at the time in its row (a '
                 'part rerun with `--update` keeps the others).')
    lines.append('')
    lines.append(f'Machine: {info["cpu"]}, {info["cpu_count"]} cores; torch '
                 f'{info["torch"]}, Python {info["python"]}, '
                 f'{platform.system()} {platform.machine()}.')
    lines.append('')
    lines.append('| part | wall time | status | started | commit |')
    lines.append('|---|---|---|---|---|')
    for p in parts:
        lines.append(f'| {p["name"]} | {_minutes(p["wall_s"])} | '
                     f'{"FAILED: " + p["error"] if p["error"] else "ok"} | '
                     f'{p.get("date") or "—"} | {p.get("commit") or "—"} |')
    lines.append(f'| **total** | **{_minutes(total_s)}** | | | |')
    if quick:
        lines += ['', '**--quick: smoke-test settings; the numbers below mean '
                  'nothing.**']
    for p in parts:
        lines += ['', f'## {TITLES.get(p["name"], p["name"])}', '']
        if p['error']:
            lines.append(f'Failed: `{p["error"]}`')
            continue
        res = p['result']
        if p['name'] == 'accuracy':
            lines += accuracy_preamble(res)
        elif p['name'] == 'capacity_gap':
            lines += capacity_gap_preamble(res)
        lines.append(_table(res).strip())
        for png in (res.get('plots') or []) if isinstance(res, dict) else []:
            rel = osp.relpath(png, out_dir)
            lines += ['', f'![{osp.splitext(osp.basename(png))[0]}]({rel})']
    return '\n'.join(lines) + '\n'


def accuracy_preamble(res: dict) -> list:
    """How the accuracy table was measured (from its own settings)."""
    s = res.get('settings', {})
    regimes = s.get('regimes', {})
    epochs = ', '.join(f'{k} {v["epochs"]}' for k, v in regimes.items())
    seeds = res.get('seeds', [])
    agree = ('equals the run\'s own student accuracy for every run' if
             res.get('all_extracted_agree') else '**does NOT equal the run\'s '
             'own student accuracy for some runs (see bench.json)**')
    return [
        f'* data: {s.get("dataset", "digits")}, {s.get("resolution")}×'
        f'{s.get("resolution")} images;',
        '* student: ResNet_CIFAR-18 (width 16), one config per method in '
        f'`configs/bench/`; static teacher `{s.get("teacher_config")}` '
        f'(ResNet_CIFAR-34, width 32) trained once per regime (seed '
        f'{s.get("teacher_seed")}) on the same training images;',
        f'* schedule: {s.get("schedule")}; epochs: {epochs}; the same for '
        'every method of a regime, nothing tuned per method;',
        f'* {len(seeds)} seed(s) ({", ".join(str(x) for x in seeds)}), mean ± '
        'sample std;',
        f'* accuracy: {s.get("accuracy")}; the plain test {agree}.',
        '']


def capacity_gap_preamble(res: dict) -> list:
    """How the capacity-gap tables were measured (from its own settings)."""
    s = res.get('settings', {})
    regimes = s.get('regimes', {})
    epochs = ', '.join(f'{k} {v["epochs"]}' for k, v in regimes.items())
    st = s.get('student', {})
    agree = ('equals the run\'s own student accuracy for every run' if
             res.get('all_extracted_agree') else '**does NOT equal the run\'s '
             'own student accuracy for some runs (see bench.json)**')
    return [
        f'* data: {s.get("dataset", "digits")}, {s.get("resolution")}×'
        f'{s.get("resolution")} images, both regimes of the accuracy part;',
        f'* student: ResNet_CIFAR-{st.get("depth")} of width '
        f'{st.get("width")}; static teachers: '
        + ', '.join(f'{k} (ResNet_CIFAR-{d}, width {w})'
                    for k, (d, w) in s.get('teachers', {}).items())
        + ', each trained once per regime (seed '
        f'{s.get("teacher_seed")}); every method is its unchanged '
        '`configs/bench/` config with the architectures as `--cfg-options`;',
        f'* schedule: {s.get("schedule")}; epochs: {epochs}; the last '
        'partial batch dropped; the same for every method of a regime;',
        f'* seeds: {s.get("seeds")} per cell, {s.get("decisive_seeds")} in '
        'the cells a single-comparison claim rests on ('
        + ', '.join(s.get('decisive_cells', [])) + ');',
        f'* accuracy: {s.get("accuracy")}; the plain test {agree}.',
        '']


def _minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 60} min {seconds % 60:02d} s'


# --------------------------------------------------------------------------- #
# README block
# --------------------------------------------------------------------------- #
def paper_table() -> str:
    lines = ['| setting (ImageNet-1k top-1, %) | baseline | top-1 | with GPD | top-1 | Δ |',
             '|---|---|---|---|---|---|']
    for setting, bname, b, gname, g in PAPER:
        lines.append(f'| {setting} | {bname} | {b:.2f} | {gname} | '
                     f'**{g:.2f}** | +{g - b:.2f} |')
    return '\n'.join(lines)


def readme_block(bench_md, bench_dir_rel='results') -> str:
    """The text between the README markers, from ``bench.md`` (or None)."""
    out = ['## Benchmarks (`make bench`)', '',
           'The paper\'s numbers (Guo et al., ICLR 2025, with its own code on '
           'ImageNet-1k; **not reproduced here**, no ImageNet training on this '
           'machine):', '', paper_table(), '']
    if bench_md is None:
        out += ['Measured here: nothing yet. `make bench` (about two hours '
                'on 2 CPU cores) writes `results/bench.md` / '
                '`results/bench.json` and the plots, and regenerates this '
                'section.', '']
        return '\n'.join(out)
    out += [f'Measured here by `make bench` (`{bench_dir_rel}/bench.md`, '
            f'`{bench_dir_rel}/bench.json`; regenerated by '
            '`python -m benchmarks.run_all --readme-only`):', '']
    body = bench_md.strip().splitlines()
    if body and body[0].startswith('# '):
        body = body[1:]  # the file's own title
    while body and not body[0].strip():
        body = body[1:]
    for line in body:
        if line.startswith('#'):
            line = '#' + line  # demote one level: '## X' -> '### X'
        # relative image links point into the results dir
        line = re.sub(r'\]\((?!https?://|/)([^)]+\.png)\)',
                      lambda m: f']({bench_dir_rel}/{m.group(1)})', line)
        out.append(line)
    out.append('')
    return '\n'.join(out)


def update_readme(readme: str = README, bench_md_path=None,
                  bench_dir_rel: str = 'results') -> str:
    """Rewrite the block between the bench markers of ``readme``.

    Without markers the block is added before ``## License`` (or at the end).
    Nothing outside the markers changes. Written atomically.
    """
    with open(readme, encoding='utf-8') as f:
        text = f.read()
    bench_md = None
    if bench_md_path and osp.isfile(bench_md_path):
        with open(bench_md_path, encoding='utf-8') as f:
            bench_md = f.read()
    block = f'{BEGIN}\n{readme_block(bench_md, bench_dir_rel)}{END}'
    if BEGIN in text and END in text:
        start = text.index(BEGIN)
        stop = text.index(END, start) + len(END)
        text = text[:start] + block + text[stop:]
    else:
        match = re.search(r'^## License\b', text, flags=re.M)
        if match:
            text = text[:match.start()] + block + '\n\n' + text[match.start():]
        else:
            text = text.rstrip('\n') + '\n\n' + block + '\n'
    atomic_write_text(readme, text)
    return readme


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Run every mmgpd benchmark and write results/bench.md, '
        'results/bench.json and the gap plots.')
    parser.add_argument('--quick', action='store_true',
                        help='smoke test; writes into a temporary directory '
                        'unless --out-dir is given')
    parser.add_argument('--out-dir', help='default: results/ (--quick: a new '
                        'temporary directory)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'),
                        help='device of the exactness, coverage and cost parts')
    parser.add_argument('--jobs', type=int, default=2,
                        help='parallel training processes (one thread each) '
                        'of the accuracy and capacity_gap parts')
    parser.add_argument('--resume', action='store_true',
                        help='accuracy and capacity_gap reuse the runs an '
                        'interrupted `make bench` finished (same config and '
                        'options; start clean after code changes)')
    parser.add_argument('--accuracy-work-dir',
                        help='run dirs of the accuracy part (default '
                        'work_dirs/bench/accuracy[_quick])')
    parser.add_argument('--capacity-work-dir',
                        help='run dirs of the capacity_gap part (default '
                        'work_dirs/bench/capacity_gap[_quick])')
    parser.add_argument('--parts', nargs='+', choices=PARTS, default=list(PARTS))
    parser.add_argument('--update', action='store_true',
                        help='rerun only --parts and keep the other parts of '
                        'the existing <out-dir>/bench.json')
    parser.add_argument('--no-readme', action='store_true',
                        help='do not rewrite the README results block')
    parser.add_argument('--readme-only', action='store_true',
                        help='only rewrite the README block from '
                        'results/bench.md')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.readme_only:
        path = update_readme(README, osp.join(RESULTS_DIR, 'bench.md'))
        print(f'README results block rewritten: {path}')
        return dict(readme=path)
    if args.out_dir:
        out_dir = osp.abspath(args.out_dir)
    elif args.quick:
        out_dir = tempfile.mkdtemp(prefix='mmgpd-bench-quick-')
    else:
        out_dir = RESULTS_DIR
    if args.quick and out_dir == RESULTS_DIR:
        raise SystemExit('run_all: --quick never writes into results/ (give '
                         'another --out-dir)')
    os.makedirs(out_dir, exist_ok=True)
    info = machine()
    print(f'[bench] {info["date"]}: {info["cpu"]}, {info["cpu_count"]} cores, '
          f'torch {info["torch"]}; results -> {out_dir}', flush=True)

    kept = previous_parts(out_dir, args.parts) if args.update else {}
    fresh = {name: run_part(name, part_argv(name, args, out_dir))
             for name in PARTS if name in args.parts}
    parts = [fresh.get(name) or kept[name] for name in PARTS
             if name in fresh or name in kept]
    total = sum(p['wall_s'] for p in parts)

    md = render_markdown(parts, info, total, args.quick, out_dir)
    md_path = atomic_write_text(osp.join(out_dir, 'bench.md'), md)
    report = dict(machine=info, quick=args.quick, total_wall_s=total,
                  out_dir=out_dir,
                  parts={p['name']: _jsonable(p) for p in parts})
    json_path = atomic_write_text(osp.join(out_dir, 'bench.json'),
                                  json.dumps(report, indent=2,
                                             default=str) + '\n')
    print('\n' + md)
    print(f'[bench] wrote {md_path} and {json_path} ({_minutes(total)})')
    readme = None
    if not args.quick and not args.no_readme and out_dir == RESULTS_DIR \
            and {p['name'] for p in parts} == set(PARTS):
        readme = update_readme(README, md_path)
        print(f'[bench] README results block rewritten: {readme}')
    report.update(bench_md=md_path, bench_json=json_path, readme=readme,
                  markdown=md)
    failed = [p['name'] for p in parts if p['error']]
    if failed:
        print(f'[bench] FAILED parts: {", ".join(failed)}', file=sys.stderr)
        report['failed'] = failed
        if __name__ == '__main__':
            sys.exit(1)
    return report


if __name__ == '__main__':
    main()
