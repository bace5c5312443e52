"""Benchmark: qspec's default recipe against peft's QLoRA recipe, Spectrum-25 and full fine-tuning — same data, steps, seed and batch, in one run.

Embedded model (SmolLM2-135M-Instruct), embedded data (Python's reference documentation as chat pairs, prompt
masked, training and validation topics kept apart — `qspec.data.pydoc_examples`), batches of 4 × 256 tokens,
the same training loop for every recipe (AdamW, 2 warm-up steps then cosine decay), each recipe in its own
process so that its memory is its own:
  qspec       NF4 + double quantization; LoRA where the SNR plan puts it (a budget of one million parameters,
              ranks and learning-rate multipliers by SNR, rsLoRA), non-reentrant gradient checkpointing, the
              chunked loss over answer tokens (`qspec.loss.causal_loss`), lr 1e-3;
  qlora       as peft documents it: NF4 + double quantization, `prepare_model_for_kbit_training` with gradient
              checkpointing, LoRA r=16, alpha=32, dropout 0.05 on all linear layers, the model's own loss, lr 2e-4;
  qlora-lr    the same at qspec's learning rate (1e-3), so that the comparison is not about the learning rate;
  spectrum25  full fine-tuning of the top 25 % modules of each type by SNR (Spectrum), lr 5e-5;
  full        full fine-tuning, lr 5e-5.
Both 16-bit rows compute in `qspec.core.compute_dtype()` — on a CPU without native bf16 (AVX512-BF16/AMX),
float32, because bf16 matrix products there are about 8× slower than float32 ones.
Figures: trainable parameters; peak RSS of the process (VmHWM); peak training memory (RSS sampled every 5 ms
during the steps, minus the RSS once model and optimizer are ready); median step time; eval loss after the steps
on 32 validation examples. glibc's dynamic mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so that freed
tensors leave the RSS, as they would with any caching-free allocator.
Then SNR-chosen against randomly chosen modules at an equal budget (3 seeds each; batches of 4 × 128 tokens): the
random plan gives each type's ranks and learning-rate multipliers to randomly drawn modules of that type.

Usage: python benchmarks/train.py [--steps 20] [--control-steps 20] [--out results.json]
"""
import argparse, json, math, os, random, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path

LR = dict(qspec=1e-3, qlora=2e-4, **{'qlora-lr': 1e-3}, spectrum25=5e-5, full=5e-5, random=1e-3)


def rss_mib() -> float: return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
def hwm_mib() -> float: return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024


def batches(examples, n, bs, seed):
    "n batches of bs full-length examples, drawn with `seed`"
    import torch
    full = [e for e in examples if len(e['input_ids']) == len(examples[0]['input_ids'])]
    rng = random.Random(seed)
    rng.shuffle(full)
    pick = [full[(i * bs + j) % len(full)] for i in range(n) for j in range(bs)]
    return [{k: torch.tensor([e[k] for e in pick[i * bs:(i + 1) * bs]]) for k in ('input_ids', 'attention_mask', 'labels')} for i in range(n)]


