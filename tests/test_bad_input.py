"""Bad input stops at the door: every case below exits with code 2 and one line on stderr, with no traceback, and
leaves nothing in the output path. Configs are refused before any model, tokenizer or data is loaded (their
checks import neither torch nor transformers); data and checkpoint errors are caught where the file is first read."""
import contextlib, io, os, subprocess, sys
from pathlib import Path
import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # a name that is not a local file must fail at once, not wait for a network
from qspec.cli import main

BAD_CONFIGS = {  # YAML text -> part of the message
    'lrr: 0.001': "unknown key 'lrr'; did you mean 'lr'?",
    'steps: ten': "key 'steps' must be int, got 'ten'",
    'steps: 0': 'steps must be at least 1',
    'lr: 0': 'lr must be positive',
    'warmup_steps: -1': 'warmup_steps must be 0 or more',
    'scheduler: foo': "scheduler 'foo' is not one transformers accepts",
    'optim: foo': "optim 'foo' is not one transformers accepts",
    'lr_scale: [a, b]': 'lr_scale must be [low, high], two numbers',
    'lr_scale: [2, 1]': 'lr_scale must be [low, high]',
    'tiers: [25]': 'give tiers and ranks together',
    'tiers: [25, 50]\nranks: [8]': 'give one rank per tier',
    'tiers: [50, 25]\nranks: [8, 4]': 'tiers must be increasing',
    'tiers: [25, x]\nranks: [8, 4]': 'each of tiers must be a number in (0, 100]',
    'tiers: [25]\nranks: [2.5]': 'ranks must be whole numbers',
    'tiers: [25, 50]\nranks: [4, 16]': 'ranks must not increase',
    'min_rank: 32\nmax_rank: 8': 'min_rank 32 must be at least 1 and at most max_rank 8',
    'min_rank: 6': 'must be multiples of step 4',
    'device: tpu': "unknown device 'tpu'",
    'merge_dtype: fp8': 'merge_dtype must be auto, float16 or bfloat16',
    'quant_storage: int4': 'quant_storage must be uint8',
    'compute_dtype: fp8': 'compute_dtype must be auto, float32, bfloat16 or float16',
    'device_map: 3': "key 'device_map' must be str or mapping or null",
    'device_map: balanced_low_1': "device_map must be 'auto' or a mapping",
    'merge_check_max_params: -1': 'merge_check_max_params must be 0 or more',
    'val_fraction: 1.5': 'val_fraction must be in (0, 1)',
    'allocation: flat': 'allocation must be one of snr, inverse, uniform, spectrum',
    'allocation: uniform\ntiers: [25]\nranks: [8]': "add allocation: snr, or remove tiers and ranks",
    'group: true\nresize: true': 'group and resize cannot be combined',
    'group_threshold: 2': 'group_threshold must be in [-1, 1]',
    'group_max_size: 1': 'group_max_size must be at least 2',
    'columns: {text: body}': 'set data too',
    'model: ""': 'model is empty',
    '[1, 2]': 'expected a mapping',
    'steps: [3': 'is not valid YAML',
}


def run(*argv):
    "Run `qspec` in-process: (exit code, stderr)"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try: code = main([str(a) for a in argv])
        except SystemExit as e: code = e.code
    return code, err.getvalue()


def refused(out: Path, *argv, contains: str):
    code, err = run(*argv)
    assert code == 2, (code, err)
    assert err.count('\n') == 1 and err.startswith('qspec: error: ') and 'Traceback' not in err, err
    assert contains in err, err
    assert not out.exists() and not list(out.parent.glob(f'.{out.name}.tmp-*')) and not out.with_name(out.name + '.work').exists()


@pytest.mark.parametrize('text', list(BAD_CONFIGS))
def test_bad_config(tmp_path, text):
    out = tmp_path/'run'
    f = tmp_path/'c.yaml'
    f.write_text(text if text.startswith('[') else f'out: {out}\n{text}\n')
    refused(out, 'train', f, contains=BAD_CONFIGS[text])


def test_cuda_without_gpu(tmp_path):
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    out = tmp_path/'run'
    (tmp_path/'c.yaml').write_text(f'out: {out}\ndevice: cuda:0\n')
    refused(out, 'train', tmp_path/'c.yaml', contains='no CUDA GPU')


