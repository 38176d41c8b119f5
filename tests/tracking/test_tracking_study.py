"""Tracking on the study path: a real one-cell study through ``experiments/grid.py`` (Train rank 0 and the
cell driver log into MLflow's default SQLite store under the storage), read back with ``mlflow.search_runs``;
run again, it continues the same runs and duplicates nothing; with a tracker that is down the cell still
finishes, with a warning."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from doitray.store import ResultsStore

from studykit import child_env, free_port, grid_cmd, tiny_study

pytestmark = pytest.mark.slow


def _write(tmp_path, **over):
    storage = tmp_path / "store"
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(tiny_study(storage, volumes=(40,), **over)))
    return study, storage


def _run(cmd, timeout=900):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), start_new_session=True)
    assert p.returncode == 0, f"exit {p.returncode}\nSTDOUT\n{p.stdout[-3000:]}\nSTDERR\n{p.stderr[-6000:]}"
    return p


def _runs(storage):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{storage / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["e2e"])


def _histories(storage, run_id):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    run = client.get_run(run_id)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in run.data.metrics}


def test_a_study_tracks_its_cell_in_mlflow_and_a_rerun_continues_the_same_runs(tmp_path):
    study, storage = _write(tmp_path)
    out = _run(grid_cmd(study))                       # the default tracking: MLflow, nothing to start
    assert "1/1 cells done" in out.stdout and "warning: tracking" not in out.stderr, out.stderr[-3000:]
    store = ResultsStore(str(storage))
    cell_id = store.read("cells")["cell_id"].iloc[0]

    runs = _runs(storage)
    assert sorted(runs["tags.doitray.kind"]) == ["cell", "study"]
    study_run = runs[runs["tags.doitray.kind"] == "study"].iloc[0]
    cell = runs[runs["tags.doitray.kind"] == "cell"].iloc[0]
    assert cell["tags.mlflow.parentRunId"] == study_run["run_id"]          # nested under the study's run
    assert (cell["tags.doitray.cell_id"], cell["params.cell_id"]) == (cell_id, cell_id)
    assert (cell["params.volume"], cell["params.model"], cell["params.strategy"]) == ("40", "xs", "multitask")
    assert cell["status"] == study_run["status"] == "FINISHED" and cell["tags.doitray.state"] == "done"

    ckpts = store.read("checkpoints")
    assert cell["tags.doitray.selected_checkpoint"] == ckpts[ckpts["selected"]]["checkpoint"].iloc[0]

    # every train_metrics row by step, as rank 0 reported it
    hist = _histories(storage, cell["run_id"])
    tm = store.read("train_metrics")
    for metric in ("train_loss", "valid_loss", "lr"):
        want = sorted((int(r.step), r.value) for r in tm[tm["metric"] == metric].itertuples())
        assert [(s, pytest.approx(v)) for s, v in want] == hist[metric], metric
    # every score as a metric per (split, suite, ability) at its checkpoint's step
    scores = store.read("scores")
    assert len(scores) and len(scores) == sum(1 for k in hist if k.split("/")[0] in ("test", "valid"))
    for r in scores.itertuples():
        assert hist[f"{r.split}/{r.suite}/{r.ability}"] == [(r.step, pytest.approx(r.value))]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    assert [a.path for a in client.list_artifacts(study_run["run_id"], "report")] == ["report/report.html"]

    again = _run(grid_cmd(study))                     # resumed: the same runs, nothing logged twice
    assert "1/1 cells done" in again.stdout
    runs2 = _runs(storage)
    assert sorted(runs2["run_id"]) == sorted(runs["run_id"])
    assert _histories(storage, cell["run_id"]) == hist
    assert runs2.set_index("run_id").loc[study_run["run_id"], "status"] == "FINISHED"


def test_a_tracker_that_is_down_warns_and_the_cell_finishes(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"           # nothing listens there
    study, storage = _write(tmp_path, tracking={"kind": "mlflow", "uri": uri},
                            training={"preset": "tiny", "epochs": 1, "seq_len": 128, "global_batch": 8, "micro_batch": 8})
    out = _run(grid_cmd(study, "--no-report"))
    assert "1/1 cells done, 0 failed" in out.stdout
    assert f"doitray: warning: tracking (mlflow {uri}) study e2e: start failed" in out.stderr
    assert list(ResultsStore(str(storage)).read("cells")["state"]) == ["done"]
