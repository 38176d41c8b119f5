"""Pools: caching under a content hash, strict mode, counts; the real corpora through the readers."""
from __future__ import annotations

import gzip
import json
import time

import pytest

from doitray.data.sources import Pool, SourceSpec, load_pool, load_records, read_quarantine
from doitray.records import RejectedRowsError
from tests.data.conftest import doit_row, write_jsonl

README_SIZES = {  # ../shared/data/README.md: train/valid/test
    "math": (8706, 1074, 1071), "math_en": (7473, 659, 660), "code": (9264, 912, 898), "chinese": (778, 103, 101),
    "history": (573, 79, 74), "biology": (566, 76, 82), "reasoning": (1688, 806, 816), "ethics": (328, 43, 52),
    "understanding": (5856, 1825, 1890), "creative_writing": (136, 8, 10), "role_play": (2850, 372, 351)}


def test_pool_is_cached_and_counts_by_split_ability_construction(tmp_path):
    root = tmp_path / "c"
    write_jsonl(root / "train" / "ethics.json", [doit_row("ethics", i, reply="AB") for i in range(4)] + ["{bad"])
    write_jsonl(root / "test" / "ethics.json", [doit_row("ethics", i) for i in range(2)])
    spec = SourceSpec(name="c", format="doit", path=str(root))
    pool = load_pool([spec], tmp_path / "cache")
    assert pool.counts == {"test/ethics/curated": 2, "train/ethics/curated": 4}
    assert pool.n_rejected == 1 and pool.quarantine_counts == {"wrong type": 1}
    assert read_quarantine(pool)[0]["line"] == 5
    t = time.perf_counter()
    again = load_pool([spec], tmp_path / "cache")
    assert again.key == pool.key and time.perf_counter() - t < 0.5
    assert Pool.load(tmp_path / "cache" / "pools" / pool.key).counts == pool.counts
    assert [r["split"] for r in load_records(pool, split="test")] == ["test", "test"]
    with pytest.raises(RejectedRowsError, match="c.json:5|ethics.json:5"):
        load_pool([spec], tmp_path / "cache", strict=True)
    write_jsonl(root / "test" / "ethics.json", [doit_row("ethics", i) for i in range(3)])  # content change -> new key
    assert load_pool([spec], tmp_path / "cache").counts["test/ethics/curated"] == 3


def test_duplicate_source_names_rejected(tmp_path):
    root = tmp_path / "c"
    write_jsonl(root / "train" / "ethics.json", [doit_row("ethics", 0)])
    spec = SourceSpec(name="c", format="doit", path=str(root))
    with pytest.raises(ValueError, match="unique"):
        load_pool([spec, spec], tmp_path / "cache")


def test_real_doit_corpus_sizes(shared_data, tmp_path):
    pool = load_pool([SourceSpec(name="doit", format="doit", path=str(shared_data / "doit-format"))], tmp_path)
    q = read_quarantine(pool)
    # the corpus has two code rows whose reference answer is empty: they are reported, not dropped silently
    assert [(r["file"], r["line"], r["reason"]) for r in q] == [
        ("train/code.json", 7485, "empty content: messages[1] (assistant)"),
        ("train/code.json", 9107, "empty content: messages[1] (assistant)")]
    for ability, sizes in README_SIZES.items():
        got = tuple(pool.count(split=s, ability=ability) for s in ("train", "valid", "test"))
        want = (sizes[0] - (2 if ability == "code" else 0),) + sizes[1:]
        assert got == want, ability
    test_code = load_records(pool, split="test", abilities=["code"])
    assert all(r["question_format"] == "rank" and len(r["choices"]) == 3 for r in test_code)
    assert all(len(set(r["choices"])) == 3 for r in test_code)
    rp = load_records(pool, split="valid", abilities=["role_play"])
    assert all(r["messages"][0]["role"] == "system" for r in rp)


def test_real_gsm8k_and_humaneval(shared_data, tmp_path):
    pool = load_pool([SourceSpec(name="gsm8k", format="gsm8k", path=str(shared_data / "gsm8k" / "test.jsonl")),
                      SourceSpec(name="he", format="humaneval", path=str(shared_data / "humaneval" / "HumanEval.jsonl.gz"))],
                     tmp_path, strict=True)
    assert pool.counts == {"test/code/curated": 164, "test/math_en/curated": 1319}
    gsm = load_records(pool, abilities=["math_en"])
    assert all(r["answer"].lstrip("-").replace(".", "").isdigit() for r in gsm)
    he = load_records(pool, abilities=["code"])
    with gzip.open(shared_data / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        first = json.loads(f.readline())
    meta = {json.loads(r["meta"])["task_id"]: json.loads(r["meta"]) for r in he}
    assert meta["HumanEval/0"]["entry_point"] == first["entry_point"] and meta["HumanEval/0"]["metric"] == "code_exec"