def test_launches_refused(tmp_path, monkeypatch):
    "FSDP, and device_map under several processes, are refused before any model is loaded"
    out = tmp_path/'run'
    (tmp_path/'c.yaml').write_text(f'out: {out}\ndevice: cpu\n')
    monkeypatch.setenv('ACCELERATE_USE_FSDP', 'true')
    refused(out, 'train', tmp_path/'c.yaml', contains='FSDP is not supported: the SNR scan, the plan and the merge need whole weight matrices')


def test_config_files(tmp_path):
    out = tmp_path/'run'
    refused(out, 'train', tmp_path/'none.yaml', contains='no config file')
    refused(out, 'train', tmp_path, contains='is a directory')
    (tmp_path/'bin.yaml').write_bytes(b'\xff\xfe\x00garbage')
    refused(out, 'train', tmp_path/'bin.yaml', contains='is not a text file')
    refused(out, 'train', contains='give a config file')


DATA = {  # file name, content -> message
    ('empty.jsonl', ''): 'is empty',
    ('bad.jsonl', '{"text": "a"}\n{oops\n'): 'could not read',
    ('qa.jsonl', '{"q": "a?", "a": "b"}\n' * 4): "has no column 'text' (its columns: q, a)",
    ('one.jsonl', '{"text": "only one"}\n'): 'give at least 2 (or val_data)',
    ('bad.csv', 'text,label\n"unclosed,1\n'): 'could not read',
    ('x.parquet', 'not parquet'): 'give one .jsonl, .json, .csv, .txt or .md file',
}


@pytest.mark.parametrize('name,content', list(DATA))
def test_bad_data(tmp_path, name, content):
    out = tmp_path/'run'
    (tmp_path/name).write_text(content)
    (tmp_path/'c.yaml').write_text(f'out: {out}\ndata: {tmp_path/name}\ndevice: cpu\n')
    refused(out, 'train', tmp_path/'c.yaml', contains=DATA[(name, content)])


def test_missing_data_and_columns(tmp_path):
    out = tmp_path/'run'
    (tmp_path/'c.yaml').write_text(f'out: {out}\ndata: {tmp_path}/nothing-here.jsonl\ndevice: cpu\n')
    refused(out, 'train', tmp_path/'c.yaml', contains='no local file')
    (tmp_path/'qa.jsonl').write_text('{"q": "a?", "a": "b"}\n' * 4)
    (tmp_path/'m.yaml').write_text(f'out: {out}\ndata: {tmp_path}/qa.jsonl\ncolumns: {{prompt: q, response: answer}}\ndevice: cpu\n')
    refused(out, 'train', tmp_path/'m.yaml', contains="no column 'answer'")


def test_bad_merges(tmp_path):
    "An adapter for another model, a base that is not there, --out over an input: refused before anything is written"
    from qspec.models import save_tiny
    from qspec.checkpoint import random_adapter
    save_tiny('llama', tmp_path/'a'); save_tiny('gpt2', tmp_path/'b')
    random_adapter(tmp_path/'a', tmp_path/'ad')
    out = tmp_path/'merged'
    refused(out, 'merge', tmp_path/'b', tmp_path/'ad', '--out', out, contains='which is not a linear layer of the base; was it trained on another model?')
    refused(out, 'merge', tmp_path/'nothing', tmp_path/'ad', '--out', out, contains="directory '" + str(tmp_path/'nothing') + "' does not exist")
    refused(tmp_path/'x', 'merge', tmp_path/'a', tmp_path/'ad', '--out', tmp_path/'ad', contains='would replace an input')
    assert (tmp_path/'ad'/'adapter_config.json').exists()


