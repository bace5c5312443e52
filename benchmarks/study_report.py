"""The report of `benchmarks/study.py`: from the runs stored so far, the per-budget comparisons, whether capacity
binds, whether the best learning rate carries across budgets, the cost, and the picture. Writes study.json, study.md
and study.png into the study's folder; a study still running is reported as far as it has got.

Usage: python benchmarks/study_report.py [--out benchmarks/results/study]
"""
import argparse, json, math, statistics
from pathlib import Path

ORDER = ('snr', 'uniform', 'types', 'compress', 'snr-inverse', 'random', 'qlora')
COLORS = dict(snr='#4c72b0', uniform='#dd8452', types='#55a868', compress='#c44e52', **{'snr-inverse': '#8172b2'}, random='#937860', qlora='#000000')


def budgets(out: Path) -> dict:
    "rank (or 'qlora') -> the Comparison saved for that budget"
    from qspec.compare import load_comparison
    res = {}
    for d in sorted(out.glob('budget-*')):
        if (d/'compare.json').exists(): res[d.name.split('-', 1)[1]] = load_comparison(d)
    return res


def _losses(c, arm, seeds):
    by = {r['seed']: r['eval_loss'] for r in c.arms[arm]['runs']}
    return [by[s] for s in seeds]


def capacity(bs: dict, arm='uniform') -> list:
    "The arm's eval loss at each larger budget against the smallest, paired over the seeds both have (the largest last)"
    from qspec.compare import paired, verdict
    have = sorted((int(k) for k, c in bs.items() if k.isdigit() and arm in c.arms))
    rows = []
    for big in have[1:]:
        lo, hi = bs[str(have[0])], bs[str(big)]
        seeds = sorted({r['seed'] for r in lo.arms[arm]['runs']} & {r['seed'] for r in hi.arms[arm]['runs']})
        if len(seeds) < 2: continue
        p = paired(_losses(hi, arm, seeds), _losses(lo, arm, seeds))
        rows.append(dict(arm=arm, small=have[0], large=big, lr_small=lo.arms[arm]['best_lr'], lr_large=hi.arms[arm]['best_lr'],
                         seeds=seeds, **p, **verdict(p, hi.margin())))
    return rows


def capacity_words(cap: list) -> list:
    "One line per larger budget, and whether capacity binds between the smallest and the largest"
    if not cap: return []
    md = [f"**Capacity** ({cap[0]['arm']}, eval loss at each budget minus at rank {cap[0]['small']}, paired over the seeds both have):", '']
    for c in cap:
        md.append(f"- rank {c['large']} (lr {c['lr_large']:g}) − rank {c['small']} (lr {c['lr_small']:g}): {c['diff']:+.4f} ± {c['half']:.4f} "
                  f"over seeds {c['seeds']}: " + (('resolved, lower' if c['diff'] < 0 else 'resolved, higher') if c['resolved']
                                                    else f"not resolved (detectable {c['mde']:.4f})"))
    last = cap[-1]
    md += ['', 'Between the smallest and the largest budget capacity '
           + ('binds: the larger adapter ends lower, resolved.' if last['resolved'] and last['diff'] < 0 else
              'does not bind in this training: the largest adapter is not resolved lower than the smallest.'), '']
    return md


def lr_carry(bs: dict) -> list:
    "Arms with a learning-rate grid at more than one budget: the best rate at each"
    rows = {}
    for k, c in bs.items():
        for a, d in c.arms.items():
            if d['grid']: rows.setdefault(a, {})[k] = (d['best_lr'], d['grid'])
    return [dict(arm=a, best={k: v[0] for k, v in g.items()}, grids={k: v[1] for k, v in g.items()}) for a, g in rows.items() if len(g) > 1]


def cost(out: Path) -> dict:
    "Runs stored and the seconds they took"
    from qspec.compare import RunStore
    rs = [r for r in RunStore(out/'runs.jsonl').runs().values() if 'seconds' in r]
    return dict(runs=len(rs), seconds=sum(r['seconds'] for r in rs))


def load_cost(out: Path) -> dict | None:
    "cost.json of `study.py --cost`: every arm's step time and training memory, measured side by side"
    f = Path(out)/'cost.json'
    return json.loads(f.read_text()) if f.exists() else None


