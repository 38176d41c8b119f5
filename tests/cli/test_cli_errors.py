"""Expected failures end in one line naming the thing and the fix, exit status 2, no traceback (``--debug``
adds it); ``study plan`` reads the grid and the data without opening the storage.

One test per failure kind, through the real commands. Nothing here leaves the machine: object storage is
either refused before any request (a placeholder bucket) or pointed at a loopback port where nothing
listens, credentials are dummies and the EC2 metadata lookup is off.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from doitray.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _study(tmp_path: Path, storage: str, **over: str) -> Path:
    """A two-cell study on a tiny generated suite (reads in well under a second)."""
    fields = {
        "name": "tiny",
        "storage": storage,
        "sources": "[{name: a, format: synthetic, options: {train: 20, valid: 5, test: 5, synthetic: 0}}]",
        "models": "{s: {preset: tiny-s}}",
        "factors": "{model: [s], volume: [10, 20]}",
        "tokenizer": "{train_vocab_size: 512}",
        **over,
    }
    p = tmp_path / "study.yaml"
    p.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No request may leave loopback: dummy credentials, no instance metadata, a private cache."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dummy")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "RAY_ADDRESS", "DOITRAY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOITRAY_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def dead_s3(monkeypatch) -> str:
    """AWS_ENDPOINT_URL at a loopback port where nothing listens."""
    endpoint = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return endpoint


@pytest.fixture
def listening_s3(monkeypatch):
    """AWS_ENDPOINT_URL at a loopback listener that counts the connections made to it (and drops them)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    seen, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            seen.append(1)
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{srv.getsockname()[1]}")
    yield seen
    stop.set()
    t.join(2)
    srv.close()


def _one_line_error(capsys, *must: str) -> str:
    return _one_line(capsys.readouterr().err, *must)


