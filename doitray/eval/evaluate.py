"""Evaluate one checkpoint on suites: serve it, ask every item, score, aggregate into store rows.

``evaluate_checkpoint`` deploys the HF export with ``engine.ServeEngine`` (Ray Serve + vLLM), sends every
prompt of every suite concurrently, runs code items in the sandbox, optionally asks a judge model, and
returns ``predictions`` and ``scores`` rows in the results store's schemas. ``evaluate_and_store`` adds
resume: a (checkpoint, suite, split) whose scores part already exists is skipped.

Semantics: an item whose own content could not be handled (a prompt that cannot be built, an unknown
metric, a gold or answer the scorer cannot parse, a sequence too long to score) is kept, scored 0, with
its ``error``, as DoIT does. An **engine failure** is not the item's fault: an ``engine:``/``judge:``
error (the replica or the Serve call failed: preemption, CUDA OOM, a dead engine) or an exception from
the engine handle. A (checkpoint, suite, split) with any engine failure, or with more than
``MAX_ITEM_ERROR_SHARE`` of its items in error, is a failed part: ``score`` lists it in
``EvalResult.failures``, and ``evaluate_and_store`` writes nothing for it (neither predictions nor
scores) and raises ``EvaluationFailed``, so the cell fails visibly and a re-run evaluates the part again
(resume skips only written parts). A failed evaluation is a visible failure, never a stored zero. The
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


# More than this share of a part's items in error (item-level errors included) fails the part: beyond a few
# broken items, errors mean a broken suite, template or scorer, not answers worth storing as zeros.
MAX_ITEM_ERROR_SHARE = 0.05
# Error prefixes of engine failures (the serving replica or the call to it failed, not the item).
ENGINE_ERROR_PREFIXES = ("engine:", "judge:")


def is_engine_error(error: str | None) -> bool:
    """Whether a per-item error is an engine failure (vs. a problem of the item's own)."""
    return bool(error) and error.startswith(ENGINE_ERROR_PREFIXES)


@dataclass
class PartFailure:
    """Why one (checkpoint, suite, split) part is not stored."""

    suite: str
    split: str
    n_failed: int  # items in error
    n_engine: int  # of which engine failures
    n_items: int
    first_error: str  # the first engine error, else the first error

    def __str__(self) -> str:
        why = (f"{self.n_engine} engine failure(s)" if self.n_engine
               else f"more than {MAX_ITEM_ERROR_SHARE:.0%} of the items failed")
        return (f"{self.suite}/{self.split}: {self.n_failed}/{self.n_items} item(s) failed ({why}); "
                f"first error: {self.first_error}")


class EvaluationFailed(RuntimeError):
    """Some (checkpoint, suite, split) parts could not be evaluated; nothing was stored for them."""

    def __init__(self, failures: list[PartFailure], checkpoint: str | None = None):
        self.failures = list(failures)
        first = self.failures[0]
        self.suite, self.split, self.n_failed, self.n_items = first.suite, first.split, first.n_failed, first.n_items
        self.first_error = first.first_error
        self.checkpoint = checkpoint
        of = f" of checkpoint {checkpoint}" if checkpoint else ""
        shown = "; ".join(str(f) for f in self.failures[:3])
        more = f"; and {len(self.failures) - 3} more part(s)" if len(self.failures) > 3 else ""
        super().__init__(f"evaluation{of} failed, nothing stored for {shown}{more} "
                         "(a re-run evaluates these parts again)")

    def __reduce__(self):  # picklable (Ray and Tune ship a trial's exception between processes)
        return (type(self), (self.failures, self.checkpoint))


@dataclass
class EvalResult:
    predictions: list[dict]
    scores: list[dict]
    failures: list[PartFailure] = field(default_factory=list)  # parts not to store (see ``evaluate_and_store``)


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


def _ask(fn: Callable, n_requests: int, /, *args, **kw) -> list[dict]:
    """One engine call for ``n_requests``; an exception or a short answer becomes per-request errors."""
    try:
        res = list(fn(*args, **kw))
    except Exception as e:  # the engine handle itself failed: every request of the call failed
        return [{"error": f"{type(e).__name__}: {e}"}] * n_requests
    if len(res) < n_requests:
        res += [{"error": f"the engine answered {len(res)} of {n_requests} requests"}] * (n_requests - len(res))
    return res[:n_requests]


def _engine_error(r: dict) -> str:
    """The item error for an engine reply ``r`` with an ``error``: ``item:`` if the engine says it is the item's own."""
    return f"{'item' if r.get('fault') == 'item' else 'engine'}: {r['error']}"


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
        res = _ask(engine.score, len(seqs), seqs)
        for i, r in zip(owners, res):
            if "error" in r:
                err = _engine_error(r)
                if not outs[i].error or (is_engine_error(err) and not is_engine_error(outs[i].error)):
                    outs[i].error = err  # an engine failure outranks an item-level one
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
        res = _ask(engine.generate, len(reqs), [p for _, p, _ in reqs], max_tokens=mt, stop_token_ids=stop_ids,
                   stop=stop_strs, letter_ids=[lt for _, _, lt in reqs], n=n, temperature=0.0 if n == 1 else 0.8,
                   seed=seed if n > 1 else None)
        for (i, _, letters), r in zip(reqs, res):
            if "error" in r:
                outs[i].error = _engine_error(r)
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
        res = _ask(eng.generate, len(prompts), prompts, max_tokens=512, stop_token_ids=stop_ids, stop=stop_strs,
                   n=judge.n, temperature=judge.temperature if judge.n > 1 else 0.0, seed=0)
    for i, r in zip(idx, res):
        if "error" in r:
            outs[i].error = f"judge: {r['error']}"
            continue
        ratings = [x for x in (parse_rating(o["text"]) for o in r["outputs"]) if x is not None]
        outs[i].ratings = ratings or None
    return judge_id


def score(items: list[Item], outs: list[ModelOutput], *, cell_id: str, checkpoint: str, stage: int = 0,
          step: int = 0, epoch: float = 0.0, seed: int = 0, judge_id: str | None = None) -> EvalResult:
    """Per-item prediction rows and per-(suite, group) score rows (plus ``overall`` per suite).

    ``failures``: the (suite, split) parts with an engine failure or more than ``MAX_ITEM_ERROR_SHARE`` of
    their items in error (their rows are still returned, for inspection, but must not be stored).
    """
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
    failures: list[PartFailure] = []
    for suite, split in per:
        errs = [p["error"] for p in preds if p["suite"] == suite and p["split"] == split]
        failed = [e for e in errs if e]
        engine_errs = [e for e in failed if is_engine_error(e)]
        if engine_errs or len(failed) > MAX_ITEM_ERROR_SHARE * len(errs):
            failures.append(PartFailure(suite, split, len(failed), len(engine_errs), len(errs),
                                        (engine_errs or failed)[0][:300]))
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
    return EvalResult(preds, rows, failures)


def evaluate_checkpoint(hf_dir: str, suites: list[Suite], *, template: Any, cell_id: str, checkpoint: str,
                        stage: int = 0, step: int = 0, epoch: float = 0.0, engine_options: dict | None = None,
                        seed: int = 0, samples: int = 1, judge: JudgeConfig | None = None,
                        sandbox_limits: sandbox.Limits | None = None, engine: Any = None) -> EvalResult:
    """Serve ``hf_dir``, evaluate it on ``suites``, tear the deployment down; rows for the results store.

    ``template``: a template name or object (the one the checkpoint was trained with). ``engine``: an
    already running engine to reuse (kept running), or any object with the same ``generate``/``score``
    methods; otherwise a ``ServeEngine`` is started and closed here. Failed parts are listed in the
    result's ``failures`` (this function does not raise for them; ``evaluate_and_store`` does).
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
    suite either fully scored or to be redone. A failed part (engine failure, or more than
    ``MAX_ITEM_ERROR_SHARE`` of its items in error) gets nothing written; the healthy parts are written,
    then ``EvaluationFailed`` is raised, and a later call evaluates the failed parts again.
    """
    todo = [s for s in suites if not store.has_part("scores", suite_key(kw["cell_id"], kw["checkpoint"], s))]
    if not todo:
        return EvalResult([], [])
    res = evaluate_checkpoint(hf_dir, todo, **kw)
    failed = {(f.suite, f.split) for f in res.failures}
    for s in todo:
        if (s.name, s.split) in failed:
            continue
        key = suite_key(kw["cell_id"], kw["checkpoint"], s)
        store.write("predictions", key, [p for p in res.predictions if p["suite"] == s.name and p["split"] == s.split])
        store.write("scores", key, [r for r in res.scores if r["suite"] == s.name and r["split"] == s.split])
    if res.failures:
        raise EvaluationFailed(res.failures, kw["checkpoint"])
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
