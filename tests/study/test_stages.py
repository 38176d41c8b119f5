"""Fast tests of the one strategy table (``doitray.study.stages``) on the live path: cells expanded from a real
study document, their stages' quotas on the real synthetic pool (``prepare.stage_quotas``), DMT's replay
nested in stage 1's sample, and ``CellRun.train`` chaining stages through ``init_from``."""
from __future__ import annotations

from typing import get_args

import pytest

from doitray.study import spec as study_spec
from doitray.study.cells import expand_cells
from doitray.study.prepare import stage_quotas
from doitray.study.spec import parse_study
from doitray.study.stages import STRATEGIES, TABLE, stage_recipes

from studykit import tiny_study

SPECIALIST, GENERAL = ["math", "code"], ["history", "biology", "ethics"]
PER = 40  # examples per ability of the cell's base recipe


def _cells(tmp_path, **factors):
    doc = tiny_study(tmp_path / "store", roles={"specialist": SPECIALIST, "general": GENERAL},
                     factors={"model": ["xs"], "per_ability": [PER], **factors})
    return expand_cells(parse_study(doc))


def _one(cells, strategy, k=0.0):
    [c] = [c for c in cells if c.levels["strategy"] == strategy and c.levels["replay_frac"] == k]
    return c


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from doitray.data.sources import load_pool

    doc = tiny_study(tmp_path_factory.mktemp("store"))
    return load_pool(doc["sources"], tmp_path_factory.mktemp("cache"))


def test_the_table_is_the_allowed_strategies(tmp_path):
    assert STRATEGIES == tuple(TABLE) == ("multitask", "sequential", "mixed_sequential", "dmt")
    assert study_spec.STRATEGIES is STRATEGIES
    [literal] = get_args(study_spec.Factors.model_fields["strategy"].annotation)
    assert get_args(literal) == STRATEGIES
    with pytest.raises(study_spec.StudyFileError) as e:  # the error names the field and every allowed value
        parse_study(tiny_study(tmp_path / "store", factors={"model": ["xs"], "strategy": ["curriculum"]}))
    assert "factors.strategy.0" in str(e.value) and all(s in str(e.value) for s in STRATEGIES)
    with pytest.raises(ValueError, match="unknown strategy 'curriculum'; allowed: multitask, sequential"):
        stage_recipes({"levels": {"strategy": "curriculum"}})


def test_stage_names_and_quotas_of_every_strategy(tmp_path, pool):
    cells = _cells(tmp_path, strategy=list(STRATEGIES), replay_frac=[0.0, 0.25, 1.0])
    assert len(pool.abilities(split="train")) == 10
    # a strategy comparison's multi-task cell mixes the roles' abilities (DMT's baseline), not the whole pool
    every = {a: PER for a in SPECIALIST + GENERAL}
    # the live stage names: they name Train runs and store rows, so existing stores resume
    assert stage_quotas(_one(cells, "multitask").content, pool) == [("multitask", every)]
    assert stage_quotas(_one(cells, "sequential").content, pool) == [
        ("seq-math", {"math": PER}), ("seq-code", {"code": PER}), ("general", {a: PER for a in GENERAL})]
    mixed = [("specialist", {a: PER for a in SPECIALIST}), ("general", {a: PER for a in GENERAL})]
    assert stage_quotas(_one(cells, "mixed_sequential").content, pool) == mixed
    assert stage_quotas(_one(cells, "dmt", 0.0).content, pool) == mixed  # k = 0: no replay
    assert stage_recipes(_one(cells, "dmt", 0.0).content) == stage_recipes(_one(cells, "mixed_sequential").content)
    for k in (0.25, 1.0):
        (s1, q1), (s2, q2) = stage_quotas(_one(cells, "dmt", k).content, pool)
        assert (s1, q1) == mixed[0]
        assert s2 == f"general+replay-{k:g}"
        # stage 2: all of the general data + k x the specialist sample of stage 1
        assert q2 == {**{a: PER for a in GENERAL}, **{a: round(k * PER) for a in SPECIALIST}}


ROLES = {"specialist": ["math", "code"], "general": ["creative_writing", "role_play"]}