def test_bad_exports(tmp_path, monkeypatch):
    "Targets that cannot take the adapter, a missing llama.cpp, bad types: one line, exit 2, nothing written"
    import json
    from qspec.models import save_tiny
    from qspec.checkpoint import random_adapter
    save_tiny('llama', tmp_path/'a'); random_adapter(tmp_path/'a', tmp_path/'ad', r=4)
    out = tmp_path/'export'
    refused(out, 'export', tmp_path/'ad', '--target', 'gguf', '--quant', 'q3', '--out', out, '--base', tmp_path/'a', contains="unknown quantized type 'q3'")
    refused(tmp_path/'x', 'export', tmp_path/'ad', '--target', 'vllm', '--out', tmp_path, '--base', tmp_path/'a', contains='would replace an input')
    cfg = json.loads((tmp_path/'ad'/'adapter_config.json').read_text())
    (tmp_path/'ad'/'adapter_config.json').write_text(json.dumps(dict(cfg, use_dora=True)))
    for t in ('vllm', 'sglang', 'lora'):
        refused(out, 'export', tmp_path/'ad', '--target', t, '--out', out, '--base', tmp_path/'a', contains='DoRA (magnitude vectors) is not LoRA')
    (tmp_path/'ad'/'adapter_config.json').write_text(json.dumps(cfg))
    monkeypatch.setitem(sys.modules, 'llama_cpp', None)  # llama.cpp's bindings not installed
    for t in ('gguf', 'ollama'):
        refused(out, 'export', tmp_path/'ad', '--target', t, '--out', out, '--base', tmp_path/'a', contains="install them with: pip install 'qspec[gguf]'")


def test_bad_checkpoints(tmp_path):
    out = tmp_path/'scan'
    (tmp_path/'bad.safetensors').write_bytes(b'garbage')
    refused(out, 'scan', tmp_path/'bad.safetensors', '--out', out, contains='not a valid safetensors file')
    (tmp_path/'empty').mkdir()
    refused(out, 'scan', tmp_path/'empty', '--out', out, contains='no model weights in')
    (tmp_path/'noconf').mkdir(); (tmp_path/'noconf'/'model.safetensors').write_bytes(b'x')
    refused(out, 'memory', tmp_path/'noconf', contains='has weights but no config.json')
    refused(out, 'memory', tmp_path/'missing', contains='does not exist')


