"""One prepared check of qspec's CUDA-only paths, in minutes on one GPU, with no network.

Each step exercises one branch that only runs on CUDA, or runs a CPU step on the device the machine has; the CUDA
steps compare the GPU against the CPU. Steps that need CUDA are skipped by name on a machine without it (the gate
runs this script on its CPU), and steps that need several GPUs are skipped, and named, where there is one.
results.json is written after every step (a timeout keeps what finished); a table is printed last.

Steps: nf4_load (NF4 bytes on the device equal the estimate's), loss_vs_transformers (the chunked loss against the
model's own, with and without gradients), short_run (train, re-scan, merge, check, in the compute dtype's mixed
precision), export_parity (the vLLM export read back as vLLM reads it), snr_cuda_vs_cpu (the scan on CUDA against
the CPU, also with TF32 switched on), merge_cuda_vs_cpu (the streaming merge's NF4 rebuild, bit for bit),
estimate_vs_measured (the estimate against the allocator's peak), llama3_8b_shapes (two Llama-3-8B-shaped layers:
scan and merge at real matrix shapes), and on two GPUs or more ddp_two_gpus and device_map_two_gpus.

Every model is random and made here (no download): tiny Llamas, and the 8B-shaped checkpoint written one tensor at a
time. On the device machine (torch and transformers installed, no bitsandbytes, no network) carry `wheels/` holding
the four wheels qspec needs that it lacks, 44.5 MB together: bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl
(43.1 MB), peft-0.21.2, accelerate-1.16.0 and fastcore-2.2.41 (`pip download --no-deps -d wheels bitsandbytes==0.50.2
peft==0.21.2 accelerate==1.16.0 fastcore==2.2.41`), and run:

    pip install --no-deps wheels/*.whl && PYTHONPATH=. python benchmarks/gpu_check.py --out $OUT/gpu

Usage: python benchmarks/gpu_check.py [--out DIR] [--only STEP ...]
"""
import argparse, json, math, os, subprocess, sys, tempfile, time, traceback
from pathlib import Path

STEPS = []  # (name, needs: 'any', 'cuda' or 'gpus2', function)


def step(needs='any'):
    def add(fn): STEPS.append((fn.__name__, needs, fn)); return fn
    return add


def tiny(work: Path, name='tiny', **kw) -> Path:
    "A tiny random Llama with the embedded tokenizer, saved once"
    from qspec.models import load_tokenizer, save_tiny
    d = work/name
    if not (d/'config.json').exists():
        tok = load_tokenizer('smollm2'); save_tiny('llama', d, vocab=len(tok), **kw); tok.save_pretrained(d)
    return d


def run_dir(work: Path, dev: str) -> Path:
    "The short run's directory (trained by `short_run`, or here if it was not)"
    d = work/'run'
    if not (d/'metrics.json').exists(): short_run(work, dev)
    return d


@step()
def nf4_load(work, dev):
    import torch
    from transformers import AutoConfig
    from qspec.quant import load_nf4, memory_report
    from qspec.estimate import weight_bytes
    ck = tiny(work, 'wide', hidden=512, layers=4)
    m = load_nf4(str(ck), device=dev, compute_dtype=torch.bfloat16)
    got, want = memory_report(m).nbytes['NF4 linear'], weight_bytes(AutoConfig.from_pretrained(ck), torch.bfloat16)['NF4 linear']
    devs = sorted({str(p.device) for p in m.parameters()})
    return dict(ok=got == want and all(d.startswith(dev.split(':')[0]) for d in devs), nf4_bytes=got, estimated=want, devices=devs)


@step()
def loss_vs_transformers(work, dev):
    import torch
    from qspec.loss import causal_loss
    from qspec.models import tiny_model
    m = tiny_model('llama', hidden=128, vocab=1024).to(dev)
    x = torch.randint(0, 1024, (4, 96), device=dev); lab = x.clone(); lab[:, :20] = -100
    s, n = causal_loss(m, m.get_output_embeddings(), dict(input_ids=x, labels=lab))
    ref = m(input_ids=x, labels=lab).loss
    with torch.no_grad(): s0, _ = causal_loss(m, m.get_output_embeddings(), dict(input_ids=x, labels=lab))
    rel = abs((s / n).item() - ref.item()) / ref.item()
    return dict(ok=rel < 1e-5 and abs(s0.item() - s.item()) <= 1e-5 * abs(s.item()), rel_diff=rel)


