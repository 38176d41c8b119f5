"""Evaluate one checkpoint on suites: serve it, ask every item, score, aggregate into store rows.

``evaluate_checkpoint`` deploys the HF export with ``engine.ServeEngine`` (Ray Serve + vLLM), sends every
prompt of every suite concurrently, runs code items in the sandbox, optionally asks a judge model, and
returns ``predictions`` and ``scores`` rows in the results store's schemas. ``evaluate_and_store`` adds
resume: a (checkpoint, suite, split) whose scores part already exists is skipped.

Semantics: an item the engine or scorer could not handle is kept, scored 0, with its ``error``; the
per-group value is the true mean over items (not DoIT's halved "average"); ``chance`` is the mean of the
items' chance levels; ``ci_low``/``ci_high`` are a seeded percentile bootstrap (1000 resamples). Each
suite also gets an ``overall`` row: the mean over its groups (abilities, or categories for CMMLU).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from doitray.eval import sandbox
from doitray.eval.programs import build_program, judge_messages
from doitray.eval.scorers import SCORERS, ItemScore, ModelOutput, item_metric, options_in, parse_rating, score_item
from doitray.eval.stats import bootstrap_ci, stable_seed
from doitray.eval.suites import Suite


@dataclass
class Item:
    suite: Suite
    rec: dict
    metric: str
    group: str

    @property
    def kind(self) -> str | None:
        """What the engine must produce for this item (``Scorer.kind``); ``None`` for an unknown metric."""
        sc = SCORERS.get(self.metric)
        return sc.kind if sc else None


@dataclass
class EvalResult:
    predictions: list[dict]
    scores: list[dict]


@dataclass
class JudgeConfig:
    """An LLM judge served like a checkpoint: its HF dir, its chat template, judgments per answer."""

    hf_dir: str
    template: str = "hf"
    judge_id: str | None = None
    n: int = 3
    temperature: float = 0.7
    engine_options: dict = field(default_factory=dict)


def items_of(suites: list[Suite]) -> list[Item]:
    """Every item of ``suites`` with its metric and report group."""
    return [Item(s, r, item_metric(r), s.group_of(r)) for s in suites for r in s.records]


def context_messages(rec: dict) -> list[dict]:
    """The conversation the model is asked: every message but the gold reply."""
    msgs = rec["messages"]
    return msgs[:-1] if msgs and msgs[-1]["role"] == "assistant" else msgs


def _stops(tokenizer: Any, template: Any) -> tuple[list[int], list[str]]:
    vocab = tokenizer.get_vocab()
    ids = [vocab[s] for s in template.stop if s in vocab]
    strings = [s for s in template.stop if s not in vocab]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids)), strings


def infer(items: list[Item], engine: Any, tokenizer: Any, template: Any, *, samples: int = 1,
          seed: int = 0) -> list[ModelOutput]:
    """Ask the engine every item (generation or choice scoring), all requests at once per kind."""
    outs = [ModelOutput() for _ in items]
    stop_ids, stop_strs = _stops(tokenizer, template)
    # rank items: one scored sequence per choice
    seqs, owners = [], []
    for i, it in enumerate(items):
        if it.kind == "rank":
            try:
                p = template.prompt_ids(tokenizer, context_messages(it.rec))
                for c in it.rec.get("choices") or []:
                    seqs.append((p + template.continuation_ids(tokenizer, c), len(p)))
                    owners.append(i)
            except Exception as e:
                outs[i].error = f"prompt: {type(e).__name__}: {e}"
    if seqs:
        res = engine.score(seqs)
        for i, r in zip(owners, res):
            if "error" in r:
                outs[i].error = outs[i].error or f"engine: {r['error']}"
            else:
                outs[i].choice_losses = (outs[i].choice_losses or []) + [float(r["loss"])]
    # generation, batched by (max_tokens, n)
    batches: dict[tuple[int, int], list[tuple[int, list[int], list[int] | None]]] = {}
    for i, it in enumerate(items):
        if it.kind == "rank":
            continue
        if it.kind is None:
            outs[i].error = f"unknown metric {it.metric!r}"
            continue
        try:
            p = template.prompt_ids(tokenizer, context_messages(it.rec))
        except Exception as e:
            outs[i].error = f"prompt: {type(e).__name__}: {e}"
            continue
        letters = None
        if it.kind == "letters":
            letters = [template.continuation_ids(tokenizer, L)[0] for L in (options_in(it.rec) or list("ABCD"))]
        mt = it.suite.max_tokens or SCORERS[it.metric].max_tokens
        n = samples if it.kind == "code" else 1
        batches.setdefault((mt, n), []).append((i, p, letters))
    for (mt, n), reqs in batches.items():
        res = engine.generate([p for _, p, _ in reqs], max_tokens=mt, stop_token_ids=stop_ids, stop=stop_strs,
                              letter_ids=[lt for _, _, lt in reqs], n=n, temperature=0.0 if n == 1 else 0.8,
                              seed=seed if n > 1 else None)
        for (i, _, letters), r in zip(reqs, res):
            if "error" in r:
                outs[i].error = f"engine: {r['error']}"
                continue
            o = r["outputs"]
            outs[i].text = o[0]["text"]
            outs[i].samples = [x["text"] for x in o]
            if letters and o[0].get("letter_logprobs"):
                names = options_in(items[i].rec) or list("ABCD")
                lp = o[0]["letter_logprobs"]
                outs[i].letter_logprobs = {L: lp.get(str(t)) for L, t in zip(names, letters)}
    return outs


def run_code(items: list[Item], outs: list[ModelOutput], *, limits: sandbox.Limits | None = None,
             workers: int = 2) -> None:
    """Run every code item's samples in the sandbox; fills ``passed``."""
    jobs = []
    for i, it in enumerate(items):
        if it.kind == "code" and not outs[i].error:
            for s in (outs[i].samples or [outs[i].text or ""]):
                jobs.append((i, build_program(it.rec, s)))
    results = sandbox.run_many([src for _, src in jobs], limits, workers=workers)
    for (i, _), r in zip(jobs, results):
        outs[i].passed = (outs[i].passed or []) + [r.passed]
        if not r.passed and outs[i].note is None:
            last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
            outs[i].note = f"{r.status}: {last}"[:300]


