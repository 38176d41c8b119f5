"""Scale-out: the same small study on a 1-node and a 2-node local Ray cluster; prints the wall-time ratio.

    python bench/scale_out.py                     # 4 independent tiny cells, 1 vs 2 cell nodes
    python bench/scale_out.py --cells 6 --steps 96 --concurrency elastic

Each cluster (``ray.cluster_utils.Cluster``, all on this machine) has a "safe" head — the trial drivers
(``TRAIN_DRIVER``) and the CPUs for Ray Data tasks and the evaluation replicas — plus N simulated cell
nodes with one logical CPU and one ``CELL_NODE`` each. Every cell's Train worker holds one CPU and one
``CELL_NODE`` (``resources.default.worker_resources``), so a cell node runs one cell at a time and the
2-node cluster really has twice the cell capacity. Cells are identical but for their seed (independent,
equal work). Each run uses a fresh storage folder (data preparation included in both) and its own
cluster, in a child process. Target: ratio (2-node / 1-node) <= 0.6.

The study is set up as a laptop study is (``default.yaml``): every cell's data is prepared up front on
the driver and one shared Serve + vLLM replica evaluates every checkpoint, so what a cell does is
mostly training on its node. Per-cell data pipelines and engine starts would run on the head, whose
CPUs the simulated nodes share with the cells on a small machine (``--per-cell`` measures that).

Wall times are end to end (``run_study``: preparation, every cell's data, training, Serve+vLLM
evaluation, store). The "cells" span (first cell start to last cell finish, from the cells table) is
printed as well; on a shared or small machine both are bounded by the physical cores, which the
simulated nodes share, so the report prints the load average next to the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CELL = "CELL_NODE"
ENV = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "10", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
       "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
       "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def study_doc(storage: Path, cells: int, steps: int, concurrency, per_cell: bool = False) -> dict:
    """``cells`` tiny cells (tiny-xs from scratch, seq 128) that differ only by seed; a short evaluation."""
    engine = {"max_model_len": 256, "shared": not per_cell}
    if not per_cell:  # the replica stays up: on the head, not on a cell node's only CPU
        engine["resources"] = {"TRAIN_DRIVER": 0.01}
    return {
        "name": "scaleout", "storage": str(storage),
        "sources": [{"name": "suite", "format": "synthetic",
                     "options": {"seed": 0, "train": 200, "valid": 8, "test": 6, "synthetic": 50}}],
        "template": "doit", "tokenizer": {"train_vocab_size": 512},
        "models": {"xs": {"preset": "tiny-xs", "init": "scratch"}},
        "factors": {"model": ["xs"], "volume": [40], "seed": list(range(cells))},
        "training": {"preset": "tiny", "epochs": 2, "max_steps": steps, "seq_len": 128, "global_batch": 8,
                     "micro_batch": 2},
        "checkpoints": {"every": "last"},
        "evaluation": {"select": "last", "evaluate": "last", "max_new_tokens": 4,
                       "suites": [{"limit_per_ability": 1, "ood": False}], "engine": engine},
        "data_preparation": "per_cell" if per_cell else "upfront",
        "resources": {"default": {"workers": 1, "cpus_per_worker": 1, "worker_resources": {CELL: 1}}},
        "concurrency": concurrency, "max_retries": 0,
    }


def head_cpus(cells: int, concurrency: str) -> int:
    """Logical CPUs of the head (Ray Data + evaluation), the same in both runs.

    A cell's tokenize pipeline holds a read task and a Tokenize actor (1 CPU each) at once; with fewer
    than 2 free CPUs per cell preparing at the same time the pipelines deadlock, so the head gets 2 per
    cell that may prepare concurrently (at most 2 with ``nodes``; every cell with ``elastic``) plus 1.
    """
    at_once = min(cells, 2) if concurrency == "nodes" else cells
    return 2 * at_once + 1


def child(nodes: int, storage: Path, out: Path, cells: int, steps: int, concurrency: str, per_cell: bool) -> None:
    """One measurement: a fresh cluster with ``nodes`` cell nodes runs the study; writes the figures."""
    os.environ.update(ENV)  # inherited by every node's processes
    os.environ.pop("RAY_ADDRESS", None)
    sys.path.insert(0, str(REPO))
    from doitray.cluster.local import LocalCluster
    from doitray.study.runner import run_study
    from doitray.study.spec import parse_study
    from doitray.store import ResultsStore

    conc = nodes if concurrency == "nodes" else (int(concurrency) if concurrency.isdigit() else concurrency)
    cl = LocalCluster(nodes, head_cpus=head_cpus(cells, concurrency), cell_resource=CELL)
    try:
        spec = parse_study(study_doc(storage, cells, steps, conc, per_cell))
        t0 = time.perf_counter()
        outcome = run_study(spec, progress_interval=60)
        wall = time.perf_counter() - t0
        df = ResultsStore(str(storage)).read("cells")
        span = float(df["finished_at"].max() - df["started_at"].min()) if outcome.done else float("nan")
        out.write_text(json.dumps({"nodes": nodes, "wall_s": wall, "cells_span_s": span, "done": outcome.done,
                                   "total": outcome.total, "failed": outcome.failed}))
    finally:
        cl.shutdown()


def measure(nodes: int, args, workdir: Path) -> dict:
    storage, out = workdir / f"store-{nodes}node", workdir / f"result-{nodes}node.json"
    cmd = [sys.executable, __file__, "--child", str(nodes), "--storage", str(storage), "--out", str(out),
           "--cells", str(args.cells), "--steps", str(args.steps), "--concurrency", args.concurrency]
    cmd += ["--per-cell"] if args.per_cell else []
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    load = os.getloadavg()[0]
    p = subprocess.run(cmd, capture_output=not args.verbose, text=True, env=env, start_new_session=True)
    if p.returncode != 0 or not out.exists():
        tail = "" if args.verbose else (p.stdout or "")[-2000:] + (p.stderr or "")[-4000:]
        raise SystemExit(f"{nodes}-node run failed (exit {p.returncode})\n{tail}")
    res = json.loads(out.read_text())
    res["load_before"] = load
    res["load_after"] = os.getloadavg()[0]
    if res["done"] != res["total"]:
        raise SystemExit(f"{nodes}-node run finished {res['done']}/{res['total']} cells")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=4, help="independent cells (default 4)")
    ap.add_argument("--steps", type=int, default=64, help="optimizer steps per cell (default 64)")
    ap.add_argument("--per-cell", action="store_true",
                    help="prepare each cell's data in its trial and start an engine per cell (not shared)")
    ap.add_argument("--concurrency", default="nodes",
                    help="the study's concurrency: 'nodes' (default: as many cells as cell nodes, as 'auto' "
                         "would on a fixed cluster), elastic, or a number")
    ap.add_argument("--workdir", help="where the two study folders go (default: a temporary folder)")
    ap.add_argument("--verbose", action="store_true", help="show the runs' output")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--storage", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, Path(args.storage), Path(args.out), args.cells, args.steps, args.concurrency, args.per_cell)
        return 0
    with tempfile.TemporaryDirectory(prefix="doitray-scaleout-", dir=args.workdir) as tmp:
        one = measure(1, args, Path(tmp))
        two = measure(2, args, Path(tmp))
    ratio, span_ratio = two["wall_s"] / one["wall_s"], two["cells_span_s"] / one["cells_span_s"]
    setup = "per-cell data and engines" if args.per_cell else "data up front, one shared engine"
    print(f"scale-out: {args.cells} independent tiny cells, {args.steps} steps each, concurrency {args.concurrency}, "
          f"{setup}, {os.cpu_count()} physical cores")
    for r in (one, two):
        print(f"  {r['nodes']} cell node(s): study wall {r['wall_s']:7.1f} s   cells span {r['cells_span_s']:7.1f} s   "
              f"(load avg {r['load_before']:.1f} -> {r['load_after']:.1f})")
    print(f"wall-time ratio 2-node / 1-node: {ratio:.2f} (target <= 0.6); cells span ratio: {span_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
