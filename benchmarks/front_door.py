"""How fast the command line answers when nothing has to be loaded: `qspec --help`, `qspec train --example`, an
argument error and a bad config. Each is run as its own process (the installed console script, next to this
Python), several times; the median wall time is printed, with `python -c pass` measured in the same run as the
baseline (the interpreter's own start-up).

Usage: `python benchmarks/front_door.py [--runs 5]`
"""
import argparse, statistics, subprocess, sys, tempfile, time
from pathlib import Path


def median_seconds(argv: list[str], runs: int) -> tuple[float, int]:
    "Median wall time of `argv` over `runs` runs, and its exit code"
    times, code = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        code = subprocess.run(argv, capture_output=True).returncode
        times.append(time.perf_counter() - t0)
    return statistics.median(times), code


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5)
    n = ap.parse_args().runs
    exe = str(Path(sys.executable).parent/'qspec')
    bad = Path(tempfile.mkdtemp())/'bad.yaml'
    bad.write_text(f'out: {bad.parent}/run\nscheduler: foo\n')
    cases = {'python -c pass (baseline)': [sys.executable, '-c', 'pass'],
             'qspec --help': [exe, '--help'],
             'qspec train --example': [exe, 'train', '--example'],
             'qspec scan ... --top-percent 0 (argument error)': [exe, 'scan', 'x', '--out', 'o', '--top-percent', '0'],
             'qspec train bad.yaml (scheduler: foo)': [exe, 'train', str(bad)]}
    base = None
    print(f'median of {n} runs, wall seconds')
    for name, argv in cases.items():
        s, code = median_seconds(argv, n)
        base = base or s
        print(f'{name:<50} {s:6.3f} s  exit {code}  ({s / base:.1f}× the interpreter alone)')


if __name__ == '__main__':
    main()
