"""Benchmark: `qspec scan --source checkpoint` against the reference loop, side by side in one run.

Reference (what Spectrum does): load the model in fp32 with transformers, one `torch.linalg.svdvals` per linear
matrix, Spectrum's formula. qspec: the `qspec scan CHECKPOINT --source checkpoint --out DIR` command itself
(`qspec.cli.console`, what the installed console script runs), which also writes snr.json, Spectrum's two files and the heatmap.
Each run is a fresh Python process; its time is the whole process's wall time (interpreter start, imports, reading,
the decomposition, the files), its peak RSS the process's own high-water mark (VmHWM). The two alternate, `--runs`
times each, and the medians are compared.

Then, to say where the time goes: the scan's phases timed one by one in one process (imports, reading every matrix,
the scan with one worker and with the default workers, the files, the heatmap); each decomposition timed per shape
(fp32 Gram + eigvalsh, the same batched by shape, fp64 Gram + eigvalsh, svdvals) on the CPU and on CUDA when there
is one; and a synthetic checkpoint four times larger (the layers repeated, sharded like the hub's), whose peak RSS
should not grow.

Usage: python benchmarks/snr_scan.py [--runs 3] [--out benchmarks/results/snr_scan.json]
"""
import argparse, json, statistics, subprocess, sys, tempfile, time
from pathlib import Path

HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
REFERENCE = r'''
import json, sys, torch
from transformers import AutoModelForCausalLM
from qspec.snr import spectrum_snr
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
res = {n: spectrum_snr(torch.linalg.svdvals(mod.weight.detach().float()), *mod.weight.shape).snr
       for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear) and '.layers.' in n}
json.dump(dict(snr=res, rss_mib=''' + HWM + r'''), open(sys.argv[2], 'w'))
'''
QSPEC = r'''
import json, sys
from qspec.cli import console
ckpt, out, d = sys.argv[1:4]
sys.argv = ['qspec', 'scan', ckpt, '--source', 'checkpoint', '--out', d]
code = console()  # what the installed `qspec` script runs
snr = {r['module']: r['snr'] for r in json.load(open(d + '/snr.json'))['modules']}
json.dump(dict(snr=snr, code=code, rss_mib=''' + HWM + r'''), open(out, 'w'))
'''
PHASES = r'''
import json, sys, time
def rss(): return {k: int(l.split()[1]) / 1024 for l in open('/proc/self/status') for k in ('VmRSS', 'VmHWM') if l.startswith(k + ':')}
out, t = {}, time.perf_counter()
def phase(name):
    global t
    now = time.perf_counter(); out[name] = dict(seconds=now - t, **rss()); t = now
import torch
from qspec.snr import SNRAnalyzer
from qspec.core import save_png
phase('imports (torch, qspec.snr)')
a = SNRAnalyzer(sys.argv[1], progress=False)
todo = a._todo()
for x in todo: x[-1]()
phase(f'read every matrix ({len(todo)})')
a.scan(workers=1)
phase('scan, one worker (read + Gram + eigvalsh)')
res = a.scan()
phase(f'scan, {a._workers(todo)} workers (the default here)')
d = sys.argv[3]
res.to_json(d + '/snr.json'); res.save_spectrum(d, 25)
phase('write snr.json and Spectrum\'s files')
save_png(d + '/snr_heatmap.png', lambda: res.heatmap(25), dpi=110)
phase('heatmap (matplotlib imported here)')
json.dump(out, open(sys.argv[2], 'w'))
'''
SHAPES = r'''
import json, statistics, sys, time, torch
from qspec.snr import gram, gram_singular_values
shapes = json.loads(sys.argv[1])
def timed(f, sync, reps):
    f(); sync()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); sync(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)
rows = []
devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
for dev in devices:
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    for n, m in shapes:
        w = (torch.randn(n, m, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16).to(dev)
        reps = 5 if n * m < 4e6 else 2
        batch = torch.stack([w] * 8)
        r = dict(device=dev, shape=[n, m], gram_eigvalsh=timed(lambda: gram_singular_values(gram(w)), sync, reps),
                 gram_eigvalsh_batched_8=timed(lambda: gram_singular_values(torch.stack([gram(x) for x in batch])), sync, reps) / 8,
                 gram64_eigvalsh=timed(lambda: gram_singular_values(gram(w, torch.float64)), sync, reps),
                 svdvals=timed(lambda: torch.linalg.svdvals(w.float()), sync, reps))
        rows.append(r)
json.dump(dict(rows=rows), open(sys.argv[2], 'w'))
'''


def child(code, *args):
    "Run `code` in a fresh Python; its JSON result and the process's wall time"
    with tempfile.NamedTemporaryFile(suffix='.json') as f, tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, '-c', code, *map(str, args[:1]), f.name, *map(str, args[1:]), d], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode: raise SystemExit(f'benchmark child failed:\n{r.stderr[-3000:]}')
        return dict(json.load(open(f.name)), wall=wall)


