"""Run a study on Ray Tune: one Tuner per resource tier, one trial per cell.

Each trial is ``doitray.study.cell.run_cell`` (a function that drives the cell's TorchTrainer runs and
its evaluation; Train V2 pattern). Resume is driven by the results store, not by Tune's experiment
state: a re-run skips cells already ``done``, re-runs interrupted ones (their Train runs resume from
the latest checkpoint because run names are content hashes, and scored checkpoints are skipped), and
retries ``failed`` ones while their attempts are below ``max_retries + 1``.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import ray
from ray import tune

from doitray.study import owners
from doitray.study.cells import Cell, cells_by_tier, expand_cells
from doitray.study.prepare import prepare_study
from doitray.study.progress import ProgressCallback, study_status
from doitray.study.spec import StudySpec, TierSpec
from doitray.store import ResultsStore
from doitray.study.cell import cell_row, run_cell
from doitray.tracking import open_study

DRIVER_SHARE = 0.01  # of the driver resource, per trial: many trial drivers fit on one safe node


@dataclass
class StudyOutcome:
    root: str
    total: int
    done: int
    failed: int
    skipped: int
    wall_s: float


def cell_need(tier: TierSpec) -> tuple[str, float]:
    """The limiting resource of one cell of ``tier`` and how much of it the cell holds at peak."""
    hi = tier.workers if isinstance(tier.workers, int) else tier.workers[1]
    if tier.gpus_per_worker:
        return "GPU", float(hi * tier.gpus_per_worker)
    return "CPU", float(hi * tier.cpus_per_worker)


def tier_concurrency(spec: StudySpec, tier_name: str, n_cells: int) -> int:
    """``max_concurrent_trials`` for a tier: explicit, or how many cells the cluster holds at once.

    Tune does not account for the Train workers' own placement groups (notes §2.2): ``auto`` counts
    what the cluster holds now; ``elastic`` starts every cell and lets their Train runs wait for
    resources, which makes an autoscaling cluster grow and uses nodes that join mid-study.
    """
    tier = spec.resources[tier_name]
    if tier.concurrency:
        return min(tier.concurrency, n_cells)
    if isinstance(spec.concurrency, int):
        return min(spec.concurrency, n_cells)
    if spec.concurrency == "elastic":
        # Train V2 retries a worker group that cannot be placed yet (startup timeouts are retryable
        # controller errors), so surplus cells wait for resources and start as nodes join.
        return n_cells
    res, need = cell_need(tier)
    have = ray.cluster_resources().get(res, 0.0)
    return max(1, min(n_cells, math.floor(have / need) if need else n_cells))


def trial_resources(spec: StudySpec) -> dict[str, float]:
    """What each trial driver reserves: a sliver of the driver resource when the cluster has it."""
    name = spec.driver_resource or "TRAIN_DRIVER"
    if ray.cluster_resources().get(name, 0) > 0:
        return {name: DRIVER_SHARE}
    if spec.driver_resource:
        raise RuntimeError(f"driver_resource {name!r} is not offered by any node of this cluster")
    return {"CPU": DRIVER_SHARE}


def _unscored_benchmarks(cell: Cell, scored: set[tuple[str, str]]) -> list[str]:
    """Benchmark suites of a cell with no scores yet (added to the study after the cell was done: it is re-opened,
    its stages return their records and only those suites are evaluated)."""
    from doitray.eval.benchmarks import benchmark_names

    return [n for n in benchmark_names({"evaluation": cell.content["evaluation"]}) if (cell.cell_id, n) not in scored]


def _pending_cells(spec: StudySpec, store: ResultsStore, cells: list[Cell], retry_failed: bool) -> tuple[list[Cell], int]:
    table = store.read("cells")
    latest = {r["cell_id"]: r for r in table.to_dict("records")}
    scores = store.read("scores")
    scored = set(zip(scores["cell_id"], scores["suite"])) if len(scores) else set()
    todo, skipped = [], 0
    now = time.time()
    for c in cells:
        row = latest.get(c.cell_id)
        if row is None:
            store.write("cells", c.cell_id, [cell_row(c, state="pending", attempts=0, now=now)])
            todo.append(c)
        elif row["state"] == "done" and not _unscored_benchmarks(c, scored):
            skipped += 1
        elif row["state"] == "failed" and row["attempts"] > spec.max_retries and not retry_failed:
            skipped += 1
        else:
            if row["state"] == "running":  # interrupted by a killed driver: runnable again
                store.write("cells", c.cell_id, [{**row, "state": "pending", "updated_at": now}])
            todo.append(c)
    return todo, skipped


def run_study(spec: StudySpec, *, retry_failed: bool = False, progress_interval: float = 15.0) -> StudyOutcome:
    """Run (or resume) every cell of ``spec`` on the connected Ray cluster."""
    t0 = time.time()
    store = ResultsStore(spec.storage)
    store.write_json("study.json", spec.model_dump(mode="json"))
    track = study_tracker(spec)  # started, or resumed: the same run as before
    cells = expand_cells(spec)
    todo, skipped = _pending_cells(spec, store, cells, retry_failed)
    shared = prepare_study(spec, store, todo) if todo else {}  # only the levels of the cells still to run
    if todo and spec.data_preparation == "upfront":
        _materialize(spec, store, todo, shared)
    started_serve = _ensure_serve() if todo else False
    leases = owners.start(spec.name) if todo else None  # one owner trains each stage that cells share
    try:
        for tier_name, tier_cells in cells_by_tier(todo).items():
            k = tier_concurrency(spec, tier_name, len(tier_cells))
            store.write_json("run.json", {"concurrency": k, "tier": tier_name, "started_at": t0})
            _run_tier(spec, store, tier_name, tier_cells, k, shared, progress_interval)
    finally:
        if leases is not None:
            ray.kill(leases)
        if started_serve:
            from ray import serve

            serve.shutdown()
        elif todo:
            from doitray.eval.engine import close_shared_engines

            close_shared_engines()
    status = study_status(store.uri)
    track.end(tags={"doitray.cells_total": status.total, "doitray.cells_done": status.done,
                    "doitray.cells_failed": status.failed})
    return StudyOutcome(store.uri, status.total, status.done, status.failed, skipped, time.time() - t0)


def study_tracker(spec: StudySpec):
    """The study's tracked run (``doitray.tracking``: started or resumed, once per process)."""
    return open_study(spec.tracking.model_dump(), storage=spec.storage, study=spec.name,
                      params={f"factors.{k}": v for k, v in spec.factors.model_dump(exclude_none=True).items()})


