"""The ability registry: what each ability is called, how it is asked, scored, and its chance level.

DoIT's ten abilities, the DMT paper's three (math_en = GSM8K, code = HumanEval, general = MT-Bench), and any ability a study file declares (``register`` / ``register_from_spec``).

An ability's ``metric`` names its items' default scorer, one of ``doitray.eval.scorers.METRICS`` (a study file's
custom abilities are checked against it in ``doitray.study.spec``); an item may override it with
``meta["metric"]`` (HumanEval items of ability ``code`` carry ``code_exec``; DoIT's code items keep ``ppl_rank``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

QUESTION_FORMATS = ("generate", "rank")


@dataclass(frozen=True)
class Ability:
    """One ability: its registry name and how its items are asked and scored."""

    name: str
    display: str
    question_format: str  # "generate" | "rank"
    metric: str  # a name in doitray.eval.scorers.METRICS
    chance: float  # default chance level of one item (scorers may refine it per item)
    study: str = "custom"  # "doit" | "dmt" | "custom"
    description: str = ""
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.question_format not in QUESTION_FORMATS:
            raise ValueError(f"ability {self.name!r}: question_format must be one of {QUESTION_FORMATS}, "
                             f"got {self.question_format!r}")
        if not 0.0 <= self.chance <= 1.0:
            raise ValueError(f"ability {self.name!r}: chance must be in [0, 1], got {self.chance}")


_BUILTIN = [
    Ability("biology", "STEM – Biology", "generate", "choice", 0.25, "doit", "4-way exam multiple choice"),
    Ability("history", "Humanity – History", "generate", "choice_tf", 0.25, "doit",
            "4-way multiple choice and true/false"),
    Ability("code", "Code Generation", "rank", "ppl_rank", 1 / 3, "doit",
            "DoIT: pick the reference program among 3 candidates by perplexity; DMT: HumanEval pass@1 "
            "(those items carry meta.metric = code_exec)", aliases=("humaneval", "mbpp", "code_alpaca")),
    Ability("creative_writing", "Creative Writing", "rank", "ppl_rank", 1 / 3, "doit",
            "pick the reference text among 3 candidates by perplexity"),
    Ability("chinese", "Language Proficiency – Chinese", "generate", "choice_cloze", 0.25, "doit",
            "4-way multiple choice and single-blank cloze"),
    Ability("understanding", "Dialogue Understanding", "generate", "choice", 0.25, "doit",
            "3/4-way multiple choice about a dialogue"),
    Ability("role_play", "Role-play Chat", "rank", "ppl_rank", 1 / 3, "doit",
            "pick the in-character reply among 3 candidates by perplexity"),
    Ability("reasoning", "Logical Reasoning", "generate", "choice", 0.25, "doit", "4-way logic multiple choice"),
    Ability("math", "COT for Grad-Math", "generate", "math", 0.0, "doit",
            "chain of thought, final answer checked for equivalence"),
    Ability("ethics", "Ethics", "generate", "multi_choice", 1 / 6, "doit",
            "multi-answer multiple choice (chance 1/C(4,|gold|) per item)"),
    Ability("math_en", "Math (GSM8K)", "generate", "gsm8k", 0.0, "dmt", "grade-school math, numeric answer",
            aliases=("gsm8k", "gsm8k_rft")),
    Ability("general", "General (MT-Bench)", "generate", "judge", 0.0, "dmt",
            "open-ended chat, judged by an LLM", aliases=("sharegpt", "mt_bench")),
]

DOIT_ABILITIES: tuple[str, ...] = tuple(a.name for a in _BUILTIN if a.study == "doit")
DMT_ABILITIES: tuple[str, ...] = ("math_en", "code", "general")

_REGISTRY: dict[str, Ability] = {a.name: a for a in _BUILTIN}
_ALIASES: dict[str, str] = {alias: a.name for a in _BUILTIN for alias in a.aliases}


def register(ability: Ability, *, replace: bool = False) -> Ability:
    """Add an ability (e.g. one a study file declares); re-registering an identical one is a no-op."""
    old = _REGISTRY.get(ability.name)
    if old is not None and old != ability and not replace:
        raise ValueError(f"ability {ability.name!r} is already registered with different settings")
    _REGISTRY[ability.name] = ability
    return ability


def register_from_spec(name: str, *, metric: str, question_format: str = "generate", chance: float = 0.0,
                       display: str | None = None, description: str = "") -> Ability:
    """Register a study-declared ability from plain values."""
    return register(Ability(name, display or name.replace("_", " ").title(), question_format, metric, chance,
                            "custom", description))


def canonical(name: str) -> str:
    """The registry name for ``name`` or one of its aliases; raises with the known names otherwise."""
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise KeyError(f"unknown ability {name!r}; known: {', '.join(sorted(_REGISTRY))}")


def is_known(name: str) -> bool:
    return name in _REGISTRY or name in _ALIASES


def get(name: str) -> Ability:
    """The ability called ``name`` (or an alias of it)."""
    return _REGISTRY[canonical(name)]


def names() -> list[str]:
    """All registered ability names, builtin order first."""
    return list(_REGISTRY)
