"""Generation throughput of the evaluation path: Ray Serve + vLLM vs plain ``vllm.LLM.generate`` vs HF ``generate``.

One tiny checkpoint (random Llama, hidden 128, 2 layers, head_dim 64; ``--preset tiny-m`` builds a preset's
shape instead, ``--model DIR`` takes a checkpoint), the same token-id prompts and greedy settings for all;
each path runs in a fresh process and is timed after one warm-up call, best of 3.
HF ``generate`` runs twice: as plainly called, one prompt per call (the baseline of the target), and
left-padded in batches of ``--hf-batch`` (a stronger baseline, printed beside it).
Prints tokens/s of each and the ratios (targets: Serve ≥ 0.8× plain vLLM, ≥ 20× HF generate).

    python bench/eval_throughput.py [--prompts 128] [--max-tokens 64] [--preset P | --model HF_DIR]
                                    [--engine-cpus 1] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # same setting the Serve replica uses on CPU
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # as in the Serve replica: torch's threads, all cores
os.environ.setdefault("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "disabled"))


REPEAT = 3  # each path is timed REPEAT times; the best time counts (the machine may be shared)


def tiny_model(out: str, preset: str | None = None) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from doitray.data.templates import get_template
    from doitray.data.tokenizer import train_tokenizer

    texts = [f"<user>What is {a} plus {b}?<eot><assistant>{a} plus {b} is {a + b}.<eot>"
             for a in range(40) for b in range(0, 40, 3)] + ["天地玄黄 宇宙洪荒 def f(x): return x * 2"] * 20
    tok_dir = train_tokenizer(texts, os.path.join(out, "tok"), vocab_size=512, template=get_template("doit"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if preset:
        from doitray.models.presets import get_preset, hf_config

        cfg = hf_config(get_preset(preset), vocab_size=len(tok), **ids)
    else:
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024, **ids)
    hf = os.path.join(out, "hf")
    LlamaForCausalLM(cfg).save_pretrained(hf, safe_serialization=True)
    tok.save_pretrained(hf)
    return hf


def prompts_for(hf_dir: str, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from doitray.data.templates import get_template

    tok = AutoTokenizer.from_pretrained(hf_dir)
    t = get_template("doit")
    return [t.prompt_ids(tok, [{"role": "user", "content": f"What is {i} plus {i * 7 % 13}? 天地玄黄"}]) for i in range(n)]


def bench_serve(hf_dir, prompts, max_tokens, max_model_len, cpus):
    import ray

    from doitray.eval.engine import ServeEngine

    ray.init(address="local", num_cpus=max(4, cpus + 1), include_dashboard=False, log_to_driver=False)
    try:
        with ServeEngine(hf_dir, {"max_model_len": max_model_len, "dtype": "float32", "max_num_seqs": 256,
                                  "batch_size": 32, "num_cpus": cpus}) as eng:
            eng.generate(prompts[:4], max_tokens=4)
            dt = float("inf")
            for _ in range(REPEAT):
                t0 = time.perf_counter()
                res = eng.generate(prompts, max_tokens=max_tokens)
                dt = min(dt, time.perf_counter() - t0)
    finally:
        ray.shutdown()
    return sum(len(r["outputs"][0]["token_ids"]) for r in res), dt


def bench_vllm(hf_dir, prompts, max_tokens, max_model_len):
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=hf_dir, max_model_len=max_model_len, dtype="float32", enforce_eager=True, max_num_seqs=256,
              seed=0, distributed_executor_backend="uni")
    sp = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[:4]], SamplingParams(max_tokens=4), use_tqdm=False)
    dt = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
        dt = min(dt, time.perf_counter() - t0)
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    del llm
    return n, dt


def bench_hf(hf_dir, prompts, max_tokens, batch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    pad = tok.pad_token_id

    def run(ps):
        n = 0
        for i in range(0, len(ps), batch):
            chunk = ps[i:i + batch]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False,
                                     pad_token_id=pad, eos_token_id=tok.eos_token_id)
            new = out[:, width:]
            for row in new.tolist():  # tokens up to and including the first EOS, as vLLM counts them
                eos = tok.eos_token_id
                n += row.index(eos) + 1 if eos in row else len(row)
        return n

    run(prompts[:4])
    dt = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        n = run(prompts)
        dt = min(dt, time.perf_counter() - t0)
    return n, dt


PATHS = ("serve", "vllm", "hf", "hf_batched")


def run_path(name: str, args) -> tuple[int, float]:
    prompts = prompts_for(args.model, args.prompts)
    if name == "serve":
        return bench_serve(args.model, prompts, args.max_tokens, args.max_model_len, args.engine_cpus)
    if name == "vllm":
        return bench_vllm(args.model, prompts, args.max_tokens, args.max_model_len)
    return bench_hf(args.model, prompts, args.max_tokens, 1 if name == "hf" else args.hf_batch)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="HF checkpoint dir (default: a tiny random Llama built here)")
    ap.add_argument("--preset", help="build the random model from this tiny preset (tiny-xs … tiny-l) instead")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--engine-cpus", type=int, default=1,
                    help="CPUs of the Serve replica, hence its torch threads (default 1, the engine's default)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)  # internal: time one path in this process
    args = ap.parse_args()
    if args.preset and args.model and not args.path:
        ap.error("give --preset (a random model of that shape) or --model (a checkpoint), not both")
    if args.path:
        n, dt = run_path(args.path, args)
        print(json.dumps({"tokens": n, "seconds": dt}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = args.model or tiny_model(tmp, args.preset)
        res = {}
        # each path in a fresh process: vLLM sets OpenMP/NUMA state in its process, torch keeps its thread pool
        # warm, and either slows whatever runs after it there
        for name in PATHS:
            cmd = [sys.executable, __file__, "--path", name, "--model", hf_dir, "--prompts", str(args.prompts),
                   "--max-tokens", str(args.max_tokens), "--max-model-len", str(args.max_model_len),
                   "--hf-batch", str(args.hf_batch), "--engine-cpus", str(args.engine_cpus)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"{name} failed (exit {proc.returncode})")
            r = json.loads([x for x in proc.stdout.splitlines() if x.startswith('{"tokens"')][-1])
            n, dt = r["tokens"], r["seconds"]
            res[name] = {"tokens": n, "seconds": dt, "tokens_per_s": n / dt}
            print(f"[{name}] {n} tokens in {dt:.2f}s = {n / dt:.1f} tok/s", file=sys.stderr, flush=True)
    out = {**res, "prompts": args.prompts, "max_tokens": args.max_tokens,
           "serve_over_vllm": res["serve"]["tokens_per_s"] / res["vllm"]["tokens_per_s"],
           "serve_over_hf": res["serve"]["tokens_per_s"] / res["hf"]["tokens_per_s"],
           "serve_over_hf_batched": res["serve"]["tokens_per_s"] / res["hf_batched"]["tokens_per_s"],
           "vllm_over_hf": res["vllm"]["tokens_per_s"] / res["hf"]["tokens_per_s"], "hf_batch": args.hf_batch}
    if args.json:
        print(json.dumps(out))
    else:
        for k in ("serve", "vllm", "hf", "hf_batched"):
            print(f"{k:10s} {res[k]['tokens']:7d} tokens  {res[k]['seconds']:8.2f} s  {res[k]['tokens_per_s']:10.1f} tok/s")
        print(f"serve / vllm       = {out['serve_over_vllm']:.2f}x (target >= 0.8x)")
        print(f"serve / hf         = {out['serve_over_hf']:.2f}x (target >= 20x; HF one prompt per call)")
        print(f"serve / hf batched = {out['serve_over_hf_batched']:.2f}x (HF left-padded, {args.hf_batch} per call)")
        print(f"vllm  / hf         = {out['vllm_over_hf']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
