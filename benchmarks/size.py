"""Benchmark: host memory and time of `qspec scan` and `qspec merge` against model size.

Random-weight Llama-shaped checkpoints built from configs (bfloat16, safetensors shards of at most 2 GB, as the hub
shards them), from 0.35B to 2.5B parameters, each with a random rsLoRA adapter of rank 16 on every linear layer.
Each command runs in a fresh Python process of its own (`qspec.cli.main`, exactly what the console script runs);
its peak RSS is that process's own high-water mark (VmHWM), its time the command's wall time. A baseline process
that only imports the libraries (torch, transformers, peft, bitsandbytes) shows what every command pays before it
reads a byte. On the smallest checkpoint the streaming merge is also checked tensor by tensor against an in-memory
merge — peft's adapter model on the NF4 base, merged by `qspec.merge.merge_adapters` — and that in-memory merge's
peak RSS is measured as the baseline the streaming merge replaces.

Usage: python benchmarks/size.py [--sizes 0.35,0.7,1.4,2.5] [--work DIR] [--out benchmarks/results/size.json]
"""
import argparse, json, shutil, subprocess, sys, tempfile, time
from pathlib import Path

SHAPES = {  # billions of parameters -> (hidden, intermediate, layers, heads, kv heads); vocabulary 32,000, untied head
    0.35: (1024, 2816, 24, 16, 8), 0.7: (1536, 4096, 24, 16, 8), 1.4: (2048, 5632, 27, 16, 8), 2.5: (2560, 6912, 32, 20, 10)}

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
kind, args, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
res = {}
if kind == 'imports':
    import torch, transformers, peft, bitsandbytes, qspec.stream, qspec.snr
elif kind == 'cli':
    from qspec.cli import main
    assert main(args) == 0
elif kind == 'in_memory':
    import torch
    from peft import PeftModel
    from qspec.quant import load_nf4
    from qspec.merge import save_merged
    pm = PeftModel.from_pretrained(load_nf4(args[0], device='cpu', compute_dtype=torch.bfloat16), args[1]).eval()
    save_merged(pm, args[2])
