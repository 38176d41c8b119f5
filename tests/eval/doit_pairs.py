"""(item, response) pairs from the DoIT-format test split, scored by DoIT's released scorer and by doitray's.

``load_reference`` imports DoIT's ``evaluate/`` files from ``../shared/reference/doit-eval`` (never copied here)
and its LLaMA tokenizer. ``build_rows`` takes the real test rows and derives, deterministically, the item kinds the
split lacks (true/false history items, Chinese cloze items, multi-answer ethics items); ``read_items`` reads them
back through doitray's DoIT reader, as a study does. ``responses`` yields the answer shapes a model writes for an
item; ``score_pair`` scores one pair both ways; ``explain`` names the declared differences
(``scorers.DOIT_DIFFERENCES``) a disagreeing pair shows. Everything follows from the rows: no randomness.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from doitray.data.sources import SourceSpec, read_sources
from doitray.eval.scorers import SCORERS, ModelOutput, item_metric, options_in, score_item

SHARED_DATA = Path(os.environ.get("DOITRAY_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
REFERENCE = SHARED_DATA.parent / "reference" / "doit-eval"  # DoIT's evaluate/ files (MIT), as the authors wrote them
TOKENIZER = SHARED_DATA / "tokenizers" / "chinese-llama-plus"
TEST_SPLIT = SHARED_DATA / "doit-format" / "test"
# DoIT's ten abilities; math_en (GSM8K) is the DMT study's and has no DoIT scorer.
DOIT_TYPES = ("biology", "chinese", "code", "creative_writing", "ethics", "history", "math", "reasoning",
              "role_play", "understanding")
TRUE_WORDS = ("正确", "对", "T", "√", "V")  # DoIT's label sets (utils.history_score)
FALSE_WORDS = ("错误", "错", "F", "×", "X")
MULTI_GOLDS = ("AC", "BCD", "ABD", "AB", "CD", "ABCD", "AD", "BC")


def missing_reference() -> str | None:
    """Why the conformance check cannot run here, or ``None``."""
    for p, what in ((REFERENCE / "utils.py", "DoIT's scorer files"), (TOKENIZER / "tokenizer.model", "the tokenizer"),
                    (TEST_SPLIT, "the DoIT-format test split")):
        if not p.exists():
            return f"{what} absent: {p} (it sits beside the checkout in dev and CI)"
    if importlib.util.find_spec("sentencepiece") is None:  # LlamaTokenizer reads tokenizer.model with it
        return "sentencepiece is not installed (it comes with vLLM: pip install -e '.[cpu]')"
    return None


@dataclass
class Reference:
    utils: object  # DoIT's evaluate/utils.py
    tokenizer: object
    letter_ids: dict[str, int]
    vocab: int


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    with warnings.catch_warnings():  # their regexes are plain strings with "\d": not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        spec.loader.exec_module(mod)
    return mod


def load_reference(tmp: Path) -> Reference:
    """DoIT's scorer modules (``parse_utils`` imports ``math_equivalence`` by name) and its tokenizer."""
    import shutil

    from transformers import LlamaTokenizer

    sys.path.insert(0, str(REFERENCE))
    try:
        _load("math_equivalence", REFERENCE / "math_equivalence.py")
        _load("parse_utils", REFERENCE / "parse_utils.py")
        utils = _load("doit_eval_utils", REFERENCE / "utils.py")  # not "utils": too common a top-level name
    finally:
        sys.path.remove(str(REFERENCE))
    tok_dir = tmp / "eval-tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOKENIZER / "tokenizer.model", tok_dir / "tokenizer.model")  # from_pretrained wants a folder
    tok = LlamaTokenizer.from_pretrained(str(tok_dir))
    ids = {L: tok.encode(L, add_special_tokens=False)[0] for L in "ABCDEF"}
    return Reference(utils, tok, ids, len(tok))


# --- items --------------------------------------------------------------------------------------------------
def _h(*parts: str) -> int:
    return int(hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:8], 16)


_OPTION = re.compile(r"\n([A-D])\.\s*([^\n]*)")


