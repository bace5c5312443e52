"""Benchmark: does SNR placement pay? qspec's allocation against its alternatives at budgets where capacity binds.

The embedded model (SmolLM2-135M-Instruct) in NF4 with double quantization, the embedded data (Python's reference
documentation as chat pairs, prompt masked, training and validation topics kept apart). Every run trains 50 steps
of 4 examples of up to 128 tokens (25,600 training tokens, padding included), AdamW, 5 warm-up steps then cosine decay,
qspec's chunked loss, no gradient checkpointing, and is evaluated on 32 validation examples, in float32 on every
machine (the study began on a CPU without native bfloat16; the compute dtype is part of each run's key, so a
machine that would pick bfloat16 must not start a second, incomparable study).

Budgets: the parameters of one LoRA rank on every linear module times 1, 4, 16 and 64 (on the embedded model
305,280 per unit of rank: 0.31M, 1.22M, 4.88M, 19.5M). The second is "the default budget" (the shipped default is
1M). Arms (`qspec.compare.ARMS`): snr (the default), uniform, types (type budgets, then SNR within each type),
compress (uniform at 4x the budget, then cut to it by SVD) at every budget; snr-inverse and random at two; peft's
QLoRA recipe (r=16 everywhere, its own size) as a reference point. Each arm's learning rate is the best of
1e-3, 3e-3 and 1e-2 on seed 0 at the default budget, and again at the smallest and the largest budget for snr and
uniform (to check that the best rate carries across budgets under rsLoRA rather than assume it). An arm run without
a grid at a budget takes the rate the grids found there when they agree (snr's when not), else its own best at the
default budget. Then 5 seeds at the default budget, 3 elsewhere.

Every finished run is stored as it ends (runs.jsonl: config hash, arm, lr, seed -> result); running the study again
continues where it stopped and never repeats a finished run. Kill it at any time: at most the run in progress is lost.

The step times and training memory of the stored runs come from whichever machine ran each sitting; `--cost` measures
every arm at every budget side by side in one sitting (12 steps each) into cost.json, which the report's cost panel uses.

Usage: python benchmarks/study.py [--out benchmarks/results/study] [--report-only] [--cost] [--part head|tail]
       python benchmarks/study.py --mini --out DIR   (a two-run miniature on a tiny random model: checks the harness)
"""
import argparse, json, statistics, sys, time
from pathlib import Path

STUDY = dict(max_length=128, batch_size=4, steps=50, warmup_steps=5, max_eval_examples=32, gradient_checkpointing=False,
             lr=3e-3, device='auto', compute_dtype='float32')
LRS = [1e-3, 3e-3, 1e-2]
RANKS = (1, 4, 16, 64)  # the budgets, in units of one rank on every linear module
DEFAULT = 4  # the default budget's rank
MAIN, PAIRED = ('snr', 'uniform', 'types', 'compress'), ('snr-inverse', 'random')


def rank_cost(model: str) -> int:
    "Parameters of one LoRA rank on every linear module of `model`, from its config's shapes"
    from qspec.snr import shape_scan
    from qspec.models import model_config
    return sum(sum(r['shape']) for r in shape_scan(model_config(model)).rows)


def plan(model: str) -> list:
    "The study as (rank, arms, lrs-or-None, seeds) steps, in the order that makes partial results most useful"
    return [(DEFAULT, ['uniform'], LRS, 5),                     # the default budget's reference arm
            (64, ['uniform'], None, 3), (1, ['uniform'], None, 3),  # does capacity bind? (at the default budget's rate)
            (DEFAULT, ['snr'], LRS, 5), (1, ['uniform'], LRS, 3),  # the default; does the best rate carry to the smallest budget?
            (DEFAULT, ['compress'], LRS, 5), (1, ['snr'], LRS, 3),
            (16, ['uniform', 'snr'], None, 3),  # the four budgets for the two main arms
            (64, ['uniform', 'snr'], LRS, 3),  # ... the largest at its own best rate: rsLoRA's update grows with the rank
            (DEFAULT, ['types'], LRS, 5),
            (1, ['compress', 'types'], None, 3), (16, ['compress', 'types'], None, 3), (64, ['compress', 'types'], None, 3),
            (DEFAULT, list(PAIRED), LRS, 5), (1, list(PAIRED), None, 3),
            ('qlora', ['qlora'], LRS, 3)]


def best_rate(out: Path, rank, arm: str) -> float:
    "The rate of an arm run without a grid at budget `rank`: the best of the arms that had one there, else its own at the default"
    from qspec.compare import load_comparison
    d = out/f'budget-{rank}'
    here = load_comparison(d).arms if (d/'compare.json').exists() else {}
    found = sorted({v['best_lr'] for v in here.values() if v.get('grid')} - {None})
    if len(found) == 1: return found[0]  # the arms with a grid at this budget agree
    if 'snr' in here and here['snr'].get('grid'): return here['snr']['best_lr']
    return load_comparison(out/f'budget-{DEFAULT}').arms[arm]['best_lr']