res.update(seconds=time.perf_counter() - t0, rss_mib=int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024)
json.dump(res, open(out, 'w'))
'''


def child(kind, *args):
    "Run one measurement in a fresh Python; its own peak RSS and wall time"
    with tempfile.NamedTemporaryFile(suffix='.json') as f:
        r = subprocess.run([sys.executable, '-c', CHILD, kind, json.dumps([str(a) for a in args]), f.name], capture_output=True, text=True)
        if r.returncode: raise SystemExit(f'{kind} {args} failed:\n{r.stderr[-3000:]}')
        return json.loads(Path(f.name).read_text())


def build(size, work):
    "The random checkpoint of `size` billion parameters and its adapter (made once, kept in `work`)"
    import torch
    from transformers import LlamaConfig
    from qspec.checkpoint import checkpoint_params, random_adapter, random_checkpoint
    h, ff, layers, heads, kv = SHAPES[size]
    base, ad = work/f'llama-{size}b', work/f'llama-{size}b-adapter'
    if not (base/'config.json').exists():
        cfg = LlamaConfig(vocab_size=32000, hidden_size=h, intermediate_size=ff, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv, max_position_embeddings=4096, tie_word_embeddings=False)
        random_checkpoint(cfg, base, shard_mb=2000, dtype=torch.bfloat16)
    if not (ad/'adapter_config.json').exists(): random_adapter(base, ad, r=16)
    return base, ad, checkpoint_params(base)


def same_merge(a_dir, b_dir):
    "Largest difference between two merged checkpoints, in units of float16's rounding at each value"
    import torch
    from transformers import AutoModelForCausalLM
    a = AutoModelForCausalLM.from_pretrained(a_dir, dtype=torch.float16).state_dict()
    b = AutoModelForCausalLM.from_pretrained(b_dir, dtype=torch.float16).state_dict()
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        x, y = a[k].float(), b[k].float()
        worst = max(worst, ((x - y).abs() / (y.abs() * 2**-10 + 2**-24)).max().item())
    return worst, len(a)


def summarize(res):
    "Ratios: largest against smallest, the pair nearest 4x apart in size, streaming against in-memory"
    rows = res['sizes']
    r0, r1 = rows[0], rows[-1]
    a, b = min(((x, y) for x in rows for y in rows if y['params'] > x['params']), key=lambda p: abs(p[1]['params'] / p[0]['params'] - 4))
    near = min(rows, key=lambda r: abs(r['params'] - 1.4e9))
    return dict(size_ratio=r1['params'] / r0['params'], merge_rss_ratio=r1['merge']['rss_mib'] / r0['merge']['rss_mib'],
                scan_rss_ratio=r1['scan']['rss_mib'] / r0['scan']['rss_mib'],
                size_ratio_4x=b['params'] / a['params'], merge_rss_ratio_4x=b['merge']['rss_mib'] / a['merge']['rss_mib'],
                scan_rss_ratio_4x=b['scan']['rss_mib'] / a['scan']['rss_mib'],
                streaming_vs_in_memory_rss=r0['merge']['rss_mib'] / res['in_memory']['rss_mib'],
                max_diff_in_f16_ulps=r0['max_diff_in_f16_ulps'],
                merge_rss_mib_at_1_4b=near['merge']['rss_mib'], params_at_1_4b=near['params'])


def plot(res, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = res['sizes']
    p = [r['params'] / 1e9 for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    a.plot(p, [r['merge']['rss_mib'] for r in rows], 'o-', color='#4c72b0', label='qspec merge (streaming)')
    a.plot(p, [r['scan']['rss_mib'] for r in rows], 's-', color='#55a868', label='qspec scan (checkpoint)')
    a.plot(p, [r['checkpoint_mib'] for r in rows], '--', color='#999', label='checkpoint size (bf16)')
    a.axhline(res['imports']['rss_mib'], ls=':', color='#c44e52', label='libraries imported, nothing read')
    im = res['in_memory']
    a.plot([rows[0]['params'] / 1e9], [im['rss_mib']], 'x', color='#dd8452', ms=9, label='in-memory merge (NF4 + fp32 model)')
    a.set_xlabel('parameters (billions)'); a.set_ylabel('peak RSS (MiB)'); a.set_title('host memory'); a.legend(fontsize=7)
    b.plot(p, [r['merge']['seconds'] for r in rows], 'o-', color='#4c72b0', label='qspec merge')
    b.plot(p, [r['scan']['seconds'] for r in rows], 's-', color='#55a868', label='qspec scan')
    b.set_xlabel('parameters (billions)'); b.set_ylabel('seconds'); b.set_title('time (2 CPU cores)'); b.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', default='0.35,0.7,1.4,2.5', help='billions of parameters, from ' + ', '.join(map(str, SHAPES)))
    ap.add_argument('--work', default=None, help='folder for the checkpoints (default: a temporary folder, removed)')
    ap.add_argument('--out', default='benchmarks/results/size.json')
    ap.add_argument('--keep', action='store_true', help='keep the checkpoints in --work')
    a = ap.parse_args()
    sizes = [float(s) for s in a.sizes.split(',')]
    work = Path(a.work or tempfile.mkdtemp(prefix='qspec-size-'))
    work.mkdir(parents=True, exist_ok=True)
    res = dict(command=' '.join(['python', 'benchmarks/size.py'] + sys.argv[1:]), imports=child('imports'), sizes=[])
    print(f"libraries alone: {res['imports']['rss_mib']:.0f} MiB", flush=True)
    for s in sizes:
        base, ad, n = build(s, work)
        mb = sum(f.stat().st_size for f in base.glob('*.safetensors')) / 2**20
        merged = work/f'llama-{s}b-merged'
        m = child('cli', 'merge', base, ad, '--out', merged, '--device', 'cpu')
        sc = child('cli', 'scan', base, '--out', work/f'llama-{s}b-scan')
        row = dict(size=s, params=n, checkpoint_mib=mb, shards=len(list(base.glob('*.safetensors'))), merge=m, scan=sc)
        if s == min(sizes):
            res['in_memory'] = child('in_memory', base, ad, work/'in-memory')
            row['max_diff_in_f16_ulps'], row['tensors_compared'] = same_merge(merged, work/'in-memory')
            shutil.rmtree(work/'in-memory', ignore_errors=True)
        shutil.rmtree(merged, ignore_errors=True)
        res['sizes'].append(row)
        print(f"{n / 1e9:.2f}B ({mb:,.0f} MiB in {row['shards']} shards): merge {m['rss_mib']:,.0f} MiB peak, {m['seconds']:.0f} s; "
              f"scan {sc['rss_mib']:,.0f} MiB, {sc['seconds']:.0f} s", flush=True)
    res['summary'] = summarize(res)
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    plot(res, out.with_suffix('.png'))
    print(json.dumps(res['summary'], indent=1))
    if not (a.keep and a.work): shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
