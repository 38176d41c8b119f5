"""The scorer registry: one ``Scorer`` per metric (DoIT semantics unless stated) in ``SCORERS``.

Each entry says how an item is scored, what the engine must produce for it (``kind``), its default
generation budget and its chance level; the engine requests, the sandbox and judge passes and the metrics
an ability may name (``METRICS``, ``check_metric``) are all derived from it.

Which scorer an item gets (``item_metric``): ``meta["metric"]`` when set, else its ability's metric;
the per-item metrics ``choice_tf`` / ``choice_cloze`` (``PER_ITEM``) give ``choice`` when the gold is a letter
A–D (or an offered option), else ``tf`` / ``cloze`` (so a true/false gold ``F`` or ``X`` is true/false).

- ``choice``  single answer. A one-character reply is the answer as written (``B``; ``b``, ``E``, ``甲`` are
  wrong), as is one letter in brackets or with punctuation (``(B)``, ``B.``); otherwise the log-probabilities
  of the offered letters at the *first* answer token decide (DoIT used the last generation step — a known
  divergence of the engine, not of this scorer); with no logits, an explicit "答案是B" / "answer is B" /
  "B. <option>" is taken; anything else is wrong. Chance 1/number of options (``options_in``, default 4).
- ``tf``      true/false: 正确/对/T/True/√/✓/V vs 错误/错/不对/不正确/F/False/×/✗/X; only-true → T,
  only-false → F, both or neither → wrong (DoIT). English words count only as whole words. Chance 1/2.
- ``cloze``   the first CJK span of the reply equals the gold, punctuation around either ignored. Chance 0.
- ``multi_choice`` letter set on the last non-empty line (runs of A–F outside Latin words, "答案是AC" included)
  equals the gold set; chance 1/C(n, |gold|).
- ``math``    final answer (``math_answer.extract_answer``) equivalent to the gold's; chance 0.
- ``gsm8k``   as ``math`` with GSM8K's ``#### n`` gold; chance 0.
- ``exact``   final answer string equal after normalisation; chance 0.
- ``ppl_rank`` correct iff the gold (choice 0) has the lowest mean-token loss; ties count as correct
  (DoIT's ``min(ppl) == ppl[0]``); chance 1/number of choices.
- ``code_exec`` pass@k over the sandbox outcomes of the samples (unbiased estimator); chance 0.
- ``judge``   mean judge rating / 10 over the judgments; chance 0.

Where these scorers knowingly differ from DoIT's released scorer (``evaluate/utils.py``, ``parse_utils.py``,
``math_equivalence.py``) is ``DOIT_DIFFERENCES``, listed here; ``tests/eval/test_doit_conformance.py`` runs both
on the same responses and fails on any difference not in it:
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from doitray import abilities
from doitray.eval.math_answer import extract_answer, gsm8k_gold, is_equiv
from doitray.records import gold_text

LETTERS = "ABCDEF"


@dataclass
class ItemScore:
    score: float  # in [0, 1]
    parsed: str | None
    gold: str
    chance: float = 0.0  # set by ``score_item`` from the metric's ``Scorer.chance``
    error: str | None = None


@dataclass
class ModelOutput:
    """What the engine returned for one item (fields used depend on the metric)."""

    text: str | None = None
    letter_logprobs: dict[str, float] | None = None  # first answer token, letters only
    choice_losses: list[float] | None = None  # mean-token loss per choice (rank items)
    passed: list[bool] | None = None  # sandbox outcome per sample (code_exec)
    ratings: list[float] | None = None  # judge ratings (judge)
    samples: list[str] | None = None  # every sampled reply (code_exec with n > 1)
    note: str | None = None  # e.g. the sandbox's reason for a failed test
    error: str | None = None  # the item could not be evaluated (engine/prompt failure)


def meta_of(rec: dict) -> dict:
    m = rec.get("meta")
    if isinstance(m, dict):
        return m
    try:
        return json.loads(m) if m else {}
    except ValueError:
        return {}


# --- declared differences from DoIT's released scorer (appended to the module docstring) ---------------
DOIT_DIFFERENCES: dict[str, str] = {
    "choice_bracketed_letter": "choice: one letter in brackets or with punctuation (``(B)``, ``B.``, ``B。``) is "
                               "that letter; DoIT reads the logits for any reply longer than one character.",
    "choice_offered_letters": "choice: the logits are compared over the offered letters only (a 3-option item "
                              "never answers D); DoIT takes the argmax over A–D.",
    "chance_one_third": "choice: a 3-option item's chance is 1/3; DoIT writes 0.33.",
    "tf_whole_words": "tf: English true/false words count only as whole words (``true``, ``False``); DoIT finds "
                      "T/F/V/X inside any word (\"The statement is false\" is true for it).",
    "tf_negation": "tf: 不对 / 不正确 are false; DoIT counts the 对 / 正确 inside them as true.",
    "tf_not_tf_words": "tf: 对于, 对应, 针对, 相对, 面对, 对方, 对比, 绝对 are no true-word (\"对于…错误\" is false); "
                       "DoIT sees both a true and a false word.",
    "tf_marks": "tf: ✓/✔ and ✗/✘ count as true and false, besides DoIT's √ and ×.",
    "multi_latin_words": "multi_choice: capitals inside Latin words are no answer letters (the A of \"Answer: C\"); "
                         "DoIT reads every A–F on the line.",
    "cloze_punctuation": "cloze: punctuation around the answer is ignored on both sides (\"湖畔诗人。\", "
                         "\"“湖畔诗人”\" for 湖畔诗人; gold 《丽人行》); DoIT compares the reply's first CJK span "
                         "plus the punctuation after it with the raw gold.",
    "math_worked_gold": "math: a worked gold (\"98+30=128\") is reduced to its final answer; DoIT compares the "
                        "reply's final answer with the whole line, which no reply can match.",
    "math_letter_answer": "math: a letter answer (AGIEval items, \"答案是A\", \"ACD\") is read; DoIT reads only numbers "
                          "outside ``$…$`` / ``\\boxed``.",
    "math_numeric_value": "math: the same number written differently is equal (``11/15`` = ``(11/15)``, "
                          "``\\frac{5}{4}`` = ``1.25``, ``93.75%`` = ``93.75\\%`` = ``0.9375``, ``1,065`` = ``1065``, "
                          "``12元`` = ``12``), exactly; DoIT compares normalised strings (and cannot match "
                          "``(11/15)`` with itself, reading 15).",
    "math_bare_percent": "math: a bare ``%`` is dropped like ``\\%`` when comparing strings (\"93.75\" for a gold "
                         "\"93.75%\"); DoIT drops only ``\\%``.",
    "math_arithmetic": "math: a final answer that is plain arithmetic (``x=(585-265)/(82-78)``) is evaluated "
                       "exactly; DoIT compares the expression's text.",
}
__doc__ += "".join(f"\n- ``{name}``: {what}" for name, what in DOIT_DIFFERENCES.items()) + "\n"


# --- parsing ---------------------------------------------------------------------------------
# a line opening with a letter and a separator; "F、G、H、J是…" (a list of letters) is no option
_OPTION_LINE = re.compile(r"(?:^|\n)\s*([A-F])\s*(?:[.．:：)]|[、,，](?!\s*[A-Z]\s*[、,，]))")


def options_in(rec: dict) -> list[str]:
    """Option letters written in the last user turn (``\\nA. …``): the run A, B, C… that all occur (at least two),
    so a stem line opening with another letter ("F、G、H是…", "A、B两地…") adds none."""
    users = [m["content"] for m in rec["messages"] if m["role"] == "user"]
    found = set(_OPTION_LINE.findall(users[-1] if users else ""))
    run = 0
    while run < len(LETTERS) and LETTERS[run] in found:
        run += 1
    return list(LETTERS[:run]) if run >= 2 else []


def _one_char(text: str) -> str:
    return re.sub(r"^[\s(（\[【]+|[\s)）\]】.。．、:：,，]+$", "", text or "")


def parse_letter_text(text: str, letters: str = "ABCD") -> str | None:
    """The letter when the whole reply is one letter (brackets/punctuation allowed), else ``None``."""
    t = _one_char(text)
    return t if len(t) == 1 and t in letters else None


def parse_letter_loose(text: str, letters: str = "ABCD") -> str | None:
    """An explicitly stated answer letter ("答案是B", "answer is (B)", "B. <option>"), else ``None``."""
    t = (text or "").strip()
    cls = f"[{letters}]"
    m = re.match(rf"^\(?({cls})\)?\s*[.．、:：)]\s*\S", t)
    if m:
        return m.group(1)
    m = re.search(rf"(?:答案|正确选项|选项|应选|选择|answer)\s*(?:应该|应当)?\s*(?:是|为|选|is|:|：)?\s*[:：]?\s*[(（]?({cls})(?![A-Za-z])",
                  t, flags=re.IGNORECASE)
    return m.group(1) if m else None


def parse_choice(text: str | None, letter_logprobs: dict[str, float] | None,
                 letters: str = "ABCD") -> tuple[str | None, str]:
    """(letter, how): how is ``text`` | ``logits`` | ``loose`` | ``none``. A one-character reply is the answer as
    written, like DoIT's: ``b``, ``E`` or ``甲`` is wrong, whatever the logits say."""
    t = _one_char(text or "")
    if len(t) == 1:
        return (t, "text") if t in letters else (None, "none")
    if letter_logprobs:
        cand = {k: v for k, v in letter_logprobs.items() if k in letters and v is not None}
        if cand:
            return max(cand, key=lambda k: cand[k]), "logits"
    ll = parse_letter_loose(text or "", letters)
    return (ll, "loose") if ll else (None, "none")


