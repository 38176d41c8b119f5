"""Presets' parameter counts, the memory planner and `doitray plan`."""
import json

import pytest

from doitray.cli import main
from doitray.models.memory import GIB, memory_plan
from doitray.models.presets import BACKBONES, PRESETS, TINY, get_preset, hf_config, param_counts


@pytest.mark.parametrize("name", BACKBONES + ("smollm2-135m",))
def test_backbone_counts_match_published(name):
    p = get_preset(name)
    assert abs(param_counts(p)["total"] / p.published_params - 1) < 0.01


def test_llama_published_figures():
    assert round(param_counts(get_preset("llama-7b"))["total"] / 1e9, 2) == 6.74
    assert round(param_counts(get_preset("llama-13b"))["total"] / 1e9, 2) == 13.02
    assert round(param_counts(get_preset("llama-33b"))["total"] / 1e9, 1) == 32.5
    assert get_preset("chinese-llama-plus-7b").vocab == 49953


@pytest.mark.parametrize("name", ["tiny-m", "qwen1.5-7b", "smollm2-135m", "llama-13b"])
def test_analytic_count_equals_transformers_model(name):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(hf_config(get_preset(name)))
    assert sum(x.numel() for x in m.parameters()) == param_counts(get_preset(name))["total"]


def test_tiny_family_spans_30x_with_vllm_head_dim():
    sizes = [param_counts(get_preset(n))["total"] for n in TINY]
    assert sizes == sorted(sizes) and sizes[-1] / sizes[0] >= 25
    assert all(get_preset(n).head_dim >= 64 for n in TINY)


def test_unknown_preset_names_allowed_values():
    with pytest.raises(ValueError, match="allowed: .*llama-7b"):
        get_preset("gpt-5")


def test_planner_scales_with_gpus_and_ac():
    p = get_preset("llama-7b")
    one, eight = memory_plan(p, gpus=1), memory_plan(p, gpus=8)
    assert eight.param_bytes < one.param_bytes and eight.optimizer_bytes * 8 == pytest.approx(one.optimizer_bytes, rel=1e-6)
    assert one.optimizer_bytes == pytest.approx(8 * one.params, rel=1e-6)       # Adam m + v in fp32
    assert not one.fits and eight.fits and 1 < one.min_gpus <= 8
    ac = memory_plan(p, gpus=8, activation_checkpointing=True)
    assert ac.activation_bytes < eight.activation_bytes / 4
    long = memory_plan(p, gpus=8, seq_len=4096, micro_batch=4)
    assert long.activation_bytes > 6 * eight.activation_bytes
    assert memory_plan(get_preset("llama-33b"), gpus=8).min_gpus > memory_plan(p, gpus=8).min_gpus


def test_planner_never_fits_small_gpu():
    pl = memory_plan(get_preset("llama-33b"), gpus=1, gpu_mem_gib=4, seq_len=2048, micro_batch=8)
    assert pl.min_gpus is None and not pl.fits


def test_cli_plan_json(capsys):
    assert main(["plan", "llama-7b", "--gpus", "8", "--gpu-mem", "80", "--seq", "2048", "--micro-batch", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "llama-7b" and abs(out["params"] / 6.74e9 - 1) < 0.01
    assert out["total_bytes"] == sum(out[k] for k in ("param_bytes", "grad_bytes", "optimizer_bytes",
                                                       "activation_bytes", "overhead_bytes"))
    assert out["fits"] and out["total_bytes"] < 80 * GIB


def test_cli_plan_text_all_and_error(capsys):
    assert main(["plan", "all", "--gpus", "4", "--ac"]) == 0
    text = capsys.readouterr().out
    assert all(n in text for n in PRESETS)
    assert main(["plan", "nope"]) == 2
    assert "unknown model preset" in capsys.readouterr().err
