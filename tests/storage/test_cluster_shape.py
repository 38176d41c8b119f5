"""The cluster shape users run: nodes that share no disk, everything under ``s3://``, resume on a cold cluster.

A real S3 API (moto's server on 127.0.0.1) holds the study's storage, its data source, its tokenizer and its
base model. A local multi-node Ray cluster (``ray.cluster_utils``) gives each node its own scratch folder
(``DOITRAY_SCRATCH=.../{node}``): the head runs the study driver and its trials, two cell nodes run the Train
workers. Shown:

- a DoIT-style cell (multi-task) and a two-stage DMT cell (stage 2 starts from stage 1's export in ``s3://``)
  run to scores;
- the same study is killed once DMT's stage 1 is complete; then the cell nodes are replaced by new, empty ones,
  Serve is shut down and every node's scratch folder is deleted (nothing written on a node survives); the
  study resumes, nothing finished re-runs, and its scores equal those of an uninterrupted run.

The cluster lives in a child process (``python test_cluster_shape.py <work> <out>``) so the test session's own
Ray is never touched; each study run is its own driver process (``experiments/grid.py --address``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUCKET = "doitray-shape"
CELL = "CELL_NODE"
SPECIALIST, GENERAL = ["math", "code"], ["history", "biology"]
ENV = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "10", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
       "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
       "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
RUN_S = 1500


def study_doc(storage: str) -> dict:
    return {
        "name": "shape", "storage": storage,
        "sources": [{"name": "suite", "format": "doit", "path": f"s3://{BUCKET}/data/suite"}],
        "template": "doit", "tokenizer": {"path": f"s3://{BUCKET}/tokenizer"},
        "abilities": SPECIALIST + GENERAL, "roles": {"specialist": SPECIALIST, "general": GENERAL},
        "models": {"xs": {"path": f"s3://{BUCKET}/models/xs"}},
        "factors": {"model": ["xs"], "per_ability": [8], "strategy": ["multitask", "dmt"], "replay_frac": [1.0]},
        "training": {"preset": "tiny", "epochs": 1, "seq_len": 128, "global_batch": 2, "micro_batch": 2},
        "checkpoints": {"every": "epoch"},
        "evaluation": {"select": "last", "evaluate": "selected", "max_new_tokens": 4, "valid_loss_per_ability": 4,
                       "suites": [{"limit_per_ability": 1, "ood": False}], "engine": {"max_model_len": 256}},
        "resources": {"default": {"workers": 1, "cpus_per_worker": 1, "worker_resources": {CELL: 1}}},
        "concurrency": 2, "max_retries": 0,
    }


# ---------------------------------------------------------------------------------------------------------
# child side
# ---------------------------------------------------------------------------------------------------------
def _upload(work: Path) -> None:
    """The study's inputs, in object storage only: a DoIT-format source, a tokenizer, a base model."""
    import torch
    from transformers import AutoModelForCausalLM

    from doitray.data import synthetic
    from doitray.data.templates import get_template
    from doitray.data.tokenizer import load_tokenizer, train_tokenizer
    from doitray.models.presets import PRESETS, hf_config
    from doitray.scratch import publish

    suite = synthetic.generate_cached(work / "inputs", seed=0, train=120, valid=8, test=6, synthetic=20)
    publish(str(suite), f"s3://{BUCKET}/data/suite")
    texts = [line for p in sorted(suite.rglob("*.json*")) for line in p.read_text().splitlines()[:50]]
    tok_dir = train_tokenizer(texts, work / "inputs" / "tokenizer", vocab_size=512, template=get_template("doit"))
    publish(tok_dir, f"s3://{BUCKET}/tokenizer")
    tok = load_tokenizer(tok_dir, get_template("doit"))
    cfg = hf_config(PRESETS["tiny-xs"], vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model_dir = work / "inputs" / "xs"
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    publish(str(model_dir), f"s3://{BUCKET}/models/xs")
    shutil.rmtree(work / "inputs")  # from here on the inputs exist only in S3


def _grid(work: Path, storage: str, address: str, log: str) -> subprocess.Popen:
    import yaml

    path = work / f"{storage.rsplit('/', 1)[-1]}.yaml"
    path.write_text(yaml.safe_dump(study_doc(storage)))
    out = open(work / log, "w")
    return subprocess.Popen([sys.executable, str(REPO / "experiments" / "grid.py"), "--study", str(path),
                             "--address", address, "--no-report"], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=str(REPO))


def _wait(p: subprocess.Popen, work: Path, log: str) -> None:
    rc = p.wait(timeout=RUN_S)
    if rc != 0:
        raise RuntimeError(f"{log}: exit {rc}\n{(work / log).read_text()[-6000:]}")


def _dump(storage: str) -> dict:
    from doitray.store import ResultsStore

    store = ResultsStore(storage)
    tables = {t: store.read(t).to_dict("records") for t in ("cells", "scores", "checkpoints", "train_metrics")}
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(f"{storage}/train")
    runs = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(base)) if i.type == pafs.FileType.Directory)
    return {**tables, "train_runs": runs}


