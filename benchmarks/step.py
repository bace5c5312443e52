"""Benchmark: qspec's training step against the CPU's matrix-multiply limit, measured in one run.

The step is the one `qspec train` takes by default on the embedded model: SmolLM2-135M-Instruct in NF4 with double
quantization, the default plan's adapters (one rank on every linear layer, a million parameters), gradient
checkpointing, the chunked loss (256 positions per chunk on CPU), AdamW, 4 × 256 tokens of the embedded data.
It runs in each compute dtype the CPU has: float32 always (what a CPU without bf16 trains in), bfloat16 where the CPU
computes it natively (`qspec.core.compute_dtype`). For each, in the same process:

- **step time**: the median of `--steps` steps after two warm-up steps;
- **FLOPs**: counted by `torch.utils.flop_counter.FlopCounterMode` over one step of the same model and plan with plain
  (unquantized) linears, with and without checkpointing. bitsandbytes' 4-bit product is an operator of its own that
  the counter cannot see into; plain linears of the same shapes do the same multiplications;
- **the limit**: every matrix product that step runs (recorded by a dispatch mode: shape, dtype, how often) timed
  alone, back to back, at the same dtype and thread count, and attention's forward and backward timed alone at the
  step's shape: the time the step's arithmetic takes at the rate this CPU multiplies those shapes;
- **share** = limit / step time: how much of the step is the products themselves.

Then the step's time by kind of work (`torch.profiler`, self time per operator, one step) says what the rest is.
Then the change that was made, before against after, alternating in the same process: the chunked loss taking one
exponential of the logits instead of two (`logsumexp`, then the softmax).

Usage: python benchmarks/step.py [--steps 5] [--out benchmarks/results/step.json]
"""
import argparse, json, statistics, sys, time
from collections import Counter
from pathlib import Path

MM = ('aten.mm.default', 'aten.addmm.default', 'aten.bmm.default')


def batches(n, tok):
    import torch
    from qspec.data import pydoc_examples, to_examples
    ex = [e for e in to_examples(tok, pydoc_examples()['train'], None, 256, overflow='split') if len(e['input_ids']) == 256]
    return [{k: torch.tensor([e[k] for e in ex[i * 4:(i + 1) * 4]]) for k in ('input_ids', 'attention_mask', 'labels')} for i in range(n)]


def build(dtype, quantized=True, checkpointing=True):
    "The default run's model and plan, and a step function (loss, backward, AdamW)"
    import torch
    from qspec.config import TrainConfig
    from qspec.loss import causal_loss, loss_chunk
    from qspec.models import load_model
    from qspec.quant import load_nf4
    from qspec.ranks import apply_plan, plan_for
    from qspec.snr import shape_scan
    torch.manual_seed(0)
    base = load_nf4('smollm2', device='cpu', compute_dtype=dtype) if quantized else load_model('smollm2', dtype=dtype)
    plan = plan_for(TrainConfig(), shape_scan(base.config))  # the default allocation is uniform: shapes decide it
    pm = apply_plan(base, plan, gradient_checkpointing=checkpointing)
    head = pm.get_base_model().get_output_embeddings()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
    pm.train()
    chunk = loss_chunk('cpu')
    def step(b):
        s, n = causal_loss(pm, head, b, chunk); (s / n).backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return pm, step


def timed_steps(step, bs):
    for b in bs[:2]: step(b)
    ts = []
    for b in bs[2:]:
        t = time.perf_counter(); step(b); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def flops_and_products(dtype, b, checkpointing):
    "FLOPs of one step (plain linears, same shapes) by operator, and the matrix products it runs"
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode
    _, step = build(dtype, quantized=False, checkpointing=checkpointing)
    step(b)
    prods = Counter()
    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func) in MM:
                a, w = (args[1], args[2]) if str(func) == 'aten.addmm.default' else (args[0], args[1])
                prods[(str(func), tuple(a.shape), tuple(w.shape), str(a.dtype))] += 1
            elif 'scaled_dot_product' in str(func):  # forward (q, k, v, ...) or backward (grad, q, k, v, ...)
                bwd = 'backward' in str(func)
                q, k = (args[1], args[2]) if bwd else (args[0], args[1])
                prods[('sdpa_backward' if bwd else 'sdpa', tuple(q.shape), tuple(k.shape), str(q.dtype))] += 1
            return func(*args, **(kwargs or {}))
    fc = FlopCounterMode(display=False)
    with fc, Record(): step(b)
    by_op = {str(k): v for k, v in fc.get_flop_counts()['Global'].items()}
    return fc.get_total_flops(), by_op, prods


def limit_seconds(prods, reps=3):
    "The recorded products timed alone, back to back; attention's forward and backward alone at the step's shapes"
    import torch
    import torch.nn.functional as F
    def timed(f):
        f(); t = time.perf_counter()
        for _ in range(reps): f()
        return (time.perf_counter() - t) / reps
    total = 0.0
    for (op, a, w, dt), n in prods.items():
        dt = getattr(torch, dt.split('.')[-1])
        if op.startswith('sdpa'):  # the layout the model passes: (batch, heads, positions, head dim)
            q, k, v = (torch.randn(*s, dtype=dt, requires_grad=True) for s in (a, w, w))
            fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
            t_fwd = timed(lambda: fwd().detach())
            s = t_fwd if op == 'sdpa' else max(0.0, timed(lambda: fwd().sum().backward()) - t_fwd)
        else:
            x, y = torch.randn(*a, dtype=dt), torch.randn(*w, dtype=dt)
            s = timed((lambda: torch.bmm(x, y)) if op == 'aten.bmm.default' else (lambda: torch.mm(x, y)))
        total += s * n
    return total


