"""Readers for single-table instruction formats: Alpaca, ShareGPT, GSM8K, HumanEval, MBPP, generic JSONL/Parquet."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from doitray.data.readers.common import iter_json_any, iter_json_lines, list_files, require
from doitray.records import Quarantine, make_id, make_record

_JSON = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def _split_of(spec, path: Path, default: str) -> str:
    if spec.split:
        return spec.split
    words = set(re.split(r"[^a-z0-9]+", path.name.lower()))
    for s, keys in (("test", {"test"}), ("valid", {"valid", "dev", "val", "validation"}), ("train", {"train"})):
        if words & keys:
            return s
    return default


def _rel(spec, path: Path) -> str:
    root = Path(spec.path)
    return path.name if root.is_file() else str(path.relative_to(root))


def _rows(spec, q: Quarantine, default_split: str, *, lines_only: bool = False) -> Iterator[tuple]:
    for path in list_files(Path(spec.path), _JSON):
        it = iter_json_lines if lines_only else iter_json_any
        for line, row in it(path, spec.name, q):
            yield path, _rel(spec, path), _split_of(spec, path, default_split), line, row


def read_alpaca(spec, q: Quarantine) -> Iterator[dict]:
    """Alpaca JSON (array or lines): ``instruction``, optional ``input``, ``output``."""
    ability = spec.ability or "general"
    for _, rel, split, line, row in _rows(spec, q, "train"):
        why = require(row, ("instruction", "output"))
        if why:
            q.add(source=spec.name, file=rel, line=line, reason=why, raw=row)
            continue
        inp = row.get("input") or ""
        user = row["instruction"] + (f"\n{inp}" if isinstance(inp, str) and inp.strip() else "")
        yield make_record(id=make_id(spec.name, split, rel, line), ability=ability, source=spec.name, split=split,
                          construction=spec.construction, question_format="generate",
                          messages=[{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}],
                          meta={"file": rel, "line": line})


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                   "bard": "assistant", "bing": "assistant", "system": "system"}


def read_sharegpt(spec, q: Quarantine) -> Iterator[dict]:
    """ShareGPT JSONL/JSON: ``conversations`` = [{from: human|gpt|system, value}], optional ``id``."""
    ability = spec.ability or "general"
    for _, rel, split, line, row in _rows(spec, q, "train"):
        why = require(row, ("conversations",))
        if not why and not isinstance(row["conversations"], list):
            why = "wrong type: conversations must be a list"
        msgs = []
        if not why:
            for i, turn in enumerate(row["conversations"]):
                if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                    why = f"missing field: conversations[{i}] needs from and value"
                    break
                role = _SHAREGPT_ROLES.get(str(turn["from"]).lower())
                if role is None:
                    why = f"unknown role: conversations[{i}].from={turn['from']!r}"
                    break
                msgs.append({"role": role, "content": turn["value"]})
        if why:
            q.add(source=spec.name, file=rel, line=line, reason=why, raw=row)
            continue
        key = row.get("id", f"{rel}:{line}")
        yield make_record(id=make_id(spec.name, split, key), ability=ability, source=spec.name, split=split,
                          construction=spec.construction, question_format="generate", messages=msgs, meta={"file": rel, "line": line, "orig_id": key})


_GSM_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def read_gsm8k(spec, q: Quarantine) -> Iterator[dict]:
    """GSM8K JSONL: ``question``, ``answer`` = reasoning then ``#### n``; ``answer`` field = n."""
    ability = spec.ability or "math_en"
    for _, rel, split, line, row in _rows(spec, q, "test", lines_only=True):
        why = require(row, ("question", "answer"))
        m = None if why else _GSM_FINAL.search(str(row["answer"]))
        if not why and m is None:
            why = "bad value: answer has no '#### n' final answer"
        if why:
            q.add(source=spec.name, file=rel, line=line, reason=why, raw=row)
            continue
        final = m.group(1).replace(",", "").strip()
        reasoning = re.sub(r"<<[^>]*>>", "", row["answer"][: m.start()]).strip()
        reply = f"{reasoning}\nThe answer is {final}." if reasoning else f"The answer is {final}."
        yield make_record(id=make_id(spec.name, split, rel, line), ability=ability, source=spec.name, split=split,
                          construction=spec.construction, question_format="generate", answer=final,
                          messages=[{"role": "user", "content": row["question"]}, {"role": "assistant", "content": reply}],
                          meta={"file": rel, "line": line})