ARGS = [  # argv -> message; nothing of these reaches a model
    (['frobnicate'], 'invalid choice'),
    (['scan', 'smollm2', '--out', '{out}', '--top-percent', '0'], 'expected a percentage in (0, 100]'),
    (['scan', 'smollm2', '--out', '{out}', '--device', 'tpu'], "expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (['allocate', 'snr.json', '--tiers', '25', '--ranks', 'x', '--out', '{out}'], 'expected comma-separated positive integers'),
    (['allocate', 'snr.json', '--tiers', '25,50', '--ranks', '8', '--out', '{out}'], 'one rank per tier'),
    (['allocate', 'snr.json', '--budget', '0', '--out', '{out}'], 'expected a whole number of at least 1'),
    (['allocate', 'snr.json', '--budget', '100', '--min-rank', '32', '--max-rank', '8', '--out', '{out}'], 'at most max_rank 8'),
    (['allocate', '{tmp}/none.json', '--budget', '100', '--out', '{out}'], 'no qspec snr.json at'),
    (['group', 'smollm2', '--plan', 'p.json', '--out', '{out}', '--threshold', '1.5'], 'expected a cosine similarity in [-1, 1]'),
    (['group', 'smollm2', '--plan', 'p.json', '--out', '{out}', '--max-size', '1'], '--max-size must be at least 2'),
    (['demo', '--steps', '0', '--out', '{out}'], 'expected a whole number of at least 1'),
    (['memory', 'smollm2', '--chart', '{out}.jpg'], 'expected a .png file name'),
    (['merge', 'smollm2', '{tmp}/no-adapter', '--out', '{out}'], "adapter directory '{tmp}/no-adapter' does not exist"),
    (['merge', 'smollm2', '{tmp}', '--out', '{out}'], 'is neither a peft adapter (no adapter_config.json) nor a run directory'),
    (['merge', 'smollm2', '{tmp}', '--out', '{out}', '--dtype', 'fp8'], "invalid choice: 'fp8'"),
    (['merge', 'smollm2', '{tmp}'], 'the following arguments are required: --out'),
    (['estimate', '{tmp}/none.yaml'], 'no config file'),
    (['estimate', '{tmp}/none.yaml', '--scan', 'maybe'], "invalid choice: 'maybe'"),
    (['export', '{tmp}', '--target', 'tgi', '--out', '{out}'], "invalid choice: 'tgi'"),
    (['export', '{tmp}/no-run', '--target', 'vllm', '--out', '{out}'], "adapter directory '{tmp}/no-run' does not exist"),
    (['export', '{tmp}', '--target', 'gguf', '--out', '{out}'], 'is neither a peft adapter (no adapter_config.json) nor a run directory'),
    (['export', '{tmp}', '--target', 'vllm'], 'the following arguments are required: --out'),
    (['export', '{tmp}', '--target', 'vllm', '--out', '{out}', '--check', 'maybe'], "invalid choice: 'maybe'"),
    (['allocate', 'snr.json', '--budget', '100', '--format', 'unsloth', '--out', '{out}'], "invalid choice: 'unsloth'"),
    (['allocate', 'snr.json', '--budget', '100', '--allocation', 'flat', '--out', '{out}'], "invalid choice: 'flat'"),
    (['allocate', 'snr.json', '--tiers', '25', '--ranks', '8', '--allocation', 'uniform', '--out', '{out}'], 'but --allocation is uniform: add --allocation snr'),
    (['allocate', 'snr.json', '--budget', '100', '--format', 'peft', '--lr-scale', '0.5,2', '--out', '{out}'], '--format peft has one learning rate for every module'),
    (['allocate', 'snr.json', '--budget', '100', '--starter-adapter', '--out', '{out}'], '--starter-adapter is for --format axolotl'),
    (['compare', '{tmp}/none.yaml', '--out', '{out}'], 'no config file'),
    (['compare', '--seeds', '0', '--out', '{out}'], 'expected a whole number of at least 1'),
    (['compare', '--seeds', '1', '--out', '{out}'], 'seeds must be at least 2 for an interval'),
    (['compare', '--lrs', 'fast', '--out', '{out}'], 'expected comma-separated numbers'),
    (['compare', '--lrs', '0', '--out', '{out}'], 'learning rates must be positive numbers'),
    (['compare', '--arms', 'snr,lora-xs', '--out', '{out}'], "unknown arm 'lora-xs'"),
]


@pytest.mark.parametrize('argv,msg', ARGS, ids=[' '.join(a[:3]) for a, _ in ARGS])
def test_bad_arguments(tmp_path, argv, msg):
    out = tmp_path/'out'
    refused(out, *[a.format(out=out, tmp=tmp_path) for a in argv], contains=msg.format(out=out, tmp=tmp_path))


def test_front_door_imports_nothing_heavy(tmp_path):
    "`qspec --help`, `qspec train --example`, argument errors and config errors import neither torch, transformers nor peft"
    (tmp_path/'c.yaml').write_text(f'out: {tmp_path}/run\nscheduler: foo\n')
    probe = ("import sys, contextlib, io\nfrom qspec.cli import main\n"
             f"for a in (['--help'], ['train', '--example'], ['demo', '--steps', '0'], ['train', {str(tmp_path/'c.yaml')!r}]):\n"
             "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
             "        try: main(a)\n        except SystemExit: pass\n"
             "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True)
    assert r.stdout.strip() == '[]', (r.stdout, r.stderr)


def test_console_script_one_line(tmp_path):
    "The installed `qspec` behaves the same in its own process: code 2, one line, no traceback"
    exe = Path(sys.executable).parent/'qspec'
    (tmp_path/'c.yaml').write_text(f'out: {tmp_path}/run\noptim: foo\n')
    for argv in (['train', str(tmp_path/'c.yaml')], ['scan', 'x', '--out', str(tmp_path/'o'), '--top-percent', '500']):
        r = subprocess.run([str(exe), *argv], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'run').exists() and not (tmp_path/'o').exists()


def test_bad_model_dirs(tmp_path):
    "Each file of a model directory that a run reads stops it with one line where it is first read: config, tokenizer, weights"
    from qspec.models import load_tokenizer, save_tiny
    good, d, out = save_tiny('llama', tmp_path/'good'), tmp_path/'m', tmp_path/'run'
    d.mkdir(); (d/'config.json').write_text((good/'config.json').read_text()); (d/'model.safetensors').write_bytes(b'garbage')
    (tmp_path/'c.yaml').write_text(f'out: {out}\nmodel: {d}\ndevice: cpu\nsteps: 1\n')
    refused(out, 'train', tmp_path/'c.yaml', contains='it has no tokenizer files')  # corrupt weights and no tokenizer: not sentencepiece's traceback
    load_tokenizer('smollm2').save_pretrained(d)
    refused(out, 'train', tmp_path/'c.yaml', contains='model.safetensors\': not a valid safetensors file')  # the weights, where their header is first read
    (d/'config.json').write_text('{"model_type": "llama", ')
    refused(out, 'train', tmp_path/'c.yaml', contains=f"cannot read {str(d/'config.json')!r}")