def top(snr, p=25):
    from qspec.snr import split_name
    by = {}
    for m, s in snr.items(): by.setdefault(split_name(m)[1], []).append(m)
    return {t: sorted(sorted(ms, key=lambda m: -snr[m])[:len(ms) * p // 100]) for t, ms in by.items()}


def synthetic(src: Path, dst: Path, times: int = 4) -> Path:
    "A checkpoint `times` times larger: every layer repeated, one shard per copy, with an index as on the hub"
    from safetensors.torch import load_file, save_file
    sd = load_file(src/'model.safetensors')
    cfg = json.loads((src/'config.json').read_text())
    n = cfg['num_hidden_layers']
    dst.mkdir(parents=True, exist_ok=True)
    wm = {}
    for c in range(times):
        shard, part = f'model-{c+1:05d}-of-{times:05d}.safetensors', {}
        for k, v in sd.items():
            if '.layers.' in k:
                i = int(k.split('.layers.')[1].split('.')[0])
                k = k.replace(f'.layers.{i}.', f'.layers.{i + c*n}.')
            elif c: continue
            part[k] = v.clone()
            wm[k] = shard
        save_file(part, dst/shard, metadata={'format': 'pt'})
    (dst/'model.safetensors.index.json').write_text(json.dumps({'metadata': {}, 'weight_map': wm}))
    (dst/'config.json').write_text(json.dumps({**cfg, 'num_hidden_layers': n*times}))
    return dst


def side_by_side(ckpt, runs):
    "Reference and qspec alternating, `runs` times each: every run's time and peak RSS, and the medians"
    ref, ours = [], []
    for _ in range(runs):
        ref.append(child(REFERENCE, ckpt)); ours.append(child(QSPEC, ckpt))
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    return ref, ours, dict(reference=dict(seconds=med(ref, 'wall'), rss_mib=med(ref, 'rss_mib'), runs=[(r['wall'], r['rss_mib']) for r in ref]),
                           qspec=dict(seconds=med(ours, 'wall'), rss_mib=med(ours, 'rss_mib'), runs=[(r['wall'], r['rss_mib']) for r in ours]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--runs', type=int, default=3, help='runs of each, alternating (the medians are compared)')
    ap.add_argument('--out', help='write the figures as JSON here')
    a = ap.parse_args()
    from qspec.models import resolve_model
    ckpt = resolve_model('smollm2')
    ref, ours, sbs = side_by_side(ckpt, a.runs)
    rel = max(abs(ours[0]['snr'][m] - s) / abs(s) for m, s in ref[0]['snr'].items())
    same = top(ref[0]['snr']) == top(ours[0]['snr']) and ours[0]['snr'].keys() == ref[0]['snr'].keys()
    phases = child(PHASES, ckpt)
    shapes = child(SHAPES, json.dumps([[576, 576], [192, 576], [1536, 576], [576, 1536], [2048, 2048], [5632, 2048]]))
    with tempfile.TemporaryDirectory() as d:
        big = child(QSPEC, synthetic(ckpt, Path(d)/'x4'))
    res = dict(command=' '.join(['python', 'benchmarks/snr_scan.py'] + sys.argv[1:]), matrices=len(ours[0]['snr']),
               max_rel_diff=rel, same_top25=same, **sbs, qspec_x4=dict(seconds=big['wall'], rss_mib=big['rss_mib'], matrices=len(big['snr'])),
               time_ratio=sbs['qspec']['seconds'] / sbs['reference']['seconds'], rss_ratio=sbs['qspec']['rss_mib'] / sbs['reference']['rss_mib'],
               x4_rss_ratio=big['rss_mib'] / sbs['qspec']['rss_mib'], phases={k: v for k, v in phases.items() if k != 'wall'}, shapes=shapes['rows'])
    print(f"median of {a.runs} alternating runs, whole processes")
    print(f"{'run':<32}{'matrices':>9}{'seconds':>9}{'peak RSS MiB':>14}")
    for label, r, n in [('reference (fp32 + svdvals)', sbs['reference'], len(ref[0]['snr'])), ('qspec scan --source checkpoint', sbs['qspec'], res['matrices']),
                        ('qspec, 4x larger checkpoint', res['qspec_x4'], len(big['snr']))]:
        print(f"{label:<32}{n:>9}{r['seconds']:>9.2f}{r['rss_mib']:>14.0f}")
    print(f"qspec/reference: time {res['time_ratio']:.2f}, peak RSS {res['rss_ratio']:.2f}; 4x checkpoint/1x peak RSS {res['x4_rss_ratio']:.2f}; "
          f"max relative SNR difference {rel:.1e}; identical top-25 % per type: {same}")
    print('\nthe scan by phase (one process):')
    for k, v in res['phases'].items(): print(f"  {k:<48}{v['seconds']:7.2f} s   RSS {v['VmRSS']:5.0f} MiB (peak {v['VmHWM']:.0f})")
    print('\nseconds per matrix, by shape (bf16 weights, as stored):')
    for r in res['shapes']:
        print(f"  {r['device']:<5}{'×'.join(map(str, r['shape'])):>11}  gram+eigvalsh {r['gram_eigvalsh']:.4f}  batched by 8 {r['gram_eigvalsh_batched_8']:.4f}  "
              f"fp64 {r['gram64_eigvalsh']:.4f}  svdvals {r['svdvals']:.4f}")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__': main()