def _stem_and_options(user: str) -> tuple[str, dict[str, str]]:
    opts = dict(_OPTION.findall(user))
    return user.split("\nA.")[0], opts


def build_rows(split_dir: Path = TEST_SPLIT) -> dict[str, list[dict]]:
    """DoIT rows per type: the real test rows plus derived true/false, cloze and multi-answer items."""
    out: dict[str, list[dict]] = {}
    for t in DOIT_TYPES:
        rows = [json.loads(line) for line in open(split_dir / f"{t}.json", encoding="utf-8") if line.strip()]
        extra: list[dict] = []
        for i, r in enumerate(rows):
            user, gold = r["messages"][0]["content"], r["messages"][-1]["content"]
            stem, opts = _stem_and_options(user)
            if t == "history" and gold in opts:  # a true and a false statement, labels cycling over DoIT's sets
                wrong = sorted(L for L in opts if L != gold)[i % 3] if len(opts) == 4 else None
                for k, (L, words) in enumerate(((gold, TRUE_WORDS), (wrong, FALSE_WORDS))):
                    if L:
                        extra.append(_derived(r, f"tf{k}", f"判断正误：{stem}{opts[L]}", words[(i + k) % 5]))
            if t == "chinese" and gold in opts and re.search(r"[\u4e00-\u9fff]", opts[gold]):
                extra.append(_derived(r, "cloze", f"{stem}____（填空）", opts[gold].strip()))
            if t == "ethics":
                for k in range(2):
                    extra.append(_derived(r, f"multi{k}", user, MULTI_GOLDS[(2 * i + k) % len(MULTI_GOLDS)]))
        out[t] = rows + extra
    return out


def _derived(row: dict, tag: str, user: str, gold: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": gold}],
            "type": row["type"], "idx": f"{row['idx']}~{tag}", "question_format": 0, "source": "derived"}


def read_items(rows: dict[str, list[dict]], tmp: Path) -> list[tuple[dict, dict]]:
    """(DoIT row, doitray record) pairs: the rows written in the DoIT layout and read by doitray's reader."""
    root = tmp / "doit"
    (root / "test").mkdir(parents=True, exist_ok=True)
    by_idx: dict[str, dict] = {}
    for t, rs in rows.items():
        with open(root / "test" / f"{t}.json", "w", encoding="utf-8") as f:
            for r in rs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                by_idx[f"{t}\x1f{r['idx']}"] = r
    recs, _ = read_sources([SourceSpec(name="doit", format="doit", path=str(root))], tmp / "cache")
    return [(by_idx[f"{r['ability']}\x1f{json.loads(r['meta'])['idx']}"], r) for r in recs]


# --- responses ----------------------------------------------------------------------------------------------
@dataclass
class Pair:
    row: dict
    rec: dict
    shape: str  # the generator's name for the answer shape
    text: str | None = None
    letters: dict[str, float] | None = None  # log-probability of each letter A–D (the engine's first token)
    losses: list[float] | None = None  # rank items
    intent: bool | None = None  # whether the reply states the gold answer, where the generator knows it


def kind_of(row: dict) -> str:
    gold, t = row["messages"][-1]["content"], row["type"]
    if t in ("code", "creative_writing", "role_play"):
        return "rank"
    if t == "math":
        return "math"
    if t == "ethics":
        return "multi"
    if gold in ("A", "B", "C", "D"):
        return "choice"
    return "tf" if t == "history" else "cloze"


def _letter_dicts(gold: str, offered: str) -> list[tuple[str, dict[str, float]]]:
    """Letter log-probabilities: gold on top; a wrong offered letter on top; D on top for a 3-option item."""
    def ranked(order: str) -> dict[str, float]:
        lp = {L: -2.0 - 0.5 * k for k, L in enumerate(order)}
        lp[order[0]] = -0.2
        return dict(sorted(lp.items()))

    rest = [L for L in "ABCD" if L != gold]
    wrong = next(L for L in offered if L != gold)
    out = [("lp=gold", ranked(gold + "".join(rest))),
           ("lp=wrong", ranked(wrong + gold + "".join(L for L in rest if L != wrong)))]
    if "D" not in offered:
        out.append(("lp=D", ranked("D" + gold + "".join(L for L in rest if L != "D"))))
    return out