def run_judge(items: list[Item], outs: list[ModelOutput], judge: JudgeConfig, engine_factory: Callable) -> str:
    """Ask the judge model about every judge item's answer ``judge.n`` times; fills ``ratings``."""
    from transformers import AutoTokenizer

    from doitray.data.templates import for_tokenizer, get_template

    idx = [i for i, it in enumerate(items) if it.kind == "judge" and not outs[i].error]
    judge_id = judge.judge_id or judge.hf_dir
    if not idx:
        return judge_id
    tok = AutoTokenizer.from_pretrained(judge.hf_dir)
    tmpl = for_tokenizer(get_template(judge.template), tok)
    stop_ids, stop_strs = _stops(tok, tmpl)
    prompts = [tmpl.prompt_ids(tok, judge_messages(items[i].rec, outs[i].text or "")) for i in idx]
    with engine_factory(judge.hf_dir, judge.engine_options) as eng:
        res = eng.generate(prompts, max_tokens=512, stop_token_ids=stop_ids, stop=stop_strs, n=judge.n,
                           temperature=judge.temperature if judge.n > 1 else 0.0, seed=0)
    for i, r in zip(idx, res):
        if "error" in r:
            outs[i].error = f"judge: {r['error']}"
            continue
        ratings = [x for x in (parse_rating(o["text"]) for o in r["outputs"]) if x is not None]
        outs[i].ratings = ratings or None
    return judge_id


def score(items: list[Item], outs: list[ModelOutput], *, cell_id: str, checkpoint: str, stage: int = 0,
          step: int = 0, epoch: float = 0.0, seed: int = 0, judge_id: str | None = None) -> EvalResult:
    """Per-item prediction rows and per-(suite, group) score rows (plus ``overall`` per suite)."""
    preds: list[dict] = []
    per: dict[tuple[str, str], dict[str, list]] = {}
    for it, out in zip(items, outs):
        s: ItemScore = score_item(it.rec, out, metric=it.metric)
        metric = f"judge:{judge_id}" if it.kind == "judge" and judge_id else it.metric
        pred = out.text if out.choice_losses is None else json.dumps([round(x, 6) for x in out.choice_losses])
        preds.append({"cell_id": cell_id, "checkpoint": checkpoint, "suite": it.suite.name, "split": it.suite.split,
                      "item_id": it.rec["id"], "ability": it.group, "metric": metric, "prediction": pred,
                      "parsed": s.parsed, "gold": s.gold, "score": float(s.score), "chance": float(s.chance),
                      "error": s.error})
        g = per.setdefault((it.suite.name, it.suite.split), {})
        g.setdefault(it.group, []).append((float(s.score), float(s.chance), metric))
    rows: list[dict] = []
    for (suite, split), groups in per.items():
        vals = {g: [v for v, _, _ in xs] for g, xs in groups.items()}
        ci, ci_all = bootstrap_ci(vals, seed=stable_seed(seed, checkpoint, suite, split))
        base = {"cell_id": cell_id, "checkpoint": checkpoint, "stage": int(stage), "step": int(step),
                "epoch": float(epoch), "suite": suite, "split": split}
        means, chances = [], []
        for g in sorted(groups):
            xs = groups[g]
            mean = sum(v for v, _, _ in xs) / len(xs)
            chance = sum(c for _, c, _ in xs) / len(xs)
            means.append(mean)
            chances.append(chance)
            rows.append({**base, "ability": g, "metric": "+".join(sorted({m for _, _, m in xs})), "value": mean,
                         "n": len(xs), "chance": chance, "ci_low": ci[g][0], "ci_high": ci[g][1]})
        rows.append({**base, "ability": "overall", "metric": "mean_over_abilities", "value": sum(means) / len(means),
                     "n": sum(len(x) for x in groups.values()), "chance": sum(chances) / len(chances),
                     "ci_low": ci_all[0], "ci_high": ci_all[1]})
    return EvalResult(preds, rows)


