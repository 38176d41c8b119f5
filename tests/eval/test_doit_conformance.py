"""doitray's scorers against DoIT's released scorer, on the same generated responses to the DoIT-format test split.

The items go through doitray's DoIT reader and ``score_item`` with the letters the engine asks for; DoIT's
``utils.<type>_score`` gets the raw rows, the responses and a logit vector over its tokenizer's vocabulary. Any
pair scored differently must be explained by a difference declared in ``scorers.DOIT_DIFFERENCES`` (and so in
the scorers' docstring); every declared difference must occur. Skipped when ../shared/reference/doit-eval, the
tokenizer or the test split is absent.
"""
from __future__ import annotations

from collections import Counter

import pytest

import doit_pairs as dp
from doitray.eval import scorers

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    why = dp.missing_reference()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("doit-conformance")
    return dp.load_reference(tmp), dp.read_items(dp.build_rows(), tmp)


def sweep(reference, every: int) -> tuple[int, int, Counter, list[dp.Scored]]:
    """(pairs, agreeing pairs, count per declared difference, undeclared differences)."""
    ref, items = reference
    pairs = dp.all_pairs(items, every)
    agree, declared, undeclared = 0, Counter(), []
    for p in pairs:
        s = dp.score_pair(ref, p)
        if s.agrees:
            agree += 1
            continue
        why = dp.explain(ref, s)
        declared.update(why)
        if not why:
            undeclared.append(s)
    print(f"\n{agree}/{len(pairs)} pairs agree with DoIT's scorer ({agree / len(pairs):.1%}); declared differences:",
          ", ".join(f"{k} {n}" for k, n in declared.most_common()))
    return len(pairs), agree, declared, undeclared


def _show(undeclared: list[dp.Scored]) -> str:
    by_shape = Counter((dp.kind_of(s.pair.row), s.pair.shape) for s in undeclared)
    first = {}
    for s in undeclared:
        first.setdefault((dp.kind_of(s.pair.row), s.pair.shape), s)
    return "\n".join(f"{n}× {k}: reply {first[k].pair.text!r}, gold {first[k].pair.row['messages'][-1]['content']!r}"
                     f" answer {first[k].pair.row.get('answer')!r}: DoIT {first[k].doit}, doitray {first[k].ours} "
                     f"(parsed {first[k].parsed!r})" for k, n in by_shape.most_common(15))


def check(reference, every: int) -> None:
    n, agree, declared, undeclared = sweep(reference, every)
    assert n > 1000
    assert not undeclared, (f"{len(undeclared)} of {n} pairs differ from DoIT's scorer in a way "
                            f"scorers.DOIT_DIFFERENCES does not declare:\n{_show(undeclared)}")
    assert set(declared) <= set(scorers.DOIT_DIFFERENCES)
    unused = set(scorers.DOIT_DIFFERENCES) - set(declared)
    assert not unused, f"declared differences no generated pair shows (stale, or the generator misses them): {unused}"


def test_declared_differences_are_in_the_scorers_docstring():
    for name, what in scorers.DOIT_DIFFERENCES.items():
        assert f"``{name}``: {what}" in scorers.__doc__


def test_doitray_scores_like_doits_scorer_but_for_declared_differences(reference):
    """About every 40th item and the first of each gold shape, with all their response shapes (~8,000 pairs)."""
    check(reference, every=40)


@pytest.mark.slow
def test_doitray_scores_like_doits_scorer_on_every_test_item(reference):
    """All items of the test split (about 148,000 pairs, about a minute)."""
    check(reference, every=1)
