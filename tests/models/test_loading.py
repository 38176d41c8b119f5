"""Model building and loading: packed sequences, embedding resize, meta-device + DCP HF load."""
import json
import os

import numpy as np
import pytest
import torch

from doitray.data.templates import get_template
from doitray.data.tokenizer import load_tokenizer
from doitray.models.loading import (build_config_model, build_meta_model, prepare_hf_dir, reinit_buffers,
                                    resolve_model)
from doitray.models.presets import get_preset, hf_config


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir, get_template("doit"))


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory, tok):
    """A saved tiny model whose vocabulary lacks the last 5 tokens of the tokenizer."""
    cfg = hf_config(get_preset("tiny-xs"), vocab_size=len(tok) - 5)
    m = build_config_model(cfg.to_dict(), seed=3)
    d = tmp_path_factory.mktemp("tiny_hf")
    m.save_pretrained(str(d))
    return str(d)


def test_packed_row_equals_separate_examples(tok):
    """transformers' masking_utils turns restarting position_ids (no attention_mask) into a block mask."""
    from doitray.train import data as D
    from doitray.train.step import loss_sum as _loss_sum

    model = build_config_model(hf_config(get_preset("tiny-s"), vocab_size=len(tok)).to_dict(), seed=0).eval()
    t = get_template("doit")
    exs = [t.encode(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
           for q, a in [("What is 3 plus 4?", "3 plus 4 is 7."), ("def f(x): return x * 2", "The quick brown fox.")]]
    with torch.no_grad():
        sep = [model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0] for e in exs]
        ids = exs[0].input_ids + exs[1].input_ids
        pos = list(range(len(exs[0].input_ids))) + list(range(len(exs[1].input_ids)))
        packed = model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]), use_cache=False).logits[0]
        n0 = len(exs[0].input_ids)
        torch.testing.assert_close(packed[:n0], sep[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(packed[n0:], sep[1], atol=1e-5, rtol=1e-4)
        # without position_ids the second example would see the first: logits differ
        naive = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        assert not torch.allclose(naive[n0:], sep[1], atol=1e-3)
        # the loop's loss on the packed row = the sum of the separate losses
        labels = np.array([exs[0].labels + exs[1].labels])
        b = {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([pos]),
             "targets": torch.from_numpy(D.shifted_targets(labels, np.array([pos])))}
        sep_sum = 0.0
        for e in exs:
            lab = np.array([e.labels])
            bb = {"input_ids": torch.tensor([e.input_ids]), "position_ids": torch.arange(len(e.input_ids))[None],
                  "targets": torch.from_numpy(D.shifted_targets(lab, np.arange(len(e.input_ids))[None]))}
            sep_sum += float(_loss_sum(model, bb))
        assert float(_loss_sum(model, b)) == pytest.approx(sep_sum, rel=1e-5)


def test_prepare_resizes_embeddings_with_mean_rows(tiny_hf, tok, tmp_path):
    from safetensors.torch import load_file

    out = prepare_hf_dir(tiny_hf, tok, tmp_path / "prep")
    old = load_file(os.path.join(tiny_hf, "model.safetensors"))
    new = load_file(os.path.join(out, "model.safetensors"))
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        assert new[k].shape[0] == len(tok)
        torch.testing.assert_close(new[k][: old[k].shape[0]], old[k])
        torch.testing.assert_close(new[k][-1], old[k].mean(0))
    assert json.load(open(os.path.join(out, "config.json")))["vocab_size"] == len(tok)
    assert os.path.exists(os.path.join(out, "tokenizer.json"))
    # no resize needed: the weights are linked, not copied
    out2 = prepare_hf_dir(out, tok, tmp_path / "prep2")
    assert os.path.islink(os.path.join(out2, "model.safetensors"))


def test_meta_init_and_dcp_hf_load_equal_from_pretrained(tiny_hf, tok, tmp_path):
    from transformers import AutoModelForCausalLM

    from doitray.train.fsdp import load_hf_weights

    d = prepare_hf_dir(tiny_hf, tok, tmp_path / "prep")
    ref = AutoModelForCausalLM.from_pretrained(d).eval()
    m = build_meta_model(d)
    assert all(p.is_meta for p in m.parameters())
    m.to_empty(device="cpu")
    load_hf_weights(m, d)
    reinit_buffers(m, torch.device("cpu"))
    m.eval()
    x = torch.tensor([[5, 40, 50, 60, 70, 80]])
    with torch.no_grad():
        assert torch.equal(m(input_ids=x).logits, ref(input_ids=x).logits)


def test_resolve_model_errors(tmp_path, tiny_hf, tiny_tokenizer_dir):
    with pytest.raises(ValueError, match="needs model_path"):
        resolve_model("llama-7b", template="doit", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="shapes of preset llama-7b"):
        resolve_model("llama-7b", template="doit", cache_dir=tmp_path, model_path=tiny_hf,
                      tokenizer_dir=tiny_tokenizer_dir)
    with pytest.raises(ValueError, match="needs tokenizer_dir"):
        resolve_model("tiny-s", template="doit", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="neither a preset"):
        resolve_model(str(tmp_path), template="doit", cache_dir=tmp_path)
    src = resolve_model("tiny-m", template="doit", cache_dir=tmp_path, tokenizer_dir=tiny_tokenizer_dir)
    assert src.kind == "config" and src.config["vocab_size"] == len(load_tokenizer(tiny_tokenizer_dir))


def test_study_model_levels_resolve_and_export_their_tokenizer(tmp_path):
    from doitray.models.loading import export_tokenizer, level_source

    assert level_source({"preset": "llama-7b", "path": "s3://b/llama"}) == ("llama-7b", "s3://b/llama")
    assert level_source({"gguf": "smollm2"}) == ("smollm2-135m", None)
    assert level_source({"path": "/m/hf"}) == ("/m/hf", None)
    out = export_tokenizer({"gguf": "smollm2"}, "doit", tmp_path / "tok", tmp_path / "cache")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert {"<user>", "<assistant>", "<eot>"} <= set(tok.get_added_vocab()) and len(tok) > 49152
