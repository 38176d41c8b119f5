"""Final-answer extraction and equivalence for math items (DoIT math, GSM8K).

Extraction follows DoIT's ``parse_utils`` order, plus GSM8K's ``#### n``:

1. ``#### n`` (GSM8K) → ``n``;
2. text after the last ``答案`` ("answer") marker, when there is one;
3. the last ``\\boxed{…}`` / ``\\fbox{…}`` (right-hand side of an ``=`` inside it);
4. else "The answer is X" (at the end of a line);
5. else the last one-line ``$…$`` (right-hand side of ``=``);
6. else a short bare answer (a number, ``a/b``, ``sqrt(..)``, a tuple, a comma list, a letter, arithmetic) as is;
7. else the right-hand side of an ``=`` on the last line when it is a short expression or plain arithmetic, else
   the last number or fraction (``(11/15)`` whole);
8. ``或`` ("or") becomes ``, `` and ``$`` is dropped.

Equivalence is Hendrycks-MATH's string normalisation (``\\frac``, ``\\sqrt``, units, spaces, ``tfrac``,
``\\left``…) and, beyond it, exact numeric comparison (no tolerance: 111111112 is not 111111111) of values that
parse as numbers (``\\frac{1}{2}`` = ``0.5`` = ``1/2`` = ``50%``; thousands separators; a trailing unit word such
as ``元`` or ``dollars``; plain arithmetic such as ``2010-1000+2`` or ``(585-265)/(82-78)`` and Ape210K mixed
numbers ``14(1/2)`` evaluated exactly).
"""
from __future__ import annotations

import re
from fractions import Fraction

# the last-number fallback: a fraction "(11/15)" / "11/15" counts whole, and a minus right after a digit or ")"
# is subtraction, not a sign ("(82-78)" holds no -78)
_NUM_RE = re.compile(r"\(\s*-?\d+(?:\.\d+)?\s*/\s*\d+(?:\.\d+)?\s*\)"
                     r"|(?:(?<![\d)])-)?(?:\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|\.\d+)")
_SIMPLE = re.compile(
    r"^\s*(?:[A-Fa-f]|[-+]?\d[\d,]*(?:\.\d+)?%?|[-+]?\d+\s*/\s*\d+|\(?-?\d+(?:\.\d+)?\s*/\s*\d+\)?"
    r"|-?\d*\s*sqrt\(?\d+\)?|\\?sqrt\{?\d+\}?|[\(\[]\s*-?[\d./]+(?:\s*,\s*-?[\d./]+)+\s*[\)\]]"
    r"|-?[\d./]+(?:\s*,\s*-?[\d./]+)+)\s*[。.．]?\s*$")