_TRUE_ZH = ("正确", "对")
_FALSE_ZH = ("不正确", "不对", "错误", "错")
_NOT_TF_ZH = ("对于", "对应", "针对", "相对", "面对", "对方", "对比", "绝对")
_TRUE_EN = re.compile(r"(?<![A-Za-z])(?:T|TRUE|True|true|V)(?![A-Za-z])|[√✓✔]")
_FALSE_EN = re.compile(r"(?<![A-Za-z])(?:F|FALSE|False|false|X)(?![A-Za-z])|[×✗✘]")


def parse_tf(text: str | None) -> str | None:
    """``T`` / ``F`` when only true-words / only false-words occur; ``None`` when both or neither."""
    t = text or ""
    for w in _NOT_TF_ZH:
        t = t.replace(w, " ")
    has_false = False
    for w in _FALSE_ZH:  # longest first, removed so 不对 does not also count as 对
        if w in t:
            has_false = True
            t = t.replace(w, " ")
    has_true = any(w in t for w in _TRUE_ZH)
    has_true = has_true or bool(_TRUE_EN.search(t))
    has_false = has_false or bool(_FALSE_EN.search(t))
    if has_true == has_false:
        return None
    return "T" if has_true else "F"


_CJK = re.compile(r"[\u4e00-\u9fff]+")


