"""``doitray eval check``: score a suite's own reference answers as if a model had written them.

The gold letter, the gold true/false word, the gold cloze word, the gold reply of a math item (its worked
solution, so the answer extractor is exercised), the canonical program of a code item (run in the sandbox),
and for rank items a loss of 0 for the gold choice and 1 for the others. Anything below 100% is a broken
item or a broken scorer; each failure is listed with its reason. Judge items cannot be checked without a
judge and are counted as ``skipped``.
"""
from __future__ import annotations

from doitray.eval import sandbox
from doitray.eval.programs import build_program, reference_completion
from doitray.eval.evaluate import Item, items_of
from doitray.eval.scorers import ModelOutput, score_item
from doitray.eval.suites import Suite
from doitray.records import gold_text, validate_record


def gold_output(it: Item) -> tuple[ModelOutput | None, str | None]:
    """(the output a perfect model would give, a reason the item is broken before scoring)."""
    rec, m = it.rec, it.metric
    if it.kind == "judge":
        return None, "skipped: judge items need a judge model"
    if it.kind == "rank":
        choices = rec.get("choices") or []
        if len(choices) < 2:
            return None, f"rank item has {len(choices)} choice(s); it needs the gold and at least one negative"
        dup = [i for i, c in enumerate(choices[1:], 1) if c.strip() == choices[0].strip()]
        if dup:
            return None, f"negative choice(s) {dup} identical to the gold"
        return ModelOutput(choice_losses=[0.0] + [1.0] * (len(choices) - 1)), None
    if m in ("math", "gsm8k"):
        msgs = rec["messages"]
        text = msgs[-1]["content"] if msgs and msgs[-1]["role"] == "assistant" else rec.get("answer") or ""
        return ModelOutput(text=text), None
    if it.kind == "code":
        return ModelOutput(text=reference_completion(rec)), None
    return ModelOutput(text=gold_text(rec)), None


def check_suites(suites: list[Suite], *, workers: int = 2, limits: sandbox.Limits | None = None,
                 allow_unsafe_code: bool = False) -> dict:
    """Per suite and group: n, correct, skipped, accuracy, and every failure with its reason.

    Code items run in the sandbox (``sandbox.UnsafeCodeRefused`` where it cannot isolate them, unless
    ``allow_unsafe_code``); ``sandbox`` in the report names the isolation used.
    """
    items = items_of(suites)
    outs: list[ModelOutput | None] = []
    reasons: list[str | None] = []
    for it in items:
        bad = validate_record(it.rec, known_abilities=[it.rec["ability"]])
        out, why = gold_output(it)
        outs.append(out)
        reasons.append(("invalid record: " + "; ".join(bad)) if bad else why)
    code = [(i, build_program(items[i].rec, outs[i].text or "")) for i, it in enumerate(items)
            if it.kind == "code" and outs[i] is not None and reasons[i] is None]
    label = sandbox.require_isolation(allow_unsafe_code) if code else None
    results = sandbox.run_many([src for _, src in code], limits, workers=workers, allow_unsafe=allow_unsafe_code)
    for (i, _), r in zip(code, results):
        outs[i].passed = [r.passed]
        if not r.passed:
            outs[i].note = r.note  # status + exception type + redacted message, never raw output
    report: dict = {"suites": [], "ok": True, "sandbox": label}
    for s in suites:
        groups: dict[str, dict] = {}
        for i, it in enumerate(items):
            if it.suite is not s:
                continue
            g = groups.setdefault(it.group, {"group": it.group, "n": 0, "correct": 0, "skipped": 0, "failures": []})
            if reasons[i] and reasons[i].startswith("skipped"):
                g["skipped"] += 1
                continue
            g["n"] += 1
            if reasons[i] is None:
                sc = score_item(it.rec, outs[i], metric=it.metric)
                if sc.score >= 1.0:
                    g["correct"] += 1
                    continue
                why = sc.error or (f"{it.metric}: parsed {sc.parsed!r} but gold is {sc.gold!r}"
                                   + (f" ({outs[i].note})" if outs[i].note else ""))
            else:
                why = reasons[i]
            g["failures"].append({"id": it.rec["id"], "metric": it.metric, "reason": why})
        rows = []
        for g in sorted(groups.values(), key=lambda x: x["group"]):
            g["accuracy"] = g["correct"] / g["n"] if g["n"] else None
            report["ok"] &= not g["failures"]
            rows.append(g)
        report["suites"].append({"suite": s.name, "split": s.split, "groups": rows,
                                 "excluded": s.excluded})
        report["ok"] &= not s.excluded
    return report


def format_report(report: dict, max_failures: int = 10) -> str:
    from doitray.console import table

    lines = []
    for s in report["suites"]:
        lines.append(f"suite {s['suite']} ({s['split']})")
        lines.append(table([{"ability": g["group"], "n": g["n"], "correct": g["correct"], "skipped": g["skipped"],
                             "accuracy": g["accuracy"]} for g in s["groups"]]))
        fails = [f for g in s["groups"] for f in g["failures"]]
        for f in fails[:max_failures]:
            lines.append(f"  FAIL {f['id']} [{f['metric']}]: {f['reason']}")
        if len(fails) > max_failures:
            lines.append(f"  … and {len(fails) - max_failures} more failures (use --json for all)")
        for e in s["excluded"][:max_failures]:
            lines.append(f"  EXCLUDED {e['id']}: {e['reason']}")
    if report.get("sandbox"):
        lines.append(f"code items ran in the sandbox: {report['sandbox']}")
    lines.append("all reference answers score 100%" if report["ok"] else "some items fail: see above")
    return "\n".join(lines)
