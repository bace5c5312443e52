"""Benchmark: training with gradient-grouped adapters against ungrouped ones — same plan, data, steps and seed, in one run.

Embedded model in NF4 with double quantization; embedded data (Python's reference documentation, split into
training and validation topics by `qspec.data.split_topics`); qspec's default plan (a budget of one million LoRA
parameters placed by SNR). Three trainings, each in its own process so that its peak RSS is its own:
  ungrouped  the plan as it is;
  grouped    `GradientGrouper` (gradient sketches on four training batches): modules of a type and shape, in any
             layer order, share one adapter when their gradients' average cosine similarity is at least the
             threshold, at most `--max-size` modules a group;
  random     control: the same group sizes per type and shape, members drawn at random.
Figures: trainable parameters, peak RSS, median step time, eval loss on the validation topics.

Usage: python benchmarks/grouping.py [--steps 30] [--threshold 0.0] [--max-size 2] [--out results.json]
"""
import argparse, json, random, statistics, subprocess, sys, tempfile, time
from pathlib import Path


def rss_peak_mib() -> float:
    "This process's own peak RSS (VmHWM); `ru_maxrss` would carry a parent's peak across fork and exec"
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024


def child(work: Path, kind: str, lr: float) -> dict:
    "One training run: load, adapt, train on the saved batches, evaluate"
    import torch
    from qspec.core import compute_dtype
    from qspec.quant import load_nf4
    from qspec.ranks import load_plan, apply_plan, param_groups
    from qspec.grouping import load_groups, share_adapters
    torch.manual_seed(0)
    plan, data = load_plan(work/'plan.json'), torch.load(work/'batches.pt')
    groups = load_groups(work/f'{kind}.json') if kind != 'ungrouped' else None
    if groups: plan = groups.grouped_plan(plan)
    model = load_nf4('smollm2', compute_dtype=compute_dtype())
    pm = apply_plan(model, plan, gradient_checkpointing=True)
    if groups: share_adapters(pm, groups)
    opt = torch.optim.AdamW(param_groups(pm, plan, lr))
    pm.train()
    times = []
    for b in data['train']:
        t0 = time.perf_counter()
        pm(input_ids=b, labels=b).loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    pm.eval()
    with torch.no_grad(): ev = sum(pm(input_ids=b, labels=b).loss.item() for b in data['val']) / len(data['val'])
    return dict(kind=kind, trainable=sum(p.numel() for p in pm.parameters() if p.requires_grad), eval_loss=ev,
                step_s=statistics.median(times), rss_mib=rss_peak_mib(), groups=len(groups.groups) if groups else len(plan.adapted))


def random_like(groups, plan, seed=0):
    "The same group sizes per type and shape as `groups`, members drawn at random"
    from qspec.grouping import Groups
    rng, out = random.Random(seed), []
    by = {}
    for g in groups.groups: by.setdefault((g['type'], tuple(g['shape'])), []).append(g)
    for (t, shape), gs in by.items():
        ms = [m for g in gs for m in g['members']]
        rng.shuffle(ms)
        for g in gs:
            mem, ms = sorted(ms[:len(g['members'])]), ms[len(g['members']):]
            out.append(dict(type=t, shape=list(shape), rank=max(plan.modules[m]['rank'] for m in mem), members=mem))
    return Groups(out, groups.similarity, groups.zero, groups.threshold, False)


def prepare(work: Path, steps: int, threshold: float, max_size: int) -> dict:
    "Scan, plan, batches, and the two groupings, written into `work`"
    import torch
    from qspec.core import compute_dtype
    from qspec.data import pydoc_topics, split_topics, token_batches
    from qspec.models import load_tokenizer
    from qspec.quant import load_nf4
    from qspec.snr import SNRAnalyzer
    from qspec.ranks import plan_budget
    from qspec.grouping import GradientGrouper
    tok, topics = load_tokenizer('smollm2'), pydoc_topics()
    tr, va = split_topics(topics)
    data = dict(train=token_batches(tok, [topics[t] for t in tr], steps, 4, 128, seed=1),
                val=token_batches(tok, [topics[t] for t in va], 8, 4, 128, seed=2))
    torch.save(data, work/'batches.pt')
    plan = plan_budget(SNRAnalyzer('smollm2', progress=False).scan(), 1_000_000)
    plan.save(work/'plan.json')
    base = load_nf4('smollm2', compute_dtype=compute_dtype())
    with torch.no_grad(): before = sum(base(input_ids=b, labels=b).loss.item() for b in data['val']) / len(data['val'])
    t0 = time.perf_counter()
    gr = GradientGrouper(base, plan, data['train'][:4], threshold=threshold, contiguous=False, max_size=max_size).fit(progress=False)
    fit_s = time.perf_counter() - t0
    gr.save(work/'grouped.json')
    random_like(gr, plan).save(work/'random.json')
    return dict(plan_params=plan.params, adapted=len(plan.adapted), eval_loss_before=before, group_fit_s=fit_s,
                shared_groups=len(gr.shared()), threshold=threshold, max_size=max_size, train_topics=len(tr), val_topics=len(va))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=30, help='training steps of 4 × 128 tokens (default: 30)')
    ap.add_argument('--threshold', type=float, default=0.0, help='grouping threshold (default: 0.0)')
    ap.add_argument('--max-size', type=int, default=2, help='largest group (default: 2)')
    ap.add_argument('--lr', type=float, default=1e-3, help='base learning rate (default: 1e-3)')
    ap.add_argument('--out', help='write the figures as JSON here')
    ap.add_argument('--child', help=argparse.SUPPRESS); ap.add_argument('--work', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        json.dump(child(Path(a.work), a.child, a.lr), sys.stdout)
        return
    with tempfile.TemporaryDirectory() as w:
        info = prepare(Path(w), a.steps, a.threshold, a.max_size)
        runs = {}
        for kind in ('ungrouped', 'grouped', 'random'):
            r = subprocess.run([sys.executable, __file__, '--child', kind, '--work', w, '--lr', str(a.lr)],
                               check=True, capture_output=True, text=True)
            runs[kind] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{kind:>9}: {runs[kind]['trainable']:>9,} trainable in {runs[kind]['groups']:>3} adapters, "
                  f"eval loss {runs[kind]['eval_loss']:.4f}, peak RSS {runs[kind]['rss_mib']:.0f} MiB, "
                  f"step {runs[kind]['step_s']:.2f} s", flush=True)
    u, g, rnd = runs['ungrouped'], runs['grouped'], runs['random']
    res = dict(info, steps=a.steps, lr=a.lr, runs=runs,
               param_ratio=g['trainable'] / u['trainable'], eval_ratio=g['eval_loss'] / u['eval_loss'],
               random_eval_ratio=rnd['eval_loss'] / u['eval_loss'], rss_ratio=g['rss_mib'] / u['rss_mib'],
               step_ratio=g['step_s'] / u['step_s'])
    print(f"eval loss before training {info['eval_loss_before']:.4f}; grouping took {info['group_fit_s']:.1f} s")
    print(f"grouped/ungrouped: trainable parameters {res['param_ratio']:.2f}× ({1 - res['param_ratio']:.0%} fewer), "
          f"eval loss {res['eval_ratio']:.4f}×, peak RSS {res['rss_ratio']:.2f}×, step time {res['step_ratio']:.2f}×; "
          f"random grouping: eval loss {res['random_eval_ratio']:.4f}×")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__': main()