def config(model: str, rank, base: dict) -> dict:
    "The config of one budget: the budget of `rank` ranks everywhere, max_rank high enough for SNR to spend it"
    r = DEFAULT if rank == 'qlora' else rank
    return dict(base, model=model, budget=r * rank_cost(model), max_rank=max(64, 4 * r))


TAIL = 3  # the last steps of the plan (peft's recipe, then inverse and random), which a second process can take: --part tail


def part(steps: list, which: str | None) -> list:
    "All the plan's steps, or its head or its tail (two processes on two cores finish the study sooner than one on both)"
    tail = [steps[-1]] + steps[-1 - TAIL + 1:-1]  # peft's recipe first: it needs no other arm's rate
    return {None: steps, 'head': steps[:-TAIL], 'tail': tail}[which]


def run(out: Path, model: str = 'smollm2', base: dict = STUDY, steps=None, progress=True, which=None):
    "Run (or continue) the study; one comparison per budget into out/budget-<rank>/, every run into out/runs.jsonl"
    from qspec.compare import compare
    out.mkdir(parents=True, exist_ok=True)
    store = out/'runs.jsonl'
    for rank, arms, lrs, seeds in part(steps or plan(model), which):
        for a in arms:  # one arm at a time: each is in the report as soon as it is done
            t0 = time.perf_counter()
            rates = lrs or [best_rate(out, rank, a)]  # decided as the arm starts: an earlier arm's grid may have just ended
            c = compare(config(model, rank, base), [a], seeds, rates, out=None, progress=False, store=store)
            _merge(out/f'budget-{rank}', c)
            if progress: print(f"budget {rank}: {a} done in {time.perf_counter() - t0:.0f} s", flush=True)


def cost(out: Path, model: str = 'smollm2', base: dict = STUDY, steps: int = 12, which=None, progress=True) -> dict:
    "Median step time and training memory of every arm at every budget it is studied at, side by side in this one sitting"
    from qspec.compare import arm_process
    res = {}
    which = which or [(r, list(MAIN) + (list(PAIRED) if r in (1, DEFAULT) else [])) for r in RANKS] + [('qlora', ['qlora'])]
    for rank, arms in which:
        cfg = dict(config(model, rank, base), steps=steps, warmup_steps=2, max_eval_examples=4)
        for a in arms:
            r = arm_process(cfg, a, [cfg['lr']], 1)['runs'][0]
            res.setdefault(str(rank), {})[a] = {k: r[k] for k in ('step_s', 'train_mem_mib', 'trainable')}
            if progress: print(f"cost: budget {rank} {a}: {r['step_s']:.2f} s a step, {r['train_mem_mib']:.0f} MiB", flush=True)
    (out/'cost.json').write_text(json.dumps(dict(steps=steps, machine=_machine(), arms=res), indent=1))
    return res


def _machine() -> str:
    "The processor (and GPU, if any) the cost was measured on"
    import platform, torch
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ''
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}"


def _merge(d: Path, c):
    "Add the arms of `c` to the comparison saved in `d` (or start it), under a lock: another process may be merging"
    import fcntl
    from qspec.compare import Comparison, load_comparison
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent/'.merge.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = load_comparison(d) if (d/'compare.json').exists() else None
        arms = dict(old.arms if old else {}, **c.arms)
        Comparison(arms, 'snr' if 'snr' in arms else next(iter(arms)), c.config, (old.seconds if old else 0) + c.seconds).save(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(Path(__file__).parent/'results'/'study'), help='folder of the study (default: benchmarks/results/study)')
    ap.add_argument('--mini', action='store_true', help='a two-run miniature on a tiny random model (checks the harness)')
    ap.add_argument('--mini-steps', type=int, default=2, help='training steps per run of the miniature (default: 2)')
    ap.add_argument('--report-only', action='store_true', help='only write the report from the runs already stored')
    ap.add_argument('--part', choices=('head', 'tail'), help="only the plan's head, or its last steps (peft's recipe, inverse, random): two processes, one each, share two cores better than one")
    ap.add_argument('--cost', action='store_true', help="measure every arm's step time and training memory side by side (12 steps each, one sitting) into cost.json")
    a = ap.parse_args()
    out = Path(a.out)
    if a.mini:
        from qspec.models import load_tokenizer, save_tiny
        ck = out/'tiny'
        if not (ck/'config.json').exists():
            tok = load_tokenizer('smollm2'); save_tiny('llama', ck, vocab=len(tok)); tok.save_pretrained(ck)
        mini = dict(STUDY, steps=a.mini_steps, warmup_steps=0, max_length=48, max_eval_examples=4)
        if a.cost: cost(out, str(ck), mini, 2, [(DEFAULT, ['uniform', 'snr'])])
        else: run(out, str(ck), mini, [(DEFAULT, ['uniform'], [1e-3], 2)])
    elif a.cost: cost(out)
    elif not a.report_only: run(out, which=a.part)
    try: from study_report import report
    except ImportError: return
    print(report(out), flush=True)


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).parent))
    main()
