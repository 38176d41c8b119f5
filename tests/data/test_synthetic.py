"""The generated suite: deterministic, no leakage, both formats, scorable answers, a lower-quality synthetic set."""
from __future__ import annotations

import json
import re

from doitray import abilities
from doitray.data import synthetic
from doitray.data.sources import load_records
from doitray.records import validate_record
from tests.data.conftest import SMALL_SUITE


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*.json"))}


def test_deterministic_from_seed(tmp_path):
    a = synthetic.generate_suite(tmp_path / "a", **SMALL_SUITE)
    b = synthetic.generate_suite(tmp_path / "b", **SMALL_SUITE)
    c = synthetic.generate_suite(tmp_path / "c", **{**SMALL_SUITE, "seed": 4})
    assert _files(a) == _files(b)
    assert _files(a) != _files(c)
    assert set(_files(a)) >= {f"curated/full/{x}_full.json" for x in abilities.DOIT_ABILITIES}


def test_pool_of_suite(small_pool):
    assert small_pool.n_rejected == 0
    assert set(small_pool.abilities()) == set(abilities.DOIT_ABILITIES)
    for a in abilities.DOIT_ABILITIES:
        assert small_pool.count("train", a, "curated") == SMALL_SUITE["train"]
        assert small_pool.count("train", a, "synthetic") == SMALL_SUITE["synthetic"]
        assert small_pool.count("valid", a) == SMALL_SUITE["valid"] and small_pool.count("test", a) == SMALL_SUITE["test"]


def _prompt(r):
    return "\x1f".join(m["content"] for m in r["messages"] if m["role"] != "assistant")


def test_no_leakage_and_formats(small_pool):
    recs = load_records(small_pool)
    evals = {_prompt(r) for r in recs if r["split"] != "train"}
    train = [r for r in recs if r["split"] == "train"]
    assert not evals & {_prompt(r) for r in train}
    curated_train = [_prompt(r) for r in train if r["construction"] == "curated"]
    assert len(curated_train) == len(set(curated_train))
    for r in recs:
        assert validate_record(r) == []
        fmt = abilities.get(r["ability"]).question_format
        if r["split"] == "train":
            assert r["question_format"] == "generate" and r["messages"][-1]["role"] == "assistant"
        else:
            assert r["question_format"] == fmt
            if fmt == "rank":
                assert len(r["choices"]) == 3 and len(set(r["choices"])) == 3


def test_answers_follow_scorer_conventions(small_pool):
    recs = [r for r in load_records(small_pool, split="test")]
    by = {}
    for r in recs:
        by.setdefault(r["ability"], []).append(r)
    letters = re.compile(r"^[A-D]$")
    for a in ("biology", "understanding", "reasoning"):
        assert all(letters.match(r["messages"][-1]["content"]) for r in by[a])
        assert all("\nA. " in r["messages"][0]["content"] for r in by[a])
    assert all(re.fullmatch(r"A?B?C?D?", r["messages"][-1]["content"]) for r in by["ethics"])
    for r in by["math"]:
        assert r["answer"] and r["messages"][-1]["content"].endswith(f"The answer is {r['answer']}.")
    hist = {r["messages"][-1]["content"] for r in load_records(small_pool, split="train", abilities=["history"])}
    assert {"正确", "错误"} <= hist
    zh = [r["messages"][-1]["content"] for r in load_records(small_pool, split="train", abilities=["chinese"])]
    assert any(len(x) == 1 and "\u4e00" <= x <= "\u9fff" for x in zh)


def test_synthetic_construction_is_lower_quality(small_pool):
    train = load_records(small_pool, split="train")
    cur = [r for r in train if r["construction"] == "curated"]
    syn = [r for r in train if r["construction"] == "synthetic"]
    corrupted = sum(json.loads(r["meta"])["corrupted"] for r in syn) / len(syn)
    assert 0.15 < corrupted < 0.45
    assert all("corrupted" not in json.loads(r["meta"]) for r in cur)
    for a in ("biology", "math", "role_play"):  # fewer distinct prompts per example
        c = [_prompt(r) for r in cur if r["ability"] == a]
        s = [_prompt(r) for r in syn if r["ability"] == a]
        assert len(set(s)) / len(s) <= len(set(c)) / len(c)
    bad_math = [r for r in syn if r["ability"] == "math" and json.loads(r["meta"])["corrupted"]]
    good = [r for r in syn if r["ability"] == "math" and not json.loads(r["meta"])["corrupted"]]
    assert all(r["messages"][-1]["content"].endswith(f"The answer is {r['answer']}.") for r in good)
    assert any(not r["messages"][-1]["content"].endswith(".") or "guess" in r["messages"][-1]["content"]
               or r["messages"][-1]["content"].endswith(f"{r['answer']}.") for r in bad_math)


def test_complexity_is_graded():
    import random

    from doitray.data.synthetic_tasks import GENERATORS

    rng = random.Random(0)
    mean = {a: sum(g(rng, 5).complexity for _ in range(200)) / 200 for a, g in GENERATORS.items()}
    assert mean["math"] > mean["understanding"] > mean["biology"] == mean["role_play"] == 1


def test_sizes_beyond_a_family_and_unknown_options_are_one_line_errors(tmp_path, capsys):
    import pytest
    from pydantic import ValidationError

    from doitray.cli import guarded
    from doitray.data.sources import SourceSpec

    with pytest.raises(ValidationError, match=r"unknown synthetic option\(s\) \['tset'\]; allowed: seed, train"):
        SourceSpec(name="suite", format="synthetic", options={"tset": 100})
    # role-play has 8 personas x 30 topics x 5 templates = 1200 prompts: test and valid take them all
    too_many = dict(train=20, valid=50, test={"role_play": 1150}, synthetic=0)
    assert guarded("doitray", lambda: synthetic.generate_suite(tmp_path / "s", **too_many)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "cannot draw 20 'role_play' distinct prompts (1200 taken" in err and "lower the source's" in err
