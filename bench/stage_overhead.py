"""A tiny stage's wall time with the Train controller polling every ``stage.POLL_INTERVAL_S`` vs Ray's default 2 s.

A study's tiny cells are mostly fixed cost: controller and worker start-up, every ``ray.train.report`` and
the run's end wait for the controller's next poll of its workers. The same stage (tiny-s, 1 worker, a few
reports, one checkpoint and its HF export) is run ``--repeats`` times with each interval, alternating, in
one Ray session; each run has its own run name, so none is reused. Prints the median wall times and
their ratio (``run_stage`` from call to return).

    python bench/stage_overhead.py [--repeats 3] [--steps 24]

Ray's own processes take ~0.4 of a core on a 2-core machine: the figures are noisy, compare the ratio.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
RAY_DEFAULT = "2.0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if ENV in os.environ:
        sys.exit(f"unset {ENV}: this benchmark sets it itself")

    import ray

    from doitray.train.settings import CheckpointPolicy, TrainSettings
    from doitray.train.stage import POLL_INTERVAL_S, StageSpec, run_stage
    from train_throughput import make_data

    root = Path(tempfile.mkdtemp(prefix="doitray-bench-"))
    seq, batch = 128, 8
    tok_dir, data = make_data(root, seq, n_examples=batch * args.steps * 3)
    s = TrainSettings.preset("tiny", seq_len=seq, global_batch=batch, micro_batch=2, max_steps=args.steps)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    walls: dict[str, list[float]] = {RAY_DEFAULT: [], POLL_INTERVAL_S: []}
    try:
        for i in range(args.repeats):
            for interval in walls:
                os.environ[ENV] = interval  # the controller of the next fit() reads it
                spec = StageSpec(name="bench", model="tiny-s", tokenizer_dir=tok_dir, train_data=data, settings=s,
                                 checkpoint=CheckpointPolicy(every="last", export="last", num_to_keep=1),
                                 storage_path=str(root / "storage"), cache_dir=str(root / "cache"),
                                 run_name=f"poll{interval}-{i}", num_workers=1)
                t0 = time.perf_counter()
                run_stage(spec)
                walls[interval].append(time.perf_counter() - t0)
    finally:
        os.environ.pop(ENV, None)
        ray.shutdown()
    slow, fast = statistics.median(walls[RAY_DEFAULT]), statistics.median(walls[POLL_INTERVAL_S])
    out = {"steps": args.steps, "repeats": args.repeats, "wall_s_poll_2s": walls[RAY_DEFAULT],
           f"wall_s_poll_{POLL_INTERVAL_S}s": walls[POLL_INTERVAL_S], "median_ratio": fast / slow}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"tiny-s, 1 worker, {args.steps} steps, {args.repeats} runs each (run_stage wall time, median)")
        print(f"controller polls every 2 s (Ray's default): {slow:5.1f} s  {[round(w, 1) for w in walls[RAY_DEFAULT]]}")
        print(f"controller polls every {POLL_INTERVAL_S} s (doitray):     {fast:5.1f} s  "
              f"{[round(w, 1) for w in walls[POLL_INTERVAL_S]]}")
        print(f"ratio {fast / slow:.2f} (lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
