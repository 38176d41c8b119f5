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
from doitray.eval.judge import JudgeConfig, ask_endpoint, conversations, record_judgments
from doitray.eval.programs import build_program
from doitray.eval.scorers import SCORERS, ItemScore, ModelOutput, item_metric, meta_of, options_in, score_item
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
             workers: int = 2, allow_unsafe_code: bool = False) -> str | None:
    """Run every code item's samples in the sandbox; fills ``passed``. The isolation used (``None``: no code)."""
    jobs = []
    for i, it in enumerate(items):
        if it.kind == "code" and not outs[i].error:
            for s in (outs[i].samples or [outs[i].text or ""]):
                jobs.append((i, build_program(it.rec, s)))
    if not jobs:
        return None
    label = sandbox.require_isolation(allow_unsafe_code)
    results = sandbox.run_many([src for _, src in jobs], limits, workers=workers, allow_unsafe=allow_unsafe_code)
    for (i, _), r in zip(jobs, results):
        outs[i].passed = (outs[i].passed or []) + [r.passed]
        if not r.passed and outs[i].note is None:
            outs[i].note = r.note  # status + exception type + redacted message, never raw output
    return label


def answer_turns(items: list[Item], outs: list[ModelOutput], engine: Any, tokenizer: Any, template: Any
                 ) -> dict[int, list[str]]:
    """Later turns of multi-turn judge items (MT-Bench's ``meta.turns``), as FastChat asks them: turn k sees the
    earlier questions and the model's own answers. Returns item index -> every turn's answer."""
    answers = {i: [outs[i].text or ""] for i, it in enumerate(items)
               if it.kind == "judge" and not outs[i].error and len(meta_of(it.rec).get("turns") or []) > 1}
    n_turns = max((len(meta_of(items[i].rec)["turns"]) for i in answers), default=1)
    stop_ids, stop_strs = _stops(tokenizer, template)
    for t in range(1, n_turns):
        todo = [i for i in answers if len(meta_of(items[i].rec)["turns"]) > t and not outs[i].error]
        prompts = []
        for i in todo:
            qs = meta_of(items[i].rec)["turns"]
            conv = [m for k in range(t) for m in ({"role": "user", "content": qs[k]},
                                                   {"role": "assistant", "content": answers[i][k]})]
            prompts.append(template.prompt_ids(tokenizer, [*conv, {"role": "user", "content": qs[t]}]))
        if not prompts:
            break
        mt = max(it.suite.max_tokens or SCORERS[it.metric].max_tokens for it in (items[i] for i in todo))
        res = _ask(engine.generate, len(prompts), prompts, max_tokens=mt, stop_token_ids=stop_ids, stop=stop_strs,
                   n=1, temperature=0.0)
        for i, r in zip(todo, res):
            if "error" in r:
                outs[i].error = _engine_error(r)
            else:
                answers[i].append(r["outputs"][0]["text"])
    for i, a in answers.items():  # the prediction keeps every turn
        outs[i].text = json.dumps(a, ensure_ascii=False) if len(a) > 1 else a[0]
    return answers


def run_judge(items: list[Item], outs: list[ModelOutput], judge: JudgeConfig, engine_factory: Callable | None = None,
              turns: dict[int, list[str]] | None = None) -> str:
    """Ask ``judge`` about every judge item's answers (``eval.judge``: MT-Bench turn by turn, as FastChat grades);
    fills ``ratings`` and ``note``. A local judge (``hf_dir``) is served by ``engine_factory`` (``ServeEngine``), an
    endpoint (``url``) is called over HTTP. Returns the judge's name for the score rows."""
    convs = conversations(items, outs, turns or {}, judge)
    if not convs:
        return judge.name
    msgs = [c for _, c in convs]
    if judge.url:
        replies = ask_endpoint(judge, msgs)
    else:
        from transformers import AutoTokenizer

        from doitray.data.templates import for_tokenizer, get_template

        tok = AutoTokenizer.from_pretrained(judge.hf_dir)
        tmpl = for_tokenizer(get_template(judge.template), tok)
        stop_ids, stop_strs = _stops(tok, tmpl)
        prompts = [tmpl.prompt_ids(tok, c) for c in msgs]
        with engine_factory(judge.hf_dir, judge.engine_options) as eng:
            replies = _ask(eng.generate, len(prompts), prompts, max_tokens=judge.max_tokens, stop_token_ids=stop_ids,
                           stop=stop_strs, n=judge.n, temperature=judge.temperature if judge.n > 1 else 0.0, seed=0)
    record_judgments(outs, convs, replies)
    return judge.name


def run_judges(items: list[Item], outs: list[ModelOutput], judge: JudgeConfig | None, engine_factory: Callable,
               turns: dict[int, list[str]]) -> dict[str, str]:
    """Judge every judge item: with ``judge`` when given, else with its suite's judge; suite name -> judge name."""
    names: dict[str, str] = {}
    by: dict[int, tuple[JudgeConfig, list[int]]] = {}
    for i, it in enumerate(items):
        j = judge or it.suite.judge
        if it.kind == "judge" and j is not None:
            by.setdefault(id(j), (j, []))[1].append(i)
    for j, idx in by.values():
        sub = [items[i] for i in idx]
        name = run_judge(sub, [outs[i] for i in idx], j, engine_factory,
                         turns={k: turns[i] for k, i in enumerate(idx) if i in turns})
        names.update({it.suite.name: name for it in sub})
    return names