def track_report(spec: StudySpec, report: str) -> None:
    """The study's report as an artifact of its tracked run."""
    track = study_tracker(spec)
    track.log_artifact(report, "report")
    track.end()


def _trial_config(spec: StudySpec, store: ResultsStore, cell: Cell, shared: dict) -> dict:
    return {**cell.to_config(), "shared": shared, "store": store.uri, "max_retries": spec.max_retries,
            "tracking": study_tracker(spec).child_ref()}


def _materialize(spec: StudySpec, store: ResultsStore, cells: list[Cell], shared: dict) -> None:
    """Every pending cell's data, sampled and packed on the driver (cells then find it in the cache)."""
    from doitray.study.cell import CellRun

    t0 = time.time()
    for c in cells:
        CellRun(_trial_config(spec, store, c, shared), store).materialize()
    print(f"[{spec.name}] data of {len(cells)} cells prepared in {time.time() - t0:.0f}s", flush=True)


def _run_tier(spec: StudySpec, store: ResultsStore, tier_name: str, cells: list[Cell], k: int,
              shared: dict, progress_interval: float) -> None:
    configs = [_trial_config(spec, store, c, shared) for c in cells]
    name_of = lambda t: t.config["cell"]["cell_id"]  # noqa: E731
    tuner = tune.Tuner(
        tune.with_resources(run_cell, trial_resources(spec)),
        param_space={"cell": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=k, trial_name_creator=name_of,
                                    trial_dirname_creator=name_of),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{tier_name}-{int(time.time())}",
            storage_path=_tune_storage(store),
            failure_config=tune.FailureConfig(max_failures=spec.max_retries),
            verbose=0,
            callbacks=[ProgressCallback(store.uri, k, interval=progress_interval)],
        ),
    )
    tuner.fit()


def _ensure_serve() -> bool:
    """Start Serve (no HTTP proxy) from the driver; returns whether this call started it.

    Trials evaluate through Serve deployments. Serve's controller must not be created from inside a
    trial: Tune's placement group would capture it, and it could not be placed there.
    """
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        serve.context._get_global_client()
        return False
    except RayServeException:
        serve.start(proxy_location="Disabled")
        return True


def _tune_storage(store: ResultsStore) -> str:
    return f"{store.uri}/tune" if "://" in store.uri else os.path.join(store.root, "tune")
