"""Study file validation (each mistake named) and cell expansion / hashing."""
from __future__ import annotations

import copy

import pytest
import yaml

from doitray.study.cells import expand_cells
from doitray.study.spec import StudyFileError, load_study, parse_study

BASE = {
    "name": "t",
    "storage": "/tmp/doitray-test-study",
    "sources": [{"name": "suite", "format": "synthetic"}],
    "tokenizer": {"train_vocab_size": 512},
    "models": {"s": {"preset": "tiny-s", "init": "scratch"}, "m": {"preset": "tiny-m", "init": "scratch"}},
    "factors": {"model": ["s", "m"], "construction": ["curated", "synthetic"], "volume": [40, 160]},
}


def study(**changes):
    d = copy.deepcopy(BASE)
    for k, v in changes.items():
        d[k] = v
    return d


def err(doc) -> str:
    with pytest.raises(StudyFileError) as e:
        parse_study(doc)
    return str(e.value)


def test_valid_study_expands_to_the_product():
    cells = expand_cells(parse_study(study()))
    assert len(cells) == 2 * 2 * 2
    assert len({c.cell_id for c in cells}) == 8
    assert {c.levels["volume"] for c in cells} == {40, 160}


def test_unknown_field_is_named():
    m = err(study(factorz={}))
    assert "factorz: unknown field" in m


def test_bad_literal_names_allowed_values():
    m = err(study(factors={"model": ["s"], "strategy": ["multi"]}))
    assert "factors.strategy.0" in m and "multitask" in m and "dmt" in m


def test_bad_construction_and_template_named():
    m = err(study(template="chatml", factors={"model": ["s"], "construction": ["handmade"]}))
    assert "template" in m and "'doit'" in m
    assert "factors.construction.0" in m and "synthetic" in m


def test_model_level_must_be_defined():
    assert "not defined under models" in err(study(factors={"model": ["xl"]}))


def test_dmt_on_single_ability_data_is_rejected():
    m = err(study(factors={"model": ["s"], "strategy": ["dmt"], "replay_frac": [0.25]}))
    assert "roles.specialist" in m


def test_replay_without_dmt_is_rejected():
    assert "dmt only" in err(study(factors={"model": ["s"], "replay_frac": [0.5]}))


def test_fraction_bounds_and_quantity_exclusivity():
    assert "fractions in [0, 1]" in err(study(factors={"model": ["s"], "frac": [2.0]}))
    assert "only one of volume" in err(study(factors={"model": ["s"], "volume": [10], "frac": [0.5]}))


def test_composition_values_checked():
    m = err(study(factors={"model": ["s"], "composition": ["lopsided"]}))
    assert "reconstruct" in m and "loo:<ability>" in m
    assert "unknown ability" in err(study(factors={"model": ["s"], "composition": ["loo:astrology"]}))
    assert "no recipe" in err(study(factors={"model": ["s"], "composition": ["recipe:mine"]}))


def test_tier_must_exist():
    m = err(study(models={"s": {"preset": "tiny-s", "tier": "gpu8"}}, factors={"model": ["s"]}))
    assert "gpu8" in m


def test_exclude_prunes_and_unknown_factor_named():
    cells = expand_cells(parse_study(study(exclude=[{"model": "m", "construction": "synthetic"}])))
    assert len(cells) == 6
    assert not any(c.levels["model"] == "m" and c.levels["construction"] == "synthetic" for c in cells)
    assert "unknown factor" in err(study(exclude=[{"size": "m"}]))


