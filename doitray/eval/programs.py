"""What the sandbox and the judge are given: test programs for code items, grading prompts for judge items."""
from __future__ import annotations

import ast
import re

from doitray.eval.scorers import meta_of

_FENCE = re.compile(r"```(?:[Pp]ython3?|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(text: str) -> str:
    """The code in a reply: the fenced blocks joined when there are any, else the reply itself."""
    blocks = _FENCE.findall(text or "")
    return "\n".join(b.rstrip() for b in blocks) + "\n" if blocks else (text or "")


def _imports(prompt: str) -> str:
    """The prompt's top-level import statements (not docstring prose like "from two integers", not the
    imports indented inside its function)."""
    return "".join(ln + "\n" for ln in prompt.splitlines() if re.match(r"(?:import|from)\s+\w", ln) and _parses(ln))


def _parses(line: str) -> bool:
    try:
        return isinstance(ast.parse(line).body[0], (ast.Import, ast.ImportFrom))
    except SyntaxError:
        return False


def build_program(rec: dict, completion: str) -> str:
    """The program that tests ``completion`` for a code item (HumanEval: prompt + completion + test + check).

    A completion that defines the entry point itself is used whole (with the prompt's imports); otherwise it
    is the body that continues the prompt.
    """
    meta = meta_of(rec)
    prompt = meta.get("prompt") or ""
    entry = meta.get("entry_point")
    code = extract_code(completion)
    if entry and re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, flags=re.MULTILINE):
        program = _imports(prompt) + code
    elif prompt:
        program = prompt + code
    else:
        program = code
    setup = meta.get("setup") or ""
    test = meta.get("test") or ""
    program = f"{program}\n\n{setup}\n{test}\n"
    if entry and re.search(r"def\s+check\s*\(", test):
        program += f"\ncheck({entry})\n"
    return program


def reference_completion(rec: dict) -> str:
    """The canonical solution of a code item (``meta.canonical_solution`` or the gold reply)."""
    meta = meta_of(rec)
    if meta.get("canonical_solution") is not None:
        return meta["canonical_solution"]
    msgs = rec["messages"]
    return msgs[-1]["content"] if msgs and msgs[-1]["role"] == "assistant" else ""


JUDGE_PROMPT = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, "
    "you must rate the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for "
    "example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]")
JUDGE_PROMPT_REF = JUDGE_PROMPT.replace(
    "[The Start of Assistant's Answer]", "[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]")


def judge_messages(rec: dict, answer: str) -> list[dict]:
    """MT-Bench single-answer grading prompt (with the reference answer when the item has one)."""
    users = [m["content"] for m in rec["messages"] if m["role"] == "user"]
    ref = meta_of(rec).get("reference")
    tmpl = JUDGE_PROMPT_REF if ref else JUDGE_PROMPT
    return [{"role": "user", "content": tmpl.format(question=users[-1] if users else "", answer=answer,
                                                    reference=ref or "")}]
