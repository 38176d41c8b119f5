"""Helpers shared by readers: line-numbered JSON reading, file listing, option letters."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from doitray.records import Quarantine

LETTERS = "ABCDEFGHIJ"


def open_text(path: Path):
    """Open a (possibly gzipped) text file as UTF-8 bytes-safe lines."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_json_lines(path: Path, source: str, q: Quarantine) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; bad lines go to the quarantine."""
    with open_text(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                q.add(source=source, file=str(path), line=lineno, reason=f"undecodable text: {e.reason}",
                      raw=raw[:200].decode("utf-8", "replace"))
                continue
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as e:
                q.add(source=source, file=str(path), line=lineno, reason=f"wrong type: invalid JSON ({e.msg})",
                      raw=text)


def iter_json_any(path: Path, source: str, q: Quarantine) -> Iterator[tuple[int, Any]]:
    """Rows of a JSON array file (index = position, 1-based) or of a JSON-lines file."""
    with open_text(path) as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):
        try:
            with open_text(path) as f:
                data = json.loads(f.read().decode("utf-8"))
        except UnicodeDecodeError as e:
            q.add(source=source, file=str(path), line=0, reason=f"undecodable text: {e.reason}")
            return
        except json.JSONDecodeError as e:
            q.add(source=source, file=str(path), line=e.lineno, reason=f"wrong type: invalid JSON ({e.msg})")
            return
        for i, row in enumerate(data, 1):
            yield i, row
    else:
        yield from iter_json_lines(path, source, q)


def list_files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """``path`` itself, or the files under it with one of ``suffixes``, sorted (deterministic order)."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"source path {path} does not exist")
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def format_options(options: list[str]) -> str:
    """Options as DoIT writes them in the user turn: ``\\nA. …\\nB. …``."""
    return "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(options))


def require(row: Any, fields: tuple[str, ...]) -> str | None:
    """The first problem with ``row``'s required fields, as a quarantine reason, or None."""
    if not isinstance(row, dict):
        return f"wrong type: row must be a JSON object, got {type(row).__name__}"
    for f in fields:
        if f not in row or row[f] is None:
            return f"missing field: {f}"
    for f in fields:
        if isinstance(row[f], str) and not row[f].strip():
            return f"empty content: {f}"
    return None