def _strategy(label: str) -> str:
    return next(s for s in STRATEGIES if f" {s} " in f" {label} ")


@pytest.mark.parametrize("composition", ["balanced", "all"])
def test_every_strategy_trains_on_the_multitask_data(ray_local, tmp_path, composition):
    """The issue's grid point (volume 320, roles math+code / creative_writing+role_play): every strategy's stages
    together train on exactly the multi-task cell's rows, DMT plus k x its specialist rows (``study plan``'s
    per-stage counts, then the row ids the cells sample)."""
    from doitray.data.sampling import sample_mixture
    from doitray.study.plan import plan_study
    from doitray.study.prepare import cache_dir, study_pool

    spec = parse_study(tiny_study(tmp_path / "store", roles=ROLES, factors={
        "model": ["xs"], "volume": [320], "composition": [composition], "strategy": list(STRATEGIES),
        "replay_frac": [1.0]}))
    plan = plan_study(spec)
    by = {_strategy(c.label): c for c in plan.cells}
    assert set(by) == set(STRATEGIES)
    staged = ROLES["specialist"] + ROLES["general"]
    mt = by["multitask"].stages[0]["per_ability"]
    assert sorted(mt) == sorted(staged)                                   # 'all' too: the four roles, not ten
    if composition == "balanced":
        assert mt == {a: 80 for a in staged}
    for strategy in ("sequential", "mixed_sequential", "dmt"):
        got: dict[str, int] = {}
        for st in by[strategy].stages:
            for a, n in st["per_ability"].items():
                got[a] = got.get(a, 0) + n
        replay = {a: mt[a] for a in ROLES["specialist"]} if strategy == "dmt" else {}   # k = 1
        assert got == {a: mt[a] + replay.get(a, 0) for a in mt}, strategy
        assert by[strategy].examples == sum(mt.values()) + sum(replay.values())
    text = plan.text()   # the per-stage data of each strategy is in the plan
    general = mt["creative_writing"] + mt["role_play"]
    assert f"seq-math {mt['math']} · seq-code {mt['code']} · general {general}" in text
    # the rows themselves, as the cells sample them
    pool = study_pool(spec, cache_dir(spec))
    cells = {_strategy(c.label()): c for c in expand_cells(spec)}

    def rows(strategy):
        return [{r["id"] for r in sample_mixture(pool, recipe, 0, tmp_path / "mix").read().to_pylist()}
                for _, recipe in stage_recipes(cells[strategy].content)]

    [multitask] = rows("multitask")
    for strategy in ("sequential", "mixed_sequential"):
        stages = rows(strategy)
        assert set().union(*stages) == multitask
        assert sum(map(len, stages)) == len(multitask)                  # each row in one stage
    s1, s2 = rows("dmt")
    assert s1 | s2 == multitask and s1 < multitask and s1 <= s2         # k = 1: stage 2 replays all of stage 1


def test_sequential_follows_roles_order(tmp_path, pool):
    doc = tiny_study(tmp_path / "store", roles={"specialist": SPECIALIST, "general": GENERAL, "order": ["code", "math"]},
                     factors={"model": ["xs"], "per_ability": [PER], "strategy": ["sequential"]})
    [cell] = expand_cells(parse_study(doc))
    assert [n for n, _ in stage_quotas(cell.content, pool)] == ["seq-code", "seq-math", "general"]


def test_dmt_cells_with_different_k_share_stage_one(tmp_path):
    cells = [c for c in _cells(tmp_path, strategy=["dmt"], replay_frac=[1 / 256, 1 / 4, 1.0])]
    assert len({c.cell_id for c in cells}) == 3
    stages = [stage_recipes(c.content) for c in cells]
    assert len({s[0] for s in stages}) == 1 and len({s[0][1].key() for s in stages}) == 1  # one stage-1 recipe
    assert len({s[1][1].key() for s in stages}) == 3                                        # three stage-2s


