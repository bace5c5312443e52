"""`qspec train` as users run it: bad configs and data end with one line and exit code 2; a run killed mid-way (or
while saving) resumes to the same adapter as an uninterrupted one; two CPU processes (DDP over gloo) with batch b train exactly as
one process with batch 2b, and processes that plan differently stop with one message."""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import pytest
from safetensors.torch import load_file

QSPEC = Path(sys.executable).parent/'qspec'
ENV = dict(os.environ, OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')


def qspec(*args, **kw):
    return subprocess.run([str(QSPEC), *args], capture_output=True, text=True, env=ENV, **kw)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny random Llama checkpoint with the embedded model's tokenizer"
    from qspec.models import load_tokenizer, save_tiny
    d = tmp_path_factory.mktemp('tiny')/'llama'
    tok = load_tokenizer('smollm2')
    save_tiny('llama', d, vocab=len(tok))
    tok.save_pretrained(d)
    return d


def config(path: Path, **kw) -> Path:
    import yaml
    path.write_text(yaml.safe_dump(kw))
    return path


def base(tiny, out, **kw):
    return dict(dict(model=str(tiny), out=str(out), steps=8, max_length=64, budget=6000, eval_steps=4, save_steps=2,
                     logging_steps=1, max_eval_examples=8, lr=3e-3, device='cpu', merge=False, resize=False), **kw)


def one_error(r, text):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert 'Traceback' not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('qspec: error:') and text in lines[0], r.stderr


def test_bad_configs(tmp_path, tiny):
    qa = tmp_path/'qa.jsonl'
    qa.write_text(''.join(json.dumps(dict(q=f'What is {i}?', a=f'{i}.')) + '\n' for i in range(6)))
    (tmp_path/'empty.jsonl').write_text('')
    cases = {
        'unknown key': (dict(lrr=1e-3), "unknown key 'lrr'; did you mean 'lr'?"),
        'wrong type': (dict(steps='ten'), "key 'steps' must be int, got 'ten' (str)"),
        'missing column': (dict(data=str(qa)), "has no column 'text' (its columns: q, a)"),
        'mapped column missing': (dict(data=str(qa), columns=dict(prompt='question', response='a')), "no column 'question'"),
        'empty dataset': (dict(data=str(tmp_path/'empty.jsonl')), 'is empty'),
        'max_length under the prompt': (dict(data=str(qa), columns=dict(prompt='q', response='a'), max_length=5), 'shorter than the prompt'),
    }
    for name, (kw, text) in cases.items():
        r = qspec('train', str(config(tmp_path/'c.yaml', **base(tiny, tmp_path/'run', **kw))))
        one_error(r, text)
        assert not (tmp_path/'run').exists(), name
    (tmp_path/'bad.yaml').write_text('steps: [3\n')
    one_error(qspec('train', str(tmp_path/'bad.yaml')), 'is not valid YAML')
    one_error(qspec('train', str(tmp_path/'none.yaml')), 'no config file')


def adapter(run: Path) -> dict:
    return load_file(str(run/'adapter'/'adapter_model.safetensors'))


def wait_for(pred, proc, timeout=300):
    t0 = time.time()
    while not pred():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < timeout, 'timed out'
        time.sleep(0.05)


def test_kill_and_resume(tmp_path, tiny):
    "SIGKILL after checkpoint 4, then again while the run directory is being written; the resumed adapter is exact"
    r = qspec('train', str(config(tmp_path/'a.yaml', **base(tiny, tmp_path/'a'))))
    assert r.returncode == 0, r.stderr[-3000:]
    ref = adapter(tmp_path/'a')

    cfg = config(tmp_path/'b.yaml', **base(tiny, tmp_path/'b'))
    ck = tmp_path/'b.work'/'checkpoints'/'checkpoint-4'/'trainer_state.json'
    p = subprocess.Popen([str(QSPEC), 'train', str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(ck.exists, p)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (tmp_path/'b').exists()

    p = subprocess.Popen([str(QSPEC), 'train', str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(lambda: any(tmp_path.glob('.b.tmp-*/adapter')), p)  # the run directory is being assembled
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (tmp_path/'b').exists()  # never a half-written run directory

    r = qspec('train', str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    got = adapter(tmp_path/'b')
    assert got.keys() == ref.keys()
    for k in ref: assert (got[k] == ref[k]).all(), k
    m = json.loads((tmp_path/'b'/'metrics.json').read_text())
    assert m['resumed_from'].endswith('checkpoint-8')
    assert not list(tmp_path.glob('.b.tmp-*'))  # the killed attempt's temporary folder was cleared


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def torchrun(*args, n=2, timeout=900):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={n}', f'--master_port={free_port()}', *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def packed_data(path: Path) -> Path:
    "Plain texts that pack into full blocks: every batch the same shape, whatever its size"
    from qspec.data import pydoc_texts
    path.write_text(''.join(json.dumps(dict(text=t)) + '\n' for t in pydoc_texts()[:60]))
    return path


def test_two_processes(tmp_path, tiny):
    "DDP over gloo: two processes with batch b train exactly as one process with batch 2b (losses, gradients and adapter)"
    kw = dict(steps=5, data=str(packed_data(tmp_path/'texts.jsonl')), packing=True, compute_dtype='float32', resize=False,
              eval_steps=5, save_steps=5, logging_steps=2, seed=3)  # 5 steps, logged every 2: a remainder at the end
    one = config(tmp_path/'one.yaml', **base(tiny, tmp_path/'one', batch_size=4, **kw))
    r = qspec('train', str(one))
    assert r.returncode == 0, r.stderr[-3000:]
    two = config(tmp_path/'two.yaml', **base(tiny, tmp_path/'ddp', batch_size=2, **kw))
    r = torchrun('--no-python', str(QSPEC), 'train', str(two))
    assert r.returncode == 0, r.stderr[-4000:]
    m1, m2 = (json.loads((tmp_path/d/'metrics.json').read_text()) for d in ('one', 'ddp'))
    assert (m1['world_size'], m2['world_size']) == (1, 2)
    assert m1['tokens'] == m2['tokens'] > 0, (m1['tokens'], m2['tokens'])  # every process's tokens counted, not process 0's share
    sha = m2['adapter_sha256_per_process']
    assert len(sha) == 2 and sha[0] == sha[1], sha
    for key in ('loss', 'grad_norm'):
        a, b = ([l[key] for l in m['log'] if key in l] for m in (m1, m2))
        assert len(a) == 2 and len(b) == 2, (a, b)
        for x, y in zip(a, b): assert abs(x - y) <= 1e-5 * abs(x), (key, a, b)
    assert abs(m1['train_loss'] - m2['train_loss']) <= 1e-5 * abs(m1['train_loss']), (m1['train_loss'], m2['train_loss'])  # gathered, remainder too
    a1, a2 = adapter(tmp_path/'one'), adapter(tmp_path/'ddp')
    assert a1.keys() == a2.keys()
    for k in a1: assert (a1[k] - a2[k]).norm() <= 1e-5 * a1[k].norm(), (k, ((a1[k] - a2[k]).norm() / a1[k].norm()).item())


def test_processes_must_agree(tmp_path, tiny):
    "A process that plans differently stops the run on every process, with one message, instead of hanging"
    script = tmp_path/'differ.py'
    script.write_text("""import sys
import qspec.train as T
orig = T.Run._plan
def _plan(self, snr):
    p = orig(self, snr)
    if self.rank == 1: p.modules[next(iter(p.adapted))]['rank'] += 4
    return p
T.Run._plan = _plan
from qspec.cli import main
sys.exit(main(['train', sys.argv[1]]))
""")
    cfg = config(tmp_path/'d.yaml', **base(tiny, tmp_path/'differ', steps=2, batch_size=2))
    r = torchrun(str(script), str(cfg), timeout=600)
    assert r.returncode != 0
    assert 'qspec: error: process 1 computed a different plan from process 0' in r.stderr, r.stderr[-3000:]
    assert not (tmp_path/'differ').exists()


def test_last_bits_do_not_abort(tmp_path, tiny):
    "Plans that agree in modules and ranks but not in the last bit of an SNR (two GPUs' kernels) train, with process 0's plan everywhere"
    script = tmp_path/'ulp.py'
    script.write_text("""import math, sys
import qspec.train as T
orig = T.Run._plan
def _plan(self, snr):
    p = orig(self, snr)
    if self.rank == 1:
        for v in p.modules.values():
            v['snr'] = math.nextafter(v['snr'], math.inf) if v['snr'] is not None else None
            v['lr_scale'] = math.nextafter(v['lr_scale'], math.inf)
    return p
T.Run._plan = _plan
from qspec.cli import main
sys.exit(main(['train', sys.argv[1]]))
""")
    cfg = config(tmp_path/'u.yaml', **base(tiny, tmp_path/'ulp', steps=2, batch_size=2, eval_steps=2, save_steps=2))
    r = torchrun(str(script), str(cfg), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    sha = json.loads((tmp_path/'ulp'/'metrics.json').read_text())['adapter_sha256_per_process']
    assert len(sha) == 2 and sha[0] == sha[1], sha


def test_cold_cache_two_processes(tmp_path):
    "Two processes started on an empty cache: one converts the embedded model, the other waits for it; both start cleanly"
    script = tmp_path/'start.py'
    script.write_text("""import sys
from qspec.train import Run
r = Run(dict(out=sys.argv[1], device='cpu', ddp_timeout=120), progress=False).prepare_data()
print('ready', r.rank, r.path, len(r.train_ex))
""")
    env = dict(ENV, QSPEC_CACHE=str(tmp_path/'cache'))
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}', str(script),
                        str(tmp_path/'run')], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(l.split()[1] for l in r.stdout.splitlines() if l.startswith('ready')) == ['0', '1'], r.stdout
    assert r.stdout.count('Converting the embedded') == 1, r.stdout  # converted once, by process 0
    assert not [p for p in (tmp_path/'cache').iterdir() if p.name.startswith('.')]  # no temporary or moved-aside folder left


def test_files_have_the_umask_mode(tmp_path, tiny):
    "Every file and folder that `qspec train`, `merge` and `export` write has the mode a plain open or mkdir gives under the umask"
    def run(*args):
        return subprocess.run([str(QSPEC), *args], capture_output=True, text=True, env=ENV, preexec_fn=lambda: os.umask(0o027))
    cfg = config(tmp_path/'u.yaml', **base(tiny, tmp_path/'run', steps=2, merge=True, eval_steps=2, save_steps=2))
    for args in (('train', str(cfg)), ('merge', str(tiny), str(tmp_path/'run'), '--out', str(tmp_path/'merged')),
                 ('export', str(tmp_path/'run'), '--target', 'lora', '--out', str(tmp_path/'lora'), '--check', 'no')):
        r = run(*args)
        assert r.returncode == 0, (args[0], r.stderr[-2000:])
    seen = 0
    for top in ('run', 'merged', 'lora'):
        for p in [tmp_path/top, *(tmp_path/top).rglob('*')]:
            assert p.stat().st_mode & 0o777 == (0o750 if p.is_dir() else 0o640), (p, oct(p.stat().st_mode & 0o777))
            seen += 1
    assert seen > 15, seen  # the run's adapter, scans, plots, metrics and merged model, the merge's shards, the export
