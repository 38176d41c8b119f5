"""``init: {pretrain: ...}`` in a study file: validated by name; scratch / pretrained levels keep their content."""
from __future__ import annotations

import pytest

from doitray.study.cells import expand_cells
from doitray.study.spec import ModelLevel, StudyFileError, parse_study
from studykit import tiny_study


def _study(init) -> dict:
    doc = tiny_study("/tmp/doitray-pretrain-spec")
    doc["models"] = {"xs": {"preset": "tiny-xs", "init": init}}
    return doc


def _err(doc) -> str:
    with pytest.raises(StudyFileError) as e:
        parse_study(doc)
    return str(e.value)


def test_unknown_pretrain_keys_are_refused_by_name():
    m = _err(_study({"pretrain": {"tokens": 20_000, "lrate": 1e-3}}))
    assert "models.xs.init" in m and "lrate" in m and "unknown field" in m
    m = _err(_study({"pretrain": {"tokens": 20_000}, "steps": 3}))
    assert "models.xs.init" in m and "one key, pretrain" in m and "steps" in m
    m = _err(_study({"pretrain": {"tokens": 20_000, "corpus": {"size": 3}}}))
    assert "unknown corpus option(s) ['size']" in m
    assert "tokens" in _err(_study({"pretrain": {"lr": 1e-3}}))  # tokens is required
    assert "pretrained" in _err(_study("pretrain"))  # a bad string names the allowed values


def test_pretrain_needs_a_config_preset():
    m = _err({**_study("scratch"), "models": {"xs": {"path": "/some/hf", "init": {"pretrain": {"tokens": 9000}}}}})
    assert "init.pretrain builds the base from a config preset" in m


def test_scratch_and_pretrained_levels_keep_their_content_and_ids():
    for init in ("scratch", "pretrained"):
        lvl = ModelLevel(preset="tiny-xs", init=init)
        assert lvl.model_dump() == {"preset": "tiny-xs", "path": None, "gguf": None, "tier": "default", "init": init,
                                    "engine": {}}
        assert lvl.pretrain is None
    scratch = {c.cell_id for c in expand_cells(parse_study(_study("scratch")))}
    pre = parse_study(_study({"pretrain": {"tokens": 20_000, "lr": 2e-3}}))
    assert pre.models["xs"].pretrain.tokens == 20_000
    assert pre.models["xs"].model_dump()["init"] == {"pretrain": {"tokens": 20_000, "lr": 2e-3}}  # as written
    ids = {c.cell_id for c in expand_cells(pre)}
    assert ids.isdisjoint(scratch)  # a pretrained base is other work
    same = parse_study(_study({"pretrain": {"tokens": 20_000, "lr": 2e-3, "epochs": 1}}))  # a default, spelled out
    assert {c.cell_id for c in expand_cells(same)} == ids


def test_pretrain_settings_are_checked_when_the_study_is_read():
    m = _err(_study({"pretrain": {"tokens": 20_000, "global_batch": 16, "micro_batch": 5}}))
    assert "models.xs.init.pretrain" in m and "must be a multiple of micro_batch" in m


def test_study_plan_lists_the_bases_it_pretrains():
    from doitray.study.plan import plan_study

    plan = plan_study(parse_study(_study({"pretrain": {"tokens": 20_000, "epochs": 2}})), with_data=False)
    [base] = plan.pretraining
    assert (base["level"], base["preset"], base["tokens"]) == ("xs", "tiny-xs", 40_000) and base["PFLOP"] > 0
    assert "bases pretrained once per study" in plan.text() and plan.to_dict()["pretraining"] == [base]
    assert plan_study(parse_study(_study("scratch")), with_data=False).pretraining == []
