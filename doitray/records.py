"""The canonical record: one instruction example or evaluation item, as a pyarrow schema.

Every reader produces records (plain dicts with exactly these fields) and a quarantine of rejected
rows. ``validate_record`` returns the reasons a row is unusable (empty list = valid); readers put those
reasons in the quarantine instead of dropping the row.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa

from doitray import abilities

ROLES = ("system", "user", "assistant")
CONSTRUCTIONS = ("curated", "synthetic")
SPLITS = ("train", "valid", "test")
QUESTION_FORMATS = abilities.QUESTION_FORMATS

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("ability", pa.string()),
    ("construction", pa.string()),
    ("source", pa.string()),
    ("split", pa.string()),
    ("messages", pa.list_(MESSAGE_TYPE)),
    ("question_format", pa.string()),
    ("choices", pa.list_(pa.string())),  # rank items: gold first; null otherwise
    ("answer", pa.string()),  # gold final answer when it is not the last assistant message
    ("meta", pa.string()),  # JSON object
])

FIELDS = tuple(SCHEMA.names)

QUARANTINE_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("file", pa.string()),
    ("line", pa.int64()),
    ("reason", pa.string()),
    ("raw", pa.string()),
])


def make_id(*parts: Any) -> str:
    """A stable id from the parts that identify a row in its source (e.g. source, split, file key, index)."""
    h = hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return h[:16]


def make_record(*, id: str, ability: str, messages: list[dict], source: str, split: str,
                construction: str = "curated", question_format: str | None = None,
                choices: list[str] | None = None, answer: str | None = None,
                meta: dict | None = None) -> dict:
    """A record dict with every schema field filled (question_format defaults to the ability's)."""
    if question_format is None:
        question_format = abilities.get(ability).question_format if abilities.is_known(ability) else "generate"
    return {
        "id": id, "ability": ability, "construction": construction, "source": source, "split": split,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "question_format": question_format, "choices": list(choices) if choices is not None else None,
        "answer": answer, "meta": json.dumps(meta or {}, ensure_ascii=False, sort_keys=True),
    }


def validate_record(rec: dict, *, known_abilities: Iterable[str] | None = None) -> list[str]:
    """Reasons ``rec`` is not a usable record; empty when it is.

    Reason strings start with a stable keyword: ``missing field``, ``wrong type``, ``empty content``,
    ``unknown role``, ``unknown ability``, ``bad value``, ``undecodable text``.
    """
    reasons: list[str] = []
    for f in ("id", "ability", "construction", "source", "split", "messages", "question_format"):
        if rec.get(f) is None:
            reasons.append(f"missing field: {f}")
    if reasons:
        return reasons
    for f in ("id", "ability", "construction", "source", "split", "question_format"):
        if not isinstance(rec[f], str):
            reasons.append(f"wrong type: {f} must be a string, got {type(rec[f]).__name__}")
    if reasons:
        return reasons
    known = set(known_abilities) if known_abilities is not None else None
    if (known is not None and rec["ability"] not in known) or (known is None and not abilities.is_known(rec["ability"])):
        reasons.append(f"unknown ability: {rec['ability']!r}")
    if rec["construction"] not in CONSTRUCTIONS:
        reasons.append(f"bad value: construction {rec['construction']!r} not in {CONSTRUCTIONS}")
    if rec["split"] not in SPLITS:
        reasons.append(f"bad value: split {rec['split']!r} not in {SPLITS}")
    if rec["question_format"] not in QUESTION_FORMATS:
        reasons.append(f"bad value: question_format {rec['question_format']!r} not in {QUESTION_FORMATS}")
    msgs = rec["messages"]
    if not isinstance(msgs, list):
        return reasons + [f"wrong type: messages must be a list, got {type(msgs).__name__}"]
    if not msgs:
        reasons.append("empty content: messages is empty")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            reasons.append(f"wrong type: messages[{i}] must be an object")
            continue
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            reasons.append(f"unknown role: messages[{i}].role={role!r}")
        if not isinstance(content, str):
            reasons.append(f"wrong type: messages[{i}].content must be a string")
        elif not content.strip():
            reasons.append(f"empty content: messages[{i}] ({role})")
        elif "\ufffd" in content:
            reasons.append(f"undecodable text: messages[{i}] contains U+FFFD")
    choices = rec.get("choices")
    if rec["question_format"] == "rank":
        if not isinstance(choices, list) or len(choices) < 2:
            reasons.append("missing field: choices (rank items need gold + negatives)")
        elif any(not isinstance(c, str) or not c.strip() for c in choices):
            reasons.append("empty content: a choice is empty")
    elif not msgs or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
        if not rec.get("answer"):
            reasons.append("missing field: answer (no final assistant message and no answer)")
    if rec.get("answer") is not None and not isinstance(rec["answer"], str):
        reasons.append(f"wrong type: answer must be a string, got {type(rec['answer']).__name__}")
    meta = rec.get("meta")
    if meta is not None:
        try:
            if not isinstance(json.loads(meta), dict):
                reasons.append("wrong type: meta must be a JSON object")
        except (TypeError, ValueError):
            reasons.append("wrong type: meta must be a JSON string")
    return reasons


def gold_text(rec: dict) -> str:
    """The gold target: ``answer`` when set, else the last assistant message, else choice 0."""
    if rec.get("answer"):
        return rec["answer"]
    msgs = rec["messages"]
    if msgs and msgs[-1]["role"] == "assistant":
        return msgs[-1]["content"]
    return (rec.get("choices") or [""])[0]


def to_table(records: list[dict]) -> pa.Table:
    """Records as a pyarrow table with ``SCHEMA``."""
    return pa.Table.from_pylist([{f: r.get(f) for f in FIELDS} for r in records], schema=SCHEMA)


@dataclass
class Quarantine:
    """Rows a reader rejected, each with its file, line and reason; never silently dropped."""

    rows: list[dict] = field(default_factory=list)

    def add(self, *, source: str, file: str, line: int, reason: str, raw: Any = "") -> None:
        raw_s = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        self.rows.append({"source": source, "file": file, "line": int(line), "reason": reason, "raw": raw_s[:2000]})

    def __len__(self) -> int:
        return len(self.rows)

    def extend(self, other: "Quarantine") -> None:
        self.rows.extend(other.rows)

    def by_reason(self) -> dict[str, int]:
        """Counts per reason keyword (the text before the first ':')."""
        out: dict[str, int] = {}
        for r in self.rows:
            key = r["reason"].split(":", 1)[0]
            out[key] = out.get(key, 0) + 1
        return out

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=QUARANTINE_SCHEMA)


class RejectedRowsError(ValueError):
    """Raised in strict mode when a reader rejected any row."""

    def __init__(self, quarantine: Quarantine):
        self.quarantine = quarantine
        first = "; ".join(f"{r['file']}:{r['line']}: {r['reason']}" for r in quarantine.rows[:5])
        super().__init__(f"{len(quarantine)} row(s) rejected (strict mode): {first}")