def first_cjk_span(text: str | None) -> str | None:
    m = _CJK.search(text or "")
    return m.group(0) if m else None


def strip_punct(text: str | None) -> str:
    """``text`` without the spaces and punctuation around it (《鲁鲁》 → 鲁鲁)."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", text or "")


def parse_letter_set(text: str | None, letters: str = LETTERS) -> frozenset[str]:
    """Letters on the last non-empty line ("ACD", "A, C", "选A和C", "答案是AC"): every run of answer letters not
    inside a Latin word (the A of "Answer" is none; letters glued to Chinese text are)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return frozenset()
    runs = re.findall(rf"(?<![A-Za-z])[{letters}]+(?![A-Za-z])", lines[-1])
    return frozenset("".join(runs))


# --- metric resolution --------------------------------------------------------------------------
def item_metric(rec: dict) -> str:
    """The scorer for ``rec``: meta.metric, else the ability's metric, with choice_tf/choice_cloze resolved."""
    meta = meta_of(rec)
    metric = meta.get("metric")
    if not metric:
        metric = abilities.get(rec["ability"]).metric if abilities.is_known(rec["ability"]) else "exact"
    if metric in PER_ITEM:
        return "choice" if _is_choice_gold(rec) else PER_ITEM[metric]
    return metric


def _is_choice_gold(rec: dict) -> bool:
    """A per-item gold is a choice letter when it is A–D or an offered option; ``F``/``T``/``X``/``V`` are
    otherwise true/false words (DoIT: ``label in ['A','B','C','D']``)."""
    g = parse_letter_text(gold_text(rec).strip(), LETTERS)
    return g is not None and (g in "ABCD" or g in options_in(rec))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 − C(n−c, k)/C(n, k)."""
    if n <= 0:
        return 0.0
    k = min(k, n)
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _norm_exact(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().strip("。.！!").casefold())


def score_item(rec: dict, out: ModelOutput, *, metric: str | None = None, k: int = 1) -> ItemScore:
    """Score one item from the model's output; an engine error or a missing field scores 0 with an error."""
    metric = metric or item_metric(rec)
    gold = gold_text(rec)
    sc = SCORERS.get(metric)
    if sc is None:
        return ItemScore(0.0, None, gold, 0.0, out.error or f"unknown metric {metric!r}; allowed: {', '.join(SCORERS)}")
    if out.error:
        return ItemScore(0.0, None, gold, sc.chance(rec), out.error)
    try:
        s = sc.fn(rec, out, gold, k)
        s.chance = sc.chance(rec)
    except KeyError as e:
        return ItemScore(0.0, None, gold, 0.0, f"unscorable: missing {e}")
    return s