def cost_words(cst: dict | None) -> list:
    "The side-by-side cost as a table: step time and training memory per arm and budget"
    if not cst: return []
    budgets = sorted(cst['arms'], key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0))
    arms = [a for a in ORDER if any(a in cst['arms'][b] for b in budgets)]
    md = [f"**Cost**, measured side by side in one sitting ({cst['steps']} steps each; {cst['machine']}): median step (s) / training memory (MiB)", '',
          '| arm | ' + ' | '.join(f"rank {b}" if b.isdigit() else 'peft QLoRA' for b in budgets) + ' |', '|---|' + '---|' * len(budgets)]
    for a in arms:
        md.append(f'| {a} | ' + ' | '.join(f"{cst['arms'][b][a]['step_s']:.2f} / {cst['arms'][b][a]['train_mem_mib']:,.0f}" if a in cst['arms'][b] else '' for b in budgets) + ' |')
    return md + ['']


def plot(bs: dict, path: Path, cst: dict | None = None):
    "Eval loss against trainable parameters, one line per arm with 95 % intervals; step time and training memory beside"
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw=dict(width_ratios=[2.2, 1, 1]))
    for arm in ORDER:
        pts = []
        for k, c in bs.items():
            if arm not in c.arms: continue
            r = next(r for r in c.summary() if r['arm'] == arm)
            step, mem = (r['step_s'], r['train_mem_mib']) if not cst else (cst['arms'].get(k, {}).get(arm, {}).get('step_s', math.nan),
                                                                           cst['arms'].get(k, {}).get(arm, {}).get('train_mem_mib', math.nan))
            pts.append((r['trainable'], r['mean'], 0 if r['half'] != r['half'] else r['half'], step, mem))  # cost side by side when measured
        if not pts: continue
        pts.sort()
        x, y, e, s, m = zip(*pts)
        kw = dict(color=COLORS[arm], label=arm)
        if arm == 'qlora': axs[0].errorbar(x, y, yerr=e, fmt='*', ms=12, capsize=3, **kw)
        else: axs[0].errorbar(x, y, yerr=e, fmt='o-', ms=4, capsize=3, **kw)
        axs[1].plot(x, s, '*' if arm == 'qlora' else 'o-', ms=5, **kw); axs[2].plot(x, m, '*' if arm == 'qlora' else 'o-', ms=5, **kw)
    base = [d.get('base_loss') for c in bs.values() for d in c.arms.values() if d.get('base_loss')]
    for ax, t in zip(axs, ('eval loss (mean, 95 % interval)', 'median step (s)', 'training memory (MiB)')):
        ax.set_xscale('log'); ax.set_xlabel('trainable parameters'); ax.set_title(t, fontsize=10)
    axs[0].legend(fontsize=8)
    if base: axs[0].set_title(f'eval loss (mean, 95 % interval); untrained: {statistics.median(base):.3f}', fontsize=10)
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)


def report(out: Path) -> str:
    "Write study.json, study.md and study.png into `out`; return the markdown"
    out = Path(out)
    bs = budgets(out)
    if not bs: return 'no runs yet'
    cap, carry, cst, side = capacity(bs), lr_carry(bs), cost(out), load_cost(out)
    md = [f"**The study so far: {cst['runs']} runs stored, {cst['seconds'] / 3600:.1f} hours of training and evaluation.**", '']
    md += capacity_words(cap)
    for a in carry:
        md.append(f"**Best learning rate of {a['arm']}** by budget: " + ', '.join(f"rank {k}: {v:g}" for k, v in sorted(a['best'].items())))
    md.append('')
    for k in sorted(bs, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0)):
        c = bs[k]
        md += [f"#### Budget: {'peft QLoRA recipe' if k == 'qlora' else f'rank {k} everywhere'}", '', c._repr_markdown_(), '']
        if 'uniform' in c.arms and 'snr' in c.arms:
            from qspec.compare import verdict_words
            for a in c.arms:
                if a in ('uniform', 'qlora'): continue
                try: p = c.versus(a, 'uniform')
                except Exception: continue
                md.append(f"- {a} vs uniform: {p['diff']:+.4f} ± {p['half']:.4f}: {verdict_words(p, c.margin())}")
            md.append('')
    for k, c in bs.items(): c.save(out/f'budget-{k}')  # its compare.md in the words of this version
    md += cost_words(side)
    plot(bs, out/'study.png', side)
    (out/'study.json').write_text(json.dumps(dict(capacity=cap, lr_carry=carry, cost=cst,
                                                  budgets={k: c.summary() for k, c in bs.items()}), indent=1, default=str))
    (out/'study.md').write_text('\n'.join(md) + '\n')
    return '\n'.join(md)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(Path(__file__).parent/'results'/'study'), help='folder of the study')
    print(report(Path(ap.parse_args().out)))
