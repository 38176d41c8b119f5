"""`ray job submit --working-dir . -- python experiments/grid.py --study …` against a real head node."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from doitray.store import ResultsStore

from studykit import REPO, child_env, free_port

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def head_node():
    """A `ray start --head --block` on free ports, in its own process group, with token auth on."""
    temp = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
    gcs, dash = free_port(), free_port()
    env = child_env(RAY_AUTH_MODE="token")
    cmd = [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dash}",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=3",
           '--resources={"TRAIN_DRIVER": 100}', f"--temp-dir={temp}", "--disable-usage-stats",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 180
    while time.time() < deadline:
        r = subprocess.run([RAY, "job", "list", "--address", url], capture_output=True, text=True, env=env)
        if r.returncode == 0:
            break
        if proc.poll() is not None:
            pytest.fail(f"ray start failed: {proc.stdout.read()[-3000:]}")
        time.sleep(2)
    else:
        os.killpg(proc.pid, 9)
        pytest.fail("the head node's job server never answered")
    yield url, env
    # not `ray stop`: it would stop every Ray on the machine, the test session's own included
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


def test_job_submit_runs_the_study_and_stores_results(head_node, write_study):
    url, env = head_node
    study, storage = write_study(volumes=(40,))
    r = subprocess.run([RAY, "job", "submit", "--address", url, "--working-dir", str(REPO),
                        "--entrypoint-resources", '{"TRAIN_DRIVER": 0.01}', "--",
                        "python", "experiments/grid.py", "--study", str(study), "--no-report"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "1/1 cells done" in r.stdout
    store = ResultsStore(str(storage))
    assert list(store.read("cells")["state"]) == ["done"]
    assert len(store.read("scores")) > 0
