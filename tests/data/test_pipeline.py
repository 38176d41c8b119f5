"""Tokenize + pack: the packed-data contract, document boundaries, pad fraction, truncation, caching."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from doitray.data.packing import document_boundaries, pack
from doitray.data.recipes import Recipe
from doitray.data.templates import IGNORE_INDEX

ex_st = st.lists(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))), min_size=1, max_size=80)


@settings(max_examples=150, deadline=None)
@given(spec=ex_st, seq_len=st.sampled_from([64, 100, 128]))
def test_pack_keeps_every_token_and_separates_examples(spec, seq_len):
    examples = []
    for k, (n, n_loss) in enumerate(spec):
        ids = [1000 + k] * n
        labels = [IGNORE_INDEX] * (n - n_loss) + ids[n - n_loss:]
        examples.append((ids, labels))
    cols, stats = pack(examples, seq_len, pad_id=0)
    assert cols["input_ids"].shape == (stats.n_rows, seq_len) and cols["input_ids"].dtype == np.int32
    assert stats.n_tokens == sum(n for n, _ in spec) and stats.n_loss_tokens == sum(m for _, m in spec)
    seen = []
    for r in range(stats.n_rows):
        n_tok = int(cols["n_tokens"][r])
        assert (cols["input_ids"][r, n_tok:] == 0).all() and (cols["labels"][r, n_tok:] == IGNORE_INDEX).all()
        for s, e in document_boundaries(cols["position_ids"][r, :n_tok]):
            doc = cols["input_ids"][r, s:e]
            assert len(set(doc.tolist())) == 1  # one example per document span
            assert cols["position_ids"][r, s:e].tolist() == list(range(e - s))
            seen.append(int(doc[0]))
    assert sorted(seen) == sorted(1000 + k for k in range(len(spec)))
    one, base = pack(examples, seq_len, pad_id=0, packed=False)
    assert base.n_rows == len(examples) and stats.pad_fraction <= base.pad_fraction + 1e-12
    assert pack(examples, seq_len, pad_id=0)[0]["input_ids"].tobytes() == cols["input_ids"].tobytes()


def test_tokenize_and_pack_contract(ray_local, small_pool, tiny_tokenizer_dir, tmp_path):
    import ray.data

    from doitray.data.pipeline import tokenize_and_pack
    from doitray.data.sampling import sample_mixture

    mix = sample_mixture(small_pool, Recipe.balanced(200), 0, tmp_path)
    packed = tokenize_and_pack(mix.path, tiny_tokenizer_dir, "doit", 128, tmp_path)
    info = json.loads((Path(packed.path).parent / "packed.json").read_text())
    assert {"seq_len", "n_rows", "n_examples", "n_tokens", "n_loss_tokens", "pad_fraction", "n_truncated", "n_dropped",
            "tokenizer", "template"} <= set(info)
    assert packed.n_examples + packed.n_dropped == 200 and len(list((tmp_path / "tokens").glob("*.parquet"))) == 1
    t = pq.read_table(packed.path)
    assert set(t.column_names) >= {"input_ids", "labels", "position_ids", "n_tokens", "n_loss_tokens"}
    ids = np.array(t["input_ids"].to_pylist())
    assert ids.shape == (packed.n_rows, 128) and int(t["n_tokens"].to_numpy().sum()) == packed.n_tokens
    assert packed.pad_fraction < 0.2
    ds = ray.data.read_parquet(packed.path)
    assert ds.count() == packed.n_rows and all(ds.schema().names)
    unpacked = tokenize_and_pack(mix.path, tiny_tokenizer_dir, "doit", 128, tmp_path, pack_rows=False)
    assert unpacked.n_rows == unpacked.n_examples and unpacked.pad_fraction > packed.pad_fraction
    assert unpacked.n_tokens == packed.n_tokens
    again = tokenize_and_pack(mix.path, tiny_tokenizer_dir, "doit", 128, tmp_path)
    assert again.path == packed.path  # cached: tokenized once per (data, tokenizer, template, seq_len)
    short = tokenize_and_pack(mix.path, tiny_tokenizer_dir, "doit", 24, tmp_path)  # reuses the cached tokens
    assert short.n_truncated > 0 and short.n_dropped > 0  # long prompts lose their reply entirely
    assert short.n_examples + short.n_dropped == 200
    rows = pq.read_table(short.path)
    assert all(n > 0 for n in rows["n_loss_tokens"].to_pylist())


def test_pool_tokens_looked_up_equal_a_tokenization_pipeline(ray_local, small_pool, tiny_tokenizer_dir, tmp_path):
    from doitray.data.pipeline import tokenize, tokenize_records
    from doitray.data.recipes import Part
    from doitray.data.sampling import sample_mixture

    n = small_pool.count(split="train")
    recipe = Recipe(parts=(Part(name="up", split="train", total=n + 50, upsample=True),), name="up")
    mix = sample_mixture(small_pool, recipe, 0, tmp_path)
    assert mix.n_upsampled == 50  # upsampled copies are looked up by their original id
    pre = tokenize_records(small_pool.path, tiny_tokenizer_dir, "doit", tmp_path / "a")
    assert pq.read_table(pre).num_rows == small_pool.count()
    looked_up = tokenize(mix.path, tiny_tokenizer_dir, "doit", tmp_path / "a", pretokenized=pre)
    ran = tokenize(mix.path, tiny_tokenizer_dir, "doit", tmp_path / "b")
    assert looked_up.num_rows == n + 50 and looked_up.equals(ran)
