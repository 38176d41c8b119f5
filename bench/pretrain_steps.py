"""What a tiny base learns from its corpus: 2 sequences per optimizer step (doitray's default) vs 16 (before).

Both bases are ``tiny-s`` pretrained by the embedded default's own path (``study.prepare.prepare_study``: the
generated corpus, ``pack_text``, one Ray Train run each, at once) on the same 400,000 tokens with the same lr;
only the global batch differs (~790 optimizer steps vs 99, the same tokens and about the same compute). Each base
then completes the corpus's facts greedily: the class and diet of each of the 32 animals ("The cow eats" →
"grass") and the kingdom each of the 24 rulers founded. Prints each base's share of facts completed, its
pretraining seconds, and the ratio.

    python bench/pretrain_steps.py [--tokens 400000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

VARIANTS = {"doitray": {"global_batch": 2, "micro_batch": 2}, "before": {"global_batch": 16, "micro_batch": 8}}


def facts_completed(hf_dir: str) -> float:
    """Share of the animal (class, diet) and ruler (kingdom) facts the base completes greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from doitray.data import synthetic_tasks as T

    tok, model = AutoTokenizer.from_pretrained(hf_dir), AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    probes = [(f"The {a} is a kind of", c) for a, (c, _, _) in T.ANIMALS.items()]
    probes += [(f"The {a} eats", d) for a, (_, d, _) in T.ANIMALS.items()]
    probes += [(f"{r} founded the kingdom of", k) for r, (k, _) in T.HIST.items()]
    hits = 0
    with torch.no_grad():
        for prompt, want in probes:
            ids = tok(prompt, return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
            hits += tok.decode(out[0, ids.shape[1]:]).strip().startswith(want)
    return hits / len(probes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray
    import yaml

    from doitray.store import ResultsStore
    from doitray.study.prepare import prepare_study
    from doitray.study.spec import parse_study

    doc = yaml.safe_load((ROOT / "experiments" / "studies" / "default.yaml").read_text())
    base = doc["models"]["tiny-s"]["init"]["pretrain"]
    with tempfile.TemporaryDirectory() as tmp:
        doc["storage"] = os.path.join(tmp, "store")
        doc["models"] = {name: {"preset": "tiny-s", "init": {"pretrain": {**base, "tokens": args.tokens, **v}}}
                         for name, v in VARIANTS.items()}
        doc["factors"] = {**doc["factors"], "model": list(VARIANTS), "volume": [0]}
        spec = parse_study(doc)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            t = time.perf_counter()
            models = prepare_study(spec, ResultsStore(spec.storage))["models"]
            seconds = time.perf_counter() - t
        finally:
            ray.shutdown()
        share = {name: facts_completed(models[name]["hf_dir"]) for name in VARIANTS}
    out = {"tokens": args.tokens, "variants": VARIANTS, "facts_completed": share, "prepare_s": seconds,
           "ratio_doitray_over_before": share["doitray"] / max(share["before"], 1e-9)}
    if args.json:
        print(json.dumps(out))
        return 0
    for name, v in VARIANTS.items():
        print(f"{name:8s} global batch {v['global_batch']:2d}: {share[name]:.1%} of 88 facts completed")
    print(f"both pretrained (at once, with the pool and tokenizer) in {seconds:.0f} s")
    print(f"ratio (doitray / before): {out['ratio_doitray_over_before']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
