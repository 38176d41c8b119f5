"""Hand-written cases for every scorer rule, including the awkward ones."""
from __future__ import annotations

import math

import pytest

from doitray.eval.math_answer import extract_answer, is_equiv
from doitray.eval.scorers import (ModelOutput, item_metric, parse_choice, parse_letter_set, parse_rating, parse_tf,
                                  pass_at_k, score_item)
from doitray.records import make_record

Q4 = "下列哪一项正确？\nA. 甲\nB. 乙\nC. 丙\nD. 丁"
Q3 = "男：你去哪？\n女：去学校。\n\n女的去哪？\nA. 家\nB. 学校\nC. 商店"


def rec(ability, user, gold, **kw):
    return make_record(id="x", ability=ability, source="t", split="test",
                       messages=[{"role": "user", "content": user}, {"role": "assistant", "content": gold}], **kw)


def sc(r, text=None, **kw):
    return score_item(r, ModelOutput(text=text, **kw))


# --- single-answer multiple choice -------------------------------------------------------------
@pytest.mark.parametrize("text", ["B", " B ", "(B)", "B.", "B。", "（B）"])
def test_choice_single_letter_text(text):
    s = sc(rec("biology", Q4, "B"), text)
    assert s.score == 1.0 and s.parsed == "B" and s.chance == 0.25


def test_choice_wrong_letter_and_garbage():
    assert sc(rec("biology", Q4, "B"), "C").score == 0.0
    s = sc(rec("biology", Q4, "B"), "我不知道")
    assert s.score == 0.0 and s.parsed is None


def test_choice_letter_in_a_sentence_uses_first_token_logits():
    r = rec("biology", Q4, "B")
    # "A good answer is B": a naive first-capital parser would say A; the logits (first answer token) decide
    s = sc(r, "A good answer is B", letter_logprobs={"A": -3.0, "B": -0.5, "C": -2.0, "D": -4.0})
    assert s.score == 1.0 and s.parsed == "B (logits)"
    s = sc(r, "The answer is B.", letter_logprobs={"A": -0.1, "B": -3.0, "C": -2.0, "D": -4.0})
    assert s.score == 0.0 and s.parsed == "A (logits)"


def test_choice_letter_in_a_sentence_without_logits_needs_an_explicit_statement():
    r = rec("biology", Q4, "B")
    assert sc(r, "The answer is B.").score == 1.0
    assert sc(r, "答案是B").score == 1.0
    assert sc(r, "B. 乙").score == 1.0
    assert sc(r, "A good choice would be B").score == 0.0  # no explicit statement, no logits: unparsed
    assert parse_choice("Both A and B", None) == (None, "none")


def test_choice_one_character_reply_is_the_answer_as_written_like_doit():
    r = rec("biology", Q4, "B")
    lp = {"A": -3.0, "B": -0.1, "C": -2.0, "D": -4.0}
    assert sc(r, "B", letter_logprobs=lp).score == 1.0
    for text in ("b", "E", "甲"):  # not an offered letter: wrong, whatever the logits say
        s = sc(r, text, letter_logprobs=lp)
        assert s.score == 0.0 and s.parsed is None


def test_options_in_ignores_a_stem_line_opening_with_letters():
    from doitray.eval.scorers import options_in

    q = ("F、G、H、J是大学同学，都考研了，最后只有一个人考上了。\n由此可以推断出以下哪项是假的？\n"
         "A. J没有娶外国人\nB. F考上了研究生\nC. G成了作曲家\nD. H当了公务员")
    r = rec("reasoning", q, "B")
    assert options_in(r) == ["A", "B", "C", "D"]
    assert sc(r, "B").chance == 0.25
    # the logits are read over A–D only: a stray F cannot win
    assert sc(r, "我选B", letter_logprobs={"A": -3.0, "B": -0.5, "C": -2.0, "D": -4.0, "F": -0.1}).score == 1.0
    assert options_in(rec("math", "A、B两地相距950米，甲、乙两人同时由A出发", "(5/4)")) == []
    assert options_in(rec("biology", "题\nA. B、C都对\nB. 甲\nC. 乙", "A")) == ["A", "B", "C"]


