"""Elastic behaviour of a study on a local multi-node Ray cluster (``ray.cluster_utils.Cluster``).

The head is the "safe" node: it holds the trial drivers (``TRAIN_DRIVER``) and the CPUs for Ray Data
tasks and the evaluation replicas. Each simulated cell node offers one CPU and one ``CELL_NODE``; the
study's workers hold one of each (``resources.default.worker_resources``), so a node holds exactly one
Train worker and cells never land on the head. Shown for real (Tune trials, Train V2 runs, Serve+vLLM
evaluation, results store):

- nodes added while a study runs raise the number of cells training at once (no restart);
- a node lost mid-cell loses no checkpointed work: the cell resumes on what remains and every cell finishes;
- an elastic cell (``workers: [1, 2]``) continues at a new worker count with the same global batch.

Each scenario runs in a child process (``python tests/study/test_elastic.py <scenario> <storage> <out>``)
that owns the cluster, so the test session's own Ray (``ray_local``) is never touched; the child writes
what it observed (Train workers alive over time, nodes added/removed) as JSON for the assertions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported in run_scenario, once the child has the repository on sys.path
    from doitray.cluster.local import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.elastic]

REPO = Path(__file__).resolve().parents[2]
CELL = "CELL_NODE"
GLOBAL_BATCH, MICRO_BATCH, SEQ_LEN = 8, 2, 128
# logical CPUs of the head, for Ray Data and the evaluation replicas: a cell's tokenize pipeline holds a
# read task and a Tokenize actor (1 CPU each) at once, and with fewer than 2 free CPUs per concurrently
# preparing cell the pipelines deadlock (the read task waits on its pending actor while holding its CPU)
HEAD_CPUS = 5
WAIT_S = 1200  # generous: a loaded 2-core machine takes minutes to prepare a tiny cell
ENV = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "10",  # a waiting cell re-tries placement every 10 s
       "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1",
       "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------------------------------------------------
# child side: the cluster, the study, the observations
# ---------------------------------------------------------------------------------------------------------
def alive_actors(prefix: str) -> dict[str, str]:
    """Alive actors whose class name starts with ``prefix``: actor id -> node id (from the GCS; no dashboard)."""
    from ray._private.state import actors

    return {a: info["Address"]["NodeID"] for a, info in actors(actor_state_name="ALIVE").items()
            if info["ActorClassName"].startswith(prefix)}


def train_workers() -> dict[str, str]:
    """Alive Ray Train worker actors: actor id -> node id."""
    return alive_actors("RayTrainWorker")


class Monitor:
    """Samples the alive Train workers (and their nodes) every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.5):
        self.samples: list[tuple[float, dict]] = []
        self.replica_nodes: set[str] = set()  # nodes that held an evaluation replica
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._t.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), train_workers()))
                self.replica_nodes.update(alive_actors("ServeReplica").values())
            except Exception:  # noqa: BLE001 - a sample lost while a node goes away
                pass
            self._stop.wait(interval)

    def latest(self) -> dict:
        return self.samples[-1][1] if self.samples else {}

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=5)


def study_doc(storage: Path, *, volumes, workers=1, max_steps=None, max_retries=0, **over) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from studykit import tiny_study

    training = {"preset": "tiny", "epochs": 2, "seq_len": SEQ_LEN, "global_batch": GLOBAL_BATCH,
                "micro_batch": MICRO_BATCH}
    if max_steps:
        training["max_steps"] = max_steps
    over.setdefault("evaluation", {"select": "last", "evaluate": "last", "max_new_tokens": 4,
                                   "suites": [{"limit_per_ability": 1, "ood": False}],
                                   "engine": {"max_model_len": 256}})  # tiny-xs has 1024 positions
    return tiny_study(storage, volumes=volumes, training=training, concurrency="elastic", max_retries=max_retries,
                      resources={"default": {"workers": workers, "cpus_per_worker": 1,
                                             "worker_resources": {CELL: 1}}}, **over)


def run_dirs(storage: Path) -> list[Path]:
    return sorted(p for p in (Path(storage) / "train").glob("*") if p.is_dir())


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.name[4:]) for p in run.glob("step*") if p.name[4:].isdigit())


def reported_checkpoints(storage: Path, run: Path) -> list[int]:
    """Steps of the run's checkpoints that Train has registered (reported to the controller): only these
    are restored after a failure; a checkpoint folder still being reported when a node dies is not."""
    path = Path(storage) / "cache" / "models" / "runs" / run.name / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(r["step"] for r in rows if r.get("rank") == 0 and r.get("checkpoint"))


def _wait(cond, timeout: float, what: str, study: threading.Thread) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if not study.is_alive():
            raise RuntimeError(f"the study ended before {what}")
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def _scale_up(cl: LocalCluster, mon: Monitor, storage: Path, study: threading.Thread, ev: dict) -> None:
    _wait(lambda: mon.latest(), WAIT_S, "a first cell to train", study)
    time.sleep(5)  # the other cell's trial is up; its Train run waits for a node
    ev["added_at"] = time.time()
    ev["added_node"] = cl.add()
    _wait(lambda: len(mon.latest()) >= 2, WAIT_S, "two cells training at once", study)