def _choice_texts(row: dict, offered: str) -> list[tuple[str, str]]:
    g = row["messages"][-1]["content"]
    w = next(L for L in offered if L != g)
    _, opts = _stem_and_options(row["messages"][-2]["content"])
    return [("letter", g), ("letter_wrong", w), ("letter_spaced", f" {g} "), ("letter_paren", f"({g})"),
            ("letter_fullparen", f"（{g}）"), ("letter_dot", f"{g}."), ("letter_cjkstop", f"{g}。"),
            ("letter_option", f"{g}. {opts.get(g, '')}"), ("said_zh", f"答案是{g}"), ("said_zh_wrong", f"答案是{w}"),
            ("choose_zh", f"选{g}"), ("said_en", f"The answer is {g}."), ("said_zh_reason", f"我认为答案是{g}，因为……"),
            ("two_letters", f"{g}和{w}"), ("empty", ""), ("refuse", "我不知道"), ("lowercase", g.lower()),
            ("letter_e", "E"), ("one_cjk", "甲")]


def _tf_texts(row: dict) -> list[tuple[str, str, str | None]]:
    """(shape, reply, what the reply says: T, F or None)."""
    words = [(f"word:{w}", w, "T" if w in TRUE_WORDS else "F") for w in TRUE_WORDS + FALSE_WORDS]
    return words + [("True", "True", "T"), ("False", "False", "F"), ("true", "true", "T"), ("false", "false", "F"),
                    ("en_sentence_false", "The statement is false.", "F"),
                    ("en_sentence_true", "The statement is true.", "T"), ("不对", "不对", "F"), ("不正确", "不正确", "F"),
                    ("sentence_true", "这个说法是正确的。", "T"), ("对于…错误", "对于这个问题，错误", "F"),
                    ("both", "正确还是错误", None), ("check", "✓", "T"), ("cross", "✗", "F"), ("unsure", "我不确定", None),
                    ("empty", "", None), ("对的", "对的", "T"), ("错的", "错的", "F")]


def _cloze_texts(row: dict, wrong: str) -> list[tuple[str, str]]:
    g = row["messages"][-1]["content"]
    first = re.match(r"[\u4e00-\u9fff]+", g)
    out = [("gold", g), ("gold_stop", g + "。"), ("answer_prefix", "答：" + g), ("gold_spaced", f"  {g}  "),
           ("gold_then_more", g + "。因为原文如此"), ("copula", "是" + g), ("wrong", wrong), ("empty", ""),
           ("english", "I don't know"), ("quoted", f"“{g}”")]
    if first and first.group(0) != g:
        out.append(("gold_first_span", first.group(0)))
    return out


def _multi_texts(row: dict) -> list[tuple[str, str]]:
    s = "".join(sorted(row["messages"][-1]["content"]))
    w = "".join(sorted(set("ABCD") - set(s))) or "A"
    right = [("set", s), ("set_dunhao", "、".join(s)), ("set_comma_rev", ", ".join(reversed(s))),
             ("said_glued", f"答案是{s}"), ("choose_glued", f"选{s}"), ("said_he", "答案：" + "和".join(s)),
             ("reason_then_said", f"理由如下……\n答案：{s}"), ("en_and", "I choose " + " and ".join(s)),
             ("en_answer", f"Answer: {s}"), ("parens", "".join(f"({x})" for x in s)), ("spaced", " ".join(s))]
    wrong = [("set_then_doubt", f"{s}\n不过我觉得是{w}"), ("wrong_set", w), ("said_wrong", f"答案是{w}"),
             ("refuse", "我不知道"), ("lowercase", s.lower())]
    return [(a, b, True) for a, b in right] + [(a, b, False) for a, b in wrong]


def _num(s: str) -> Fraction | None:
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else format(float(x), ".10g")


