"""Generate with plain vLLM (CPU) from an HF export; run as a subprocess by the tests.

usage: python vllm_generate.py MODEL_DIR PROMPT_IDS_JSON  -> prints one JSON line {"token_ids": [...], "text": ...}
"""
import json
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    from vllm import LLM, SamplingParams

    model_dir, prompt = sys.argv[1], json.loads(sys.argv[2])
    llm = LLM(model=model_dir, dtype="float32", max_model_len=256, enforce_eager=True, seed=0,
              max_num_seqs=4)
    out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(temperature=0.0, max_tokens=8,
                                                                      ignore_eos=True),
                       use_tqdm=False)  # vLLM's progress bar divides by elapsed time, which can be 0
    o = out[0].outputs[0]
    print("RESULT " + json.dumps({"token_ids": list(o.token_ids), "text": o.text}), flush=True)
