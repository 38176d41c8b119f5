"""``SuiteSpec``: one entry of a study's ``evaluation.suites`` (and of ``doitray eval check --kind``).

``kind`` says what is read and how it is asked:

- ``pool``       the study's own pool (DoIT in-domain + its out-of-domain files); the default when the list is empty;
- ``cmmlu``      CMMLU as published: ``<path>/{dev,test}/<subject>.csv``; 0-/5-shot from ``dev`` in CMMLU's prompt;
- ``ceval``      C-Eval: ``<path>/{dev,val,test}/<subject>_{dev,val,test}.csv``; 0-/5-shot from ``dev`` in C-Eval's
  answer-only prompt; read from ``val`` unless ``split`` says otherwise (the public test answers are blank);
- ``agieval``    AGIEval: ``<path>/data/v1/<set>.jsonl`` and ``<path>/data/few_shot_prompts.csv`` (the published
  demonstrations); the Chinese multiple-choice sets unless ``abilities`` lists sets;
- ``c3``         C3: ``<path>/c3-{d,m}-{train,dev,test}.json`` (or ``<path>/data/…``);
- ``logiqa``     LogiQA 2.0: ``<path>/{train,dev,test}{,_zh}.txt`` (JSON lines); the Chinese files unless the
  path names an English one;
- ``gsm8k`` / ``humaneval`` / ``mbpp``: their JSONL (``.jsonl.gz``) files, through the data readers;
- ``mt_bench``   FastChat's MT-Bench folder (``question.jsonl``, ``reference_answer/gpt-4.jsonl``) and its
  ``judge_prompts.jsonl`` (next to the folder, as FastChat ships it, or inside it), judged by ``judge``;
- ``jsonl``      canonical records, one JSON object per line.

``limit``: at most that many items, a seeded stratified subset over the suite's groups (the same items for
every cell). ``limit_per_ability`` (pool only, kept from earlier study files): the first N items by id of each
ability. ``abilities``: the pool's abilities, or the benchmark's subjects / sets / categories to keep.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SUITE_KINDS = ("pool", "cmmlu", "ceval", "agieval", "c3", "logiqa", "gsm8k", "humaneval", "mbpp", "mt_bench",
               "jsonl")
SHOT_KINDS = {"cmmlu": 5, "ceval": 5, "agieval": 5}  # kind -> most shots its dev split / prompts file gives
SUBJECT_KINDS = ("cmmlu", "ceval", "agieval", "c3", "logiqa")  # grouped by the benchmark's subjects / sets
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class JudgeSpec(BaseModel):
    """An MT-Bench judge: a local model dir served like a checkpoint, or an OpenAI-compatible endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None  # HF model dir: a second Serve deployment through the same engine code
    url: str | None = None  # an OpenAI-compatible base URL (e.g. http://host:8000/v1), with ``model``
    model: str | None = None
    api_key_env: str | None = None  # the name of the environment variable holding the endpoint's key
    template: Literal["hf", "doit", "fastchat"] = "hf"  # chat template of a local judge
    n: int = Field(default=1, ge=1)  # judgments per answer (FastChat: 1, at temperature 0)
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=2048, ge=1)
    engine: dict = {}  # engine options of a local judge

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.path) == bool(self.url):
            raise ValueError("judge: give path (a local model dir) or url + model (an OpenAI-compatible endpoint)")
        if self.url and not self.model:
            raise ValueError("model: an endpoint judge needs the model name the endpoint serves")
        if self.path and (self.model or self.api_key_env):
            raise ValueError("model, api_key_env: they go with url, not with path")
        return self


class SuiteSpec(BaseModel):
    """One evaluation suite of a study (``evaluation.suites``); unknown keys are refused by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[SUITE_KINDS] = "pool"  # type: ignore[valid-type]
    path: str | None = None
    name: str | None = None
    split: Literal["train", "valid", "test"] | None = None
    shots: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1)
    limit_per_ability: int | None = Field(default=None, ge=1)
    abilities: list[str] | None = None
    ood: bool | None = None
    judge: JudgeSpec | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self):
        k = self.kind
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: letters, digits, '_', '.', '-' only")
        if k == "pool":
            bad = [f for f in ("path", "shots", "judge") if getattr(self, f) is not None]
            if bad:
                raise ValueError(f"{', '.join(bad)}: not used by kind pool (the study's own data); "
                                 "give kind: cmmlu, ceval, agieval, … to read a benchmark")
        else:
            if not self.path:
                raise ValueError(f"path: kind {k} reads the benchmark from a path; give it")
            if self.limit_per_ability is not None:
                raise ValueError("limit_per_ability: pool only; use limit (a seeded subset stratified over the "
                                 "suite's groups)")
        if self.shots is not None and k != "pool":
            most = SHOT_KINDS.get(k)
            if most is None:
                raise ValueError(f"shots: kind {k} has no k-shot prompt; kinds with one: {', '.join(SHOT_KINDS)}")
            if self.shots > most:
                raise ValueError(f"shots: {self.shots} > {most}, the most {k}'s own "
                                 f"{'prompts file' if k == 'agieval' else 'dev split'} gives")
        if k == "mt_bench" and self.judge is None:
            raise ValueError("judge: kind mt_bench needs a judge, {path: <model dir>} or {url: …, model: …}")
        if k != "mt_bench" and k != "pool" and self.judge is not None:
            raise ValueError(f"judge: only kind mt_bench is judged (kind {k} is scored by its answers)")
        return self

    @property
    def suite_name(self) -> str:
        """The suite's name in the store: ``name``, else the kind (``pool``: ``doit``) with its shots."""
        if self.name:
            return self.name
        if self.kind == "pool":
            return "doit"
        return f"{self.kind}_{self.shots or 0}shot" if self.kind in SHOT_KINDS else self.kind


def check_suite_list(entries: list[SuiteSpec]) -> list[SuiteSpec]:
    """The list as given; at most one pool entry and unique suite names, else a ``ValueError`` naming them."""
    pools = [i for i, s in enumerate(entries) if s.kind == "pool"]
    if len(pools) > 1:
        raise ValueError(f"suites{pools}: at most one entry of kind pool")
    seen: dict[str, int] = {}
    for i, s in enumerate(entries):
        n = s.suite_name
        if n in seen or (s.kind == "pool" and f"{n}_ood" in seen):
            raise ValueError(f"suites[{i}]: suite name {n!r} is already used by suites[{seen.get(n, '?')}]; "
                             "give one of them a name")
        seen[n] = i
    return entries