def test_cell_ids_are_content_hashes():
    a = {c.levels["volume"]: c.cell_id for c in expand_cells(parse_study(study()))
         if c.levels["model"] == "s" and c.levels["construction"] == "curated"}
    b = {c.levels["volume"]: c.cell_id for c in expand_cells(parse_study(study()))
         if c.levels["model"] == "s" and c.levels["construction"] == "curated"}
    assert a == b  # stable
    changed = study(training={"preset": "tiny", "lr": 1e-3})
    c = {x.levels["volume"]: x.cell_id for x in expand_cells(parse_study(changed))
         if x.levels["model"] == "s" and x.levels["construction"] == "curated"}
    assert set(c.values()).isdisjoint(a.values())  # a setting change is new work
    more_workers = study(resources={"default": {"workers": 2}})
    d = {x.levels["volume"]: x.cell_id for x in expand_cells(parse_study(more_workers))
         if x.levels["model"] == "s" and x.levels["construction"] == "curated"}
    assert d == a  # resources are not part of the work's identity


def test_inapplicable_levels_collapse():
    doc = study(factors={"model": ["s"], "composition": ["balanced", "reconstruct"], "volume": [40, 160],
                         "strategy": ["multitask", "dmt"], "replay_frac": [0.0, 0.25]},
                roles={"specialist": ["math", "code"], "general": ["understanding"]})
    cells = expand_cells(parse_study(doc))
    multitask = [c for c in cells if c.levels["strategy"] == "multitask"]
    # balanced × 2 volumes + reconstruct once (volume does not apply); replay collapses to 0
    assert len(multitask) == 3
    assert all(c.levels["replay_frac"] == 0.0 for c in multitask)
    dmt = [c for c in cells if c.levels["strategy"] == "dmt"]
    assert len(dmt) == 3 * 2


PRETRAINED = {"s": {"preset": "tiny-s", "init": {"pretrain": {"tokens": 5000}}},
              "m": {"preset": "tiny-m", "init": {"pretrain": {"tokens": 5000}}}}


def test_a_quantity_of_zero_is_one_base_cell_per_model():
    from doitray.study.cells import is_base
    from doitray.study.stages import stage_recipes

    doc = study(models=PRETRAINED, factors={**BASE["factors"], "volume": [0, 40, 160], "seed": [3, 4],
                                            "composition": ["balanced", "loo:math"]})
    cells = expand_cells(parse_study(doc))
    base = [c for c in cells if is_base(c.levels)]
    assert [c.label() for c in base] == ["s base (volume=0, not tuned)", "m base (volume=0, not tuned)"]
    assert all(c.levels["construction"] is None and c.levels["seed"] == 3 and stage_recipes(c.content) == []
               for c in base)
    assert "training" not in base[0].content and "checkpoints" not in base[0].content
    assert len(cells) == 2 + 2 * 2 * 2 * 2 * 2
    # the base is the same work whatever the training, the constructions or the tuned volumes
    other = study(models=PRETRAINED, training={"preset": "tiny", "lr": 1e-3},
                  factors={"model": ["s", "m"], "construction": ["curated"], "volume": [0, 2560], "seed": [3]})
    assert [c.cell_id for c in expand_cells(parse_study(other)) if is_base(c.levels)] == [c.cell_id for c in base]
    # adding the 0 level leaves the tuned cells' ids as they were
    tuned = expand_cells(parse_study(study(models=PRETRAINED, factors={**doc["factors"], "volume": [40, 160]})))
    assert {c.cell_id for c in tuned} == {c.cell_id for c in cells if not is_base(c.levels)}
    # another base (more pretraining) is another cell
    more = copy.deepcopy(doc)
    more["models"]["s"]["init"]["pretrain"]["tokens"] = 6000
    assert expand_cells(parse_study(more))[0].cell_id != base[0].cell_id


def test_a_base_needs_weights_to_score():
    msg = err(study(factors={**BASE["factors"], "volume": [0, 40]}))
    assert "factors: a data quantity of 0" in msg and "['s', 'm']" in msg and "init: {pretrain" in msg
    assert "levels must be integers >= 0" in err(study(factors={**BASE["factors"], "volume": [-1, 40]}))
    ok = study(models={**PRETRAINED, "g": {"gguf": "smollm2"}}, factors={"model": ["s", "g"], "volume": [0, 40]})
    assert len(expand_cells(parse_study(ok))) == 2 + 2  # curated only: a base and a tuned cell per model


