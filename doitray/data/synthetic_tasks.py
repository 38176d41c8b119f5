"""Task families of the generated ten-ability suite (see ``synthetic`` for the suite and the README).

Every generator is ``gen(rng, n_templates) -> Item``: a prompt, the gold reply, a plausible wrong reply
(used by the lower-quality ``synthetic`` construction), rank choices for rank abilities, the family name
and an intrinsic complexity: 1 = a lookup, 2 = one computation or one retrieval from the context,
+1 per further step (math's k-step chain is k + 1). ``n_templates`` limits prompt diversity.
Facts (animals, rulers, idioms, personas) are fixed tables, independent of the seed, so they are
knowledge a model can only get from training data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

LETTERS = "ABCD"
NAMES = ["Ann", "Bob", "Cid", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lee", "Max", "Ned", "Oli", "Pam"]


@dataclass
class Item:
    prompt: str
    reply: str
    wrong: str
    family: str
    complexity: int
    system: str | None = None
    answer: str | None = None
    choices: list[str] | None = None  # rank items: gold first
    meta: dict = field(default_factory=dict)


def _tpl(rng: random.Random, templates: list[str], n: int) -> str:
    return templates[rng.randrange(min(n, len(templates)))]


def _mc(rng: random.Random, gold: str, pool: list[str], n_opts: int = 4) -> tuple[str, str, str]:
    """(options text, gold letter, a wrong letter) with ``gold`` among ``n_opts`` shuffled options."""
    opts = [gold] + rng.sample([p for p in dict.fromkeys(pool) if p != gold], n_opts - 1)
    rng.shuffle(opts)
    g = opts.index(gold)
    wrong = rng.choice([i for i in range(n_opts) if i != g])
    return "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(opts)), LETTERS[g], LETTERS[wrong]


# --- biology: one-step lookups in a fixed animal table ------------------------------------------------
ANIMALS = {  # name: (class, diet, habitat)
    "cat": ("mammal", "meat", "land"), "dog": ("mammal", "meat", "land"), "cow": ("mammal", "grass", "land"),
    "horse": ("mammal", "grass", "land"), "whale": ("mammal", "fish", "sea"), "bat": ("mammal", "insects", "cave"),
    "mouse": ("mammal", "seeds", "land"), "lion": ("mammal", "meat", "land"), "eagle": ("bird", "meat", "sky"),
    "owl": ("bird", "mice", "forest"), "duck": ("bird", "plants", "pond"), "hen": ("bird", "seeds", "farm"),
    "penguin": ("bird", "fish", "ice"), "parrot": ("bird", "fruit", "forest"), "shark": ("fish", "meat", "sea"),
    "salmon": ("fish", "insects", "river"), "carp": ("fish", "plants", "river"), "tuna": ("fish", "fish", "sea"),
    "frog": ("amphibian", "insects", "pond"), "toad": ("amphibian", "insects", "land"),
    "newt": ("amphibian", "worms", "pond"), "snake": ("reptile", "mice", "land"),
    "lizard": ("reptile", "insects", "desert"), "turtle": ("reptile", "plants", "sea"),
    "crocodile": ("reptile", "meat", "river"), "bee": ("insect", "nectar", "hive"), "ant": ("insect", "seeds", "land"),
    "moth": ("insect", "nectar", "forest"), "beetle": ("insect", "wood", "forest"),
    "spider": ("arachnid", "insects", "web"), "crab": ("crustacean", "worms", "sea"), "snail": ("mollusc", "plants", "farm"),
}
_BIO_Q = [
    ["What class of animal is the {a}?", "The {a} belongs to which group?", "Pick the class of the {a}.",
     "Which group is the {a} in?"],
    ["What does the {a} eat?", "The {a} mostly eats what?", "Choose the food of the {a}.", "What is the diet of the {a}?"],
    ["Where does the {a} live?", "The {a} lives where?", "Pick the home of the {a}.", "What is the habitat of the {a}?"],
]


def gen_biology(rng: random.Random, n_templates: int) -> Item:
    a = rng.choice(sorted(ANIMALS))
    k = rng.randrange(3)
    gold = ANIMALS[a][k]
    opts, g, w = _mc(rng, gold, [v[k] for v in ANIMALS.values()])
    return Item(_tpl(rng, _BIO_Q[k], n_templates).format(a=a) + opts, g, w, ["class", "diet", "habitat"][k], 1)


# --- history: fictional rulers; multiple choice and true/false (正确/错误) ---------------------------------
RULERS = ["Aldo", "Bera", "Cato", "Dara", "Egil", "Fenn", "Gala", "Hugo", "Ilsa", "Joss", "Kara", "Lorn",
          "Mira", "Nils", "Orla", "Pell", "Quin", "Rhea", "Sven", "Tova", "Ulf", "Vera", "Wynn", "Yara"]
KINGDOMS = ["Varn", "Ostia", "Kell", "Brin", "Duna", "Essa", "Fjor", "Galt", "Hess", "Ivor", "Jura", "Kast",
            "Lund", "Mora", "Nesh", "Orm", "Pyra", "Quel", "Ruun", "Sorn", "Tarn", "Ulm", "Veld", "Wick"]
HIST = {r: (KINGDOMS[(i * 7) % 24], str(300 + 25 * ((i * 5) % 24))) for i, r in enumerate(RULERS)}
_HIST_Q = [["Who founded {k}?", "Which ruler founded the kingdom of {k}?", "{k} was founded by whom?"],
           ["Which kingdom did {r} found?", "{r} was the founder of which kingdom?", "Name the kingdom {r} founded."],
           ["In which year did {r} found {k}?", "When did {r} found {k}?", "{r} founded {k} in which year?"]]
_HIST_TF = ["{r} founded {k}. True or false?", "True or false: {k} was founded by {r}.", "Is it true that {r} founded {k}?"]


def gen_history(rng: random.Random, n_templates: int) -> Item:
    r = rng.choice(RULERS)
    k, year = HIST[r]
    fam = rng.choices(["founder", "kingdom", "year", "true_false"], [3, 3, 2, 2])[0]
    if fam == "true_false":
        true = rng.random() < 0.5
        kk = k if true else rng.choice([x for x in KINGDOMS if x != k])
        return Item(_tpl(rng, _HIST_TF, n_templates).format(r=r, k=kk), "正确" if true else "错误",
                    "错误" if true else "正确", fam, 1, meta={"metric_kind": "tf"})
    i = ["founder", "kingdom", "year"].index(fam)
    gold, pool = [(r, RULERS), (k, KINGDOMS), (year, [v[1] for v in HIST.values()])][i]
    opts, g, w = _mc(rng, gold, pool)
    return Item(_tpl(rng, _HIST_Q[i], n_templates).format(r=r, k=k) + opts, g, w, fam, 1)


# --- chinese: four-character idioms; single-blank cloze (CJK answer) and multiple choice ----------------
IDIOMS = ["一心一意", "三心二意", "五颜六色", "七上八下", "十全十美", "百发百中", "千言万语", "万紫千红",
          "四面八方", "九牛一毛", "画蛇添足", "守株待兔", "对牛弹琴", "亡羊补牢", "井底之蛙", "马到成功",
          "一举两得", "自相矛盾", "半途而废", "人山人海", "风和日丽", "春暖花开", "山清水秀", "鸟语花香",
          "学以致用", "心想事成", "日新月异", "同心协力", "安居乐业", "眉开眼笑"]
_CHARS = sorted({c for w in IDIOMS for c in w})
_ZH_CLOZE = ["填空：{w}", "补全成语：{w}", "成语填字：{w}"]
_ZH_MC = ["哪个成语写对了？", "下面哪个是正确的成语？", "选出正确的成语。"]


def gen_chinese(rng: random.Random, n_templates: int) -> Item:
    w = rng.choice(IDIOMS)
    if rng.random() < 0.35:
        pos = rng.randrange(4)
        blank = w[:pos] + "_" + w[pos + 1:]
        wrong = rng.choice([c for c in _CHARS if c != w[pos]])
        return Item(_tpl(rng, _ZH_CLOZE, n_templates).format(w=blank), w[pos], wrong, "cloze", 1,
                    meta={"metric_kind": "cloze"})
    fakes: list[str] = []
    while len(fakes) < 3:
        pos = rng.randrange(4)
        f = w[:pos] + rng.choice([c for c in _CHARS if c != w[pos]]) + w[pos + 1:]
        if f not in fakes and f not in IDIOMS:
            fakes.append(f)
    opts, g, wl = _mc(rng, w, fakes)
    return Item(_tpl(rng, _ZH_MC, n_templates) + opts, g, wl, "idiom_mc", 2)


# --- understanding: who said what in a short dialogue (retrieval from context) ----------------------------
COLORS = ["red", "blue", "green", "pink", "gray", "gold", "white", "black"]
PLACES = ["park", "shop", "zoo", "beach", "bank", "school", "farm", "lake"]
THINGS = ["apples", "books", "pens", "cats", "hats", "cups", "kites", "shoes"]
_SAYS = {"color": ("I like {v}.", ["What color does {n} like?", "Which color is {n}'s favourite?", "{n} likes which color?"]),
         "place": ("I am going to the {v}.", ["Where is {n} going?", "{n} is going where?", "Where will {n} go?"]),
         "thing": ("I have two {v}.", ["What does {n} have?", "{n} has two what?", "What are {n}'s two things?"])}


def gen_understanding(rng: random.Random, n_templates: int) -> Item:
    speakers = rng.sample(NAMES, rng.choice([2, 3]))
    kind = rng.choice(sorted(_SAYS))
    pool = {"color": COLORS, "place": PLACES, "thing": THINGS}[kind]
    vals = rng.sample(pool, len(speakers))
    lines = "\n".join(f"{n}: " + _SAYS[kind][0].format(v=v) for n, v in zip(speakers, vals))
    t = rng.randrange(len(speakers))
    n_opts = rng.choice([3, 4])
    distract = vals[:t] + vals[t + 1:] + [p for p in pool if p not in vals]
    opts, g, w = _mc(rng, vals[t], distract[: max(n_opts - 1, len(vals) - 1)] + distract, n_opts)
    q = _tpl(rng, _SAYS[kind][1], n_templates).format(n=speakers[t])
    return Item(f"{lines}\n\n{q}{opts}", g, w, f"dialogue_{kind}", 2)


# --- math: arithmetic chains with chain-of-thought, 1 to 3 steps -------------------------------------------
_OPS = {"+": ("Add {b}.", lambda a, b: a + b), "-": ("Subtract {b}.", lambda a, b: a - b),
        "*": ("Multiply by {b}.", lambda a, b: a * b)}
_MATH_Q = ["Start with {a}. {ops} What is the result?", "Take {a}. {ops} What number do you get?",
           "Begin at {a}. {ops} Give the result."]


def arithmetic_chain(rng: random.Random, steps: int) -> tuple[int, list[tuple[str, int]], list[str], int]:
    """(start, [(op, operand)], worked lines, result) with small non-negative intermediate values."""
    a = rng.randint(1, 20)
    cur, ops, lines = a, [], []
    for _ in range(steps):
        op = "+" if cur < 2 else rng.choice("+-*") if cur <= 12 else rng.choice("+-")
        b = rng.randint(2, 5) if op == "*" else rng.randint(1, min(cur, 20) if op == "-" else 20)
        new = _OPS[op][1](cur, b)
        ops.append((op, b))
        lines.append(f"{cur} {op} {b} = {new}.")
        cur = new
    return a, ops, lines, cur


def gen_math(rng: random.Random, n_templates: int) -> Item:
    steps = rng.choices([1, 2, 3], [4, 3, 3])[0]
    a, ops, lines, res = arithmetic_chain(rng, steps)
    prompt = _tpl(rng, _MATH_Q, n_templates).format(a=a, ops=" ".join(_OPS[o][0].format(b=b) for o, b in ops))
    wrong_res = res + rng.choice([-2, -1, 1, 2])
    bad_lines = lines[:-1] + [lines[-1].rsplit("=", 1)[0] + f"= {wrong_res}."]
    return Item(prompt, " ".join(lines) + f" The answer is {res}.", " ".join(bad_lines) + f" The answer is {wrong_res}.",
                f"chain_{steps}", steps + 1, answer=str(res))


# --- reasoning: transitive order and arithmetic comparison (shares arithmetic with math and code) -----------
_ADJ = [("taller", "tallest"), ("older", "oldest"), ("faster", "fastest")]


def gen_reasoning(rng: random.Random, n_templates: int) -> Item:
    if rng.random() < 0.5:
        adj, sup = rng.choice(_ADJ[: max(1, min(n_templates, 3))])
        people = rng.sample(NAMES, 4)
        chain = people[:3]
        facts = [f"{chain[i]} is {adj} than {chain[i + 1]}." for i in range(2)]
        rng.shuffle(facts)
        opts, g, w = _mc(rng, chain[0], chain[1:] + [people[3]])
        return Item(" ".join(facts) + f" Who is the {sup} of {', '.join(sorted(chain))}?{opts}", g, w, "order", 2)
    exprs: list[str] = []
    vals: list[int] = []
    while len(exprs) < 4:
        a, b = rng.randint(1, 12), rng.randint(1, 12)
        e, v = (f"{a} + {b}", a + b) if rng.random() < 0.7 else (f"{a + b}", a + b)
        if v not in vals:
            exprs.append(e)
            vals.append(v)
    best = exprs[vals.index(max(vals))]
    opts, g, w = _mc(rng, best, [e for e in exprs if e != best])
    q = _tpl(rng, ["Which is the largest?", "Which value is biggest?", "Pick the largest number."], n_templates)
    return Item(q + opts, g, w, "compare_sums", 3)


# --- ethics: multi-answer choice of good (or wrong) actions; gold letters such as "AC" ----------------------
GOOD = ["help a friend", "share food", "tell the truth", "say thank you", "clean up", "wait in line",
        "return a lost wallet", "visit a sick friend", "keep a promise", "recycle a can", "give up a seat", "feed a pet"]
BAD = ["lie to a friend", "steal a bike", "break a promise", "push in line", "cheat on a test", "kick a dog",
       "drop litter", "mock a child", "break a window", "take a bribe", "waste food", "spread a rumor"]


def gen_ethics(rng: random.Random, n_templates: int) -> Item:
    want_good = rng.random() < 0.6 or n_templates == 1
    k = rng.choice([1, 2, 2, 3])
    right, other = (GOOD, BAD) if want_good else (BAD, GOOD)
    opts = [(x, True) for x in rng.sample(right, k)] + [(x, False) for x in rng.sample(other, 4 - k)]
    rng.shuffle(opts)
    gold = "".join(LETTERS[i] for i, (_, ok) in enumerate(opts) if ok)
    wrong = "".join(LETTERS[i] for i, (_, ok) in enumerate(opts) if not ok) or "ABCD"
    q = "Which actions are good? Choose all that apply." if want_good else "Which actions are wrong? Choose all that apply."
    return Item(q + "".join(f"\n{LETTERS[i]}. {x}" for i, (x, _) in enumerate(opts)), gold, wrong, "multi_good" if want_good
                else "multi_bad", 1)


# --- code (rank): write a tiny function, or the assert that a function passes (uses arithmetic) -------------
_FN = {"add": ("adds {b} to x", "x + {b}", "x - {b}"), "sub": ("subtracts {b} from x", "x - {b}", "x + {b}"),
       "mul": ("multiplies x by {b}", "x * {b}", "x + {b}")}


def gen_code(rng: random.Random, n_templates: int) -> Item:
    if rng.random() < 0.5:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        op = rng.choice("+-") if a > b else "+"
        v = a + b if op == "+" else a - b
        prompt = _tpl(rng, ["def f():\n    return {a} {op} {b}\nWrite a test for f.",
                            "Write an assert that checks f.\ndef f():\n    return {a} {op} {b}"],
                      n_templates).format(a=a, op=op, b=b)
        gold = f"assert f() == {v}"
        negs = [f"assert f() == {v + rng.choice([-2, -1, 1, 2])}", f"assert f() = {v}"]
        return Item(prompt, gold, negs[0], "assert", 2, choices=[gold, *negs])
    name = rng.choice(sorted(_FN))
    b = rng.randint(2, 9)
    desc, body, bad = _FN[name]
    fn = f"{name}_{b}"
    prompt = _tpl(rng, ["Write a function {fn} that {d}.", "Define {fn}(x): it {d}.", "Python: {fn} {d}."],
                  n_templates).format(fn=fn, d=desc.format(b=b))
    gold = f"def {fn}(x):\n    return {body.format(b=b)}"
    negs = [f"def {fn}(x):\n    return {bad.format(b=b)}", f"def {fn}(x)\n    retrn {body.format(b=b)}"]
    rng.shuffle(negs)
    return Item(prompt, gold, negs[0], "function", 1, choices=[gold, *negs])


# --- creative writing (rank): a short poem/slogan/story on a topic in a mood --------------------------------
TOPICS = ["sea", "moon", "rain", "tree", "city", "bird", "river", "snow", "fire", "star", "road", "garden",
          "mountain", "cloud", "wind", "book", "cat", "bread", "lamp", "bridge", "ship", "night", "sun", "field",
          "train", "flower", "song", "market", "forest", "winter"]
MOODS = {"happy": "brightly", "sad": "softly", "calm": "slowly", "angry": "loudly", "lonely": "quietly"}
_FORMS = {"poem": "{M} {t}, {m} {t},\nthe {t} sings {adv}.\nI keep the {t} in my heart.",
          "slogan": "The {t}: {m} today, {m} tomorrow!",
          "story": "Once a {m} {t} woke up. It moved {adv} all day. At night the {t} slept."}


def _write(form: str, t: str, m: str) -> str:
    return _FORMS[form].format(t=t, m=m, M=m.capitalize(), adv=MOODS[m])


def gen_creative_writing(rng: random.Random, n_templates: int) -> Item:
    form, t, m = rng.choice(sorted(_FORMS)), rng.choice(TOPICS), rng.choice(sorted(MOODS))
    prompt = _tpl(rng, ["Write a {m} {f} about the {t}.", "Compose a {m} {f} on the {t}.", "A {m} {f}, topic: {t}."],
                  n_templates).format(m=m, f=form, t=t)
    gold = _write(form, t, m)
    negs = [_write(form, rng.choice([x for x in TOPICS if x != t]), m),
            _write(rng.choice([f for f in _FORMS if f != form]), t, rng.choice([x for x in MOODS if x != m]))]
    return Item(prompt, gold, negs[0], form, 2, choices=[gold, *negs])


# --- role-play (rank): stay in a persona's voice ------------------------------------------------------------
PERSONAS = {"pirate": ("Arr", "matey"), "robot": ("BEEP", "human"), "knight": ("Hail", "my liege"),
            "chef": ("Bonjour", "my friend"), "wizard": ("Behold", "young one"), "cowboy": ("Howdy", "partner"),
            "ghost": ("Boo", "mortal"), "teacher": ("Well", "class")}
_RP_USER = ["What do you think of the {t}?", "Tell me about the {t}.", "Do you like the {t}?",
            "Have you seen the {t}?", "Say something about the {t}."]


def _persona_reply(p: str, t: str) -> str:
    w, sig = PERSONAS[p]
    return f"{w}! The {t} is a fine thing, {sig}."


def gen_role_play(rng: random.Random, n_templates: int) -> Item:
    p, t = rng.choice(sorted(PERSONAS)), rng.choice(TOPICS)
    others = rng.sample([x for x in PERSONAS if x != p], 2)
    gold = _persona_reply(p, t)
    return Item(_tpl(rng, _RP_USER, n_templates).format(t=t), gold, _persona_reply(others[0], t), p, 1,
                system=f"You are a {p}. Stay in character.", choices=[gold] + [_persona_reply(o, t) for o in others])


GENERATORS = {
    "biology": gen_biology, "history": gen_history, "code": gen_code, "creative_writing": gen_creative_writing,
    "chinese": gen_chinese, "understanding": gen_understanding, "role_play": gen_role_play,
    "reasoning": gen_reasoning, "math": gen_math, "ethics": gen_ethics,
}