def test_choice_chance_follows_number_of_options():
    assert sc(rec("understanding", Q3, "B"), "B").chance == pytest.approx(1 / 3)
    # a letter outside the listed options is not an answer
    assert sc(rec("understanding", Q3, "B"), "D").score == 0.0


def test_choice_logits_mode_uses_argmax_even_when_text_is_a_letter():
    r = rec("biology", Q4, "C", meta={"metric": "choice", "choice_mode": "logits"})
    s = sc(r, "A", letter_logprobs={"A": -2.0, "B": -2.0, "C": -0.1, "D": -3.0})
    assert s.score == 1.0


# --- true/false -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [("正确", "T"), ("对", "T"), ("T", "T"), ("True", "T"), ("√", "T"),
                                       ("错误", "F"), ("错", "F"), ("F", "F"), ("False", "F"), ("×", "F"),
                                       ("不对", "F"), ("不正确", "F"), ("这个说法是正确的。", "T"),
                                       ("T and F", None), ("正确还是错误", None), ("对，但也错", None),
                                       ("The statement", None), ("", None), ("对于这个问题，错误", "F")])
def test_parse_tf(text, want):
    assert parse_tf(text) == want


def test_tf_item_whose_gold_is_F_is_true_false_not_multiple_choice():
    for gold in ("F", "X", "T", "V"):
        r = rec("history", "秦始皇统一了六国。", gold)
        assert item_metric(r) == "tf"
        s = sc(r, "错" if gold in "FX" else "对")
        assert s.score == 1.0 and s.chance == 0.5
    assert sc(rec("history", "秦始皇统一了六国。", "F"), "对").score == 0.0


def test_tf_items_ambiguous_is_wrong():
    r = rec("history", "秦始皇统一了六国。", "正确")
    assert item_metric(r) == "tf"
    assert sc(r, "对").score == 1.0
    assert sc(r, "T").score == 1.0
    assert sc(r, "错").score == 0.0
    s = sc(r, "T, or maybe F")
    assert s.score == 0.0 and s.parsed is None and s.chance == 0.5
    # the same ability's letter items are multiple choice
    assert item_metric(rec("history", Q4, "A")) == "choice"


# --- cloze --------------------------------------------------------------------------------------------
def test_cloze_first_cjk_span():
    r = rec("chinese", "春眠不觉晓，处处闻啼____。", "鸟")
    assert item_metric(r) == "cloze"
    assert sc(r, "鸟").score == 1.0
    assert sc(r, "鸟。后面是夜来风雨声").score == 1.0
    assert sc(r, "答：鸟").score == 0.0  # the first CJK span is 答
    assert sc(r, "  鸟  ").score == 1.0
    assert sc(r, "虫").score == 0.0
    assert sc(r, "鸟").chance == 0.0
    title = rec("chinese", "杜甫的诗____（填空）", "《丽人行》")  # punctuation around the gold is no part of it
    assert sc(title, "《丽人行》").score == 1.0 and sc(title, "“丽人行”。").score == 1.0
    clause = rec("chinese", "____", "阳光愈是炽热，它开得愈是艳丽。")
    assert sc(clause, "阳光愈是炽热").score == 0.0  # the first clause is not the whole gold


# --- multi-answer (ethics) -----------------------------------------------------------------------------
def test_multi_choice_set_equality_and_chance():
    r = rec("ethics", Q4, "AC")
    assert sc(r, "AC").score == 1.0
    assert sc(r, "C, A").score == 1.0
    assert sc(r, "理由如下……\n答案：A和C").score == 1.0
    assert sc(r, "A").score == 0.0
    assert sc(r, "ACD").score == 0.0
    assert sc(r, "AC\n不过我觉得是B").score == 0.0  # only the last non-empty line counts
    assert sc(r, "AC").chance == pytest.approx(1 / math.comb(4, 2))
    assert sc(rec("ethics", Q4, "B"), "B").chance == pytest.approx(1 / 4)
    assert parse_letter_set("I choose A and D") == frozenset("AD")
    assert parse_letter_set("Answer: C") == frozenset("C")  # the A of "Answer" is no answer letter