def build(kind, work, seed):
    "The model to train and its loss function"
    import torch
    from qspec.core import compute_dtype
    from qspec.quant import load_nf4
    from qspec.models import load_model
    from qspec.ranks import load_plan, apply_plan, param_groups
    from qspec.loss import causal_loss
    torch.manual_seed(seed)
    if kind in ('qspec', 'random'):
        plan = load_plan(work/('plan.json' if kind == 'qspec' else f'random{seed}.json'))
        pm = apply_plan(load_nf4('smollm2', compute_dtype=compute_dtype()), plan, gradient_checkpointing=True)
        head = pm.get_base_model().get_output_embeddings()
        def loss(b): s, n = causal_loss(pm, head, b); return s / n
        return pm, param_groups(pm, plan, LR[kind]), loss
    if kind in ('qlora', 'qlora-lr'):
        from peft import prepare_model_for_kbit_training, LoraConfig, get_peft_model
        m = prepare_model_for_kbit_training(load_nf4('smollm2', compute_dtype=compute_dtype()), use_gradient_checkpointing=True)
        pm = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules='all-linear', task_type='CAUSAL_LM'))
    else:
        pm = load_model('smollm2', dtype=compute_dtype())
        pm.activation_checkpointing_enable(dict(use_reentrant=False))
        if kind == 'spectrum25':
            from qspec.snr import load_snr
            keep = {m for ms in load_snr(work/'snr.json').select(25).values() for m in ms}
            for n, p in pm.named_parameters(): p.requires_grad = n.rsplit('.', 1)[0] in keep
    params = [p for p in pm.parameters() if p.requires_grad]
    return pm, [dict(params=params, lr=LR[kind])], lambda b: pm(**b).loss


def child(work: Path, kind: str, seed: int, steps: int, seq: int) -> dict:
    import torch
    data = torch.load(work/f'batches{seq}.pt')
    train, val = data['train'][seed][:steps], data['val']
    pm, groups, loss = build(kind, work, seed)
    opt = torch.optim.AdamW(groups)
    for g in opt.param_groups: g['base_lr'] = g['lr']
    pm.train()
    base, peak, stop, times, losses = rss_mib(), [0.0], [False], [], []
    def sample():
        while not stop[0]: peak[0] = max(peak[0], rss_mib()); time.sleep(0.005)
    th = threading.Thread(target=sample, daemon=True); th.start()
    for i, b in enumerate(train):
        f = (i + 1) / 2 if i < 2 else 0.5 * (1 + math.cos(math.pi * (i - 2) / max(1, steps - 2)))
        for g in opt.param_groups: g['lr'] = g['base_lr'] * min(1.0, f)
        t0 = time.perf_counter()
        l = loss(b); l.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0); losses.append(l.item())
    stop[0] = True; th.join()
    pm.eval()
    with torch.no_grad(): ev = statistics.fmean(pm(**b).loss.item() for b in val)
    return dict(kind=kind, seed=seed, trainable=sum(p.numel() for p in pm.parameters() if p.requires_grad), eval_loss=ev,
                step_s=statistics.median(times), train_mem_mib=peak[0] - base, rss_mib=hwm_mib(), ready_rss_mib=base, losses=losses)


def random_plan(plan, seed):
    "Each type's (rank, alpha, lr multiplier) entries dealt to randomly drawn modules of that type: the same budget"
    from qspec.ranks import LoraPlan
    rng, mods = random.Random(seed), {m: dict(v) for m, v in plan.modules.items()}
    for t in sorted({v['type'] for v in mods.values()}):
        ms = sorted(m for m in mods if mods[m]['type'] == t)
        vals = [(plan.modules[m]['rank'], plan.modules[m]['alpha'], plan.modules[m]['lr_scale'], plan.modules[m]['tier']) for m in ms]
        rng.shuffle(vals)
        for m, (r, a, s, tier) in zip(ms, vals): mods[m].update(rank=r, alpha=a, lr_scale=s, tier=tier)
    return LoraPlan(mods, plan.rslora, plan.name, dict(plan.meta, random_seed=seed))


