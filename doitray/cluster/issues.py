"""The finding type shared by the cluster validators, and the helpers both build findings with.

``Issue`` names a dotted JSON path and a message; ``_issue`` turns a jsonschema error into one (with a
"did you mean" hint for misspelt fields); ``_placeholder_warning`` flags the ``YOUR-...`` values a user
must fill in. Imported by ``cluster_launcher`` and ``cluster_kuberay``; imports neither.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Iterator

import yaml

DRIVER_RESOURCE = "TRAIN_DRIVER"
PLACEHOLDER = "YOUR-"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Issue:
    path: str       # dotted JSON path into the document, e.g. spec.workerGroupSpecs[0].minReplicas
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _p(*parts: Any) -> str:
    out = ""
    for part in parts:
        if part is None or part == "":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _placeholders(obj: Any, path: str = "") -> Iterator[str]:
    if isinstance(obj, str) and PLACEHOLDER in obj:
        yield path or "(root)"
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _placeholders(v, _p(path, str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _placeholders(v, _p(path, i))


def _placeholder_warning(doc: Any) -> list[Issue]:
    where = list(_placeholders(doc))
    if not where:
        return []
    shown = ", ".join(where[:6]) + (f" and {len(where) - 6} more" if len(where) > 6 else "")
    return [Issue("", f"placeholders ({PLACEHOLDER}...) to replace before launching: {shown}")]


def _issue(e: Any) -> Issue:
    path = _p(*e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = set(e.schema.get("properties", {}))
        extra = sorted(k for k in e.instance if k not in allowed and not any(
            re.search(pat, k) for pat in e.schema.get("patternProperties", {})))
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := _close(k, allowed)) else repr(k) for k in extra]
        listed = "" if all("did you mean" in h for h in hints) else f"; allowed: {', '.join(sorted(allowed))}"
        return Issue(_p(path, ",".join(extra)) if extra else path,
                     f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(hints)}{listed}")
    if e.validator == "required":
        missing = re.match(r"'([^']+)'", e.message)
        return Issue(_p(path, missing.group(1)) if missing else path, "required field is missing")
    if e.validator == "anyOf" and e.schema.get("x-kubernetes-int-or-string"):
        return Issue(path, f"{e.instance!r} is neither an integer nor a quantity string")
    return Issue(path, e.message)


def _close(key: str, allowed: set[str]) -> list[str]:
    by_lower = {a.lower(): a for a in allowed}
    return [by_lower[m] for m in difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.8)]


def _version(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(v))[:3])