def score(items: list[Item], outs: list[ModelOutput], *, cell_id: str, checkpoint: str, stage: int = 0,
          step: int = 0, epoch: float = 0.0, seed: int = 0, judge_id: str | dict[str, str] | None = None,
          sandbox_label: str | None = None) -> EvalResult:
    """Per-item prediction rows and per-(suite, group) score rows (plus ``overall`` per suite).

    ``sandbox_label``: the isolation code items ran under, recorded in their prediction rows (``sandbox``).

    ``judge_id``: the judge's name (or suite name -> judge name) for judge items' metric ``judge:<name>``. A judge
    item none of whose judgments could be parsed keeps its error and is left out of the group's mean (counted,
    not scored); a group with no scored item has value NaN and n 0.

    ``failures``: the (suite, split) parts with an engine failure or more than ``MAX_ITEM_ERROR_SHARE`` of
    their items in error (their rows are still returned, for inspection, but must not be stored).
    """
    preds: list[dict] = []
    per: dict[tuple[str, str], dict[str, list]] = {}
    for it, out in zip(items, outs):
        s: ItemScore = score_item(it.rec, out, metric=it.metric)
        jid = judge_id.get(it.suite.name) if isinstance(judge_id, dict) else judge_id
        metric = f"judge:{jid}" if it.kind == "judge" and jid else it.metric
        unscored = it.kind == "judge" and out.ratings is not None and not out.ratings and not out.error
        if it.kind == "judge" and out.note and s.parsed:
            s.parsed = f"{s.parsed} ({out.note})"
        pred = out.text if out.choice_losses is None else json.dumps([round(x, 6) for x in out.choice_losses])
        preds.append({"cell_id": cell_id, "checkpoint": checkpoint, "suite": it.suite.name, "split": it.suite.split,
                      "item_id": it.rec["id"], "ability": it.group, "metric": metric, "prediction": pred,
                      "parsed": s.parsed, "gold": s.gold, "score": float("nan") if unscored else float(s.score),
                      "chance": float(s.chance), "error": s.error,
                      "sandbox": sandbox_label if it.kind == "code" else None})
        g = per.setdefault((it.suite.name, it.suite.split), {}).setdefault(it.group, [])
        if not unscored:
            g.append((float(s.score), float(s.chance), metric))
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
            nan = float("nan")
            if not xs:  # every item of the group unscored (judge items without a parsable rating)
                metric = "+".join(sorted({p["metric"] for p in preds if p["suite"] == suite and p["ability"] == g}))
                rows.append({**base, "ability": g, "metric": metric, "value": nan, "n": 0, "chance": nan,
                             "ci_low": nan, "ci_high": nan})
                continue
            mean = sum(v for v, _, _ in xs) / len(xs)
            chance = sum(c for _, c, _ in xs) / len(xs)
            means.append(mean)
            chances.append(chance)
            rows.append({**base, "ability": g, "metric": "+".join(sorted({m for _, _, m in xs})), "value": mean,
                         "n": len(xs), "chance": chance, "ci_low": ci[g][0], "ci_high": ci[g][1]})
        k = len(means) or float("nan")
        rows.append({**base, "ability": "overall", "metric": "mean_over_abilities", "value": sum(means) / k,
                     "n": sum(len(x) for x in groups.values()), "chance": sum(chances) / k,
                     "ci_low": ci_all[0], "ci_high": ci_all[1]})
    return EvalResult(preds, rows, failures)


def evaluate_checkpoint(hf_dir: str, suites: list[Suite], *, template: Any, cell_id: str, checkpoint: str,
                        stage: int = 0, step: int = 0, epoch: float = 0.0, engine_options: dict | None = None,
                        seed: int = 0, samples: int = 1, judge: JudgeConfig | None = None,
                        sandbox_limits: sandbox.Limits | None = None, engine: Any = None,
                        allow_unsafe_code: bool = False) -> EvalResult:
    """Serve ``hf_dir``, evaluate it on ``suites``, tear the deployment down; rows for the results store.

    ``template``: a template name or object (the one the checkpoint was trained with). ``engine``: an
    already running engine to reuse (kept running), or any object with the same ``generate``/``score``
    methods; otherwise a ``ServeEngine`` is started and closed here. Failed parts are listed in the
    result's ``failures`` (this function does not raise for them; ``evaluate_and_store`` does). Code items
    where the sandbox cannot isolate programs raise ``sandbox.UnsafeCodeRefused`` before anything is served,
    unless ``allow_unsafe_code`` (the study's ``evaluation.allow_unsafe_code``).
    """
    from transformers import AutoTokenizer

    from doitray.data.templates import for_tokenizer, get_template
    from doitray.eval.engine import ServeEngine

    from doitray.scratch import META_FILES, fetch

    tok = AutoTokenizer.from_pretrained(fetch(hf_dir, include=META_FILES))  # a storage URI: no weights here
    tmpl = for_tokenizer(get_template(template) if isinstance(template, str) else template, tok)
    items = items_of(suites)
    if any(it.kind == "code" for it in items):
        sandbox.require_isolation(allow_unsafe_code)  # refuse before serving anything

    def ask(eng: Any) -> tuple[list[ModelOutput], dict[int, list[str]]]:
        outs = infer(items, eng, tok, tmpl, samples=samples, seed=seed)
        return outs, answer_turns(items, outs, eng, tok, tmpl)  # MT-Bench's later turns, while it is served

    if engine is not None:
        outs, turns = ask(engine)
    else:
        with ServeEngine(hf_dir, engine_options) as eng:
            outs, turns = ask(eng)
    label = run_code(items, outs, limits=sandbox_limits, allow_unsafe_code=allow_unsafe_code)
    judge_id = run_judges(items, outs, judge, ServeEngine, turns)
    return score(items, outs, cell_id=cell_id, checkpoint=checkpoint, stage=stage, step=step, epoch=epoch,
                 seed=seed, judge_id=judge_id, sandbox_label=label)


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