def test_multi_choice_letters_glued_to_text():
    assert parse_letter_set("答案是AC") == frozenset("AC")
    assert parse_letter_set("选BCD") == frozenset("BCD")
    assert sc(rec("ethics", Q4, "AC"), "答案是AC").score == 1.0
    assert sc(rec("ethics", Q4, "BCD"), "选BCD").score == 1.0
    assert sc(rec("ethics", Q4, "BCD"), "选BC").score == 0.0


# --- math ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("所以答案是 \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("first \\boxed{3} then \\boxed{x = 5}", "5"),
    ("解：…… 答案：40元", "40"),
    ("The result is $x = \\frac{3}{4}$", "\\frac{3}{4}"),
    ("She pays 5 + 3 = 8 dollars.\n#### 8", "8"),
    ("98+30=128", "128"),
    ("一共有 3 个苹果和 12 个梨", "12"),
    ("A", "A"),
    ("x=2或x=3", "2, 3"),
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("a,b", [("\\frac{1}{2}", "0.5"), ("\\dfrac12", "\\frac{1}{2}"), ("1/2", "0.5"),
                                 ("50\\%", "0.5"), ("\\sqrt2", "\\sqrt{2}"), ("1,000", "1000"),
                                 ("10 \\text{ cm}", "10"), ("40元", "40"), (" 3 ", "3"), ("14(1/2)", "14.5"),
                                 ("2010-1000+2", "1012"), ("\\left(1,2\\right)", "(1,2)"), ("0.50", "1/2")])
def test_is_equiv_true(a, b):
    assert is_equiv(a, b)


@pytest.mark.parametrize("a,b", [("\\frac{1}{3}", "0.33"), ("2", "3"), ("x", "y"), (None, "1"), ("1,2", "12"),
                                 ("111111112", "111111111"), ("50.0000001", "50")])
def test_is_equiv_false(a, b):
    assert not is_equiv(a, b)


def test_bracketed_fraction_ending_a_sentence_is_read_whole():
    assert extract_answer("所以一共是(11/15)。") == "(11/15)"
    r = rec("math", "求值", "……", answer="(11/15)")
    assert sc(r, "所以一共是(11/15)。").score == 1.0
    assert sc(r, "所以一共是(11/16)。").score == 0.0


def test_equation_with_bracketed_arithmetic_is_evaluated_not_read_as_its_last_number():
    assert extract_answer("x=(585-265)/(82-78)") != "-78"
    r = rec("math", "求值", "……", answer="80")
    assert sc(r, "x=(585-265)/(82-78)").score == 1.0
    assert sc(rec("math", "求值", "……", answer="-78"), "x=(585-265)/(82-78)").score == 0.0


def test_numbers_are_compared_exactly():
    r = rec("math", "求值", "……", answer="111111111")
    assert sc(r, "111111112").score == 0.0
    assert sc(r, "111,111,111").score == 1.0


def test_math_item_boxed_frac_vs_decimal_gold():
    r = rec("math", "求值", "……", answer="0.5")
    assert sc(r, "计算得 \\boxed{\\frac{1}{2}}").score == 1.0
    assert sc(r, "计算得 \\boxed{\\frac{1}{3}}").score == 0.0
    # a worked gold ("98+30=128") is reduced to its final answer
    r2 = rec("math", "98+30=", "98+30=128", answer="98+30=128")
    assert sc(r2, "128").score == 1.0


