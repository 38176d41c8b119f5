"""The generic corpus of the generated suite: what a base model reads before any instruction tuning.

Plain text documents (no chat template, no prompt/answer turns) about the same world the ten task families
(``synthetic_tasks``) ask about: the animal table, the rulers and their kingdoms, the idioms, short dialogues,
worked arithmetic, orders and sums, good and wrong actions, small Python functions with their asserts, poems /
slogans / stories, and personas speaking in their voice. A base pretrained on it knows the facts and the
sub-skills; instruction tuning then teaches the question formats (multiple-choice letters, 正确/错误, cloze,
chains of thought) and when to use which. Deterministic from ``seed``; ``n_chars`` sets its size.

Documents never contain an eval prompt: they state facts and show computations, they do not ask questions.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from doitray.data import synthetic_tasks as T

CORPUS_VERSION = "synthetic-corpus-1"


def _seed(*parts) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _biology(rng: random.Random) -> str:
    out = []
    for a in rng.sample(sorted(T.ANIMALS), 3):
        c, d, h = T.ANIMALS[a]
        out.append(rng.choice([f"The {a} is a {c}. The {a} eats {d}. The {a} lives in the {h}.",
                               f"A {a} is a kind of {c}; it eats {d} and its home is the {h}.",
                               f"The {a} belongs to the {c} group. Its food is {d}. Its habitat is the {h}."]))
    return " ".join(out)


def _history(rng: random.Random) -> str:
    out = []
    for r in rng.sample(T.RULERS, 3):
        k, y = T.HIST[r]
        out.append(rng.choice([f"{r} founded the kingdom of {k} in the year {y}.",
                               f"The kingdom of {k} was founded by {r} in {y}.",
                               f"In {y}, {r} founded {k}. {k} remembers {r} as its founder."]))
    return " ".join(out)


def _chinese(rng: random.Random) -> str:
    ws = rng.sample(T.IDIOMS, 4)
    return rng.choice(["成语：", "常用成语：", "这些成语写法正确："]) + "，".join(ws) + "。"


def _understanding(rng: random.Random) -> str:
    speakers = rng.sample(T.NAMES, rng.choice([2, 3]))
    kind = rng.choice(sorted(T._SAYS))
    pool = {"color": T.COLORS, "place": T.PLACES, "thing": T.THINGS}[kind]
    vals = rng.sample(pool, len(speakers))
    lines = "\n".join(f"{n}: " + T._SAYS[kind][0].format(v=v) for n, v in zip(speakers, vals))
    told = {"color": "{n} likes {v}.", "place": "{n} is going to the {v}.", "thing": "{n} has two {v}."}[kind]
    return lines + "\n" + " ".join(told.format(n=n, v=v) for n, v in zip(speakers, vals))


def _math(rng: random.Random) -> str:
    steps = rng.choice([1, 2, 3])
    a, ops, lines, res = T.arithmetic_chain(rng, steps)
    said = " ".join(T._OPS[o][0].format(b=b) for o, b in ops)
    return f"Start with {a}. {said} " + " ".join(lines) + f" The result is {res}."


def _reasoning(rng: random.Random) -> str:
    if rng.random() < 0.5:
        adj, sup = rng.choice(T._ADJ)
        chain = rng.sample(T.NAMES, 3)
        return (f"{chain[0]} is {adj} than {chain[1]}. {chain[1]} is {adj} than {chain[2]}. "
                f"So {chain[0]} is the {sup} of the three.")
    vals = [(rng.randint(1, 12), rng.randint(1, 12)) for _ in range(3)]
    best = max(vals, key=lambda v: v[0] + v[1])
    return " ".join(f"{a} + {b} = {a + b}." for a, b in vals) + f" The largest is {best[0]} + {best[1]}."


def _ethics(rng: random.Random) -> str:
    good, bad = rng.sample(T.GOOD, 2), rng.sample(T.BAD, 2)
    return (f"It is good to {good[0]} and to {good[1]}. "
            f"It is wrong to {bad[0]}. It is wrong to {bad[1]}.")


def _code(rng: random.Random) -> str:
    if rng.random() < 0.5:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        op = rng.choice("+-") if a > b else "+"
        v = a + b if op == "+" else a - b
        return f"def f():\n    return {a} {op} {b}\n\nassert f() == {v}"
    name = rng.choice(sorted(T._FN))
    b = rng.randint(2, 9)
    desc, body, _ = T._FN[name]
    return f"# {name}_{b} {desc.format(b=b)}\ndef {name}_{b}(x):\n    return {body.format(b=b)}"


def _creative(rng: random.Random) -> str:
    form, t, m = rng.choice(sorted(T._FORMS)), rng.choice(T.TOPICS), rng.choice(sorted(T.MOODS))
    return f"A {m} {form} about the {t}:\n" + T._write(form, t, m)


def _role_play(rng: random.Random) -> str:
    p, t = rng.choice(sorted(T.PERSONAS)), rng.choice(T.TOPICS)
    return f"The {p} spoke about the {t}: \"{T._persona_reply(p, t)}\""


WRITERS = {"biology": _biology, "history": _history, "chinese": _chinese, "understanding": _understanding,
           "math": _math, "reasoning": _reasoning, "ethics": _ethics, "code": _code,
           "creative_writing": _creative, "role_play": _role_play}


def corpus_documents(*, seed: int = 0, n_chars: int, abilities: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Plain-text documents, in a seeded round over the abilities' writers, until they hold ``n_chars``."""
    names = list(abilities or WRITERS)
    bad = [a for a in names if a not in WRITERS]
    if bad:
        raise ValueError(f"corpus: unknown abilities {bad}; allowed: {', '.join(WRITERS)}")
    rng = random.Random(_seed(CORPUS_VERSION, seed))
    docs, size = [], 0
    while size < n_chars:
        for a in names:
            d = WRITERS[a](rng)
            docs.append(d)
            size += len(d)
    return docs


def write_corpus(out_dir: str | os.PathLike, *, seed: int = 0, n_chars: int,
                 abilities: list[str] | tuple[str, ...] | None = None) -> Path:
    """``corpus_documents`` as ``corpus.jsonl`` (one ``{"text": ...}`` per line) under ``out_dir``, once per
    (options, version); returns the file."""
    key = hashlib.sha256(json.dumps([CORPUS_VERSION, seed, n_chars, list(abilities or [])]).encode()).hexdigest()[:16]
    out = Path(out_dir) / f"corpus-{key}"
    path = out / "corpus.jsonl"
    if path.exists():
        return path
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    docs = corpus_documents(seed=seed, n_chars=n_chars, abilities=abilities)
    (tmp / "corpus.jsonl").write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs),
                                      encoding="utf-8")
    (tmp / "corpus.json").write_text(json.dumps({"version": CORPUS_VERSION, "seed": seed, "n_chars": n_chars,
                                                 "abilities": list(abilities or []), "key": key,
                                                 "documents": len(docs)}, indent=1))
    try:
        os.replace(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