def _lose_node(cl: LocalCluster, mon: Monitor, storage: Path, study: threading.Thread, ev: dict) -> None:
    def every_active_run_checkpointed() -> bool:
        active = [r for r in run_dirs(storage) if not (r / "stage_complete.json").exists()]
        return (bool(active) and all(reported_checkpoints(storage, r) for r in active)
                and len(mon.latest()) == len(active))

    _wait(every_active_run_checkpointed, WAIT_S, "running cells with a checkpoint each", study)
    ev["checkpoints_before"] = {r.name: reported_checkpoints(storage, r) for r in run_dirs(storage)}
    ev["removed_node"] = sorted(mon.latest().values())[0]
    ev["removed_at"] = time.time()
    cl.remove(ev["removed_node"])


def _elastic(cl: LocalCluster, mon: Monitor, storage: Path, study: threading.Thread, ev: dict) -> None:
    _wait(lambda: len(mon.latest()) == 2 and any(reported_checkpoints(storage, r) for r in run_dirs(storage)),
          WAIT_S, "the elastic cell on two workers with a checkpoint", study)
    ev["checkpoints_before"] = {r.name: reported_checkpoints(storage, r) for r in run_dirs(storage)}
    ev["removed_node"] = sorted(mon.latest().values())[-1]
    ev["removed_at"] = time.time()
    cl.remove(ev["removed_node"])


STEPS = 120  # long enough for the intervention to land mid-training even when steps are fast
SCENARIOS = {
    # two cells on one cell node, a second node joins while the first cell trains
    # (data prepared up front, one shared evaluation replica pinned to the head by a custom resource)
    "scale_up": (1, _scale_up, dict(volumes=(40, 80), max_steps=3 * STEPS, data_preparation="upfront",
                                    checkpoints={"every": "steps", "every_n_steps": STEPS},
                                    evaluation={"select": "last", "evaluate": "last", "max_new_tokens": 4,
                                                "suites": [{"limit_per_ability": 1, "ood": False}],
                                                "engine": {"max_model_len": 256, "shared": True,
                                                           "resources": {"TRAIN_DRIVER": 0.01}}})),
    # two cells on two nodes; one node is lost once every running cell has checkpointed
    "node_loss": (2, _lose_node, dict(volumes=(40, 80), max_steps=STEPS, max_retries=2,
                                      checkpoints={"every": "steps", "every_n_steps": 10})),
    # one elastic cell (1..2 workers) on two nodes; one node is lost after a checkpoint
    "elastic": (2, _elastic, dict(volumes=(80,), workers=[1, 2], max_steps=STEPS, max_retries=2,
                                  checkpoints={"every": "steps", "every_n_steps": 10})),
}


def run_scenario(name: str, storage: Path, out: Path) -> None:
    """Child entry point: build the cluster, run the study with the scenario's intervention, dump JSON."""
    os.environ.update(ENV)  # inherited by every node's processes; RAY_TRAIN_* reach the Train controllers
    os.environ.pop("RAY_ADDRESS", None)
    sys.path.insert(0, str(REPO))
    from doitray.cluster.local import LocalCluster
    from doitray.study.runner import run_study
    from doitray.study.spec import parse_study

    nodes, act, kw = SCENARIOS[name]
    cl = LocalCluster(nodes, head_cpus=HEAD_CPUS, cell_resource=CELL)
    spec = parse_study(study_doc(storage, **kw))
    box: dict = {}

    def target():
        try:
            box["outcome"] = run_study(spec, progress_interval=60).__dict__
        except BaseException as e:  # noqa: BLE001 - reported in the JSON
            box["error"] = repr(e)

    ev: dict = {"scenario": name, "t0": time.time(), "initial_nodes": [n.node_id for n in cl.nodes]}
    mon = Monitor()
    study = threading.Thread(target=target, daemon=True)
    try:
        study.start()
        try:
            act(cl, mon, storage, study, ev)
        except RuntimeError as e:
            ev["action_error"] = str(e)
        study.join(2 * WAIT_S)
        mon.stop()
        ev.update(box, finished=not study.is_alive(), samples=[[t, w] for t, w in mon.samples],
                  head=cl.head_id, replica_nodes=sorted(mon.replica_nodes))
        out.write_text(json.dumps(ev, default=str))
    finally:
        mon.stop()
        cl.shutdown()


# ---------------------------------------------------------------------------------------------------------
# test side
# ---------------------------------------------------------------------------------------------------------
def _child(scenario: str, tmp_path: Path) -> tuple[dict, Path]:
    storage, out = tmp_path / "store", tmp_path / "observed.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.run([sys.executable, __file__, scenario, str(storage), str(out)], capture_output=True, text=True,
                       timeout=4 * WAIT_S, env=env, start_new_session=True)
    assert p.returncode == 0 and out.exists(), f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    ev = json.loads(out.read_text())
    assert "action_error" not in ev and "error" not in ev and ev["finished"], {k: v for k, v in ev.items()
                                                                             if k != "samples"}
    return ev, storage


