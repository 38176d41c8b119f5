"""Tokens/s of the Ray Train + FSDP2 loop (2 CPU workers, gloo) vs a plain single-process PyTorch loop.

Same model (a tiny Llama preset), same packed data, same global batch, micro-batch, loss and AdamW.
The plain loop runs with one thread (one core); each Ray Train worker has one CPU. The ratio is per core:
(Ray tokens/s / workers) / (plain tokens/s / 1). Target >= 0.85.

The plain loop is measured twice: alone (one busy core, the others idle) and as ``workers`` copies at
once, one per core, the way the Ray workers share the machine (memory bandwidth, caches and clocks
are shared by busy cores). The first ratio is the stricter one; the second isolates what Ray Train
and FSDP2 cost from what a fully busy machine costs. Both are printed.

    python bench/train_throughput.py [--model tiny-l] [--steps 8] [--seq 256] [--global-batch 64]

The default global batch is DoIT's 64 (16 micro-batches of 2 per worker): a step's fixed costs (one
reduce-scatter of the gradients, the sharded optimizer step, one report) are spread over as many
micro-batches as a study step has. ``--global-batch 16`` shows them four times as heavy.

No GPU is lent to this task: everything runs on CPU and MFU is not measured.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def make_data(root: Path, seq: int, n_examples: int) -> tuple[str, str]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from doitray.data.templates import IGNORE_INDEX, get_template
    from doitray.data.tokenizer import load_tokenizer, train_tokenizer

    rng = random.Random(0)
    qa = [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a, b in
          ((rng.randrange(100), rng.randrange(100)) for _ in range(n_examples))]
    tmpl = get_template("doit")
    tok_dir = train_tokenizer([q + a for q, a in qa[:2000]], root / "tok", vocab_size=512, template=tmpl)
    tok = load_tokenizer(tok_dir, tmpl)
    rows: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": []}
    ci: list[int] = []
    cl: list[int] = []
    cp: list[int] = []
    for q, a in qa:
        e = tmpl.encode(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], seq)
        if len(ci) + len(e.input_ids) > seq:
            pad = seq - len(ci)
            rows["input_ids"].append(ci + [tok.pad_token_id] * pad)
            rows["labels"].append(cl + [IGNORE_INDEX] * pad)
            rows["position_ids"].append(cp + list(range(pad)))
            ci, cl, cp = [], [], []
        ci += e.input_ids
        cl += e.labels
        cp += list(range(len(e.input_ids)))
    out = root / "packed"
    out.mkdir()
    cols = {c: pa.array(list(np.asarray(v, dtype=np.int32)), type=pa.list_(pa.int32())) for c, v in rows.items()}
    pq.write_table(pa.table(cols), out / "part-0.parquet")
    return tok_dir, str(out)


def plain_loop(source: dict, data_path: str, s, steps: int, threads: int) -> list[float]:
    """Single process, no Ray, no FSDP: the same math as the Train loop."""
    import torch

    from doitray.models.loading import build_config_model
    from doitray.train import data as D
    from doitray.train.setup import make_optimizer
    from doitray.train.step import loss_sum, micro_arrays
    from doitray.train.settings import lr_factor

    torch.set_num_threads(threads)
    data = D.read_path(data_path)
    model = build_config_model(source["config"], s.seed)
    model.config.use_cache = False
    model.train()
    opt = make_optimizer(model, s)
    total = s.total_steps(len(data))
    rates = []
    for step in range(steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = s.lr * lr_factor(step, total, s)
        rows = D.global_batch_rows(len(data), s.global_batch, s.seed, step)
        n_tok = D.count_loss_tokens(data, rows)
        for mb in D.rank_micro_batches(rows, s.micro_batch, 0, 1):
            b = {k: torch.from_numpy(v) for k, v in micro_arrays(data, mb, 0).items()}
            (loss_sum(model, b) / max(n_tok, 1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        rates.append(int((rows >= 0).sum()) * s.seq_len / (time.perf_counter() - t0))
    return rates


def _plain_child(args: tuple) -> list[float]:
    return plain_loop(*args)


def plain_all_cores(source: dict, data_path: str, s, steps: int, copies: int) -> list[float]:
    """``copies`` plain loops at once, one process (one thread) each; the median tokens/s of each."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(copies) as pool:
        runs = pool.map(_plain_child, [(source, data_path, s, steps, 1)] * copies)
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny-l")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--global-batch", type=int, default=64, help="default: DoIT's global batch")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray

    from doitray.models.loading import resolve_model
    from doitray.train.settings import CheckpointPolicy, TrainSettings
    from doitray.train.stage import StageSpec, run_stage

    root = Path(tempfile.mkdtemp(prefix="doitray-bench-"))
    tok_dir, data = make_data(root, args.seq, n_examples=args.global_batch * args.steps * 12)
    s = TrainSettings.preset("tiny", seq_len=args.seq, global_batch=args.global_batch, micro_batch=args.micro_batch,
                             max_steps=args.steps)
    source = resolve_model(args.model, template="doit", cache_dir=root / "cache", tokenizer_dir=tok_dir).as_dict()

    plain1 = plain_loop(source, data, s, args.steps, threads=1)
    plain_tps = statistics.median(plain1[args.warmup:])
    busy = plain_all_cores(source, data, s, args.steps, args.workers)
    busy_tps = statistics.mean(statistics.median(r[args.warmup:]) for r in busy)  # per core, all cores busy

    ray.init(address="local", num_cpus=max(4, args.workers + 1), include_dashboard=False, log_to_driver=False)
    try:
        res = run_stage(StageSpec(name="bench", model=args.model, tokenizer_dir=tok_dir, train_data=data,
                                  settings=s, checkpoint=CheckpointPolicy(every="last", export="none", num_to_keep=1),
                                  storage_path=str(root / "storage"), cache_dir=str(root / "cache"),
                                  num_workers=args.workers))
    finally:
        ray.shutdown()
    # wall clock between step ends, so the cost of reporting to Ray Train counts too (the last step checkpoints)
    lines = [json.loads(x) for x in (root / "cache" / "runs" / res.run_name / "metrics.jsonl").read_text().splitlines()]
    ends = {int(m["step"]): m["time"] for m in lines if m["rank"] == 0}
    first, last = args.warmup, args.steps - 1
    ray_tps = (last - first) * args.global_batch * args.seq / (ends[last] - ends[first])
    ratio = (ray_tps / args.workers) / plain_tps
    ratio_busy = (ray_tps / args.workers) / busy_tps
    out = {"model": args.model, "seq_len": args.seq, "global_batch": args.global_batch, "micro_batch": args.micro_batch,
           "steps": args.steps, "ray_fsdp2_workers": args.workers, "ray_fsdp2_tokens_per_s": ray_tps,
           "plain_1core_tokens_per_s": plain_tps, "ratio_per_core": ratio, "target": 0.85,
           "plain_per_core_all_busy_tokens_per_s": busy_tps, "ratio_per_core_all_busy": ratio_busy,
           "gpu": "none lent to this task: CPU only, MFU not measured"}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"model {args.model}, seq {args.seq}, global batch {args.global_batch}, micro-batch {args.micro_batch}, "
              f"{args.steps} steps (Ray: wall clock from step {args.warmup} to {args.steps - 1}; "
              f"plain: median after {args.warmup} warm-up steps)")
        print(f"Ray Train + FSDP2, {args.workers} workers (1 CPU each, gloo): {ray_tps:,.0f} tokens/s "
              f"({ray_tps / args.workers:,.0f} per core)")
        print(f"plain PyTorch loop, 1 process, 1 thread:          {plain_tps:,.0f} tokens/s")
        print(f"plain PyTorch loop, {args.workers} copies at once (1 per core): {busy_tps:,.0f} tokens/s per core")
        print(f"ratio per core vs the plain loop alone:         {ratio:.2f} (target >= 0.85)")
        print(f"ratio per core vs the plain loop on busy cores: {ratio_busy:.2f}")
        print("GPU: none lent to this task; CPU only, MFU not measured. The host is shared: figures are noisy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
