"""Recipe quantity rules as properties: exact counts, nesting in volume, caps and fill, replay, serialisation."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from doitray.abilities import DOIT_ABILITIES
from doitray.data.recipes import Part, Recipe

avail_st = st.fixed_dictionaries({a: st.integers(0, 3000) for a in DOIT_ABILITIES})


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 5000), more=st.integers(0, 5000))
def test_balanced_exact_and_nested_in_volume(total, more):
    avail = {a: 10_000 for a in DOIT_ABILITIES}
    small = Recipe.balanced(total).parts[0].quotas(avail)
    big = Recipe.balanced(total + more).parts[0].quotas(avail)
    assert sum(small.values()) == total and sum(big.values()) == total + more
    assert max(small.values()) - min(small.values()) <= 1
    assert all(small[a] <= big[a] for a in DOIT_ABILITIES)  # per-ability counts grow with the volume


@settings(max_examples=200, deadline=None)
@given(avail=avail_st, total=st.integers(1128, 40_000))
def test_caps_fill_rule(avail, total):
    part = Recipe.doit_reconstruct(total=total).parts[0]
    caps = {"ethics": 64, "role_play": 64, "creative_writing": 1000}
    others = [a for a in DOIT_ABILITIES if a not in caps]
    if any(avail[a] < c for a, c in caps.items()) or sum(avail[a] for a in others) < total - 1128:
        with pytest.raises(ValueError, match="upsample"):
            part.quotas(avail)
        return
    q = part.quotas(avail)
    assert sum(q.values()) == total
    assert all(q[a] == c for a, c in caps.items())
    assert all(q[a] <= avail[a] for a in others)
    short = [a for a in others if q[a] == avail[a]]
    full = [a for a in others if q[a] < avail[a]]
    if full:  # abilities that could give more share evenly (the integer remainder: chinese, else one each)
        shares = [q[a] for a in full if a != "chinese"]
        assert not shares or max(shares) - min(shares) <= 1
        assert all(q[a] + 1 >= avail[b] for a in full for b in short)


def test_doit_reconstruct_matches_the_released_numbers():
    avail = {a: 5000 for a in DOIT_ABILITIES} | {"biology": 1041}
    q = Recipe.doit_reconstruct().parts[0].quotas(avail)
    assert q == {"ethics": 64, "role_play": 64, "creative_writing": 1000, "biology": 1041, "chinese": 1306,
                 "history": 1305, "code": 1305, "understanding": 1305, "reasoning": 1305, "math": 1305}
    qm = Recipe.doit_maximum().parts[0].quotas(avail)
    assert qm["ethics"] == 64 and qm["math"] == 5000 and qm["biology"] == 1041


@settings(max_examples=200, deadline=None)
@given(avail=avail_st, frac=st.sampled_from([1, 1 / 4, 1 / 16, 1 / 64, 1 / 256]),
       k=st.sampled_from([1, 1 / 4, 1 / 16, 1 / 64, 1 / 256]))
def test_fractions_and_replay_scale(avail, frac, k):
    r = Recipe.fractions(frac)
    q = r.parts[0].quotas(avail)
    assert all(abs(q[a] - frac * avail[a]) <= 0.5 for a in DOIT_ABILITIES)
    qk = r.scaled(k).parts[0].quotas(avail)
    assert all(qk[a] <= q[a] and abs(qk[a] - k * q[a]) <= 0.5 for a in DOIT_ABILITIES)


def test_short_pool_is_an_error_unless_upsampling():
    avail = {"math": 10, "code": 100}
    with pytest.raises(ValueError, match=r"math: asked 50, available 10.*upsample=True"):
        Part(per_ability=50, abilities=("math", "code")).quotas(avail)
    assert Part(per_ability=50, abilities=("math", "code"), upsample=True).quotas(avail) == {"math": 50, "code": 50}


def test_leave_one_out_ratio_union_and_json():
    avail = {a: 100 for a in ("math_en", "code", "general")}
    loo = Recipe.leave_one_out("code", 20, abilities=["math_en", "code", "general"], construction=None)
    assert loo.parts[0].quotas(avail) == {"general": 20, "math_en": 20}
    r = Recipe.ratio(["math_en", "code"], "general", fixed="general", k=1 / 4)
    assert r.parts[0].quotas(avail) == {"code": 25, "math_en": 25} and r.parts[1].quotas(avail) == {"general": 100}
    u = r.union(Recipe.balanced(10, abilities=["math"]))
    assert len(u.parts) == 3
    again = Recipe.model_validate_json(u.model_dump_json())
    assert again == u and again.key() == u.key()
    assert Recipe.balanced(10).key() != Recipe.balanced(11).key()
    assert Recipe.balanced(10).key() == Recipe.balanced(10).model_copy(update={"name": "x"}).key()


def test_bad_parts_name_the_problem():
    with pytest.raises(ValidationError, match="exactly one quantity rule"):
        Part(total=10, frac=0.5)
    with pytest.raises(ValidationError, match="exactly one quantity rule"):
        Part()
    with pytest.raises(ValidationError, match="unknown ability 'astro'"):
        Part(total=3, abilities=("astro",))
    with pytest.raises(ValidationError, match="construction"):
        Part(total=3, construction="handmade")
