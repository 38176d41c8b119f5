"""One checkpoint's evaluation with requests sent in handle calls of 512 (doitray) vs 16 (its earlier default).

A study's evaluation is thousands of short requests (one-letter answers, three-choice perplexity ranking). Each
handle call is routed by Serve, whose queue-length probe of a replica busy with vLLM times out (0.1 s) and backs
off. The same tiny random checkpoint (hidden 128, 2 layers) answers the generated suite's test split
(``--items`` per ability, the default study's 300) on one warm replica per batch size; each is timed
``--repeats`` times, alternating, after a warm-up. A random model never ends its reply, so replies are capped at
``--max-tokens`` (4: a tuned model's answers are a letter or a word; the chain-of-thought items are 30% of one
ability). Prints the median seconds per evaluation, the spread, and the ratio.

    python bench/eval_batching.py [--items 300] [--max-tokens 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = {"doitray": 512, "before": 16}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=300, help="test items per ability")
    ap.add_argument("--max-tokens", type=int, default=4, help="reply length cap of the generated items")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray

    from doitray.data.sources import SourceSpec, read_sources
    from doitray.eval.engine import ServeEngine
    from doitray.eval.evaluate import evaluate_checkpoint
    from doitray.eval.suites import from_records
    from eval_throughput import tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        hf = tiny_model(tmp)
        spec = SourceSpec(name="suite", format="synthetic", options={"train": 10, "test": args.items, "synthetic": 0})
        recs, _ = read_sources([spec], tmp)
        suite = from_records("suite", [r for r in recs if r["split"] == "test"], "test", max_tokens=args.max_tokens)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        times: dict[str, list[float]] = {k: [] for k in SIZES}
        try:
            engines = {k: ServeEngine(hf, {"max_model_len": 512, "gpu": False, "batch_size": b})
                       for k, b in SIZES.items()}
            for eng in engines.values():  # warm-up: first requests, prefix cache
                evaluate_checkpoint(hf, [suite], template="doit", cell_id="bench", checkpoint="c", engine=eng)
            for _ in range(args.repeats):
                for k, eng in engines.items():
                    t = time.perf_counter()
                    evaluate_checkpoint(hf, [suite], template="doit", cell_id="bench", checkpoint="c", engine=eng)
                    times[k].append(time.perf_counter() - t)
            for eng in engines.values():
                eng.close()
        finally:
            ray.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"items": len(suite.records), "max_tokens": args.max_tokens, "batch_sizes": SIZES, "seconds": times,
           "median_s": med, "ratio_doitray_over_before": med["doitray"] / med["before"]}
    if args.json:
        print(json.dumps(out))
        return 0
    for k, b in SIZES.items():
        print(f"{k:8s} batch_size {b:4d}: {med[k]:6.1f} s per evaluation of {out['items']} items "
              f"(runs: {', '.join(f'{x:.1f}' for x in times[k])})")
    print(f"ratio (doitray / before): {out['ratio_doitray_over_before']:.2f}  "
          "(Ray's own processes take ~0.4 of a core on 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
