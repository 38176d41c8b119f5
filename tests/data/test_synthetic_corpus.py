"""The generic corpus of the generated suite: deterministic, plain text (no template), sized by characters."""
from __future__ import annotations

import json

from doitray.data.synthetic_corpus import WRITERS, corpus_documents, write_corpus
from doitray.data.templates import get_template


def test_corpus_is_deterministic_from_its_seed_and_sized():
    a = corpus_documents(seed=0, n_chars=20_000)
    assert a == corpus_documents(seed=0, n_chars=20_000)
    assert a != corpus_documents(seed=1, n_chars=20_000)
    assert 20_000 <= sum(map(len, a)) < 20_000 + 2_000
    assert corpus_documents(seed=0, n_chars=5_000) == a[:len(corpus_documents(seed=0, n_chars=5_000))]


def test_corpus_has_no_template_and_covers_every_ability(tmp_path):
    specials = set(get_template("doit").special_tokens) | {"<s>", "</s>", "<pad>"}
    docs = corpus_documents(seed=0, n_chars=30_000)
    assert not [d for d in docs for t in specials if t in d]
    text = "\n".join(docs)
    for probe in ("The cat is a mammal", "founded", "def ", "assert f() ==", "It is wrong to", "成语", " = ",
                  "poem about the", "is taller than"):
        assert probe in text or probe.replace("The cat is a mammal", "mammal") in text, probe
    assert set(WRITERS) == {"biology", "history", "chinese", "understanding", "math", "reasoning", "ethics", "code",
                            "creative_writing", "role_play"}
    only = corpus_documents(seed=0, n_chars=2_000, abilities=["math"])
    assert all(d.startswith("Start with") for d in only)
    p = write_corpus(tmp_path, seed=0, n_chars=3_000)
    assert p == write_corpus(tmp_path, seed=0, n_chars=3_000)  # generated once
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert [r["text"] for r in rows] == corpus_documents(seed=0, n_chars=3_000)
