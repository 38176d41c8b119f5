"""Experiment tracking: each backend writes runs that its own reader reads back (MLflow's ``search_runs`` on
the SQLite store, TensorBoard's event accumulator, W&B's offline run files), resuming continues the same runs
without duplicating a step, and a tracker that is down is one warning, never an error.

The study path (a real tiny study through ``experiments/grid.py``, then run again) is in
``test_tracking_study.py``.
"""
from __future__ import annotations

import re
import socket

import pytest

from doitray.tracking import cell_run, resolve_target, study_run, worker_run

KEYS = ["train_loss", "valid_loss", "lr"]
REPORTS = [  # what rank 0 reports: a group every few steps (earlier steps in "history"), a checkpoint's valid loss
    {"step": 2, "train_loss": 2.0, "lr": 0.1, "history": [{"step": 1, "train_loss": 2.5, "lr": 0.1}]},
    {"step": 4, "train_loss": 1.5, "lr": 0.05, "valid_loss": 1.8, "grad_norm": None,
     "history": [{"step": 3, "train_loss": 1.7, "lr": float("nan")}]},
]


def _write_cell(target, study="demo", cell_id="c0ffee", report=None):
    """What a study does: study run, nested cell run (params), rank-0 train metrics, scores, selected tag."""
    s = study_run(target, study, {"factors.volume": [40]})
    c = cell_run(s.child_ref(), cell_id, name="xs 40")
    c.log_params({"volume": 40, "model": "xs", "cell_id": cell_id})
    w = worker_run(c.worker_ref(keys=KEYS))
    if w.active:          # MLflow and TensorBoard: the worker logs into the cell's run itself
        for r in REPORTS:
            w.log_report(r)
        w.close()
    else:                 # W&B: the cell driver logs the stage's metrics when it ends
        c.log_rows((k, e[k], e["step"]) for r in REPORTS for e in [*r["history"], r] for k in KEYS if k in e)
    c.log_metrics({"test/doit/math": 0.5, "test/doit/ethics": 0.25}, step=4)
    c.set_tags({"doitray.selected_checkpoint": "s0-step0000004"})
    c.end(tags={"doitray.state": "done"})
    if report:
        s.log_artifact(str(report), "report")
    s.end()
    return s, c


