"""How fast the command line answers, and what each command pays in imports.

Part 1, the front door: `qspec --help`, `qspec train --example`, an argument error and a bad config, each run as its
own process (the installed console script, next to this Python), several times; the median wall time is printed,
with `python -c pass` measured in the same run as the baseline (the interpreter's own start-up).

Part 2, imports per command: `qspec scan`, `merge`, `estimate` and `export` run for real on the embedded model (a
random rank-8 adapter for merge and export), each under `python -X importtime`, which logs every module the
command imports, when it first imports it, at whatever point of the command. From the log: the command's total
import time (the modules imported at top level, each with everything it pulled in) and the cost of each heavy
package at its first import. A second process then imports the same top-level modules in the same order and
nothing else: its peak RSS is what the command's imports hold before any tensor is made.

Usage: `python benchmarks/front_door.py [--runs 5] [--out benchmarks/results/front_door.json]`
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path

HEAVY = ('torch', 'transformers', 'bitsandbytes', 'peft', 'accelerate', 'datasets', 'safetensors', 'matplotlib', 'numpy',
         'jinja2', 'yaml', 'tokenizers', 'huggingface_hub', 'PIL', 'tqdm')
WHY = {  # package -> why a command needs it (the commands that import it are measured, not assumed)
    'torch': "tensors: the Gram products and eigensolves, the NF4 round trip, every model. Where bitsandbytes or transformers' model code is imported, they load torch's compiler stack too (`torch._dynamo`, `torch.fx`): about 0.9 s more of torch's own modules",
    'matplotlib': "the heatmap PNG (scan) and the plan's figures, imported when the figure is drawn",
    'transformers': "the model's layout: which linears a 4-bit load quantizes (a meta model), configs, tokenizers, loading",
    'bitsandbytes': "NF4 itself: merge re-quantizes each base weight as training saw it; estimate counts its 4-bit layers",
    'peft': "reads adapter_config.json's rank and alpha patterns as peft resolves them; export checks the adapter under peft",
    'accelerate': 'meta-device models (no memory) for layouts and estimates',
    'datasets': "export's held-out prompts (the embedded data)",
    'safetensors': 'writing adapters and checkpoints',
    'numpy': "torch's and matplotlib's own dependency",
    'jinja2': "chat templates (transformers' tokenizers)",
    'yaml': 'configs and Spectrum-style YAML',
    'tokenizers': "transformers' fast tokenizers",
    'huggingface_hub': "transformers' own dependency",
    'PIL': "matplotlib's PNG writer",
    'tqdm': 'progress bars',
    'qspec': "qspec's own modules",
    'networkx': "torch's compiler stack (`torch._dynamo`, `torch.fx`), loaded when bitsandbytes or transformers' model code imports",
    'mpmath': "sympy's own dependency (torch's compiler stack)", 'pyparsing': "matplotlib's own dependency", 'regex': "transformers' tokenizers",
    'pandas': "datasets' own dependency", 'pyarrow': "datasets' own dependency", 'sympy': "torch's own dependency",
    'scipy': "imported by transformers or bitsandbytes", 'fsspec': "datasets' own dependency", 'requests': "the hub client's own dependency",
}


def median_seconds(argv: list[str], runs: int) -> tuple[float, int]:
    "Median wall time of `argv` over `runs` runs, and its exit code"
    times, code = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        code = subprocess.run(argv, capture_output=True).returncode
        times.append(time.perf_counter() - t0)
    return statistics.median(times), code


def front_door(n: int) -> dict:
    exe = str(Path(sys.executable).parent/'qspec')
    bad = Path(tempfile.mkdtemp())/'bad.yaml'
    bad.write_text(f'out: {bad.parent}/run\nscheduler: foo\n')
    cases = {'python -c pass (baseline)': [sys.executable, '-c', 'pass'],
             'qspec --help': [exe, '--help'],
             'qspec train --example': [exe, 'train', '--example'],
             'qspec scan ... --top-percent 0 (argument error)': [exe, 'scan', 'x', '--out', 'o', '--top-percent', '0'],
             'qspec train bad.yaml (scheduler: foo)': [exe, 'train', str(bad)]}
    base, res = None, {}
    print(f'median of {n} runs, wall seconds')
    for name, argv in cases.items():
        s, code = median_seconds(argv, n)
        base = base or s
        res[name] = dict(seconds=s, exit=code)
        print(f'{name:<50} {s:6.3f} s  exit {code}  ({s / base:.1f}× the interpreter alone)')
    return res


def parse_importtime(log: str) -> tuple[list[tuple[str, float]], dict[str, float]]:
    "Top-level imports (name, cumulative seconds) in order, and the seconds spent in each package's own modules (self times summed by top-level name)"
    top, pkg = [], {}
    for line in log.splitlines():
        m = re.match(r'import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$', line)
        if not m: continue
        own, cum, level, name = int(m[1]) / 1e6, int(m[2]) / 1e6, (len(m[3]) - 1) // 2, m[4]
        if level == 0: top.append((name, cum))
        p = name.split('.')[0]
        pkg[p] = pkg.get(p, 0.0) + own
    return top, pkg


REPLAY = r'''
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    try: importlib.import_module(name)
    except Exception: pass  # a module that only imports inside its package's own import (its parent has loaded it by then)
print(int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024)
'''


def imports(work: Path, package: str | None = None) -> dict:
    "Part 2: each command run for real under -X importtime; its imports' time, their RSS, the heavy packages (`package`: another qspec tree to import instead)"
    from qspec.checkpoint import random_adapter
    from qspec.models import resolve_model
    base = resolve_model('smollm2')
    ad = random_adapter(base, work/'adapter', r=8)
    (work/'run.yaml').write_text(f'model: smollm2\nout: {work}/run\n')
    cmds = {'scan': ['scan', 'smollm2', '--source', 'checkpoint', '--out', str(work/'scan')],
            'merge': ['merge', 'smollm2', str(ad), '--out', str(work/'merged')],
            'estimate': ['estimate', str(work/'run.yaml')],
            'export': ['export', str(ad), '--target', 'vllm', '--base', 'smollm2', '--out', str(work/'vllm')]}
    floor = float(subprocess.run([sys.executable, '-c', REPLAY, '[]'], capture_output=True, text=True, check=True).stdout)
    res = dict(interpreter_rss_mib=floor, commands={})
    for name, argv in cmds.items():
        code = ("import sys\ntry: from qspec.cli import console\nexcept ImportError: from qspec.cli import main as console  # before the console script had its own entry\n"
                f"sys.argv = ['qspec'] + {argv!r}; sys.exit(console())")
        env = {**os.environ, 'TQDM_DISABLE': '1', **({'PYTHONPATH': package} if package else {})}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, '-X', 'importtime', '-c', code], capture_output=True, text=True, env=env, cwd=package)  # `-c` puts the cwd first
        wall = time.perf_counter() - t0
        if r.returncode: raise SystemExit(f'qspec {name} failed:\n{r.stderr[-3000:]}')
        top, pkg = parse_importtime(r.stderr)
        rss = float(subprocess.run([sys.executable, '-c', REPLAY, json.dumps([n for n, _ in top])], capture_output=True, text=True, check=True, env=env, cwd=package).stdout)
        res['commands'][name] = dict(argv=argv, command_s=wall, import_s=sum(c for _, c in top), import_rss_mib=rss,
                                     packages={p: s for p, s in sorted(pkg.items(), key=lambda x: -x[1]) if s >= 0.02})
    return res


def report(res: dict):
    print(f"\nimports per command (run for real under -X importtime; RSS: the same imports alone, interpreter {res['interpreter_rss_mib']:.0f} MiB)")
    print(f"{'command':<10}{'whole s':>8}{'imports s':>10}{'imports RSS MiB':>16}  packages (seconds in each package's own modules)")
    for name, c in res['commands'].items():
        pk = ', '.join(f'{p} {s:.2f}' for p, s in sorted(c['packages'].items(), key=lambda x: -x[1]))
        print(f"{name:<10}{c['command_s']:>8.1f}{c['import_s']:>10.2f}{c['import_rss_mib']:>16.0f}  {pk}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--out', help='write the figures as JSON here')
    ap.add_argument('--before', help="a checkout of an earlier qspec (e.g. `git worktree add /tmp/before REV`): its commands' imports measured too, in the same run")
    a = ap.parse_args()
    res = dict(command=' '.join(['python', 'benchmarks/front_door.py'] + sys.argv[1:]), front_door=front_door(a.runs))
    with tempfile.TemporaryDirectory() as d:
        res['imports'] = imports(Path(d))
    report(res['imports'])
    if a.before:
        rev = subprocess.run(['git', '-C', a.before, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
        with tempfile.TemporaryDirectory() as d:
            res['imports_before'] = dict(imports(Path(d), a.before), revision=rev)
        print(f'\nbefore (qspec at {rev}):'); report(res['imports_before'])
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
