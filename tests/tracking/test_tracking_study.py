"""Tracking on the study path with a tracker that is down: the cell still finishes, with a warning. (The default
MLflow tracking of a real study, read back with ``mlflow.search_runs`` and continued by a re-run, is checked on
the two-cell study of tests/study/test_study_e2e.py.)"""
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


def test_a_tracker_that_is_down_warns_and_the_cell_finishes(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"           # nothing listens there
    study, storage = _write(tmp_path, tracking={"kind": "mlflow", "uri": uri},
                            training={"preset": "tiny", "epochs": 1, "seq_len": 128, "global_batch": 8, "micro_batch": 8})
    out = _run(grid_cmd(study, "--no-report"))
    assert "1/1 cells done, 0 failed" in out.stdout
    assert f"doitray: warning: tracking (mlflow {uri}) study e2e: start failed" in out.stderr
    assert list(ResultsStore(str(storage)).read("cells")["state"]) == ["done"]
