"""Benchmark: qspec's choices against the simple alternatives, and qspec's default recipe against peft's QLoRA
recipe, each at its best learning rate over several seeds — then where the memory and time savings come from.

Part 1, the study (`qspec.compare.compare`, the same code as `qspec compare`): the embedded model
(SmolLM2-135M-Instruct) in NF4 with double quantization, the embedded data (Python's reference documentation as
chat pairs, prompt masked, training and validation topics kept apart), examples of 64 tokens, batches of 4, 16
steps, AdamW with 2 warm-up steps then cosine decay, qspec's chunked loss for every arm, no gradient
checkpointing (the same for every arm; it trades time for memory and changes no loss). Every arm at a budget of one
million LoRA parameters (`qlora` at its own size); each arm's learning rate is the best of 3e-4, 1e-3 and 3e-3 on
seed 0, and the figures are over seeds 1-5 at that rate (eval loss on 32 validation examples). Part 1 keeps the
SNR learning-rate multipliers 0.5-2 that the library shipped when it was run (its `snr-flat-lr` arm is today's
default).

Part 1b, the study at the shipped defaults (`--part defaults`; flat learning-rate multipliers): the same setup,
with the learning rate the best of 1e-3, 3e-3 and 1e-2 on seed 0 (part 1's best was often its top rate), for the
allocation (`snr` against `snr-inverse`, `uniform` and `random`) and for the signals that might say which modules
can share an update: gradient similarity (`similar`, control `random-pairs`), input similarity (`activation`), and
neighbouring layers sharing only their A or only their B factor (`share-a`, `share-b`, each against random pairs
of the same sizes and ranks).

Part 2, the savings: qspec's default against peft's QLoRA recipe as peft documents it, changing one thing at a
time, each configuration in its own process for 6 steps of 4 × 256 tokens with gradient checkpointing (the
setting both recipes ship with): median step time and peak training memory (`qspec.compare.train_memory`: the
kernel's peak resident set, reset as the steps begin, or the RSS sampled every 5 ms where that reset is refused;
above the RSS once the model is ready; glibc's mmap threshold fixed so that freed tensors leave the RSS).
  qlora        peft's recipe: `prepare_model_for_kbit_training` (inputs require gradients, so the backward pass
               runs down to the embeddings), r=16 on all linear layers, the model's own loss (full-vocabulary logits);
  +chunked     the same with qspec's chunked loss;
  +plan        the SNR plan's adapters (one million parameters) instead of r=16 everywhere, backward still to the
               embeddings;
  qspec        the SNR plan with the backward pass stopping at the lowest adapter (qspec's default).

Usage: python benchmarks/train.py [--part study|defaults|savings|all] [--seeds 5] [--steps 16] [--out benchmarks/results]
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

STUDY = dict(max_length=64, batch_size=4, steps=16, max_eval_examples=32, gradient_checkpointing=False, budget=1_000_000, lr=1e-3)
LRS = [3e-4, 1e-3, 3e-3]
ARMS = ('snr', 'snr-inverse', 'snr-flat-lr', 'random', 'uniform', 'spectrum', 'similar', 'random-pairs', 'resize', 'qlora', 'eva')
DEFAULTS = ('snr', 'snr-inverse', 'uniform', 'random', 'similar', 'random-pairs', 'activation', 'share-a', 'random-share-a', 'share-b', 'random-share-b')
DEFAULTS_LRS = [1e-3, 3e-3, 1e-2]
SAVINGS = ('qlora', '+chunked', '+plan', 'qspec')


def study(out: Path, seeds: int, steps: int, arms=ARMS, lrs=LRS, name='compare', **keys):
    "Part 1: each of `arms` at its best learning rate of `lrs` over `seeds` seeds, into out/`name`"
    from qspec.compare import compare
    t0 = time.perf_counter()
    c = compare(dict(STUDY, steps=steps, out=str(out/'unused'), **keys), arms=arms, seeds=seeds, lrs=lrs, out=out/name)
    print(c._repr_markdown_(), f"\n{time.perf_counter() - t0:.0f} s", flush=True)


def child(kind: str, steps: int) -> dict:
    "Part 2, one configuration: build, train `steps` steps of 4 × 256 tokens, measure"
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from qspec.compare import train_memory
    from qspec.core import compute_dtype
    from qspec.data import pydoc_examples, to_examples
    from qspec.ranks import plan_for
    from qspec.config import TrainConfig
    from qspec.loss import causal_loss
    from qspec.models import load_tokenizer
    from qspec.quant import load_nf4
    from qspec.ranks import apply_plan
    from qspec.snr import SNRAnalyzer
    torch.manual_seed(0)
    tok = load_tokenizer('smollm2')
    ex = [e for e in to_examples(tok, pydoc_examples()['train'], None, 256, overflow='split') if len(e['input_ids']) == 256]
    bs = [{k: torch.tensor([e[k] for e in ex[i * 4:(i + 1) * 4]]) for k in ('input_ids', 'attention_mask', 'labels')} for i in range(steps)]
    base = load_nf4('smollm2', compute_dtype=compute_dtype())
    if kind in ('+plan', 'qspec'):
        plan = plan_for(TrainConfig(), SNRAnalyzer(base, progress=False).scan())
        pm = apply_plan(base, plan, gradient_checkpointing=True)
        if kind == '+plan': pm.enable_input_require_grads()  # as prepare_model_for_kbit_training does: backward to the embeddings
    else:
        m = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)
        pm = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules='all-linear', task_type='CAUSAL_LM'))
    head = pm.get_base_model().get_output_embeddings()
    def loss(b):
        if kind == 'qlora': return pm(**b).loss
        s, n = causal_loss(pm, head, b); return s / n
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
    pm.train(); times = []
    def train():
        for b in bs:
            t0 = time.perf_counter()
            loss(b).backward(); opt.step(); opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    mem = train_memory(train)[1]  # the peak above the RSS before the first step
    return dict(kind=kind, step_s=statistics.median(times[1:]), train_mem_mib=mem,
                trainable=sum(p.numel() for p in pm.parameters() if p.requires_grad))


def savings(out: Path, steps: int = 6) -> dict:
    "Part 2: one change at a time from peft's recipe to qspec's default, each in its own process"
    env, runs = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536'), {}
    for k in SAVINGS:
        r = subprocess.run([sys.executable, __file__, '--child', k, '--steps', str(steps)], capture_output=True, text=True, env=env)
        if r.returncode: sys.exit(f"{k} failed:\n{r.stderr[-3000:]}")
        runs[k] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{k:>9}: {runs[k]['trainable']:>10,} trainable, step {runs[k]['step_s']:.2f} s, training memory {runs[k]['train_mem_mib']:.0f} MiB", flush=True)
    res = dict(steps=steps, runs=runs)
    (out/'savings.json').write_text(json.dumps(res, indent=1))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--part', default='all', choices=['study', 'defaults', 'savings', 'all'], help='which part to run (default: all)')
    ap.add_argument('--seeds', type=int, default=5, help='seeds per arm at its best learning rate (default: 5)')
    ap.add_argument('--steps', type=int, default=16, help='training steps per run of the study (default: 16)')
    ap.add_argument('--out', default=str(Path(__file__).parent/'results'), help='folder for compare/, defaults/ and savings.json')
    ap.add_argument('--child', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: json.dump(child(a.child, a.steps), sys.stdout); return
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    if a.part in ('study', 'all'): study(out, a.seeds, a.steps, lr_scale=[0.5, 2.0])  # the multipliers it was run with
    if a.part in ('defaults', 'all'): study(out, a.seeds, a.steps, DEFAULTS, DEFAULTS_LRS, 'defaults')
    if a.part in ('savings', 'all'): savings(out)


if __name__ == '__main__': main()
