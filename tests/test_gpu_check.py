"""The prepared GPU check (`benchmarks/gpu_check.py`) on this machine: the steps that run on a CPU pass, and the
CUDA-only and several-GPU steps are skipped by name, with results.json and the table written."""
import json, os, subprocess, sys
from pathlib import Path

CHECK = Path(__file__).parents[1]/'benchmarks'/'gpu_check.py'


def test_gpu_check_on_cpu(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='2')
    r = subprocess.run([sys.executable, str(CHECK), '--out', str(tmp_path)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    steps = json.loads((tmp_path/'results.json').read_text())['steps']
    for s in ('nf4_load', 'loss_vs_transformers', 'short_run', 'export_parity'): assert steps[s]['status'] == 'pass', (s, steps[s])
    for s in ('snr_cuda_vs_cpu', 'merge_cuda_vs_cpu', 'estimate_vs_measured', 'llama3_8b_shapes'):
        assert steps[s]['status'] == 'skipped: needs CUDA', (s, steps[s])
    for s in ('ddp_two_gpus', 'device_map_two_gpus'): assert steps[s]['status'].startswith('skipped: needs 2 GPUs'), (s, steps[s])
    assert '| snr_cuda_vs_cpu | skipped: needs CUDA |' in (tmp_path/'results.md').read_text()