def test_shipped_studies_validate():
    import glob
    import os

    files = glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "studies", "*.yaml"))
    assert files
    for f in files:
        spec = load_study(f)
        assert expand_cells(spec), f


def test_yaml_error_is_clear(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(StudyFileError, match="not valid YAML"):
        load_study(p)
    p.write_text(yaml.safe_dump(study(factors={"model": ["s"], "volume": [-5]})))
    with pytest.raises(StudyFileError, match="factors.volume"):
        load_study(p)


def test_training_settings_are_validated():
    m = err(study(training={"preset": "tiny", "schedule": "zigzag"}))
    assert "training" in m and "cosine" in m
    assert "unknown train settings preset" in err(study(training={"preset": "gpt5"}))


def test_model_that_does_not_fit_its_gpus_is_rejected():
    doc = study(models={"big": {"preset": "llama-33b", "path": "/models/llama-33b", "tier": "one"}},
                resources={"one": {"workers": 1, "gpus_per_worker": 1, "gpu_mem_gb": 80}},
                factors={"model": ["big"]}, training={"preset": "doit"})
    m = err(doc)
    assert "models.big" in m and "does not fit 1 GPUs" in m


def test_an_elastic_tier_must_fit_at_its_smallest_worker_count():
    # the fewest workers hold the largest shards: study validation and the dry run judge that count
    from doitray.study.plan import plan_study

    doc = study(models={"big": {"preset": "llama-33b", "path": "/models/llama-33b", "tier": "g"}},
                resources={"g": {"workers": [1, 2], "gpus_per_worker": 8, "gpu_mem_gb": 80}},
                factors={"model": ["big"]}, training={"preset": "doit", "micro_batch": 1})
    assert "does not fit 8 GPUs" in err(doc)  # it would fit 2 × 8
    doc["resources"]["g"]["workers"] = 2
    plan = plan_study(parse_study(doc), with_data=False)
    assert [c.fits for c in plan.cells] == [True] and not plan.problems


def test_progress_eta_counts_down_while_a_cell_runs():
    import pandas as pd

    from doitray.study.progress import status_from_cells

    cols = ["cell_id", "state", "attempts", "model", "construction", "composition", "volume", "strategy",
            "replay_frac", "seed", "error", "started_at", "finished_at"]
    rows = [["a", "done", 1, "m", "curated", "balanced", 10, "multitask", 0.0, 0, None, 0.0, 100.0],
            ["b", "running", 1, "m", "curated", "balanced", 20, "multitask", 0.0, 0, None, 100.0, None],
            ["c", "pending", 0, "m", "curated", "balanced", 40, "multitask", 0.0, 0, None, None, None]]
    cells = pd.DataFrame(rows, columns=cols)
    early, late = (status_from_cells(cells, "s", concurrency=1, now=t) for t in (110.0, 170.0))
    assert (early.done, early.running, early.pending) == (1, 1, 1)
    assert early.eta_s == 190.0 and late.eta_s == 130.0  # 90 s of b left + 100 s for c, then 30 + 100
    assert status_from_cells(cells, "s", concurrency=2, now=170.0).eta_s == 100.0  # c alone on the free slot
    over = status_from_cells(cells, "s", concurrency=1, now=400.0)
    assert over.eta_s == 100.0  # an overdue cell counts as nearly done, never negative


def test_engine_options_are_checked_before_anything_runs():
    m = err(study(evaluation={"engine": {"sharde": True}}))
    assert "evaluation.engine" in m and "unknown engine option(s) ['sharde']" in m and "shared" in m
    m = err(study(evaluation={"engine": {"resources": {"TRAIN_DRIVER": -1}}}))
    assert "evaluation.engine" in m and "resources must map resource names to amounts >= 0" in m
    parse_study(study(evaluation={"engine": {"shared": True, "resources": {"TRAIN_DRIVER": 0.01}}}))


def test_valid_loss_rows_per_ability_is_a_study_setting(tmp_path, ray_local):
    from doitray.study.cell import CellRun
    from doitray.study.prepare import prepare_study
    from doitray.store import ResultsStore
    from studykit import tiny_study

    assert "evaluation.valid_loss_per_ability" in err(study(evaluation={"valid_loss_per_ability": 0}))
    cells = expand_cells(parse_study(study()))
    assert all("valid_loss_per_ability" not in c.content["evaluation"] for c in cells)  # older stores' ids hold
    ids = {c.cell_id for c in cells}
    assert ids == {c.cell_id for c in expand_cells(parse_study(study(evaluation={"valid_loss_per_ability": None})))}
    assert ids.isdisjoint(c.cell_id for c in expand_cells(parse_study(study(evaluation={"valid_loss_per_ability": 3}))))

    def valid_examples(per_ability):
        doc = tiny_study(tmp_path / "store")  # 8 valid items per ability
        if per_ability:
            doc["evaluation"]["valid_loss_per_ability"] = per_ability
        spec = parse_study(doc)
        store = ResultsStore(spec.storage)
        cell = expand_cells(spec)[0]
        run = CellRun({**cell.to_config(), "shared": prepare_study(spec, store)}, store)
        with_valid = len(set(run.abilities()) & set(run.pool.abilities(split="valid")))
        v = run.valid_data()
        return v.n_examples + v.n_dropped, with_valid  # dropped: longer than the cell's seq_len

    n3, k = valid_examples(3)
    assert k > 0 and n3 == 3 * k
    n_default, _ = valid_examples(None)
    assert n_default == 8 * k  # the default (64) takes every one of the 8


def test_checkpoint_cadence_is_train_policy_and_exports_follow_evaluation():
    from doitray.study.cells import checkpoint_policy

    assert "checkpoints.export" in err(study(checkpoints={"every": "epoch", "export": "all"}))
    spec = parse_study(study(checkpoints={"every": "steps", "every_n_steps": 5},
                             evaluation={"select": "last", "evaluate": "selected"}))
    content = expand_cells(spec)[0].content
    assert content["checkpoints"] == {"every": "steps", "every_n_steps": 5, "num_to_keep": None}
    pol = checkpoint_policy(content)
    assert (pol.every, pol.every_n_steps, pol.num_to_keep, pol.export) == ("steps", 5, 2, "last")
    assert checkpoint_policy({**content, "evaluation": {"select": "valid_loss", "evaluate": "selected"}}).export == "all"


def test_micro_batches_must_split_over_every_worker_count_of_a_tier(monkeypatch):
    # 8/2 = 4 micro-batches per step: 3 workers cannot share them
    m = err(study(resources={"default": {"workers": [2, 3]}}, training={"preset": "tiny", "global_batch": 12,
                                                                     "micro_batch": 4}))
    assert "resources.default.workers 2" in m and "training.micro_batch" in m and "micro_batch: 2" in m
    assert "choose worker counts" in err(study(resources={"default": {"workers": [1, 3]}}))
    # a tier's own micro-batch fixes it without changing the cells' ids (resources are not content)
    fixed = parse_study(study(resources={"default": {"workers": [1, 3], "micro_batch": 1}},
                              training={"preset": "tiny", "global_batch": 12}))
    plain = parse_study(study(training={"preset": "tiny", "global_batch": 12}))
    assert [c.cell_id for c in expand_cells(fixed)] == [c.cell_id for c in expand_cells(plain)]
    # the shipped paper studies validate, their 16-GPU tiers included
    for var in ("DOIT_DATA", "DOIT_MODELS", "DMT_DATA", "LLAMA_MODELS"):
        monkeypatch.setenv(var, "/data")
    for name in ("doit", "dmt"):
        spec = load_study(f"experiments/studies/{name}.yaml")
        assert spec.resources["gpu16"].micro_batch