# --- chance levels -----------------------------------------------------------------------------
def _zero(rec: dict) -> float:
    return 0.0


def _half(rec: dict) -> float:
    return 0.5


def _chance_choice(rec: dict) -> float:
    return 1.0 / max(2, len(options_in(rec)) or 4)


def _chance_rank(rec: dict) -> float:
    return 1.0 / max(1, len(rec.get("choices") or [None] * 3))


def _chance_multi(rec: dict) -> float:
    n = max(4, len(options_in(rec)))
    g = len(parse_letter_set(gold_text(rec))) or 1
    return 1.0 / math.comb(n, g)


# --- scorers (the chance level is filled in by score_item) ---------------------------------------
def _choice(rec, out, gold, k):
    g = parse_letter_text(gold, LETTERS)
    if g is None:
        return ItemScore(0.0, None, gold, error=f"gold {gold!r} is not a single letter")
    letters = "".join(sorted(set(options_in(rec) or "ABCD") | {g}))
    if meta_of(rec).get("choice_mode") == "logits" and out.letter_logprobs:  # CMMLU/AGIEval: next-token argmax
        pred, how = parse_choice("", out.letter_logprobs, letters)
    else:
        pred, how = parse_choice(out.text, out.letter_logprobs, letters)
    parsed = None if pred is None else (pred if how == "text" else f"{pred} ({how})")
    return ItemScore(float(pred == g), parsed, g)


def _tf(rec, out, gold, k):
    g = parse_tf(gold)
    if g is None:
        return ItemScore(0.0, None, gold, error=f"gold {gold!r} is neither a true nor a false word")
    p = parse_tf(out.text)
    return ItemScore(float(p == g), p, g)


def _cloze(rec, out, gold, k):
    g = strip_punct(gold)
    p = first_cjk_span(out.text) or strip_punct(out.text)
    return ItemScore(float(p == g), p, g)


def _multi(rec, out, gold, k):
    g = parse_letter_set(gold)
    if not g:
        return ItemScore(0.0, None, gold, error=f"gold {gold!r} has no answer letters")
    p = parse_letter_set(out.text)
    return ItemScore(float(p == g), "".join(sorted(p)), "".join(sorted(g)))


def math_gold(rec: dict) -> str:
    """The gold final answer of a math item: ``answer``, reduced to its final answer when it is a worked line."""
    g = (rec.get("answer") or gold_text(rec)).strip()
    if "####" in g or "答案" in g or "\\boxed" in g or "=" in g or "$" in g:
        return extract_answer(g)
    return g


def _math(rec, out, gold, k):
    g = math_gold(rec)
    p = extract_answer(out.text or "")
    return ItemScore(float(is_equiv(p, g)), p, g)


