"""How well the grid keeps the cluster busy: wall time of a study and its scheduling efficiency.

    python bench/grid_efficiency.py [--study experiments/studies/default.yaml] [--storage DIR]

Efficiency = busy slot-seconds / available slot-seconds, where a slot is one cell's worth of the
limiting resource (CPUs or GPUs, from the study's tiers), busy = the sum of each cell's wall time
(its trial from start to finish), and available = the time from the first cell's start to the last
one's end × the slots the cluster has. The study's whole wall time (with the work done once before
the cells, e.g. ``data_preparation: upfront``) is printed beside it. The baseline is perfect packing (1.0); the target is ≥ 0.85.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="experiments/studies/default.yaml")
    ap.add_argument("--storage", help="default: a fresh temporary folder (so nothing is skipped)")
    args = ap.parse_args()

    import ray

    from doitray.cli.job import connect_ray
    from doitray.study.runner import cell_need, run_study, tier_concurrency
    from doitray.study.spec import load_study
    from doitray.store import ResultsStore

    storage = args.storage or tempfile.mkdtemp(prefix="doitray-grid-bench-")
    spec = load_study(args.study, overrides={"storage": storage})
    connect_ray()
    t0 = time.time()
    outcome = run_study(spec, progress_interval=60)
    wall = time.time() - t0
    cells = ResultsStore(storage).read("cells")
    done = cells[cells["state"] == "done"]
    busy = 0.0
    slots = 0.0
    for tier_name, tier in spec.resources.items():
        res, need = cell_need(tier)
        have = ray.cluster_resources().get(res, 0.0)
        k = tier_concurrency(spec, tier_name, max(1, int((done["tier"] == tier_name).sum())))
        slots = max(slots, min(k, have / need if need else k))
        part = done[done["tier"] == tier_name]
        busy += float((part["finished_at"] - part["started_at"]).sum())
    span = float(done["finished_at"].max() - done["started_at"].min()) if len(done) else 0.0
    efficiency = busy / (span * slots) if span > 0 and slots else float("nan")
    print(f"study {spec.name}: {outcome.done}/{outcome.total} cells in {wall:.0f}s wall "
          f"({os.cpu_count()} cores, {slots:g} concurrent cell slots); {wall - span:.0f}s of it before the first "
          f"cell started or after the last ended (pool, tokenizer, data preparation)")
    print(f"busy cell-seconds {busy:.0f} / available {span * slots:.0f} (from the first cell's start to the last "
          f"one's end) -> scheduling efficiency {efficiency:.2f} (baseline: perfect packing = 1.00; target >= 0.85)")
    phases = {k: float(done[k].sum()) for k in ("data_s", "train_s", "eval_s") if k in done}
    print("cell time by phase: " + ", ".join(f"{k[:-2]} {v:.0f}s" for k, v in phases.items()))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
