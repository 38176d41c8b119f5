"""The LLM judge: who judges (``JudgeConfig``), what it is asked, and how its ratings are read.

A judge is either a local model dir served as a second Serve deployment through the same engine code as the
checkpoints (``engine_factory``, i.e. ``ServeEngine``), or an OpenAI-compatible chat endpoint the user names
(``url`` + ``model``: vLLM's ``vllm serve`` and Ray Serve LLM both serve one). MT-Bench items are graded as
FastChat's single-answer mode does (``mt_bench_conversations``: one judgment per turn, with
the reference answer for math/reasoning/coding); other judge items get the built-in single-answer prompt.

Ratings are read from ``[[n]]`` (else ``[n]``), FastChat's patterns, within 0–10. An unparsable judgment is
counted (the item's ``note``), never scored: the item's rating is the mean of its parsable judgments, and an
item with none keeps the error "no judge rating could be parsed" (it counts toward the part's error share and
is left out of the mean). A small random judge writes noise: its ratings say nothing about the answers.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from doitray.eval.programs import judge_messages
from doitray.eval.scorers import meta_of

ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")  # FastChat common.py one_score_pattern
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


@dataclass
class JudgeConfig:
    """An LLM judge: a local HF dir (served like a checkpoint) or an OpenAI-compatible endpoint (``url``)."""

    hf_dir: str | None = None
    template: str = "hf"
    judge_id: str | None = None
    n: int = 3
    temperature: float = 0.7
    engine_options: dict = field(default_factory=dict)
    url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    max_tokens: int = 512
    prompts: dict = field(default_factory=dict)  # FastChat's grading prompts by name (MT-Bench suites)

    @property
    def name(self) -> str:
        """The judge's id in the score rows' metric (``judge:<name>``)."""
        return self.judge_id or self.model or self.hf_dir or "judge"


def parse_judgment(text: str | None) -> float | None:
    """The rating of one judgment (FastChat: ``[[r]]``, else ``[r]``), or None when it has none in 0–10."""
    m = ONE_SCORE.search(text or "") or ONE_SCORE_BACKUP.search(text or "")
    if not m:
        return None
    v = float(m.group(1))
    return v if 0 <= v <= 10 else None


def conversations(items: list, outs: list, turns: dict[int, list[str]], judge: JudgeConfig
                  ) -> list[tuple[int, list[dict]]]:
    """(item index, judge conversation) for every judgment to ask: per answered turn of an MT-Bench item, one
    per answer of any other judge item."""
    out = []
    for i, it in enumerate(items):
        if it.kind != "judge" or outs[i].error:
            continue
        answers = turns.get(i) or [outs[i].text or ""]
        if judge.prompts and meta_of(it.rec).get("turns"):
            out += [(i, c) for c in mt_bench_conversations(it.rec, answers, judge.prompts)]
        else:
            out.append((i, judge_messages(it.rec, answers[-1])))
    return out


def ask_endpoint(judge: JudgeConfig, convs: list[list[dict]], workers: int = 8) -> list[dict]:
    """Each conversation sent to the endpoint's chat completions; replies in the engine's ``outputs`` shape."""
    import openai

    client = openai.OpenAI(base_url=judge.url, api_key=os.environ.get(judge.api_key_env or "", "") or "EMPTY",
                           max_retries=3, timeout=600)

    def one(msgs: list[dict]) -> dict:
        try:
            r = client.chat.completions.create(model=judge.model, messages=msgs, n=judge.n,
                                               temperature=judge.temperature, max_tokens=judge.max_tokens)
            return {"outputs": [{"text": c.message.content or ""} for c in r.choices]}
        except Exception as e:  # the endpoint failed this request: an engine failure, not the item's
            return {"error": f"{type(e).__name__}: {e}"}

    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(one, convs))


def record_judgments(outs: list, convs: list[tuple[int, list[dict]]], replies: list[dict]) -> None:
    """Each item's parsable ratings over all its judgments (``ratings``), the unparsable ones counted in ``note``;
    a failed request is a ``judge:`` error (an engine failure, not the item's)."""
    got: dict[int, dict[str, Any]] = {}
    for (i, _), r in zip(convs, replies):
        g = got.setdefault(i, {"ratings": [], "asked": 0, "error": None})
        if "error" in r:
            g["error"] = g["error"] or r["error"]
            continue
        for o in r["outputs"]:
            g["asked"] += 1
            v = parse_judgment(o.get("text"))
            if v is not None:
                g["ratings"].append(v)
    for i, g in got.items():
        if g["error"]:
            outs[i].error = f"judge: {g['error']}"
            continue
        outs[i].ratings = g["ratings"]
        bad = g["asked"] - len(g["ratings"])
        if bad:
            outs[i].note = f"{bad} of {g['asked']} judgment(s) unparsable"


def mt_bench_conversations(rec: dict, answers: list[str], prompts: dict[str, dict]) -> list[list[dict]]:
    """The judge's conversation for each answered turn of an MT-Bench record (FastChat ``run_judge_single``):
    turn 1 with ``single-v1`` (``single-math-v1`` and the reference for math/reasoning/coding), turn 2 with
    the ``-multi-turn`` prompt over the whole conversation."""
    meta = meta_of(rec)
    qs, ref = meta["turns"], meta.get("ref_answers")
    kw = {"ref_answer_1": ref[0], "ref_answer_2": ref[1] if len(ref) > 1 else ""} if ref else {}
    out = []
    for t in range(min(len(qs), len(answers))):
        if t == 0:
            p = prompts["single-math-v1" if ref else "single-v1"]
            user = p["prompt_template"].format(question=qs[0], answer=answers[0], **kw)
        else:
            p = prompts["single-math-v1-multi-turn" if ref else "single-v1-multi-turn"]
            user = p["prompt_template"].format(question_1=qs[0], question_2=qs[1], answer_1=answers[0],
                                               answer_2=answers[1], **kw)
        out.append([{"role": "system", "content": p["system_prompt"]}, {"role": "user", "content": user}])
    return out