def _closed_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def test_mlflow_runs_read_back_with_search_runs_and_resume_the_same_runs(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    target = resolve_target("mlflow", None, None, str(tmp_path / "store"), "demo")
    assert target.uri == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"   # nothing to start, under the storage
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    s, c = _write_cell(target, report=report)
    s2, c2 = _write_cell(target, report=report)   # resumed: found again by identity, the same steps again
    assert (s2.meta, c2.what) == (s.meta, c.what)

    mlflow.set_tracking_uri(target.uri)
    runs = mlflow.search_runs(experiment_names=["demo"])
    assert len(runs) == 2                          # one study run, one cell run: nothing new on resume
    study = runs[runs["tags.doitray.kind"] == "study"].iloc[0]
    cell = runs[runs["tags.doitray.kind"] == "cell"].iloc[0]
    assert cell["tags.mlflow.parentRunId"] == study["run_id"]   # nested
    assert (cell["params.volume"], cell["params.cell_id"], cell["tags.doitray.cell_id"]) == ("40", "c0ffee", "c0ffee")
    assert cell["tags.doitray.selected_checkpoint"] == "s0-step0000004"
    assert cell["status"] == study["status"] == "FINISHED"
    assert cell["metrics.test/doit/math"] == 0.5 and cell["metrics.test/doit/ethics"] == 0.25

    client = MlflowClient(target.uri)
    hist = lambda k: sorted((m.step, m.value) for m in client.get_metric_history(cell["run_id"], k))  # noqa: E731
    assert hist("train_loss") == [(1, 2.5), (2, 2.0), (3, 1.7), (4, 1.5)]   # by step, each once
    assert hist("lr") == [(1, 0.1), (2, 0.1), (4, 0.05)]                    # NaN left out
    assert hist("valid_loss") == [(4, 1.8)]
    assert hist("grad_norm") == []                                          # not asked for
    assert [a.path for a in client.list_artifacts(study["run_id"], "report")] == ["report/report.html"]


def test_tensorboard_event_files_read_back_with_its_reader(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    target = resolve_target("tensorboard", None, None, str(tmp_path / "store"), "demo")
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    _write_cell(target, report=report)

    study_dir = tmp_path / "store" / "tensorboard" / "demo"
    acc = ea.EventAccumulator(str(study_dir / "c0ffee"), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    scalars = lambda k: [(e.step, round(e.value, 5)) for e in acc.Scalars(k)]  # noqa: E731  # float32 events
    assert scalars("train_loss") == [(1, 2.5), (2, 2.0), (3, 1.7), (4, 1.5)]
    assert scalars("valid_loss") == [(4, 1.8)]
    assert scalars("test/doit/math") == [(4, 0.5)]
    text = lambda k: [tensor_util.make_ndarray(t.tensor_proto).item().decode()  # noqa: E731
                      for t in acc.Tensors(f"{k}/text_summary")]
    assert text("tags/doitray.selected_checkpoint") == ["s0-step0000004"]
    assert "| volume | 40 |" in text("params")[0]
    assert (study_dir / "artifacts" / "report" / "report.html").read_text() == "<html>report</html>"


def _wandb_records(path) -> list[bytes]:
    """The records of an offline ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then LevelDB's log
    format (32 KiB blocks of [crc32, length, type] chunks; full / first / middle / last)."""
    import struct

    data, pos, out, part = path.read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:           # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        part = chunk if kind in (1, 2) else part + chunk
        if kind in (1, 4):
            out.append(part)
    return out


def test_wandb_offline_run_resumes_by_its_identity(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is optional (pip install 'doitray[wandb]')")
    from wandb.proto import wandb_internal_pb2 as pb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    target = resolve_target("wandb", None, None, str(tmp_path / "store"), "demo")
    _write_cell(target)
    _write_cell(target)                              # resumed
    runs = sorted((tmp_path / "store" / "wandb" / "wandb").glob("offline-run-*"))
    # offline-run-<time>-<id>, with "-<n>" appended when two sessions start in the same second
    ids = {re.match(r"offline-run-\d{8}_\d{6}-([0-9a-f]+)", p.name).group(1) for p in runs}
    assert len(runs) == 4 and len(ids) == 2          # two sessions of the same two runs (study, cell)

    history, config = [], {}
    for path in runs:
        for data in _wandb_records(next(path.glob("*.wandb"))):
            rec = pb.Record()
            rec.ParseFromString(data)
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): i.value_json for i in rec.history.item}
                if "train_loss" in items:
                    history.append((path.name[-32:], float(items["doitray/step"]), float(items["train_loss"])))
            elif kind == "config":
                config.update({i.key: i.value_json for i in rec.config.update})
    assert len({h[0] for h in history}) == 1          # all in the cell's run, over both sessions
    assert sorted({h[1:] for h in history}) == [(1, 2.5), (2, 2.0), (3, 1.7), (4, 1.5)]
    assert config["volume"] == '"40"' and config["cell_id"] == '"c0ffee"'


def test_a_tracker_that_is_down_is_a_warning_and_nothing_else(tmp_path, capsys):
    target = resolve_target("mlflow", f"http://127.0.0.1:{_closed_port()}", None, str(tmp_path), "demo")
    s, c = _write_cell(target)                       # no exception: every call a no-op after the warning
    assert not s.active and not c.active and s.child_ref() is None
    err = capsys.readouterr().err
    assert err.count("doitray: warning: tracking (mlflow http://127.0.0.1:") == 1, err
    assert "study demo: start failed" in err


def test_object_storage_without_a_uri_tracks_nothing_and_says_how(capsys):
    target = resolve_target("mlflow", None, None, "s3://bucket/studies/x", "x")
    assert target.kind == "none"
    assert "set tracking.uri to an MLflow server" in capsys.readouterr().err
    assert resolve_target("mlflow", "http://mlflow:5000", "grid", "s3://bucket/x", "x").uri == "http://mlflow:5000"


def test_the_study_file_tracking_block(tmp_path):
    from doitray.study.spec import StudyFileError, parse_study

    from studykit import tiny_study

    spec = parse_study(tiny_study(tmp_path / "store"))
    assert (spec.tracking.kind, spec.tracking.uri) == ("mlflow", None)   # the default: on, nothing to start
    spec = parse_study(tiny_study(tmp_path / "store", tracking={"kind": "tensorboard", "experiment": "grid"}))
    assert spec.tracking.experiment == "grid"
    with pytest.raises(StudyFileError) as e:
        parse_study(tiny_study(tmp_path / "store", tracking={"kind": "neptune"}))
    assert "tracking.kind" in str(e.value) and "tensorboard" in str(e.value)
    with pytest.raises(StudyFileError, match="tracking.url"):
        parse_study(tiny_study(tmp_path / "store", tracking={"url": "http://x"}))
