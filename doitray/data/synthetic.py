"""The embedded default: a generated ten-ability suite, a faithful miniature of the DoIT study.

Generated from a seed, without network, in DoIT's released layout (``curated/full``, ``curated/valid``,
``curated/test``, ``synthetic/<n>``), read back by the DoIT reader. Task families (``synthetic_tasks``):

=================  ==========================================================  ===========  ==========
ability            task family                                                 format       complexity
=================  ==========================================================  ===========  ==========
biology            animal table lookup (class / diet / habitat), 4-way MC      generate     1
history            fictional rulers: founder / kingdom / year MC, true/false   generate     1
                   answered 正确/错误
chinese            four-character idioms: single-blank cloze (CJK answer) and  generate     1-2
                   "which idiom is written correctly" MC
understanding      who said what in a 2-3 line dialogue, 3/4-way MC            generate     2
reasoning          transitive order ("A is taller than B…"), largest of sums   generate     2-3
math               1-3 step arithmetic chains with chain of thought,           generate     2-4
                   ``answer`` = final number
ethics             pick all good (or all wrong) actions, gold letters ("AC")   generate     1
code               write ``f(x)``; write the assert ``f() == a+b``             rank         1-2
creative_writing   poem / slogan / story on a topic in a mood                  rank         2
role_play          reply in a persona's voice (system prompt = persona)        rank         1
=================  ==========================================================  ===========  ==========

Graded complexity: lookups (biology, history, ethics, role-play) are learned from little data; math
chains need far more. Shared sub-skills: arithmetic (math, reasoning's sums, code's asserts), reading a
context (understanding, reasoning's orders), topic vocabulary (creative writing, role-play), the MC
letter format (six abilities). Rank abilities' valid/test items have 3 choices, gold first; the
negatives are near misses (wrong operator, syntax error, off-topic text, another persona's voice), so
perplexity ranking is learnable.

No leakage: every valid/test prompt is distinct and never appears in any training file. Curated
training prompts are distinct too. The ``synthetic`` construction (training only) is measurably lower
quality: one prompt template per family (less diverse, repeats allowed) and a fraction ``noise``
(default 0.3) of corrupted replies — half wrong answers, half off-format ("I think it is B, maybe.").
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from doitray.console import CommandError
from doitray.data.synthetic_tasks import GENERATORS, Item

VERSION = "synthetic-suite-2"
ABILITIES = tuple(GENERATORS)
RANK_ABILITIES = ("code", "creative_writing", "role_play")
N_TEMPLATES = 5
OPTIONS = ("seed", "train", "valid", "test", "synthetic", "noise")  # generate_suite's, a source's ``options``


class SuiteSizeError(CommandError, ValueError):
    """The sizes asked for need more distinct prompts than a task family has."""


def _seed(*parts) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _key(item: Item) -> str:
    return f"{item.system}\x1f{item.prompt}"


def _draw(ability: str, rng: random.Random, n: int, taken: set[str], *, n_templates: int, distinct: bool) -> list[Item]:
    out: list[Item] = []
    gen = GENERATORS[ability]
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            fresh = "distinct prompts" if distinct else "prompts that no curated split uses"
            raise SuiteSizeError(f"synthetic suite: cannot draw {n} {ability!r} {fresh} ({len(taken)} taken by the "
                                 f"splits before, got {len(out)}) — lower the source's train / valid / test / "
                                 "synthetic options")
        it = gen(rng, n_templates)
        k = _key(it)
        if k in taken:
            continue
        if distinct:
            taken.add(k)
        out.append(it)
    return out


def _corrupt(item: Item, rng: random.Random, ability: str) -> tuple[str, str | None]:
    """(reply, answer) of a low-quality synthetic example: a wrong answer or an off-format reply."""
    if rng.random() < 0.5:
        return item.wrong, (item.wrong.rsplit(" ", 1)[-1].rstrip(".") if item.answer is not None else None)
    if ability == "math":
        return f"The result is {item.answer} I guess", item.answer
    if ability in RANK_ABILITIES:
        return item.reply.split("\n")[0].rsplit(" ", 2)[0], None  # truncated, ill-formed text
    return f"I think it is {item.reply}, maybe.", None


def _row(ability: str, item: Item, idx: str, *, rank: bool, reply: str | None = None, answer: str | None = None,
         corrupted: bool | None = None) -> dict:
    msgs = ([{"role": "system", "content": item.system}] if item.system else []) + [{"role": "user", "content": item.prompt}]
    row: dict = {"type": ability, "idx": idx, "family": item.family, "complexity": item.complexity}
    if rank:
        row.update(messages=msgs, question_format=1, choices=item.choices)
    else:
        row.update(messages=msgs + [{"role": "assistant", "content": reply if reply is not None else item.reply}],
                   question_format=0)
    ans = answer if reply is not None else item.answer
    if ans is not None:
        row["answer"] = ans
    if corrupted is not None:
        row["corrupted"] = corrupted
    return row


def _sizes(value: int | dict, default: int) -> dict[str, int]:
    if isinstance(value, dict):
        unknown = set(value) - set(ABILITIES)
        if unknown:
            raise ValueError(f"synthetic suite: unknown abilities {sorted(unknown)}; allowed: {', '.join(ABILITIES)}")
        return {a: int(value.get(a, default)) for a in ABILITIES}
    return {a: int(value) for a in ABILITIES}


def generate_suite(out_dir: str | os.PathLike, *, seed: int = 0, train: int | dict = 1000, valid: int | dict = 50,
                   test: int | dict = 50, synthetic: int | dict = 1000, noise: float = 0.3) -> Path:
    """Write the suite to ``out_dir`` in DoIT's released layout; returns ``out_dir``."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"synthetic suite: noise must be in [0, 1], got {noise}")
    out = Path(out_dir)
    sizes = {"test": _sizes(test, 50), "valid": _sizes(valid, 50), "train": _sizes(train, 1000),
             "synthetic": _sizes(synthetic, 1000)}
    n_syn = max(sizes["synthetic"].values())
    files: dict[str, list[str]] = {}
    for ability in ABILITIES:
        taken: set[str] = set()
        rank = ability in RANK_ABILITIES
        for split in ("test", "valid", "train"):  # eval first: their prompts are then excluded from training
            rng = random.Random(_seed(seed, ability, split))
            items = _draw(ability, rng, sizes[split][ability], taken, n_templates=N_TEMPLATES, distinct=True)
            rel = f"curated/{'full' if split == 'train' else split}/{ability}_{'full' if split == 'train' else split}.json"
            files[rel] = [json.dumps(_row(ability, it, f"{ability}-{split}-{i}", rank=rank and split != "train"),
                                     ensure_ascii=False) for i, it in enumerate(items)]
        rng = random.Random(_seed(seed, ability, "synthetic"))
        items = _draw(ability, rng, sizes["synthetic"][ability], taken, n_templates=1, distinct=False)
        rows = []
        for i, it in enumerate(items):
            bad = rng.random() < noise
            reply, answer = _corrupt(it, rng, ability) if bad else (it.reply, it.answer)
            rows.append(json.dumps(_row(ability, it, f"{ability}-synthetic-{i}", rank=False, reply=reply, answer=answer,
                                        corrupted=bad), ensure_ascii=False))
        if n_syn:
            files[f"synthetic/{n_syn}/{ability}_synthetic.json"] = rows
    for rel, lines in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (out / "suite.json").write_text(json.dumps({"version": VERSION, "seed": seed, "sizes": sizes, "noise": noise},
                                               indent=1))
    return out


def generate_cached(cache_root: str | os.PathLike, **options) -> Path:
    """``generate_suite`` once per (options, VERSION) under ``cache_root``; reused afterwards."""
    key = hashlib.sha256(json.dumps([VERSION, options], sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache_root) / f"suite-{key}"
    if (out / "suite.json").exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    generate_suite(tmp, **options)
    try:
        os.replace(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def suite_texts(suite_dir: str | os.PathLike) -> list[str]:
    """Every message and choice of a generated suite (to train its tokenizer)."""
    texts: list[str] = []
    for p in sorted(Path(suite_dir).rglob("*.json")):
        if p.name == "suite.json":
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [m["content"] for m in row["messages"]] + list(row.get("choices") or [])
    return texts