def test_dmt_replay_is_nested_in_stage_one_sample(ray_local, tmp_path, pool):
    from doitray.data.sampling import sample_mixture

    cell = _one(_cells(tmp_path, strategy=["dmt"], replay_frac=[0.25]), "dmt", 0.25)
    (_, stage1), (_, stage2) = stage_recipes(cell.content)
    seed = cell.levels["seed"]
    m1, m2 = (sample_mixture(pool, r, seed, tmp_path / "cache") for r in (stage1, stage2))
    t1, t2 = m1.read().to_pylist(), m2.read().to_pylist()
    assert m1.counts == {a: PER for a in SPECIALIST}
    assert m2.counts == {**{a: PER for a in GENERAL}, **{a: PER // 4 for a in SPECIALIST}}
    replay = {r["id"] for r in t2 if r["ability"] in SPECIALIST}
    assert len(replay) == 2 * (PER // 4) and replay <= {r["id"] for r in t1}  # the replayed rows are stage 1's
    # ... and the first of them in stage 1's sampling order (a larger k replays a superset)
    for a in SPECIALIST:
        first = [r["id"] for r in t1 if r["ability"] == a][: PER // 4]
        assert {r["id"] for r in t2 if r["ability"] == a} == set(first)


class _FakeRun:
    """Stands in for ``run_stage``: records each StageSpec and returns a result with a final export."""

    def __init__(self, final_missing_at: int | None = None):
        self.specs, self.final_missing_at = [], final_missing_at

    def __call__(self, spec):
        from doitray.train.stage import CheckpointInfo, StageResult

        i = len(self.specs)
        self.specs.append(spec)
        hf = None if i == self.final_missing_at else f"/exports/{spec.name}/hf"
        ck = CheckpointInfo(name="step2", step=2, epoch=1, path=f"/ckpt/{spec.name}", hf_path=hf, final=True)
        return StageResult(name=spec.name, key=f"k{i}", run_name=spec.name, run_path=f"/runs/{spec.name}",
                           checkpoints=[ck], metrics=[], final_hf_path=hf)


def _cell_run(tmp_path, pool, monkeypatch, strategy, k=0.0):
    from types import SimpleNamespace

    from doitray.store import ResultsStore
    from doitray.study.cell import CellRun

    cell = _one(_cells(tmp_path, strategy=[strategy], replay_frac=[k]), strategy, k)
    shared = {"pool": str(tmp_path / "unused"), "cache": str(tmp_path / "cache"), "tokenizer": str(tmp_path / "tok")}
    monkeypatch.setattr("doitray.study.cell.Pool.load", lambda path: pool)
    run = CellRun({**cell.to_config(), "shared": shared, "max_retries": 0}, ResultsStore(str(tmp_path / "results")))
    packed = lambda recipe: (SimpleNamespace(counts={"math": 1}), SimpleNamespace(path=f"/packed/{recipe.name}",
                                                                                n_tokens=10))
    monkeypatch.setattr(run, "_packed", packed)
    monkeypatch.setattr(run, "valid_data", lambda: None)
    return run


def test_cell_train_chains_stages_through_init_from(tmp_path, pool, monkeypatch):
    run = _cell_run(tmp_path, pool, monkeypatch, "sequential")
    fake = _FakeRun()
    monkeypatch.setattr("doitray.train.stage.run_stage", fake)
    results, _, _ = run.train()
    assert [s.name for s in fake.specs] == ["seq-math", "seq-code", "general"]
    assert [s.init_from for s in fake.specs] == [None, "/exports/seq-math/hf", "/exports/seq-code/hf"]
    assert [s.train_data for s in fake.specs] == ["/packed/seq-math", "/packed/seq-code", "/packed/general"]
    assert [i for i, _ in results] == [0, 1, 2]
    ck = run.store.read("checkpoints")
    assert sorted(zip(ck["stage"], ck["stage_name"])) == [(0, "seq-math"), (1, "seq-code"), (2, "general")]


def test_cell_train_refuses_a_stage_without_final_export(tmp_path, pool, monkeypatch):
    run = _cell_run(tmp_path, pool, monkeypatch, "dmt", 0.25)
    fake = _FakeRun(final_missing_at=0)
    monkeypatch.setattr("doitray.train.stage.run_stage", fake)
    with pytest.raises(RuntimeError, match=r"stage 'specialist' \(1 of 2\) finished without a final HF export"):
        run.train()
    assert len(fake.specs) == 1  # stage 2 never started from nothing