def prepare(work: Path, steps: int, ctl_steps: int):
    import torch
    from qspec.models import load_tokenizer
    from qspec.snr import SNRAnalyzer
    from qspec.quant import load_nf4
    from qspec.core import compute_dtype
    from qspec.ranks import plan_budget
    from qspec.data import pydoc_examples, to_examples
    tok, ex = load_tokenizer('smollm2'), pydoc_examples()
    for seq, n in ((256, steps), (128, ctl_steps)):
        tr = to_examples(tok, ex['train'], None, seq, overflow='split')
        va = to_examples(tok, ex['validation'], None, seq, overflow='split')
        va = [e for e in va if len(e['input_ids']) == seq]
        va = va[::max(1, len(va) // 32)][:32]
        torch.save(dict(train={s: batches(tr, n, 4, s) for s in range(3)}, val=batches(va, 8, 4, 0)), work/f'batches{seq}.pt')
    snr = SNRAnalyzer(load_nf4('smollm2', compute_dtype=compute_dtype()), progress=False).scan()
    snr.to_json(work/'snr.json')
    plan = plan_budget(snr, 1_000_000)
    plan.save(work/'plan.json')
    for s in range(3): random_plan(plan, s).save(work/f'random{s}.json')
    return dict(plan_params=plan.params, adapted=len(plan.adapted), modules=len(plan.modules))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=20, help='steps of 4 × 256 tokens per recipe (default: 20)')
    ap.add_argument('--control-steps', type=int, default=20, help='steps of 4 × 128 tokens per SNR/random run (default: 20)')
    ap.add_argument('--out', help='write the figures as JSON here')
    ap.add_argument('--child', help=argparse.SUPPRESS); ap.add_argument('--work', help=argparse.SUPPRESS)
    ap.add_argument('--seed', type=int, default=0, help=argparse.SUPPRESS); ap.add_argument('--seq', type=int, default=256, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        json.dump(child(Path(a.work), a.child, a.seed, a.steps, a.seq), sys.stdout)
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    def run(kind, seed, steps, seq):
        r = subprocess.run([sys.executable, __file__, '--child', kind, '--work', w, '--seed', str(seed), '--steps', str(steps), '--seq', str(seq)],
                           capture_output=True, text=True, env=env)
        if r.returncode: sys.exit(f"{kind} failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{kind:>10} seed {seed} {seq:>3} tokens: {res['trainable']:>11,} trainable, eval loss {res['eval_loss']:.4f}, "
              f"step {res['step_s']:.2f} s, training memory {res['train_mem_mib']:.0f} MiB, peak RSS {res['rss_mib']:.0f} MiB", flush=True)
        return res
    with tempfile.TemporaryDirectory() as w:
        info = prepare(Path(w), a.steps, a.control_steps)
        main_runs = {k: run(k, 0, a.steps, 256) for k in ('qspec', 'qlora', 'qlora-lr', 'spectrum25', 'full')}
        control = dict(snr=[run('qspec', s, a.control_steps, 128) for s in range(3)],
                       random=[run('random', s, a.control_steps, 128) for s in range(3)])
    q, b = main_runs['qspec'], main_runs['qlora']
    ratios = dict(train_mem=q['train_mem_mib'] / b['train_mem_mib'], step=q['step_s'] / b['step_s'],
                  trainable=q['trainable'] / b['trainable'], eval_loss=q['eval_loss'] / b['eval_loss'],
                  eval_loss_vs_qlora_lr=q['eval_loss'] / main_runs['qlora-lr']['eval_loss'], rss=q['rss_mib'] / b['rss_mib'])
    snr_mean, rnd_mean = (statistics.fmean(r['eval_loss'] for r in control[k]) for k in ('snr', 'random'))
    res = dict(info, steps=a.steps, control_steps=a.control_steps, lr=LR, runs=main_runs, control=control, ratios=ratios,
               snr_mean_eval=snr_mean, random_mean_eval=rnd_mean)
    print(f"qspec / peft QLoRA: training memory {ratios['train_mem']:.2f}×, step time {ratios['step']:.2f}×, trainable parameters "
          f"{ratios['trainable']:.2f}×, eval loss {ratios['eval_loss']:.4f}× (vs QLoRA at lr 1e-3: {ratios['eval_loss_vs_qlora_lr']:.4f}×), peak RSS {ratios['rss']:.2f}×")
    print(f"SNR-chosen vs random modules at equal budget, mean eval loss over 3 seeds: {snr_mean:.4f} vs {rnd_mean:.4f}")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__': main()
