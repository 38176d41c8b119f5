"""Where a cell's Train workers are placed: a tier's ``placement`` reaches ``ray.train.ScalingConfig``.

The path a cell takes, without a cluster: study file → ``expand_cells`` → its trial config (``Cell.to_config``)
→ ``train_resources`` (what ``CellRun`` passes into each ``StageSpec``) → ``scaling_config`` (what ``run_stage``
hands the ``TorchTrainer``). The object is asserted, nothing is run.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.train.v2.api.config import ScalingConfig

from doitray.study.spec import train_resources
from doitray.study.cells import expand_cells
from doitray.study.spec import StudyFileError, load_study
from doitray.train.stage import StageSpec, scaling_config, stage_key

STUDIES = Path(__file__).resolve().parents[2] / "experiments" / "studies"
ENV = {"DOIT_DATA": "/doit-data/doit", "DOIT_MODELS": "/doit-models/chinese"}


def load(tmp_path: Path, **tiers) -> object:
    res = {"default": {"workers": 1},
           "gpu8": {"workers": 8, "gpus_per_worker": 1, "cpus_per_worker": 8},
           "gpu16": {"workers": 16, "gpus_per_worker": 1, "cpus_per_worker": 8, "micro_batch": 4}}
    for name, over in tiers.items():
        res[name] = {**res[name], **over}
    doc = {"name": "pl", "storage": str(tmp_path / "store"), "sources": [{"name": "suite", "format": "synthetic"}],
           "tokenizer": {"train_vocab_size": 512},
           "models": {"7b": {"preset": "llama-7b", "init": "scratch", "tier": "gpu8"},
                      "33b": {"preset": "llama-33b", "init": "scratch", "tier": "gpu16"},
                      "xs": {"preset": "tiny-xs", "init": "scratch"}},
           "factors": {"model": ["7b", "33b", "xs"], "volume": [40]},
           "training": {"preset": "doit", "activation_checkpointing": True}, "resources": res}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_study(path)


def stage_scaling(spec, model: str) -> ScalingConfig:
    cell = next(c for c in expand_cells(spec) if c.levels["model"] == model)
    config = cell.to_config()  # the trial config's part that the runner does not add (shared, store, tracking)
    stage = StageSpec(name="multitask", model=model, train_data="/data/packed", storage_path="/store/train",
                      **train_resources(config["resources"]))
    return scaling_config(stage)


def test_a_one_node_gpu_tier_is_strict_pack_and_a_two_node_one_pack(tmp_path):
    spec = load(tmp_path)
    eight = stage_scaling(spec, "7b")
    assert isinstance(eight, ScalingConfig)  # Train V2's
    assert eight.placement_strategy == "STRICT_PACK" and eight.num_workers == 8 and eight.use_gpu
    assert eight.resources_per_worker == {"CPU": 8.0, "GPU": 1}
    sixteen = stage_scaling(spec, "33b")
    assert sixteen.placement_strategy == "PACK" and sixteen.num_workers == 16  # 16 GPUs: two 8-GPU nodes
    assert stage_scaling(spec, "xs").placement_strategy == "PACK"  # CPU workers: wherever they fit


def test_the_tier_decides_and_strict_pack_that_cannot_fit_is_refused(tmp_path):
    assert stage_scaling(load(tmp_path, gpu16={"gpus_per_node": 16}), "33b").placement_strategy == "STRICT_PACK"
    assert stage_scaling(load(tmp_path, gpu8={"placement": "SPREAD"}), "7b").placement_strategy == "SPREAD"
    # an elastic tier is judged at its largest worker count
    elastic = stage_scaling(load(tmp_path, gpu8={"workers": [1, 2], "gpus_per_worker": 4}), "7b")
    assert elastic.placement_strategy == "STRICT_PACK" and elastic.num_workers == (1, 2)
    wide = stage_scaling(load(tmp_path, gpu8={"workers": [1, 2], "gpus_per_worker": 8}), "7b")
    assert wide.placement_strategy == "PACK"
    with pytest.raises(StudyFileError) as e:
        load(tmp_path, gpu16={"placement": "STRICT_PACK"})
    assert "resources.gpu16" in str(e.value) and "gpus_per_node 8" in str(e.value) and "PACK" in str(e.value)
    with pytest.raises(StudyFileError, match="resources.gpu8.placement"):
        load(tmp_path, gpu8={"placement": "pack"})


def test_placement_is_not_part_of_cell_ids_or_stage_keys(tmp_path):
    ids = [c.cell_id for c in expand_cells(load(tmp_path))]
    assert ids == [c.cell_id for c in expand_cells(load(tmp_path, gpu8={"placement": "SPREAD", "gpus_per_node": 4}))]
    base = StageSpec(name="s", model="m", train_data="/d", storage_path="/s")
    assert stage_key(base) == stage_key(base.model_copy(update={"placement_strategy": "STRICT_PACK"}))


def test_the_shipped_doit_study_packs_its_8_gpu_cells_on_one_node(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    spec = load_study(STUDIES / "doit.yaml", overrides={"storage": str(tmp_path / "store")})
    assert stage_scaling(spec, "7b").placement_strategy == "STRICT_PACK"
    assert stage_scaling(spec, "33b").placement_strategy == "PACK"
