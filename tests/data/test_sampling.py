"""Sampling on Ray Data: exact, nested across volumes, deterministic across runs and block counts, cached."""
from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doitray.abilities import DOIT_ABILITIES
from doitray.data.recipes import Part, Recipe
from doitray.data.sampling import order_key, sample_mixture, select_prefix


def _ids(mix):
    return mix.read()["id"].to_pylist()


def _by_ability(mix):
    t = mix.read()
    out = {}
    for a, i in zip(t["ability"].to_pylist(), t["id"].to_pylist()):
        out.setdefault(a, set()).add(i)
    return out


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.text("abcdef0123", min_size=1, max_size=6), min_size=1, max_size=60, unique=True),
       n1=st.integers(0, 70), n2=st.integers(0, 70), seed=st.integers(0, 5), cut=st.integers(0, 60))
def test_prefix_selection_is_nested_and_block_independent(ids, n1, n2, seed, cut):
    abil = ["math" if i % 3 else "code" for i in range(len(ids))]
    t = pa.table({"ability": abil, "id": ids, "order_key": [order_key(seed, i) for i in ids]})

    def select(n, table):
        return select_prefix(table, {a: n for a in set(abil)})["id"].to_pylist()

    lo, hi = min(n1, n2), max(n1, n2)
    whole = select(lo, t)
    reordered = select(lo, pa.concat_tables([t.slice(cut), t.slice(0, cut)]))  # other block order
    assert whole == reordered
    assert set(whole) <= set(select(hi, t))
    for a in ("math", "code"):
        got = [i for i in whole if i.split("#")[0] in {x for x, y in zip(ids, abil) if y == a}]
        assert len(got) == (lo if abil.count(a) else 0) and len(set(got)) == len(got)


def test_nested_exact_and_deterministic(ray_local, small_pool, tmp_path):
    mixes = {n: sample_mixture(small_pool, Recipe.balanced(n), 7, tmp_path) for n in (10, 40, 160)}
    assert Recipe.balanced(40).parts[0].quotas({"math": 60}) == {"math": 40}
    for n, m in mixes.items():
        assert m.n == n and sum(m.counts.values()) == n
        assert all(v == n // 10 for v in m.counts.values()) and set(m.counts) == set(DOIT_ABILITIES)
    small, mid, big = (_by_ability(mixes[n]) for n in (10, 40, 160))
    for a in DOIT_ABILITIES:
        assert small[a] <= mid[a] <= big[a]
    other = sample_mixture(small_pool, Recipe.balanced(160), 7, tmp_path / "other", override_num_blocks=5)
    assert _ids(other) == _ids(mixes[160])  # another run, another block count: same rows, same order
    assert sample_mixture(small_pool, Recipe.balanced(160), 7, tmp_path).path == mixes[160].path  # cached
    reseeded = sample_mixture(small_pool, Recipe.balanced(160), 8, tmp_path)
    assert set(_ids(reseeded)) != set(_ids(mixes[160]))


def test_union_replay_and_upsampling(ray_local, small_pool, tmp_path):
    stage1 = Recipe(parts=(Part(name="spec", abilities=("math", "code"), per_ability=40),))
    general = Recipe(parts=(Part(name="gen", abilities=("history",), construction="synthetic", all=True),))
    stage2 = general.union(stage1.scaled(1 / 4))
    m1 = sample_mixture(small_pool, stage1, 0, tmp_path)
    m2 = sample_mixture(small_pool, stage2, 0, tmp_path)
    assert m2.counts == {"history": 30, "math": 10, "code": 10}
    replay = {i for i, p in zip(m2.read()["id"].to_pylist(), m2.read()["part"].to_pylist()) if p == 1}
    assert replay <= set(_ids(m1))
    up = sample_mixture(small_pool, Recipe(parts=(Part(abilities=("ethics",), per_ability=150, upsample=True,
                                                       construction="curated"),)), 0, tmp_path)
    t = up.read()
    assert up.counts == {"ethics": 150} and up.n_upsampled == 90 and sum(t["upsampled"].to_pylist()) == 90
    assert len(set(t["id"].to_pylist())) == 150
    with pytest.raises(ValueError, match="upsample"):
        sample_mixture(small_pool, Recipe(parts=(Part(abilities=("ethics",), per_ability=150, construction="curated"),)),
                       0, tmp_path)