def profile_step(step, b):
    "Self time per operator over one step, grouped: products, attention, bitsandbytes, copies, elementwise, the rest"
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as p: step(b)
    groups = Counter()
    for e in p.key_averages():
        k, s = e.key, e.self_cpu_time_total / 1e6
        g = ('products' if k in ('aten::mm', 'aten::addmm', 'aten::bmm') else
             'attention' if 'scaled_dot_product' in k else
             'bitsandbytes (dequantize)' if k.startswith('bitsandbytes::') else
             'copies and casts' if k in ('aten::copy_', 'aten::_to_copy', 'aten::to', 'aten::clone', 'aten::contiguous') else
             'elementwise' if k.split('::')[-1].rstrip('_') in ('mul', 'add', 'sub', 'div', 'exp', 'pow', 'silu', 'silu_backward', 'rsqrt', 'neg', 'mean', 'sum', 'cat', 'logsumexp', 'amax', 'gather', 'fill', 'zero', 'where', 'index_put', 'lerp', 'sqrt', 'addcmul', 'addcdiv') else 'other')
        groups[g] += s
    return dict(groups)


def two_exp_forward(ctx, h, w, y, chunk, grads=True):
    "`qspec.loss._ChunkedCE.forward` as it was before this benchmark (commit a375f31): `logsumexp`, then the softmax's own exponential"
    import torch
    ctx.w_dtype = w.dtype
    loss = torch.zeros((), dtype=torch.float32, device=h.device)
    gh = torch.empty_like(h) if grads and ctx.needs_input_grad[0] else None
    gw = torch.zeros_like(w, dtype=torch.float32) if grads and ctx.needs_input_grad[1] else None
    for i in range(0, len(y), chunk):
        hc, yc = h[i:i + chunk].to(w.dtype), y[i:i + chunk]
        z = (hc @ w.T).float()
        lse = z.logsumexp(-1)
        loss += (lse - z.gather(1, yc[:, None])[:, 0]).sum()
        if gh is None and gw is None: continue
        g = z.sub_(lse[:, None]).exp_()
        g[torch.arange(len(yc), device=g.device), yc] -= 1
        if gh is not None: gh[i:i + chunk] = (g.to(w.dtype) @ w).to(h.dtype)
        if gw is not None: gw += g.T @ hc.float()
    ctx.save_for_backward(gh, gw)
    return loss


def before_after(dt, bs, rounds=3):
    "The step with the loss as it was and as it is, alternating in one process: each one's median step time"
    import qspec.loss
    _, step = build(dt)
    now = qspec.loss._ChunkedCE.forward
    times = {'before': [], 'after': []}
    for b in bs[:2]: step(b)
    for _ in range(rounds):
        for k, f in (('before', staticmethod(two_exp_forward)), ('after', now)):
            qspec.loss._ChunkedCE.forward = f
            for b in bs[2:4]:
                t = time.perf_counter(); step(b); times[k].append(time.perf_counter() - t)
    qspec.loss._ChunkedCE.forward = now
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=5, help='timed steps (after two warm-up steps)')
    ap.add_argument('--out', help='write the figures as JSON here')
    a = ap.parse_args()
    import torch
    from qspec.core import compute_dtype
    from qspec.models import load_tokenizer
    bs = batches(a.steps + 3, load_tokenizer('smollm2'))
    dtypes = [torch.float32] + ([torch.bfloat16] if compute_dtype('cpu') == torch.bfloat16 else [])
    res = dict(command=' '.join(['python', 'benchmarks/step.py'] + sys.argv[1:]), threads=torch.get_num_threads(), tokens=4 * 256, dtypes={})
    for dt in dtypes:
        _, step = build(dt)
        sec = timed_steps(step, bs)
        prof = profile_step(step, bs[-1])
        f_ck, by_op, prods = flops_and_products(dt, bs[0], True)
        f_plain, _, _ = flops_and_products(dt, bs[0], False)
        lim = limit_seconds(prods)
        ba = before_after(dt, bs)
        name = str(dt).split('.')[-1]
        res['dtypes'][name] = dict(loss_before_s=ba['before'], loss_after_s=ba['after'], share_before=lim / ba['before'], share_after=lim / ba['after'], step_s=sec, tokens_per_s=4 * 256 / sec, flops=f_ck, flops_no_checkpointing=f_plain, flops_by_op=by_op,
                                   limit_s=lim, share=lim / sec, achieved_tflops=f_ck / sec / 1e12, limit_tflops=f_ck / lim / 1e12,
                                   profile_s=prof, products=len(prods))
        r = res['dtypes'][name]
        print(f"{name}: step {sec:.3f} s ({r['tokens_per_s']:.0f} tokens/s); {f_ck / 1e9:.0f} GFLOP with checkpointing, {f_plain / 1e9:.0f} without; "
              f"limit {lim:.3f} s ({r['limit_tflops'] * 1e3:.0f} GFLOP/s); share {r['share']:.0%}", flush=True)
        print(f"   the loss's one exponential: step {ba['before']:.3f} s before, {ba['after']:.3f} s after (share {lim / ba['before']:.0%} -> {lim / ba['after']:.0%})", flush=True)
        print('   time by kind of work (one profiled step): ' + ', '.join(f'{k} {v:.2f} s' for k, v in sorted(prof.items(), key=lambda x: -x[1])), flush=True)
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