def _math_texts(row: dict) -> list[tuple[str, str]]:
    g = str(row.get("answer", "")).strip()
    ref = row["messages"][-1]["content"]
    out = [("gold", g), ("said", "答案：" + g), ("said_shi", "答案是" + g), ("boxed", f"所以 \\boxed{{{g}}}"),
           ("dollars", f"所以答案是 ${g}$"), ("sentence", f"所以一共是{g}。"), ("refuse", "我不知道"), ("empty", "")]
    if ref != g:
        out.append(("reference", ref))
    eq = re.search(r"列式：(x=[^\n]+)", ref)
    if eq:
        out += [("equation", eq.group(1)), ("equation_line", "列式：" + eq.group(1))]
    if "=" in g:  # a worked gold "98+30=128"
        out += [("worked_rhs", g.rsplit("=", 1)[1]), ("worked_rhs_said", "答案：" + g.rsplit("=", 1)[1])]
    if g in ("A", "B", "C", "D"):
        out += [("letter_paren", f"({g})"), ("letter_wrong", "B" if g != "B" else "C")]
    m = re.fullmatch(r"\((\d+)/(\d+)\)", g)
    if m:
        a, b = m.groups()
        out += [("frac_bare", f"{a}/{b}"), ("frac_latex", f"\\frac{{{a}}}{{{b}}}"),
                ("frac_dollars", f"答案是 ${a}/{b}$"), ("frac_wrong", f"({int(a) + 1}/{b})")]
        v = Fraction(int(a), int(b))
        if 10 ** 6 % v.denominator == 0:
            out.append(("frac_decimal", _fmt(v)))
    if g.endswith("%") and _num(g[:-1]) is not None:
        out += [("percent_latex", g[:-1] + "\\%"), ("percent_decimal", _fmt(_num(g[:-1]) / 100))]
    v = _num(g)
    if v is not None:
        out += [("unit", f"{g}元"), ("plus_one", _fmt(v + 1)), ("near_miss", _fmt(v) + "0000001"
                                                                  if v.denominator != 1 else f"{v}.0000001")]
        if v.denominator == 1 and abs(v) >= 1000:
            out += [("thousands", f"{int(v):,}"), ("thousands_sentence", f"一共是{int(v):,}元。")]
        if v.denominator == 1 and abs(v) >= 10 ** 8:
            out.append(("near_miss_int", str(v + 1)))
    return out


_RANK_LOSSES = (("gold_lowest", [1.0, 2.0, 3.0]), ("neg_lowest", [2.0, 1.0, 3.0]), ("tie_gold", [1.0, 1.0, 3.0]),
                ("tie_negs", [2.0, 1.0, 1.0]), ("all_equal", [1.5, 1.5, 1.5]))


def responses(row: dict, rec: dict) -> list[Pair]:
    """Every generated pair for one item."""
    kind = kind_of(row)
    if kind == "rank":
        return [Pair(row, rec, s, losses=ls) for s, ls in _RANK_LOSSES]
    if kind == "choice":
        offered = "".join(options_in(rec)) or "ABCD"
        gold = row["messages"][-1]["content"]
        return [Pair(row, rec, f"{s}/{ls}", text=t, letters=lp)
                for s, t in _choice_texts(row, offered) for ls, lp in _letter_dicts(gold, offered)]
    if kind == "tf":
        gold = "T" if row["messages"][-1]["content"] in TRUE_WORDS else "F"
        return [Pair(row, rec, s, text=t, intent=says == gold) for s, t, says in _tf_texts(row)]
    if kind == "cloze":
        return [Pair(row, rec, s, text=t) for s, t in _cloze_texts(row, "错误答案")]
    if kind == "multi":
        return [Pair(row, rec, s, text=t, intent=ok) for s, t, ok in _multi_texts(row)]
    return [Pair(row, rec, s, text=t) for s, t in _math_texts(row)]


