"""A pretrained base on object storage: the driver trains it once, its export lies under ``s3://…/cache/pretrain``
(nothing a cell node needs stays on the driver's disk), a node with an empty scratch fetches it, and a second
preparation of the study, from another empty scratch, reuses it, and its base cell (volume 0) scores that export.

Run in a child process with its own Ray: the workers must see the S3 server's variables, which a Ray started
earlier in this session does not have."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import ray
from studykit import tiny_study
from doitray.scratch import fetch
from doitray.store import ResultsStore
from doitray.study.prepare import prepare_study
from doitray.study.runner import run_study
from doitray.study.spec import parse_study

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
doc = tiny_study("s3://doitray-test/studies/pre", volumes=(0,))   # the base cell only
doc["models"] = {"xs": {"preset": "tiny-xs", "init": {"pretrain": {"tokens": 6000, "seq_len": 64,
                                                                  "global_batch": 8, "micro_batch": 8}}}}
spec = parse_study(doc)
store = ResultsStore(spec.storage)
scratch = os.environ["DOITRAY_SCRATCH"]
base = prepare_study(spec, store)["models"]["xs"]
os.environ["DOITRAY_SCRATCH"] = scratch + "-node2"          # a cell node: nothing on its disk
local = fetch(base["hf_dir"])
files = sorted(os.listdir(local))
os.environ["DOITRAY_SCRATCH"] = scratch + "-driver2"        # a new driver with an empty scratch
again = prepare_study(spec, store)["models"]["xs"]
out = run_study(spec, progress_interval=1e9)
cells, ck, sc = store.read("cells"), store.read("checkpoints"), store.read("scores")
print("RESULT " + json.dumps({"base": base, "again": again, "local": local, "files": files, "done": out.done,
                              "train_tokens": cells["train_tokens"].tolist(), "checkpoints": ck["hf_path"].tolist(),
                              "abilities": sorted(set(sc.loc[sc["split"] == "test", "ability"]) - {"overall"})}))
"""


def test_a_pretrained_base_is_published_to_object_storage_and_reused(s3, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "tests" / "study")], capture_output=True, text=True,
                       timeout=900, env={**env, "PYTHONPATH": str(REPO)}, start_new_session=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    [line] = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    r = json.loads(line.removeprefix("RESULT "))
    assert r["base"]["hf_dir"].startswith("s3://doitray-test/studies/pre/cache/pretrain/tiny-xs-")
    assert "pretrained xs (tiny-xs)" in p.stdout
    assert r["local"].startswith(str(tmp_path / "scratch-node2"))
    assert "config.json" in r["files"] and any(f.endswith(".safetensors") for f in r["files"])
    assert "reused the pretrained base of xs" in p.stdout and r["again"] == r["base"]
    # the base cell: nothing trained, its one checkpoint the export on S3, scored on every ability
    assert r["done"] == 1 and r["train_tokens"] == [0] and r["checkpoints"] == [r["base"]["hf_dir"]]
    assert len(r["abilities"]) == 10