def _stage1_complete(storage: str) -> bool:
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(f"{storage}/train")
    try:
        dirs = [i.path for i in fs.get_file_info(pafs.FileSelector(base)) if i.base_name.startswith("specialist-")]
    except OSError:
        return False
    return any(fs.get_file_info(f"{d}/stage_complete.json").type == pafs.FileType.File for d in dirs)


def run_child(work: Path, out: Path) -> None:
    os.environ.update(ENV)
    os.environ.pop("RAY_ADDRESS", None)
    sys.path.insert(0, str(REPO))
    import ray
    from ray import serve

    from doitray.cluster.local import LocalCluster

    _upload(work)
    cl = LocalCluster(2, head_cpus=5, cell_resource=CELL)
    ev: dict = {"first_nodes": [n.node_id for n in cl.nodes]}
    try:
        address = cl.cluster.address
        ref, run = f"s3://{BUCKET}/ref", f"s3://{BUCKET}/run"
        _wait(_grid(work, ref, address, "ref.log"), work, "ref.log")

        p = _grid(work, run, address, "run1.log")
        deadline = time.time() + RUN_S
        while not _stage1_complete(run):
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the run ended before DMT's stage 1 completed\n{(work / 'run1.log').read_text()[-6000:]}")
            time.sleep(1)
        os.killpg(p.pid, signal.SIGKILL)  # the driver is gone, mid-study
        p.wait()
        ev["killed"] = _dump(run)

        # a cold cluster: new empty cell nodes, no Serve, no scratch on any node
        try:
            serve.shutdown()
        except Exception:  # noqa: BLE001 - not started
            pass
        for n in list(cl.nodes):
            cl.remove(n.node_id)
        time.sleep(2)
        shutil.rmtree(work / "scratch", ignore_errors=True)
        ev["second_nodes"] = [cl.add(), cl.add()]
        _wait(_grid(work, run, address, "run2.log"), work, "run2.log")
        ev.update(ref=_dump(ref), run=_dump(run), log=(work / "run2.log").read_text()[-20000:])
        scratch = work / "scratch"
        ev["scratch"] = {d.name: sorted(p.name for p in (d / "fetched").glob("*")) if (d / "fetched").is_dir() else []
                         for d in scratch.iterdir()} if scratch.is_dir() else {}
    finally:
        out.write_text(json.dumps(ev, default=str))
        ray.shutdown()
        cl.shutdown()


# ---------------------------------------------------------------------------------------------------------
# test side
# ---------------------------------------------------------------------------------------------------------
def _scores(d: dict) -> dict:
    return {(r["cell_id"], r["suite"], r["split"], r["ability"]): round(float(r["value"]), 9) for r in d["scores"]}


def test_study_in_object_storage_resumes_on_a_cold_cluster_with_equal_scores(tmp_path):
    from s3kit import s3_server

    out = tmp_path / "observed.json"
    with s3_server(BUCKET) as s3env:
        env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **s3env,
               "DOITRAY_SCRATCH": str(tmp_path / "scratch" / "{node}")}
        p = subprocess.run([sys.executable, __file__, str(tmp_path), str(out)], capture_output=True, text=True,
                           timeout=4 * RUN_S, env=env, start_new_session=True)
    assert p.returncode == 0 and out.exists(), f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-8000:]}"
    ev = json.loads(out.read_text())
    ref, run, killed = ev["ref"], ev["run"], ev["killed"]

    for d in (ref, run):
        assert len(d["cells"]) == 2 and all(c["state"] == "done" for c in d["cells"]), d["cells"]
        assert sum(1 for r in d["train_runs"] if r.startswith("specialist-")) == 1
        assert sum(1 for r in d["train_runs"] if r.startswith("general+replay-")) == 1
    # the scores of the interrupted, resumed study are the uninterrupted study's
    assert _scores(run) and _scores(run) == _scores(ref)

    # nothing finished re-ran: a cell done before the kill kept its attempt; DMT's stage 1 was not retrained
    done_before = {c["cell_id"]: c["attempts"] for c in killed["cells"] if c["state"] == "done"}
    after = {c["cell_id"]: c for c in run["cells"]}
    assert all(after[c]["attempts"] == a for c, a in done_before.items())
    dmt = next(c["cell_id"] for c in run["cells"] if c["strategy"] == "dmt")
    stage1 = [m for m in run["train_metrics"] if m["cell_id"] == dmt and m["stage"] == 0]
    last = max(m["step"] for m in stage1 if m["metric"] == "train_loss")
    assert [m["value"] for m in stage1 if m["metric"] == "resumed_from_step"] == [last]
    # stage 2 started from stage 1's export in object storage
    ck = {(c["cell_id"], c["stage"]): c for c in run["checkpoints"]}
    assert ck[(dmt, 0)]["hf_path"].startswith(f"s3://{BUCKET}/run/train/specialist-")

    # the new nodes fetched what they needed from the storage into their own scratch
    new = [n[:16] for n in ev["second_nodes"]]
    assert any(ev["scratch"].get(n) for n in new), ev["scratch"]
    assert "doitray: fetched s3://" in ev["log"] or any(ev["scratch"].values())


if __name__ == "__main__":
    run_child(Path(sys.argv[1]), Path(sys.argv[2]))