def all_pairs(items: list[tuple[dict, dict]], every: int = 1) -> list[Pair]:
    """Pairs of about every ``every``-th item (by a hash of its idx, so the subset is stable), and of the first item
    of each (kind, gold shape) — a letter, a percent, a bracketed fraction, a worked gold… — so every shape is in."""
    seen: set[tuple[str, str]] = set()
    out: list[Pair] = []
    for row, rec in items:
        gold = str(row.get("answer") or row["messages"][-1]["content"])
        stratum = (kind_of(row), re.sub(r"[\u4e00-\u9fff]+", "字", re.sub(r"\d+", "9", gold))[:12])
        if every == 1 or _h(str(row["idx"])) % every == 0 or stratum not in seen:
            out += responses(row, rec)
        seen.add(stratum)
    return out


# --- scoring ------------------------------------------------------------------------------------------------
@dataclass
class Scored:
    pair: Pair
    doit: tuple[float, float]  # (score, chance) by DoIT's scorer
    ours: tuple[float, float]  # (score, chance) by doitray's
    parsed: str | None

    @property
    def agrees(self) -> bool:
        return self.doit[0] == self.ours[0] and abs(self.doit[1] - self.ours[1]) < 1e-9


def doit_score(ref: Reference, p: Pair) -> tuple[float, float]:
    """DoIT's score and chance for the pair (``scorer.py``'s dispatch and perplexity-rank rule)."""
    if p.losses is not None:  # scorer.py: question_format 1
        return float(min(p.losses) == p.losses[0]), 1.0 / 3
    sample = dict(p.row, generated_response=p.text)
    vec = np.zeros(ref.vocab, dtype=np.float32)
    for L, v in (p.letters or {}).items():
        vec[ref.letter_ids[L]] = v
    sample["generated_score"] = vec
    r = getattr(ref.utils, f"{p.row['type']}_score")(sample, tokenizer=ref.tokenizer)
    return float(r["score"]), float(r["score_expected"])


def ours_score(p: Pair) -> tuple[tuple[float, float], str | None]:
    """doitray's score and chance, with the engine's letters: those the question offers (evaluate.py)."""
    rec = p.rec
    out = ModelOutput(text=p.text, choice_losses=p.losses)
    if SCORERS[item_metric(rec)].kind == "letters" and p.letters:
        out.letter_logprobs = {L: p.letters.get(L) for L in (options_in(rec) or list("ABCD"))}
    s = score_item(rec, out)
    assert s.error is None, (p.row["idx"], p.shape, s.error)
    return (s.score, s.chance), s.parsed


def score_pair(ref: Reference, p: Pair) -> Scored:
    ours, parsed = ours_score(p)
    return Scored(p, doit_score(ref, p), ours, parsed)


# --- classifying a difference into DOIT_DIFFERENCES -----------------------------------------------------------
# Each predicate says whether the named declared difference explains a pair where DoIT and doitray disagree on
# the score. They re-derive the expected readings from the reply itself (and, for math, an independent SymPy
# evaluation), so a doitray bug that happens to differ from DoIT is not explained away.
_ONE_LETTER = re.compile(r"\s*[(（\[【]?\s*([A-D])\s*[)）\]】]?\s*[.。．、:：,，]?\s*")
_NOT_TF = ("对于", "对应", "针对", "相对", "面对", "对方", "对比", "绝对")


def _argmax(lp: dict[str, float], letters: str) -> str:
    return max((L for L in letters if L in lp), key=lambda L: lp[L])


def _ends_stripped(s: str) -> str:
    return re.sub(r"^[^\w]+|[^\w]+$", "", s or "")


def _value(s: str | None):
    """An exact SymPy value of a final answer (number, fraction, percent, \\frac, mixed number, arithmetic)."""
    import sympy

    if not s:
        return None
    t = s.strip().replace("$", "").replace("\\%", "%").replace("\\left", "").replace("\\right", "")
    t = re.sub(r"[\u4e00-\u9fff。．]+$", "", t).strip()
    t = re.sub(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}", r"((\1)/(\2))", t)
    t = re.sub(r"(?<!\d)(\d{1,3}(?:,\d{3})+)(?![\d,])", lambda m: m.group(1).replace(",", ""), t)
    t = re.sub(r"(?<![\d.])(\d+)\((\d+/\d+)\)", r"(\1+\2)", t)  # Ape210K's 14(1/2)
    t = re.sub(r"(\d+(?:\.\d+)?)%", r"(\1/100)", t).replace("×", "*").replace("÷", "/").replace("^", "**")
    if not re.fullmatch(r"[\d\s.+\-*/()]+", t):
        return None
    try:
        v = sympy.sympify(t, rational=True)
    except (sympy.SympifyError, SyntaxError, TypeError, ZeroDivisionError):
        return None
    return v if v.is_Rational else None


