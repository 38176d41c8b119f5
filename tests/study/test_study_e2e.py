"""A real 2-cell study end to end on local Ray (data → Train/FSDP2 → Serve+vLLM eval → store), tracked in
MLflow (the default), then resume: a re-run skips finished cells and continues the same tracked runs, a failed
cell is retried with --retry-failed, and a driver killed mid-study loses nothing written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from doitray.store import ResultsStore

from studykit import child_env, grid_cmd

pytestmark = pytest.mark.slow


def _run(cmd, timeout=900):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), start_new_session=True)
    assert p.returncode == 0, f"exit {p.returncode}\nSTDOUT\n{p.stdout[-3000:]}\nSTDERR\n{p.stderr[-6000:]}"
    return p


def test_two_cell_study_end_to_end_then_rerun_skips(write_study):
    # as the embedded default runs: data prepared up front by the driver, one shared evaluation replica
    study, storage = write_study(data_preparation="upfront",
                                 evaluation={"select": "valid_loss", "evaluate": "selected", "max_new_tokens": 8,
                                             "engine": {"shared": True}})
    out = _run(grid_cmd(study))
    assert "2/2 cells done, 0 failed" in out.stdout and "data of 2 cells prepared" in out.stdout
    store = ResultsStore(str(storage))
    cells = store.read("cells")
    assert sorted(cells["state"]) == ["done", "done"]
    assert set(cells["volume"]) == {40, 80}
    assert (cells["train_tokens"] > 0).all() and (cells["model_params"] > 0).all()
    assert (cells["train_s"] > 0).all() and (cells["eval_s"] > 0).all() and cells["data_s"].notna().all()
    assert len(list((storage / "cache" / "engines").iterdir())) == 1  # both cells' checkpoints: one replica

    ckpts = store.read("checkpoints")
    assert len(ckpts) >= 2 * 2  # two epochs per cell
    assert ckpts.groupby("cell_id")["selected"].sum().eq(1).all()  # one selected checkpoint per cell
    assert ckpts["hf_path"].notna().any()

    metrics = store.read("train_metrics")
    assert {"train_loss", "valid_loss"} <= set(metrics["metric"])

    scores = store.read("scores")
    test = scores[scores["split"] == "test"]
    per = test.groupby(["cell_id", "checkpoint", "ability"]).size()
    assert per.eq(1).all()  # one row per (checkpoint, ability) per suite
    abilities = set(test["ability"]) - {"overall"}
    assert len(abilities) == 10
    assert test["value"].between(0, 1).all() and test["chance"].notna().all()
    assert len(store.read("predictions")) > 0
    assert os.path.exists(storage / "report.html")
    assert "warning: tracking" not in out.stderr, out.stderr[-3000:]
    runs, hist = _tracked_in_mlflow(store)

    again = _run(grid_cmd(study, "--no-report"))
    assert "2/2 cells done" in again.stdout
    cells2 = store.read("cells")
    assert list(cells2.sort_values("cell_id")["attempts"]) == list(cells.sort_values("cell_id")["attempts"])
    assert len(store.read("scores")) == len(scores)  # nothing re-scored
    # tracked: the re-run continued the same MLflow runs and logged nothing twice
    runs2 = _mlflow_runs(storage)
    assert sorted(runs2["run_id"]) == sorted(runs["run_id"])
    assert {r: _histories(storage, r) for r in hist} == hist
    assert (runs2["status"] == "FINISHED").all()

    # a cell that failed and used up its retries (max_retries 0) is skipped, unless --retry-failed
    victim = cells2.sort_values("cell_id").to_dict("records")[0]
    store.write("cells", victim["cell_id"], [{**victim, "state": "failed", "error": "RuntimeError: injected"}])
    skipped = subprocess.run(grid_cmd(study, "--no-report"), capture_output=True, text=True, timeout=900,
                             env=child_env(), start_new_session=True)
    assert skipped.returncode == 1 and "1/2 cells done, 1 failed" in skipped.stdout, skipped.stdout + skipped.stderr
    assert _attempts(store, victim["cell_id"]) == victim["attempts"]
    retried = _run(grid_cmd(study, "--no-report", "--retry-failed"))
    assert "2/2 cells done" in retried.stdout
    assert _attempts(store, victim["cell_id"]) == victim["attempts"] + 1
    assert len(store.read("scores")) == len(scores)  # the retry reused the trained and scored checkpoints


def _mlflow_runs(storage):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{storage / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["e2e"])


def _histories(storage, run_id) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    run = client.get_run(run_id)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in run.data.metrics}


def _tracked_in_mlflow(store: ResultsStore):
    """The study's default tracking (MLflow in SQLite under the storage, nothing to start): a study run with a
    nested run per cell holding its levels, rank 0's train metrics by step, its scores and selected checkpoint,
    and the report as an artifact. Returns the runs and each cell run's metric histories."""
    from mlflow.tracking import MlflowClient

    storage = Path(store.root)
    runs = _mlflow_runs(storage)
    assert sorted(runs["tags.doitray.kind"]) == ["cell", "cell", "study"]
    study_run = runs[runs["tags.doitray.kind"] == "study"].iloc[0]
    cells = store.read("cells").set_index("cell_id")
    tm, scores, ckpts = store.read("train_metrics"), store.read("scores"), store.read("checkpoints")
    hist = {}
    for cell in runs[runs["tags.doitray.kind"] == "cell"].to_dict("records"):
        cid = cell["tags.doitray.cell_id"]
        assert cell["params.cell_id"] == cid and cell["tags.mlflow.parentRunId"] == study_run["run_id"]
        assert (cell["params.volume"], cell["params.model"]) == (str(int(cells.loc[cid, "volume"])), "xs")
        assert cell["status"] == "FINISHED" and cell["tags.doitray.state"] == "done"
        mine = ckpts[ckpts["cell_id"] == cid]
        assert cell["tags.doitray.selected_checkpoint"] == mine[mine["selected"]]["checkpoint"].iloc[0]
        h = hist[cell["run_id"]] = _histories(storage, cell["run_id"])
        for metric in ("train_loss", "valid_loss", "lr"):   # every train_metrics row by step, as rank 0 reported it
            rows = tm[(tm["cell_id"] == cid) & (tm["metric"] == metric)]
            assert [(s, pytest.approx(v)) for s, v in sorted(zip(rows["step"].astype(int), rows["value"]))] == \
                h[metric], metric
        sc = scores[scores["cell_id"] == cid]       # every score per (split, suite, ability) at its checkpoint's step
        assert len(sc) == sum(1 for k in h if k.split("/")[0] in ("test", "valid"))
        for r in sc.itertuples():
            assert h[f"{r.split}/{r.suite}/{r.ability}"] == [(r.step, pytest.approx(r.value))]
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    assert [a.path for a in client.list_artifacts(study_run["run_id"], "report")] == ["report/report.html"]
    return runs, hist


