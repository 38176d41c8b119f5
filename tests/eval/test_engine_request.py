"""What an evaluation replica asks Ray for, per engine kind, without a GPU.

``replica_request`` is the part of ``ServeEngine`` that builds vLLM's engine arguments, the replica actor's
options and its placement group; ``replica_deployment`` hands them to ``serve.deployment``, which checks them
(the actor must fit the placement group's first bundle) as it does on a cluster. Both are what ``ServeEngine``
calls; the CPU kind runs end to end in test_serve_e2e.py.
"""
from __future__ import annotations

import pytest

from doitray.eval.engine import EngineOptions, replica_deployment, replica_request


def test_gpu_tensor_parallel_replica_is_one_strict_pack_group_of_gpu_bundles():
    opts = EngineOptions(gpu=True, tensor_parallel_size=4, num_cpus=2, resources={"GPU_NODE": 0.01})
    req = replica_request(opts)
    assert req["deployment"] == {
        "placement_group_bundles": [{"CPU": 2, "GPU_NODE": 0.01}] + [{"GPU": 1, "CPU": 1}] * 4,
        "placement_group_strategy": "STRICT_PACK",  # a TP group never spans nodes
    }
    # the replica actor holds nothing outside its group; vLLM's Ray executor starts one worker per GPU bundle
    assert req["ray_actor_options"]["num_cpus"] == 0
    assert "num_gpus" not in req["ray_actor_options"] and "resources" not in req["ray_actor_options"]
    kw = req["engine_kwargs"]
    assert kw["tensor_parallel_size"] == 4 and kw["distributed_executor_backend"] == "ray"
    assert kw["gpu_memory_utilization"] == 0.85 and kw["enforce_eager"] is False  # CUDA graphs on GPU
    assert "VLLM_CPU_KVCACHE_SPACE" not in req["ray_actor_options"]["runtime_env"]["env_vars"]

    dep, same = replica_deployment(opts)  # Serve accepts it: the actor fits the first bundle
    assert same == req
    rc = dep._replica_config
    assert rc.placement_group_bundles == req["deployment"]["placement_group_bundles"]
    assert rc.placement_group_strategy == "STRICT_PACK"
    assert dep._deployment_config.max_ongoing_requests == opts.max_ongoing_requests


def test_gpu_single_replica_holds_one_gpu_and_no_group():
    req = replica_request(EngineOptions(gpu=True, resources={"GPU_NODE": 0.01}))
    assert req["deployment"] == {}
    actor = req["ray_actor_options"]
    assert actor["num_gpus"] == 1 and actor["num_cpus"] == 1.0 and actor["resources"] == {"GPU_NODE": 0.01}
    assert "distributed_executor_backend" not in req["engine_kwargs"]
    assert replica_deployment(EngineOptions(gpu=True))[0]._replica_config.placement_group_bundles is None


def test_cpu_replica_runs_vllm_cpu_in_the_actor_with_its_env(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    req = replica_request(EngineOptions(gpu=False, kv_cache_gib=3))
    env = req["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3" and env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert env["TORCHDYNAMO_DISABLE"] == "1" and env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "num_gpus" not in req["ray_actor_options"] and req["deployment"] == {}
    kw = req["engine_kwargs"]
    assert kw["distributed_executor_backend"] == "uni" and kw["enforce_eager"] is True
    assert "gpu_memory_utilization" not in kw

    tp2 = replica_request(EngineOptions(gpu=False, tensor_parallel_size=2, enforce_eager=False,
                                        engine_kwargs={"max_num_batched_tokens": 4096}))
    env2 = tp2["ray_actor_options"]["runtime_env"]["env_vars"]
    assert tp2["engine_kwargs"]["distributed_executor_backend"] == "mp" and tp2["deployment"] == {}
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env2 and "TORCHDYNAMO_DISABLE" not in env2
    assert tp2["engine_kwargs"]["max_num_batched_tokens"] == 4096  # engine_kwargs pass through last


def test_the_engine_kind_must_be_decided_and_options_are_checked():
    with pytest.raises(ValueError, match="needs the engine kind"):
        replica_request(EngineOptions())
    for bad, msg in (({"tensor_parallel_size": 0}, "integer >= 1"), ({"tensor_parallel_size": "4"}, "integer >= 1"),
                     ({"gpu": "yes"}, "true or false")):
        with pytest.raises(ValueError, match=msg):
            EngineOptions.from_any(bad)
