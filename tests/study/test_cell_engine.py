"""A cell's evaluation engine comes from its study file: the kind from its tier, options per model level.

The path a cell takes: study file → ``expand_cells`` → its trial config (``Cell.to_config``) → ``engine_options``
(what ``CellRun.evaluate`` hands the engine) → ``EngineOptions`` → ``replica_request`` (what the replica asks
Ray for). None of it looks at the cluster, so a resumed cell whose GPU nodes have scaled to zero still asks for
a GPU replica; no GPU is needed to check it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from doitray.eval.engine import EngineOptions, replica_request
from doitray.study.cell import engine_options
from doitray.study.cells import expand_cells
from doitray.study.spec import StudyFileError, load_study

STUDIES = Path(__file__).resolve().parents[2] / "experiments" / "studies"
ENV = {"DMT_DATA": "/doit-data/dmt", "LLAMA_MODELS": "/doit-models/llama",
       "DOIT_DATA": "/doit-data/doit", "DOIT_MODELS": "/doit-models/chinese"}


def study_doc(storage: Path, **model_over) -> dict:
    models = {"7b": {"preset": "llama-7b", "init": "scratch", "tier": "gpu8"},
              "33b": {"preset": "llama-33b", "init": "scratch", "tier": "gpu16", "engine": {"tensor_parallel_size": 4}},
              "xs": {"preset": "tiny-xs", "init": "scratch"}}  # the default tier: CPU workers
    for name, over in model_over.items():
        models[name] = {**models[name], **over}
    return {"name": "tp", "storage": str(storage), "sources": [{"name": "suite", "format": "synthetic"}],
            "tokenizer": {"train_vocab_size": 512}, "models": models,
            "factors": {"model": list(models), "volume": [40]},
            "training": {"preset": "doit", "activation_checkpointing": True},
            "evaluation": {"engine": {"max_num_seqs": 32, "max_model_len": 4096}},
            "resources": {"default": {"workers": 1},
                          "gpu8": {"workers": 8, "gpus_per_worker": 1, "cpus_per_worker": 8},
                          "gpu16": {"workers": 16, "gpus_per_worker": 1, "cpus_per_worker": 8, "micro_batch": 4}}}


def load(tmp_path: Path, doc: dict):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_study(path)


def checkpoint(tmp_path: Path, max_len: int = 2048) -> str:
    hf = tmp_path / "hf"
    hf.mkdir(exist_ok=True)
    (hf / "config.json").write_text(json.dumps({"max_position_embeddings": max_len}))
    return str(hf)


def cell_options(spec, model: str, hf_dir: str) -> dict:
    """The engine options a cell of ``model`` evaluates ``hf_dir`` with."""
    cell = next(c for c in expand_cells(spec) if c.levels["model"] == model)
    config = cell.to_config()  # the trial config's part that the runner does not add (shared, store, tracking)
    return engine_options(hf_dir, config, "/scratch/cache")


def test_a_gpu_tier_and_a_tensor_parallel_level_reach_the_replica_request(tmp_path):
    spec = load(tmp_path, study_doc(tmp_path / "store"))
    hf = checkpoint(tmp_path)

    big = cell_options(spec, "33b", hf)
    # the level's TP over the study's engine options, key by key; max_model_len capped at the checkpoint's
    assert big == {"gpu": True, "tensor_parallel_size": 4, "max_num_seqs": 32, "max_model_len": 2048}
    req = replica_request(EngineOptions.from_any(big))
    assert req["deployment"]["placement_group_bundles"] == [{"CPU": 1.0}] + [{"GPU": 1, "CPU": 1}] * 4
    assert req["deployment"]["placement_group_strategy"] == "STRICT_PACK"
    assert req["engine_kwargs"]["tensor_parallel_size"] == 4 and req["engine_kwargs"]["max_num_seqs"] == 32

    seven = replica_request(EngineOptions.from_any(cell_options(spec, "7b", hf)))
    assert seven["ray_actor_options"]["num_gpus"] == 1 and seven["deployment"] == {}

    cpu = cell_options(spec, "xs", hf)
    assert cpu["gpu"] is False
    assert "VLLM_CPU_KVCACHE_SPACE" in replica_request(EngineOptions.from_any(cpu))["ray_actor_options"][
        "runtime_env"]["env_vars"]


def test_what_the_user_writes_wins_over_the_tier(tmp_path):
    doc = study_doc(tmp_path / "store", xs={"engine": {"gpu": True}})
    doc["evaluation"]["engine"]["gpu"] = False  # study-wide: CPU replicas, even for the GPU tiers
    spec = load(tmp_path, doc)
    hf = checkpoint(tmp_path)
    assert cell_options(spec, "7b", hf)["gpu"] is False
    assert cell_options(spec, "xs", hf)["gpu"] is True  # the level over the study


def test_serving_options_of_a_level_keep_cell_ids_and_answer_options_change_them(tmp_path):
    def ids(**over):
        return {c.levels["model"]: c.cell_id for c in expand_cells(load(tmp_path, study_doc(tmp_path / "s", **over)))}

    base = ids(**{"33b": {"engine": {}}})
    assert ids() == base  # tensor_parallel_size (where and how fast it is served) is not the work's identity
    serving = {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.9, "shared": True}
    assert ids(**{"33b": {"engine": serving}}) == base
    longer = ids(**{"33b": {"engine": {"max_model_len": 1024}}})  # truncation changes the answers: new cells
    assert longer["33b"] != base["33b"] and longer["7b"] == base["7b"]
    cells = expand_cells(load(tmp_path, study_doc(tmp_path / "s", **{"33b": {"engine": {"max_model_len": 1024}}})))
    assert next(c for c in cells if c.levels["model"] == "33b").content["model"]["engine"] == {"max_model_len": 1024}
    assert all("engine" not in c.content["model"] for c in expand_cells(load(tmp_path, study_doc(tmp_path / "s")))
               if c.levels["model"] != "33b")


def test_a_bad_level_engine_option_is_named_before_anything_runs(tmp_path):
    with pytest.raises(StudyFileError) as e:
        load(tmp_path, study_doc(tmp_path / "store", **{"33b": {"engine": {"tensor_parallel": 4}}}))
    assert "models.33b.engine" in str(e.value) and "unknown engine option(s) ['tensor_parallel']" in str(e.value)
    assert "tensor_parallel_size" in str(e.value)  # the allowed names
    with pytest.raises(StudyFileError, match="models.33b.engine.*integer >= 1"):
        load(tmp_path, study_doc(tmp_path / "store", **{"33b": {"engine": {"tensor_parallel_size": 0}}}))


@pytest.mark.parametrize("name", ["doit.yaml", "dmt.yaml"])
def test_the_shipped_33b_is_served_tensor_parallel_on_one_node(name, tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    spec = load_study(STUDIES / name, overrides={"storage": str(tmp_path / "store")})
    hf = checkpoint(tmp_path)
    for model, tp in (("33b", 4), ("13b", 1), ("7b", 1)):
        opts = cell_options(spec, model, hf)
        assert opts["gpu"] is True and opts.get("tensor_parallel_size", 1) == tp, (model, opts)
    req = replica_request(EngineOptions.from_any(cell_options(spec, "33b", hf)))
    assert req["deployment"]["placement_group_strategy"] == "STRICT_PACK"
    assert sum(b.get("GPU", 0) for b in req["deployment"]["placement_group_bundles"]) == 4


def test_study_plan_shows_how_each_model_is_served(tmp_path):
    from doitray.study.plan import plan_study

    plan = plan_study(load(tmp_path, study_doc(tmp_path / "store")), with_data=False)
    served = {c.label.split()[0]: c.engine for c in plan.cells}
    assert served == {"7b": "gpu", "33b": "gpu tp=4", "xs": "cpu"}
    assert "gpu tp=4" in plan.text() and plan.to_dict()["cells"][0]["engine"] == "gpu"