def test_gsm8k_gold_and_outputs():
    r = rec("math_en", "How many?", "3 + 4 = 7\n#### 7", answer="7")
    assert item_metric(r) == "gsm8k"
    assert sc(r, "3 + 4 = 7\n#### 7").score == 1.0
    assert sc(r, "She has 3 and gets 4 more, so 7 in total.").score == 1.0
    assert sc(r, "The answer is $7.").score == 1.0
    assert sc(r, "#### 8").score == 0.0


# --- perplexity ranking --------------------------------------------------------------------------------
def rank_rec():
    return make_record(id="r", ability="code", source="t", split="test", question_format="rank",
                       messages=[{"role": "user", "content": "写一个函数"}], choices=["gold", "neg1", "neg2"])


def test_rank_gold_lowest_loss():
    s = score_item(rank_rec(), ModelOutput(choice_losses=[1.0, 2.0, 3.0]))
    assert s.score == 1.0 and s.chance == pytest.approx(1 / 3)
    s = score_item(rank_rec(), ModelOutput(choice_losses=[2.0, 1.0, 3.0]))
    assert s.score == 0.0 and s.parsed == "1"


def test_rank_ties_count_as_correct_like_doit():
    assert score_item(rank_rec(), ModelOutput(choice_losses=[1.0, 1.0, 3.0])).score == 1.0
    assert score_item(rank_rec(), ModelOutput(choice_losses=[2.0, 1.0, 1.0])).score == 0.0


def test_rank_missing_losses_is_a_recorded_failure():
    s = score_item(rank_rec(), ModelOutput(choice_losses=[1.0, 2.0]))
    assert s.score == 0.0 and "one loss per choice" in s.error


# --- code, judge, errors --------------------------------------------------------------------------------
def test_pass_at_k_unbiased():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k


def test_code_item_score_from_sandbox_outcomes():
    r = rec("code", "def f(): ...", "pass", meta={"metric": "code_exec"})
    assert item_metric(r) == "code_exec"
    assert score_item(r, ModelOutput(text="x", passed=[True, False, False, True]), k=1).score == pytest.approx(0.5)


def test_judge_rating_parse_and_score():
    assert parse_rating("Good answer. Rating: [[7]]") == 7.0
    assert parse_rating("no rating") is None
    r = rec("general", "Say hi", "hi")
    assert score_item(r, ModelOutput(text="hi", ratings=[6, 8])).score == pytest.approx(0.7)
    assert score_item(r, ModelOutput(text="hi")).error


def test_engine_error_is_kept_as_failed_item():
    s = score_item(rec("biology", Q4, "B"), ModelOutput(error="engine: boom"))
    assert s.score == 0.0 and s.error == "engine: boom" and s.chance == 0.25


# --- the registry ----------------------------------------------------------------------------------------
def test_every_ability_metric_resolves_to_a_registered_scorer():
    from doitray import abilities
    from doitray.eval.scorers import KINDS, METRICS, PER_ITEM, SCORERS

    assert set(PER_ITEM.values()) <= set(SCORERS) and "choice" in SCORERS
    for sc_ in SCORERS.values():
        assert sc_.kind in KINDS and (sc_.max_tokens == 0) == (sc_.kind == "rank")
    for name in abilities.names():
        assert abilities.get(name).metric in METRICS


def test_a_study_files_unknown_metric_names_the_field_and_the_allowed_values():
    from doitray.eval.scorers import METRICS, check_metric
    from doitray.study.spec import StudyFileError, parse_study

    assert check_metric("choice_tf") == "choice_tf"
    doc = {"name": "t", "storage": "/tmp/doitray-test-study", "sources": [{"name": "suite", "format": "synthetic"}],
           "tokenizer": {"train_vocab_size": 512}, "models": {"s": {"preset": "tiny-s", "init": "scratch"}},
           "factors": {"model": ["s"]}, "custom_abilities": {"poetry_x": {"metric": "bleu"}}}
    with pytest.raises(StudyFileError) as e:
        parse_study(doc)
    msg = str(e.value)
    assert "custom_abilities.poetry_x.metric" in msg and "'bleu'" in msg
    assert all(m in msg for m in METRICS)
