"""A real 2-cell study end to end on local Ray (data → Train/FSDP2 → Serve+vLLM eval → store),
then resume: a re-run skips finished cells, a failed cell is retried with --retry-failed, and a driver
killed mid-study loses nothing written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

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

    again = _run(grid_cmd(study, "--no-report"))
    assert "2/2 cells done" in again.stdout
    cells2 = store.read("cells")
    assert list(cells2.sort_values("cell_id")["attempts"]) == list(cells.sort_values("cell_id")["attempts"])
    assert len(store.read("scores")) == len(scores)  # nothing re-scored

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
