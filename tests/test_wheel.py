"""`pip install qspec` from a wheel built from this repository gives a working library and console command."""
import subprocess, sys, venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f'{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    return r


def test_wheel_installs_in_fresh_venv(tmp_path):
    dist = tmp_path/'dist'
    run(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', dist, ROOT)
    wheel, = dist.glob('qspec-*.whl')
    env = tmp_path/'env'
    venv.create(env, with_pip=True)
    py = env/'bin'/'python'
    # the CPU build of torch first, so the wheel's dependency resolution keeps it
    run(py, '-m', 'pip', 'install', '-q', 'torch==2.13.0')
    run(py, '-m', 'pip', 'install', '-q', wheel)
    r = run(py, '-c', 'import qspec, qspec.quant, qspec.models, qspec.cli; print(qspec.__version__)', cwd=tmp_path)
    assert r.stdout.strip() == __import__('qspec').__version__
    r = run(env/'bin'/'qspec', '--help', cwd=tmp_path)
    assert 'demo' in r.stdout and 'memory' in r.stdout
    # the installed package resolves and loads a tiny checkpoint written in this environment
    r = run(py, '-c', 'from qspec.models import save_tiny; from qspec.quant import load_nf4, memory_report;'
            'print(memory_report(load_nf4(save_tiny("gpt2", "tiny"), device="cpu")).bits_per_quantized_weight)', cwd=tmp_path)
    assert float(r.stdout.strip().splitlines()[-1]) > 4