@step()
def short_run(work, dev):
    from qspec.train import Run
    r = Run(dict(model=str(tiny(work)), out=str(work/'run'), steps=4, max_length=64, budget=6000, eval_steps=4, save_steps=4,
                 max_eval_examples=8, device=dev), progress=False)
    m = r.run()
    keep = ('compute_dtype', 'peak_memory_mib', 'estimated_device_mib', 'tokens_per_second', 'eval_loss_before', 'eval_loss_after')
    return dict(ok=m['merge_check']['max_abs'] < 1e-2 and m['eval_loss_after'] < m['eval_loss_before'],
                merge_max_abs=m['merge_check']['max_abs'], **{k: m[k] for k in keep})


@step()
def export_parity(work, dev):
    from qspec.export import export
    info = export(run_dir(work, dev), 'vllm', work/'vllm', new_tokens=4, device=dev)
    worst = max(r['max_abs_logit'] for r in info['parity'].values())
    return dict(ok=worst <= 1e-4, max_abs_logit=worst)


@step('cuda')
def snr_cuda_vs_cpu(work, dev):
    import torch
    from qspec.snr import SNRAnalyzer
    ck = tiny(work, 'wide', hidden=512, layers=4)
    cpu = [r['snr'] for r in SNRAnalyzer(str(ck), device='cpu', progress=False).scan().rows]
    out = {}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        gpu = [r['snr'] for r in SNRAnalyzer(str(ck), device=dev, progress=False).scan().rows]
        out[f'max_rel_diff_tf32_{tf32}'] = max(abs(a - b) / abs(a) for a, b in zip(cpu, gpu))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return dict(ok=max(out.values()) <= 1e-5, **out)


@step('cuda')
def merge_cuda_vs_cpu(work, dev):
    from safetensors.torch import load_file
    from qspec.stream import merge_checkpoint
    from qspec.checkpoint import random_adapter
    ck = tiny(work, 'wide', hidden=512, layers=4)
    ad = random_adapter(ck, work/'wide-adapter', r=8)
    a, b = (merge_checkpoint(ck, ad, work/f'merged-{d}', device=d, progress=False) for d in ('cpu', dev))
    ta = {k: v for f in sorted(a.glob('*.safetensors')) for k, v in load_file(f).items()}
    tb = {k: v for f in sorted(b.glob('*.safetensors')) for k, v in load_file(f).items()}
    diff = [k for k in ta if not (ta[k] == tb[k]).all()]
    return dict(ok=ta.keys() == tb.keys() and not diff, tensors=len(ta), different=diff[:5])


@step('cuda')
def estimate_vs_measured(work, dev):
    m = json.loads((run_dir(work, dev)/'metrics.json').read_text())
    ratio = m['peak_memory_mib'] / m['estimated_device_mib']
    return dict(ok=0.5 <= ratio <= 1.5, measured_mib=m['peak_memory_mib'], estimated_mib=m['estimated_device_mib'], ratio=ratio)


@step('cuda')
def llama3_8b_shapes(work, dev):
    from transformers import LlamaConfig
    from qspec.snr import SNRAnalyzer
    from qspec.stream import merge_checkpoint
    from qspec.checkpoint import random_adapter, random_checkpoint
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=2, num_attention_heads=32,
                      num_key_value_heads=8, rope_theta=500000.0, max_position_embeddings=8192)
    ck = random_checkpoint(cfg, work/'llama3-2layers', shard_mb=2000)
    t0 = time.perf_counter(); rows = SNRAnalyzer(str(ck), device=dev, progress=False).scan().rows; scan_s = time.perf_counter() - t0
    ad = random_adapter(ck, work/'llama3-adapter', r=16)
    t0 = time.perf_counter(); merge_checkpoint(ck, ad, work/'llama3-merged', device=dev, progress=False); merge_s = time.perf_counter() - t0
    return dict(ok=all(math.isfinite(r['snr']) for r in rows), matrices=len(rows), scan_s=scan_s, merge_s=merge_s)