def _attempts(store: ResultsStore, cell_id: str) -> int:
    cells = store.read("cells")
    return int(cells.loc[cells["cell_id"] == cell_id, "attempts"].iloc[0])


def test_killed_driver_resumes_without_redoing_finished_work(write_study):
    study, storage = write_study(volumes=(40, 200), training={"preset": "tiny", "epochs": 3, "seq_len": 128,
                                                              "global_batch": 8, "micro_batch": 8})
    store = ResultsStore(str(storage))
    proc = subprocess.Popen(grid_cmd(study, "--no-report"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=child_env(), start_new_session=True)
    try:
        deadline = time.time() + 900
        victim = None
        while time.time() < deadline and proc.poll() is None:
            cells = store.read("cells") if store.exists() else None
            ck = store.read("checkpoints") if store.exists() else None
            if cells is not None and (cells["state"] == "done").sum() == 1 and (cells["state"] == "running").sum() == 1:
                running = cells[cells["state"] == "running"]["cell_id"].iloc[0]
                # wait until the running cell has written a Train checkpoint (first epoch done)
                snaps = list((storage / "train").glob("*/checkpoint_manager_snapshot.json")) if (storage / "train").exists() else []
                ckpt_dirs = [p for s in snaps for p in s.parent.iterdir() if p.is_dir() and p.name.startswith("step")]
                if len(ckpt_dirs) >= 3:  # first cell's two + one of the running cell
                    victim = running
                    break
            time.sleep(1.0)
        assert victim, "the study never reached a killable point"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    before = store.read("cells").set_index("cell_id")
    finished = before.index[before["state"] == "done"][0]
    assert before.loc[victim, "state"] == "running"  # what a killed driver leaves behind

    _run(grid_cmd(study, "--no-report"))
    after = store.read("cells").set_index("cell_id")
    assert (after["state"] == "done").all()
    assert after.loc[finished, "attempts"] == before.loc[finished, "attempts"]  # finished cell not re-run
    assert after.loc[victim, "attempts"] == before.loc[victim, "attempts"] + 1
    resumed = json.loads(after.loc[victim, "factors"])  # sanity: same cell
    assert resumed["volume"] == 200
    metrics = store.read("train_metrics")
    vm = metrics[(metrics["cell_id"] == victim) & (metrics["metric"] == "resumed_from_step")]
    assert len(vm) and vm["value"].max() > 0  # the interrupted stage resumed from its checkpoint