_SAID = re.compile(r"(?:the (?:final )?answer is|answer:)\s*\$?([^\n$]*?\d[^\n$]*?)\$?\s*(?:[.。]\s*)?$",
                   re.IGNORECASE | re.MULTILINE)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` or ``\\fbox{…}`` (balanced braces), or ``None``."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:  # "\boxed 5"
        m = re.match(r"\\(?:boxed|fbox)\s+(\S+)", text[idx:])
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


def _rhs(s: str) -> str:
    return s.rsplit("=", 1)[1].strip() if "=" in s else s.strip()


def _post(s: str) -> str:
    s = s.replace("或", ", ").replace("$", "").strip()
    return s.rstrip("。.．，,；;").strip()


def extract_answer(text: str) -> str:
    """The final answer written in ``text`` (see the module docstring for the order of rules)."""
    t = (text or "").strip()
    if "####" in t:
        tail = t.rsplit("####", 1)[1].strip().splitlines()
        return _post(tail[0]) if tail else ""
    if "答案" in t:
        t = t.rsplit("答案", 1)[1].lstrip("：:是为 \t\n").strip()
    boxed = last_boxed(t)
    if boxed is not None:
        return _post(_rhs(boxed))
    said = _SAID.findall(t)
    if said:
        return _post(_rhs(said[-1]))
    dollars = re.findall(r"\$([^$\n]{1,80})\$", t)
    if dollars:
        return _post(_rhs(dollars[-1]))
    if _SIMPLE.match(t) or _is_arith(t.rstrip("。.．")):
        return _post(t)
    lines = [ln.strip() for ln in t.splitlines() if ln.strip()]
    if lines and "=" in lines[-1] and "或" in lines[-1]:  # "x=2或x=3" -> "2, 3"
        alts = [_rhs(a).rstrip("。.．") for a in lines[-1].split("或")]
        if all(_SIMPLE.match(a) for a in alts):
            return _post(", ".join(alts))
    if lines and "=" in lines[-1]:
        rhs_s = lines[-1].rsplit("=", 1)[1].strip()
        if rhs_s and (_SIMPLE.match(rhs_s) or _to_number(rhs_s) is not None):
            return _post(rhs_s)
    nums = _NUM_RE.findall(t)
    if nums:
        return _post(nums[-1].replace(",", ""))
    return _post(t)


def gsm8k_gold(answer: str) -> str:
    """GSM8K's gold: the number after ``####`` (or the text itself when there is none)."""
    return extract_answer(answer) if "####" in answer else answer.strip()


# --- Hendrycks MATH normalisation (math_equivalence.py) ----------------------------------------
def _fix_fracs(s: str) -> str:
    subs = s.split("\\frac")
    out = subs[0]
    for sub in subs[1:]:
        out += "\\frac"
        if sub[:1] == "{":
            out += sub
            continue
        if len(sub) < 2:
            return s
        a, b = sub[0], sub[1]
        if b != "{":
            out += "{" + a + "}{" + b + "}" + sub[2:]
        else:
            out += "{" + a + "}" + b + sub[2:]
    return out


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def _remove_right_units(s: str) -> str:
    for marker in ("\\text{ ", "\\mbox{ "):
        if marker in s:
            return s.split(marker)[0]
    return s


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for p in parts[1:]:
        out += ("\\sqrt" + p) if p[:1] == "{" else ("\\sqrt{" + p[:1] + "}" + p[1:])
    return out


def strip_string(s: str) -> str:
    """Hendrycks' ``_strip_string``: a canonical spelling of a LaTeX answer."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    s = _remove_right_units(s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


_UNIT_TAIL = re.compile(r"(?:\\(?:text|mbox)\{[^}]*\}|[\u4e00-\u9fff]+|[a-zA-Z]+\.?)\s*$")


_ARITH = re.compile(r"^[\d\s.+\-*/×÷()（）^%]+$")
_MIXED = re.compile(r"^(-?\d+)\((\d+)/(\d+)\)$")  # Ape210K's 14(1/2) = 14½


def _is_arith(t: str) -> bool:
    return bool(t) and bool(_ARITH.match(t)) and bool(re.search(r"\d", t)) and len(t) <= 200


def _eval_arith(t: str) -> Fraction | None:
    """Exact value of a plain arithmetic expression (+ − × ÷ ^, parentheses), or ``None``."""
    import ast

    m = _MIXED.match(t.replace(" ", ""))
    if m:
        whole, frac = Fraction(m.group(1)), Fraction(int(m.group(2)), int(m.group(3)))
        return whole - frac if whole < 0 else whole + frac
    expr = re.sub(r"(\d+(?:\.\d+)?)%", r"(\1/100)", t)
    expr = expr.replace("×", "*").replace("÷", "/").replace("（", "(").replace("）", ")").replace("^", "**")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return Fraction(str(n.value))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            if isinstance(n.op, ast.Div):
                return a / b
            if isinstance(n.op, ast.Pow) and b.denominator == 1 and abs(b) <= 64:
                return a ** int(b)
        raise ValueError("not plain arithmetic")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _wrapped(t: str) -> bool:
    """Whether one bracket pair encloses all of ``t`` ("(5/4)", not "(585-265)/(82-78)")."""
    if t[0] + t[-1] not in ("()", "{}"):
        return False
    depth = 0
    for i, c in enumerate(t):
        depth += (c == t[0]) - (c == t[-1])
        if depth == 0 and i < len(t) - 1:
            return False
    return True


def _to_number(s: str) -> Fraction | None:
    """``s`` as an exact number when it spells one (decimals, a/b, \\frac{a}{b}, percent, a unit tail)."""
    t = s.strip().replace("$", "").replace("\\!", "").replace(" ", "")
    t = t.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    for _ in range(2):
        t2 = _UNIT_TAIL.sub("", t).strip()
        if t2 and t2 != t and re.search(r"\d", t2):
            t = t2
    t = t.rstrip("。.．")
    if len(t) > 2 and _wrapped(t):
        t = t[1:-1]
    pct = t.endswith("%") or t.endswith("\\%")
    t = t.rstrip("%").rstrip("\\")
    m = re.fullmatch(r"(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", t) or re.fullmatch(r"(-?)\(?(-?[\d.]+)\)?/\(?(-?[\d.]+)\)?", t)
    try:
        if m:
            val = Fraction(m.group(2)) / Fraction(m.group(3))
            val = -val if m.group(1) else val
        elif re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?|[-+]?\d+(\.\d+)?|[-+]?\.\d+", t):
            val = Fraction(t.replace(",", ""))
        elif _is_arith(t):
            val = _eval_arith(t)
            if val is None:
                return None
        else:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    return val / 100 if pct else val


def is_equiv(pred: str | None, gold: str | None) -> bool:
    """Whether two final answers are the same (string normalisation, then numeric value)."""
    if pred is None or gold is None:
        return False
    a, b = _post(pred), _post(gold)
    if a == b:
        return True
    try:
        if strip_string(a) == strip_string(b):
            return True
    except Exception:  # malformed LaTeX: fall through to numeric comparison
        pass
    x, y = _to_number(a), _to_number(b)
    return x is not None and x == y  # exact: 111111112 is not 111111111