def _concurrency(ev: dict, t0: float, t1: float) -> int:
    return max((len(w) for t, w in ev["samples"] if t0 <= t <= t1), default=0)


def _all_done(storage: Path, n: int) -> None:
    from doitray.store import ResultsStore

    store = ResultsStore(str(storage))
    cells = store.read("cells")
    assert len(cells) == n and (cells["state"] == "done").all(), cells[["cell_id", "state", "attempts"]]
    assert set(store.read("scores")["cell_id"]) == set(cells["cell_id"])  # every cell evaluated and scored
    assert store.read("checkpoints").groupby("cell_id")["selected"].sum().eq(1).all()


def _reports(storage: Path, run: Path) -> list[dict]:
    """Rank 0's reports of a Train run as written (a step re-run after a failure appears twice)."""
    path = storage / "cache" / "models" / "runs" / run.name / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["rank"] == 0]


def test_nodes_added_mid_study_raise_concurrent_cells(tmp_path):
    ev, storage = _child("scale_up", tmp_path)
    assert ev["outcome"]["done"] == 2 and ev["outcome"]["failed"] == 0
    assert _concurrency(ev, 0, ev["added_at"]) == 1  # one cell node: one cell trained, the other waited
    after = [w for t, w in ev["samples"] if t > ev["added_at"]]
    both = next(w for w in after if len(w) == 2)  # the waiting cell started on the new node, no restart
    assert ev["added_node"] in both.values() and len(set(both.values())) == 2
    assert ev["replica_nodes"] == [ev["head"]]  # the shared replica kept off the cell nodes' only CPU
    _all_done(storage, 2)


def test_node_lost_mid_cell_resumes_from_checkpoint(tmp_path):
    ev, storage = _child("node_loss", tmp_path)
    assert ev["outcome"]["done"] == 2 and ev["outcome"]["failed"] == 0
    _all_done(storage, 2)
    # the GCS marks the lost node's actors dead once its health checks fail; no worker runs there after that
    assert all(ev["removed_node"] not in w.values() for t, w in ev["samples"] if t > ev["removed_at"] + 90)
    resumed = []
    for run in run_dirs(storage):
        reps = _reports(storage, run)
        assert max(r["step"] for r in reps) == STEPS == checkpoint_steps(run)[-1]  # trained to the plan
        starts = [r["resumed_from_step"] for r in reps if "resumed_from_step" in r]
        if len(starts) > 1:  # this run lost its node and was restarted by Train's FailureConfig
            resumed.append(run.name)
            assert starts[0] == 0 and starts[-1] >= max(ev["checkpoints_before"][run.name]) > 0
            upto = [r["step"] for r in reps if r["step"] <= starts[-1]]
            assert len(upto) == len(set(upto)) == starts[-1]  # checkpointed steps were never trained again
    assert len(resumed) == 1, resumed


def test_elastic_cell_continues_at_new_size_with_same_global_batch(tmp_path):
    from doitray.train.settings import TrainSettings

    ev, storage = _child("elastic", tmp_path)
    assert ev["outcome"]["done"] == 1 and ev["outcome"]["failed"] == 0
    _all_done(storage, 1)
    assert _concurrency(ev, 0, ev["removed_at"]) == 2
    (run,) = run_dirs(storage)
    reps = _reports(storage, run)
    assert reps[0]["world_size"] == 2 and reps[-1]["world_size"] == 1  # continued at the new worker count
    restart = next(r for r in reps if r["world_size"] == 1)
    assert restart["resumed_from_step"] >= max(ev["checkpoints_before"][run.name]) > 0
    assert max(r["step"] for r in reps) == STEPS == checkpoint_steps(run)[-1]
    # the global batch is the same at both sizes: each step consumed the same rows (tokens) whatever the
    # worker count, and the schedule (step -> epoch) did not change
    s = TrainSettings.preset("tiny", seq_len=SEQ_LEN, global_batch=GLOBAL_BATCH, micro_batch=MICRO_BATCH)
    tokens = {}
    for r in reps:
        tokens.setdefault(r["step"], set()).add(round(r["tokens_per_s"] * r["step_time_s"]))
    for step, seen in tokens.items():
        assert len(seen) == 1, (step, seen)  # a step re-run at the other size used the same batch
    by_size = {ws: {round(r["tokens_per_s"] * r["step_time_s"]) for r in reps if r["world_size"] == ws}
               for ws in (1, 2)}
    assert GLOBAL_BATCH * SEQ_LEN in by_size[1] & by_size[2]  # full global batches at both sizes
    spe = {r["step"] / r["epoch_progress"] for r in reps}
    assert len({round(x, 6) for x in spe}) == 1  # steps per epoch identical before and after the resize
    assert s.accum_steps(1) == 2 * s.accum_steps(2)


if __name__ == "__main__":
    run_scenario(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