def evaluate_checkpoint(hf_dir: str, suites: list[Suite], *, template: Any, cell_id: str, checkpoint: str,
                        stage: int = 0, step: int = 0, epoch: float = 0.0, engine_options: dict | None = None,
                        seed: int = 0, samples: int = 1, judge: JudgeConfig | None = None,
                        sandbox_limits: sandbox.Limits | None = None, engine: Any = None) -> EvalResult:
    """Serve ``hf_dir``, evaluate it on ``suites``, tear the deployment down; rows for the results store.

    ``template``: a template name or object (the one the checkpoint was trained with). ``engine``: an
    already running engine to reuse (kept running); otherwise a ``ServeEngine`` is started and closed here.
    """
    from transformers import AutoTokenizer

    from doitray.data.templates import for_tokenizer, get_template
    from doitray.eval.engine import ServeEngine

    tok = AutoTokenizer.from_pretrained(hf_dir)
    tmpl = for_tokenizer(get_template(template) if isinstance(template, str) else template, tok)
    items = items_of(suites)
    if engine is not None:
        outs = infer(items, engine, tok, tmpl, samples=samples, seed=seed)
    else:
        with ServeEngine(hf_dir, engine_options) as eng:
            outs = infer(items, eng, tok, tmpl, samples=samples, seed=seed)
    run_code(items, outs, limits=sandbox_limits)
    judge_id = run_judge(items, outs, judge, ServeEngine) if judge is not None else None
    return score(items, outs, cell_id=cell_id, checkpoint=checkpoint, stage=stage, step=step, epoch=epoch,
                 seed=seed, judge_id=judge_id)


def suite_key(cell_id: str, checkpoint: str, suite: Suite) -> str:
    """The store part key of one (checkpoint, suite, split)."""
    return f"{cell_id}__{checkpoint}__{suite.name}__{suite.split}"


def evaluate_and_store(store: Any, hf_dir: str, suites: list[Suite], **kw) -> EvalResult:
    """``evaluate_checkpoint`` on the suites not yet scored in ``store`` (a ``ResultsStore``); writes parts.

    Predictions and scores are written per (checkpoint, suite, split), predictions first, so a crash leaves a
    suite either fully scored or to be redone.
    """
    todo = [s for s in suites if not store.has_part("scores", suite_key(kw["cell_id"], kw["checkpoint"], s))]
    if not todo:
        return EvalResult([], [])
    res = evaluate_checkpoint(hf_dir, todo, **kw)
    for s in todo:
        key = suite_key(kw["cell_id"], kw["checkpoint"], s)
        store.write("predictions", key, [p for p in res.predictions if p["suite"] == s.name and p["split"] == s.split])
        store.write("scores", key, [r for r in res.scores if r["suite"] == s.name and r["split"] == s.split])
    return res


def evaluate_many(checkpoints: list[dict], suites: list[Suite], *, max_concurrent: int = 2, **common) -> list[EvalResult]:
    """Evaluate several checkpoints at once, each in its own deployment (``max_concurrent`` at a time).

    ``checkpoints``: dicts of ``evaluate_checkpoint`` arguments that differ per checkpoint (``hf_dir``,
    ``checkpoint``, ``step``, …); ``common``: the rest. Results come back in input order.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(ck: dict) -> EvalResult:
        kw = {**common, **ck}
        return evaluate_checkpoint(kw.pop("hf_dir"), suites, **kw)

    with ThreadPoolExecutor(max_workers=max(1, max_concurrent)) as ex:
        return list(ex.map(one, checkpoints))