def _same_value(a: str | None, b: str | None) -> bool:
    va, vb = _value(a), _value(b)
    return va is not None and va == vb


def _is_arith(s: str | None) -> bool:
    return bool(re.search(r"[\d)]\s*(?:[+\-*×÷^]|\*\*)\s*[\d(]|\)\s*/\s*\(", s or ""))


def _math_gold(p: Pair) -> str:
    return str(p.row.get("answer", "")).strip()


def _our_answer(p: Pair) -> str:
    from doitray.eval.math_answer import extract_answer

    return extract_answer(p.text or "")


def explain(ref: Reference, sc: Scored) -> list[str]:
    """The declared differences explaining a disagreeing pair (empty when none does: an undeclared difference)."""
    p, kind, text = sc.pair, kind_of(sc.pair.row), sc.pair.text or ""
    gold = p.row["messages"][-1]["content"]
    d, o = sc.doit[0], sc.ours[0]
    found: list[str] = []
    if abs(sc.doit[1] - sc.ours[1]) > 1e-9:
        if kind == "choice" and sc.doit[1] == 0.33 and abs(sc.ours[1] - 1 / 3) < 1e-12:
            found.append("chance_one_third")
        else:
            return []
    if d == o:
        return found
    why = None
    if kind == "choice":
        offered = "".join(options_in(p.rec)) or "ABCD"
        m = _ONE_LETTER.fullmatch(text)
        if len(text.strip()) > 1 and m and o == (m.group(1) == gold) and d == (_argmax(p.letters, "ABCD") == gold):
            why = "choice_bracketed_letter"
        elif (len(text.strip()) != 1 and len(offered) < 4 and _argmax(p.letters, "ABCD") not in offered
              and o == (_argmax(p.letters, offered) == gold)):
            why = "choice_offered_letters"
    elif kind == "tf" and o == p.intent:
        if "不对" in text or "不正确" in text:
            why = "tf_negation"
        elif any(w in text for w in _NOT_TF):
            why = "tf_not_tf_words"
        elif re.search(r"[A-Za-z]{2,}", text):
            why = "tf_whole_words"
        elif re.search("[✓✔✗✘]", text):
            why = "tf_marks"
    elif kind == "multi" and o == p.intent:
        last = [ln for ln in text.splitlines() if ln.strip()][-1:]
        if last and re.search(r"[A-Za-z]*[A-F][A-Za-z]*", last[0]) and re.search(r"[A-Z][a-z]|[a-z][A-Z]", last[0]):
            why = "multi_latin_words"
    elif kind == "cloze":
        span = ref.utils.parse_utils.parse_single_cloze_zh(text)
        if o == 1 and _ends_stripped(span) == _ends_stripped(gold):
            why = "cloze_punctuation"
    elif kind == "math" and o == 1 and d == 0:
        g, ours = _math_gold(p), _our_answer(p)
        if "=" in g:
            rhs = g.rsplit("=", 1)[1].strip()
            if ours == rhs or _same_value(ours, rhs):
                why = "math_worked_gold"
        elif re.fullmatch(r"[A-F]+", g):
            if ours == g:
                why = "math_letter_answer"
        elif _same_value(ours, g):
            why = "math_arithmetic" if _is_arith(ours) else "math_numeric_value"
        elif "%" in g + ours and _same_value(*(re.sub(r"\\?%", "", x) for x in (ours, g))):
            why = "math_bare_percent"
    return found + [why] if why else []
