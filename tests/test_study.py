"""The study of `benchmarks/study.py` in miniature (two runs on a tiny random model), killed mid-run and started
again: it finishes without repeating a run that had finished, and its report and picture are written."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

STUDY = Path(__file__).parents[1]/'benchmarks'/'study.py'
ENV = dict(os.environ, OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')


def lines(store: Path) -> list:
    return [json.loads(l) for l in store.read_text().splitlines() if l.strip()] if store.exists() else []


def test_killed_study_resumes(tmp_path):
    out, cmd = tmp_path/'study', [sys.executable, str(STUDY), '--mini', '--mini-steps', '150', '--out', str(tmp_path/'study')]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while len(lines(out/'runs.jsonl')) < 2 and p.poll() is None and time.time() - t0 < 600: time.sleep(0.2)
    assert p.poll() is None, p.stdout.read().decode()[-3000:]
    os.kill(p.pid, signal.SIGKILL); p.wait()  # the study, killed while the second seed trains
    first = lines(out/'runs.jsonl'); assert len(first) == 2, first  # the base model's evaluation and seed 1
    time.sleep(2)  # the arm's process ends with its parent: nothing more is written
    assert lines(out/'runs.jsonl') == first
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    done = lines(out/'runs.jsonl')
    keys = [d['key'] for d in done]
    assert len(done) == 3 and len(set(keys)) == 3 and done[:2] == first, done  # seed 1 kept as it was, seed 2 trained once
    assert [d['result']['seed'] for d in done[1:]] == [1, 2]
    c = json.loads((out/'budget-4'/'compare.json').read_text())
    assert [r['seed'] for r in c['arms']['uniform']['runs']] == [1, 2] and c['arms']['uniform']['runs'][0] == first[1]['result']
    assert (out/'study.png').stat().st_size > 10_000 and 'runs stored' in (out/'study.md').read_text()


def test_cost_side_by_side(tmp_path):
    "`--cost` times every arm in one sitting; the report's cost table and panels then come from it, not from the stored runs"
    out, cmd = tmp_path/'study', [sys.executable, str(STUDY), '--mini', '--out', str(tmp_path/'study')]
    for extra in ([], ['--cost']):
        r = subprocess.run(cmd + extra, env=ENV, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    c = json.loads((out/'cost.json').read_text())
    assert set(c['arms']['4']) == {'uniform', 'snr'} and c['steps'] == 2 and c['machine']
    assert all(v['step_s'] > 0 and v['train_mem_mib'] >= 0 and v['trainable'] > 0 for v in c['arms']['4'].values())
    md = (out/'study.md').read_text()
    assert '**Cost**' in md and '| uniform |' in md
