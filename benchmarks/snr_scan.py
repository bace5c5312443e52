"""Benchmark: qspec's checkpoint SNR scan against a faithful reference loop, in one run.

Reference (what Spectrum does): load the model in fp32 with transformers, one `torch.linalg.svdvals` per linear
matrix, Spectrum's formula. qspec: `SNRAnalyzer` on the checkpoint directory (safetensors read tensor by tensor,
singular values from the Gram matrix). Each runs in its own process, so its time and peak RSS are its own. "work" time starts after Python has started and
imported the same modules in both (torch, transformers, qspec.snr: both runs pay that alike); "process" time is the whole child process.
Then a scaling run: a synthetic checkpoint four times larger (the layers repeated, sharded like the hub's).

Usage: python benchmarks/snr_scan.py [--out results.json]
"""
import argparse, json, subprocess, sys, tempfile, time
from pathlib import Path

PRELUDE = r'''
import json, sys, time, torch
from transformers import AutoModelForCausalLM
from qspec.snr import SNRAnalyzer, spectrum_snr
t0 = time.perf_counter()  # after Python and the same imports, which both runs pay alike
'''
REFERENCE = PRELUDE + r'''
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
res = {n: spectrum_snr(torch.linalg.svdvals(mod.weight.detach().float()), *mod.weight.shape).snr
       for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear) and '.layers.' in n}
hwm = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024
json.dump(dict(snr=res, seconds=time.perf_counter() - t0, rss_mib=hwm), open(sys.argv[2], 'w'))
'''
QSPEC = PRELUDE + r'''
r = SNRAnalyzer(sys.argv[1], progress=False).scan()
hwm = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024
json.dump(dict(snr={x['module']: x['snr'] for x in r.rows}, seconds=time.perf_counter() - t0, rss_mib=hwm), open(sys.argv[2], 'w'))
'''


def run(code, *args):
    """Run `code` in a fresh Python; return its JSON result with the process's wall time.
    Peak RSS is the child's own VmHWM (the high-water mark of its address space): `ru_maxrss` would carry over
    the parent's peak across fork and exec."""
    with tempfile.NamedTemporaryFile(suffix='.json') as f:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, '-c', code, *map(str, args), f.name], check=True)
        wall = time.perf_counter() - t0
        res = json.load(open(f.name))
    return dict(res, wall=wall)


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', help='write the figures as JSON here')
    a = ap.parse_args()
    from qspec.models import resolve_model
    ckpt = resolve_model('smollm2')
    ref, ours = run(REFERENCE, ckpt), run(QSPEC, ckpt)
    rel = max(abs(ours['snr'][m] - s) / abs(s) for m, s in ref['snr'].items())
    same = top(ref['snr']) == top(ours['snr'])
    with tempfile.TemporaryDirectory() as d:
        big = run(QSPEC, synthetic(ckpt, Path(d)/'x4'))
    res = dict(matrices=len(ours['snr']), max_rel_diff=rel, same_top25=same,
               reference=dict(work_s=ref['seconds'], process_s=ref['wall'], rss_mib=ref['rss_mib']),
               qspec=dict(work_s=ours['seconds'], process_s=ours['wall'], rss_mib=ours['rss_mib']),
               qspec_x4=dict(work_s=big['seconds'], process_s=big['wall'], rss_mib=big['rss_mib'], matrices=len(big['snr'])),
               time_ratio=ours['seconds'] / ref['seconds'], process_time_ratio=ours['wall'] / ref['wall'],
               rss_ratio=ours['rss_mib'] / ref['rss_mib'], x4_rss_ratio=big['rss_mib'] / ours['rss_mib'])
    print(f"{'run':<30}{'matrices':>9}{'work s':>8}{'process s':>10}{'peak RSS MiB':>14}")
    for label, r in [('reference (fp32 + svdvals)', ref), ('qspec checkpoint scan', ours), ('qspec, 4x larger checkpoint', big)]:
        print(f"{label:<30}{len(r['snr']):>9}{r['seconds']:>8.1f}{r['wall']:>10.1f}{r['rss_mib']:>14.0f}")
    print(f"qspec/reference: time {res['time_ratio']:.2f} (whole process {res['process_time_ratio']:.2f}), peak RSS {res['rss_ratio']:.2f}; "
          f"4x checkpoint/1x peak RSS {res['x4_rss_ratio']:.2f}; max relative SNR difference {rel:.1e}; identical top-25 % per type: {same}")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__': main()