def read_humaneval(spec, q: Quarantine) -> Iterator[dict]:
    """HumanEval JSONL(.gz): ``task_id, prompt, canonical_solution, test, entry_point`` (metric code_exec)."""
    ability = spec.ability or "code"
    for _, rel, split, line, row in _rows(spec, q, "test", lines_only=True):
        why = require(row, ("task_id", "prompt", "canonical_solution", "test", "entry_point"))
        if why:
            q.add(source=spec.name, file=rel, line=line, reason=why, raw=row)
            continue
        user = f"Complete the following Python function.\n```python\n{row['prompt']}```"
        reply = f"```python\n{row['prompt']}{row['canonical_solution']}```"
        yield make_record(id=make_id(spec.name, split, row["task_id"]), ability=ability, source=spec.name, split=split,
                          construction=spec.construction, question_format="generate",
                          messages=[{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
                          meta={"file": rel, "line": line, "metric": "code_exec", "task_id": row["task_id"], "prompt": row["prompt"],
                                "test": row["test"], "entry_point": row["entry_point"]})


def read_mbpp(spec, q: Quarantine) -> Iterator[dict]:
    """MBPP JSONL: ``task_id, text, code, test_list`` (optional ``test_setup_code``); metric code_exec."""
    ability = spec.ability or "code"
    for _, rel, split, line, row in _rows(spec, q, "test", lines_only=True):
        why = require(row, ("task_id", "text", "code", "test_list"))
        if not why and not isinstance(row["test_list"], list):
            why = "wrong type: test_list must be a list"
        if why:
            q.add(source=spec.name, file=rel, line=line, reason=why, raw=row)
            continue
        tests = "\n".join(row["test_list"])
        user = f"{row['text']}\nYour code should pass these tests:\n{tests}"
        yield make_record(id=make_id(spec.name, split, row["task_id"]), ability=ability, source=spec.name, split=split,
                          construction=spec.construction, question_format="generate",
                          messages=[{"role": "user", "content": user},
                                    {"role": "assistant", "content": f"```python\n{row['code']}\n```"}],
                          meta={"file": rel, "line": line, "metric": "code_exec", "task_id": row["task_id"], "test": tests,
                                "setup": row.get("test_setup_code") or ""})


def _parquet_rows(spec, q: Quarantine) -> Iterator[tuple]:
    import pyarrow.parquet as pq

    for path in list_files(Path(spec.path), (".parquet",)):
        for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield path, _rel(spec, path), _split_of(spec, path, "train"), i, row


def read_generic(spec, q: Quarantine) -> Iterator[dict]:
    """Generic JSONL or Parquet with ``field_map`` (canonical name -> column).

    Either a ``messages`` column, or ``prompt`` + ``response`` (+ optional ``system``); optional ``id``,
    ``ability``, ``split``, ``answer``, ``choices``, ``question_format``, ``construction``.
    """
    fm = dict(spec.field_map)
    col = lambda name: fm.get(name, name)  # noqa: E731
    rows = _parquet_rows(spec, q) if spec.format == "parquet" else _rows(spec, q, "train", lines_only=True)
    for _, rel, split, line, row in rows:
        if not isinstance(row, dict):
            q.add(source=spec.name, file=rel, line=line, reason="wrong type: row must be a JSON object", raw=row)
            continue
        get = lambda name: row.get(col(name))  # noqa: E731
        msgs: Any = get("messages")
        if msgs is None:
            prompt, response = get("prompt"), get("response")
            if prompt is None:
                q.add(source=spec.name, file=rel, line=line, reason=f"missing field: {col('messages')} or {col('prompt')}",
                      raw=row)
                continue
            msgs = ([{"role": "system", "content": get("system")}] if get("system") else []) + \
                [{"role": "user", "content": prompt}] + \
                ([{"role": "assistant", "content": response}] if response is not None else [])
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            q.add(source=spec.name, file=rel, line=line, reason=f"wrong type: {col('messages')} must be a list of "
                  "{role, content}", raw=row)
            continue
        ability = spec.ability or get("ability")
        if ability is None:
            q.add(source=spec.name, file=rel, line=line, reason=f"missing field: {col('ability')} (or set the source's ability)",
                  raw=row)
            continue
        rid = get("id")
        answer = get("answer")
        qf = get("question_format")
        yield make_record(id=make_id(spec.name, rid) if rid is not None else make_id(spec.name, rel, line),
                          ability=str(ability), source=spec.name, split=get("split") or split,
                          construction=get("construction") or spec.construction, messages=msgs,
                          question_format={0: "generate", 1: "rank"}.get(qf, qf) if qf is not None else
                          ("rank" if get("choices") else "generate"),
                          choices=get("choices"), answer=str(answer) if isinstance(answer, (int, float)) else answer,
                          meta={"file": rel, "line": line})