@step('gpus2')
def ddp_two_gpus(work, dev):
    import yaml
    cfg = work/'ddp.yaml'
    cfg.write_text(yaml.safe_dump(dict(model=str(tiny(work)), out=str(work/'ddp'), steps=4, max_length=64, budget=6000, device='cuda',
                                       merge=False, resize=False, max_eval_examples=8)))
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '-m', 'qspec.cli', 'train', str(cfg)],
                       capture_output=True, text=True, timeout=600)
    sha = json.loads((work/'ddp'/'metrics.json').read_text())['adapter_sha256_per_process'] if r.returncode == 0 else []
    return dict(ok=r.returncode == 0 and len(set(sha)) == 1, returncode=r.returncode, stderr=r.stderr[-500:])


@step('gpus2')
def device_map_two_gpus(work, dev):
    from qspec.train import Run
    r = Run(dict(model=str(tiny(work)), out=str(work/'split'), steps=2, max_length=64, budget=6000, eval_steps=2, save_steps=2,
                 max_eval_examples=8, device='cuda', device_map={'model.embed_tokens': 0, 'model.layers': 0, 'model.norm': 1,
                 'model.rotary_emb': 1, 'lm_head': 1}, merge=False, resize=False), progress=False)
    m = r.run()
    return dict(ok=math.isfinite(m['eval_loss_after']), eval_loss_after=m['eval_loss_after'])


def available(needs: str) -> str | None:
    "Why a step cannot run here, or None"
    import torch
    if needs == 'cuda' and not torch.cuda.is_available(): return 'skipped: needs CUDA'
    if needs == 'gpus2' and torch.cuda.device_count() < 2: return f'skipped: needs 2 GPUs, this machine has {torch.cuda.device_count()}'
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(Path(__file__).parent/'results'/'gpu'), help='folder for results.json (default: benchmarks/results/gpu)')
    ap.add_argument('--only', nargs='*', help='run only these steps')
    a = ap.parse_args(argv)
    import torch
    out, dev = Path(a.out), 'cuda' if torch.cuda.is_available() else 'cpu'
    out.mkdir(parents=True, exist_ok=True)
    res = dict(device=torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu', torch=torch.__version__, steps={})
    with tempfile.TemporaryDirectory(prefix='qspec-gpu-check-') as w:
        for name, needs, fn in STEPS:
            if a.only and name not in a.only: continue
            why, t0 = available(needs), time.perf_counter()
            if why: r = dict(status=why)
            else:
                try: r = fn(Path(w), dev); r['status'] = 'pass' if r.pop('ok') else 'FAIL'
                except Exception as e: r = dict(status='FAIL', error=f'{type(e).__name__}: {e}'[:500], trace=traceback.format_exc()[-1500:])
            res['steps'][name] = dict(r, seconds=round(time.perf_counter() - t0, 1))
            tmp = out/'results.json.tmp'; tmp.write_text(json.dumps(res, indent=1, default=str)); os.replace(tmp, out/'results.json')
            print(f"{name}: {r['status']}", flush=True)
    rows = [f"| {n} | {s['status']} | {s['seconds']} | " + ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
            for k, v in s.items() if k not in ('status', 'seconds', 'trace')) + ' |' for n, s in res['steps'].items()]
    table = '\n'.join([f"GPU check on {res['device']} (torch {res['torch']})", '', '| step | status | seconds | figures |', '|---|---|---|---|'] + rows)
    (out/'results.md').write_text(table + '\n'); print(table)
    return 1 if any(s['status'] == 'FAIL' for s in res['steps'].values()) else 0


if __name__ == '__main__':
    sys.exit(main())