def _one_line(err: str, *must: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("doitray: error: ") and " — " in lines[0], err
    assert "Traceback" not in err
    for m in must:
        assert m in lines[0], (m, err)
    return lines[0]


# -- storage ----------------------------------------------------------------------------------------------
def test_placeholder_bucket_is_refused_before_any_request(tmp_path, capsys, listening_s3):
    """The README's `s3://YOUR-BUCKET` fails at once, offline, naming the storage and the fix."""
    study = _study(tmp_path, "s3://YOUR-BUCKET/doitray/tiny")
    assert main(["study", "run", str(study)]) == 2
    _one_line_error(capsys, "s3://YOUR-BUCKET/doitray/tiny", "placeholder", "--storage", "local folder")
    assert not listening_s3  # no request was made (pyarrow would resolve the bucket's region)
    assert main(["study", "status", "s3://YOUR-BUCKET/doitray/tiny"]) == 2
    _one_line_error(capsys, "placeholder")


def test_unreachable_object_storage(tmp_path, capsys, dead_s3):
    assert main(["study", "status", "s3://bkt/doitray/tiny"]) == 2
    _one_line_error(capsys, "storage s3://bkt/doitray/tiny is unreachable", "AWS_ENDPOINT_URL", "local folder")


def test_storage_error_with_debug_shows_the_traceback(tmp_path, capsys, dead_s3):
    assert main(["--debug", "report", "s3://bkt/doitray/tiny", "--text"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "AWS Error" in err  # the pyarrow error it came from
    assert err.strip().splitlines()[-1].startswith("doitray: error: storage s3://bkt/doitray/tiny is unreachable")


def test_local_storage_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    study = _study(tmp_path, str(blocker / "results"))
    assert main(["study", "run", str(study)]) == 2
    _one_line_error(capsys, f"storage {blocker / 'results'} is not writable", "folder you can write")


def test_unknown_storage_scheme(tmp_path, capsys):
    assert main(["study", "export", "ftp://host/x"]) == 2
    _one_line_error(capsys, "unknown scheme ftp://", "s3://")


# -- study plan needs no storage --------------------------------------------------------------------------
def test_plan_reads_grid_and_data_without_touching_storage(tmp_path, capsys, listening_s3):
    """No --no-data needed: the storage (placeholder or unreachable) is never opened by a plan."""
    for storage in ("s3://YOUR-BUCKET/doitray/tiny", "s3://bkt/doitray/tiny"):
        assert main(["study", "plan", str(_study(tmp_path, storage))]) == 0
        out = capsys.readouterr()
        assert "study tiny: 2 cells" in out.out and "(estimated)" in out.out, out
        assert "Traceback" not in out.err
        assert not listening_s3  # not one connection to the storage's endpoint


def test_plan_with_unreadable_sources_prints_the_grid_and_a_note(tmp_path, capsys):
    study = _study(tmp_path, str(tmp_path / "runs"),
                   sources=f"[{{name: d, format: doit, path: {tmp_path / 'no-such-data'}}}]")
    assert main(["study", "plan", str(study)]) == 0
    out = capsys.readouterr()
    assert "study tiny: 2 cells" in out.out and "not computed (data not read)" in out.out
    assert f"sources[0].path: {tmp_path / 'no-such-data'} does not exist" in out.out and "--no-data" in out.out
    assert "Traceback" not in out.err


# -- the study file ---------------------------------------------------------------------------------------
def test_unset_environment_variable_names_it_and_the_fields(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DOIT_DATA", raising=False)
    monkeypatch.delenv("DOIT_MODELS", raising=False)
    assert main(["study", "plan", str(ROOT / "experiments/studies/doit.yaml")]) == 2
    _one_line_error(capsys, "DOIT_DATA in sources[0].path", "DOIT_MODELS in tokenizer.path, models.7b.path",
                    "export DOIT_DATA=", "--no-data")
    study = _study(tmp_path, "${DOITRAY_TEST_UNSET}/results")
    assert main(["study", "run", str(study)]) == 2
    _one_line_error(capsys, "DOITRAY_TEST_UNSET in storage", "export DOITRAY_TEST_UNSET=")
    # the grid alone needs no paths: --no-data prints it, with the unset variables noted
    assert main(["study", "plan", str(ROOT / "experiments/studies/doit.yaml"), "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "study doit: 51 cells" in out and "DOIT_DATA in sources[0].path" in out


def test_missing_data_or_model_path_names_the_field(tmp_path, capsys):
    study = _study(tmp_path, str(tmp_path / "runs"),
                   sources=f"[{{name: d, format: doit, path: {tmp_path / 'no-data'}}}]",
                   models=f"{{s: {{preset: tiny-s, path: {tmp_path / 'no-model'}}}}}")
    assert main(["study", "run", str(study)]) == 2
    _one_line_error(capsys, f"sources[0].path: {tmp_path / 'no-data'} does not exist",
                    f"models.s.path: {tmp_path / 'no-model'} does not exist", "fix the path")
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_missing_study_file(capsys):
    assert main(["study", "run", "no/such/study.yaml"]) == 2
    _one_line_error(capsys, "study file no/such/study.yaml does not exist", "experiments/studies/default.yaml")


# -- Ray --------------------------------------------------------------------------------------------------
def test_no_ray_cluster_at_the_address(tmp_path):
    """ray.init retries a dead address for minutes; the command says so in a second. (In a fresh process, as a
    user runs it: this test session may already hold a Ray of its own.)"""
    study = _study(tmp_path, str(tmp_path / "runs"))
    address = f"127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-m", "doitray.cli", "study", "run", str(study)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**env, "RAY_ADDRESS": address})
    assert out.returncode == 2, out.stderr
    _one_line(out.stderr, f"no Ray cluster at RAY_ADDRESS {address}", "ray start --head", "unset RAY_ADDRESS")
    out = subprocess.run(cmd + ["--address", address], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stderr
    _one_line(out.stderr, f"no Ray cluster at --address {address}", "omit --address")


# -- experiments/grid.py shares the handling --------------------------------------------------------------
def test_grid_py_one_line_and_debug(tmp_path):
    study = _study(tmp_path, "s3://YOUR-BUCKET/doitray/tiny")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "experiments" / "grid.py"), "--study", str(study)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grid.py: error: storage s3://YOUR-BUCKET"), out.stderr
    out = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and "Traceback" in out.stderr and "StorageError" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("grid.py: error: storage s3://YOUR-BUCKET")


def test_debug_after_the_subcommand(capsys):
    assert main(["study", "run", "no/such/study.yaml", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("doitray: error: study file")