def _gsm8k(rec, out, gold, k):
    g = gsm8k_gold(rec.get("answer") or gold_text(rec))
    p = extract_answer(out.text or "")
    return ItemScore(float(is_equiv(p, g)), p, g)


def _exact(rec, out, gold, k):
    g = _norm_exact(rec.get("answer") or gold)
    p = _norm_exact(out.text or "")
    return ItemScore(float(p == g), p, g)


def _rank(rec, out, gold, k):
    losses = out.choice_losses
    choices = rec.get("choices") or []
    if not losses or len(losses) != len(choices) or len(losses) < 2:
        return ItemScore(0.0, None, "0", error=f"need one loss per choice ({len(choices)}), got "
                                               f"{None if losses is None else len(losses)}")
    best = min(losses)
    pred = losses.index(best)
    return ItemScore(float(losses[0] <= best), str(0 if losses[0] <= best else pred), "0")


def _code(rec, out, gold, k):
    passed = out.passed
    if not passed:
        return ItemScore(0.0, None, "pass", error="no sandbox outcome")
    c = sum(bool(p) for p in passed)
    note = f" ({out.note})" if out.note and c < len(passed) else ""
    return ItemScore(pass_at_k(len(passed), c, k), f"{c}/{len(passed)} passed{note}", "pass")


def _judge(rec, out, gold, k):
    if not out.ratings:
        return ItemScore(0.0, None, "", error="no judge rating could be parsed")
    mean = sum(out.ratings) / len(out.ratings)
    return ItemScore(min(1.0, max(0.0, mean / 10.0)), f"{mean:.2f}/10 over {len(out.ratings)}", "")


# --- the registry ------------------------------------------------------------------------------
KINDS = ("generate", "letters", "rank", "code", "judge")


@dataclass(frozen=True)
class Scorer:
    """One metric. ``kind``: what the engine produces for it — ``generate`` (a greedy reply), ``letters`` (a
    reply and the option letters' log-probabilities at the first answer token), ``rank`` (a loss per choice,
    nothing generated), ``code`` (``samples`` replies run in the sandbox), ``judge`` (a reply rated by a
    judge model). ``max_tokens``: the generation budget when the suite sets none (0 for ``rank``)."""

    name: str
    fn: Callable[[dict, ModelOutput, str, int], ItemScore]
    kind: str
    max_tokens: int
    chance: Callable[[dict], float]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"scorer {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")


SCORERS: dict[str, Scorer] = {sc.name: sc for sc in (
    Scorer("choice", _choice, "letters", 16, _chance_choice),
    Scorer("tf", _tf, "generate", 16, _half),
    Scorer("cloze", _cloze, "generate", 16, _zero),
    Scorer("multi_choice", _multi, "generate", 16, _chance_multi),
    Scorer("math", _math, "generate", 512, _zero),
    Scorer("gsm8k", _gsm8k, "generate", 512, _zero),
    Scorer("exact", _exact, "generate", 128, _zero),
    Scorer("ppl_rank", _rank, "rank", 0, _chance_rank),
    Scorer("code_exec", _code, "code", 512, _zero),
    Scorer("judge", _judge, "judge", 512, _zero),
)}
# per-item metrics an ability may name: ``choice`` when the item's gold is one letter, else this scorer
PER_ITEM = {"choice_tf": "tf", "choice_cloze": "cloze"}
METRICS = (*SCORERS, *PER_ITEM)  # every metric an ability or an item's meta.metric may name


def check_metric(metric: str, field: str = "metric") -> str:
    """``metric`` when it is in ``METRICS``; otherwise a ``ValueError`` naming ``field`` and the allowed values."""
    if metric not in METRICS:
        raise ValueError(f"{field}: unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    return metric


def parse_rating(text: str | None) -> float | None:
    """An MT-Bench judge's ``[[r]]`` (or ``Rating: r``) in 1–10."""
    m = re.search(r"\[\[(\d+(?:\.\d+)?)\]\]", text or "") or re.search(r"[Rr]ating:?\s*\[?(\d+(?:\.\d+)?)", text or "")
    if not m:
        return None
    v = float(m.group(1))
    return v if 0 <= v <= 10 else None


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
