"""Ray cluster-launcher YAML: Ray's own validator plus doitray's launcher policy.

The config goes through ``prepare_config`` then ``validate_config`` (which merge the provider defaults
without any cloud call); ``policy=True`` adds doitray's rules: a CPU-0 head, an on-demand node type
offering ``TRAIN_DRIVER``. Needs no running Ray and makes no network call.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import re
from typing import Any, Iterator

from doitray.cluster.issues import DRIVER_RESOURCE, Issue, _issue, _p, _placeholder_warning, _version


def _ray_schema() -> dict:
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def _schema_issues(schema: dict, instance: Any) -> list[Issue]:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return sorted((_issue(e) for e in cls(schema).iter_errors(instance)), key=lambda i: i.path)


@contextlib.contextmanager
def _quiet_ray() -> Iterator[io.StringIO]:
    """Silence the autoscaler's INFO logs and capture what its cli_logger prints to stdout."""
    logger = logging.getLogger("ray.autoscaler")
    level = logger.level
    logger.setLevel(logging.WARNING)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield buf
    finally:
        logger.setLevel(level)


def validate_launcher(cfg: Any, *, policy: bool = True) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) for a cluster-launcher config, checked by Ray's own validator."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    if not isinstance(cfg, dict):
        return [Issue("", f"a launcher config is a mapping, got {type(cfg).__name__}")], []
    provider = cfg.get("provider")
    if not isinstance(provider, dict) or not isinstance(provider.get("type"), str):
        return [Issue("provider.type", "required: the cloud provider (aws, gcp, azure, ...)")], []
    schema = _ray_schema()
    warnings: list[Issue] = []
    with _quiet_ray() as out:
        try:
            prepared = prepare_config(copy.deepcopy(cfg))
        except Exception as e:  # Ray raises bare KeyError/AssertionError/NotImplementedError here
            return _schema_issues(schema, cfg) or [Issue("", f"Ray prepare_config failed: {type(e).__name__}: {e}")], []
        errors = _schema_issues(schema, prepared)
        try:
            validate_config(prepared)
        except Exception as e:
            if not errors:  # a schema failure is already listed with its path
                named = re.search(r"`(\w+)`", str(e))
                errors.append(Issue(named.group(1) if named else "", f"Ray validate_config: {e}"))
    warnings += [Issue("", line) for line in out.getvalue().splitlines() if line.strip()]
    if policy and not errors:
        errors += _launcher_policy(prepared, warnings)
    return errors, warnings + _placeholder_warning(cfg)


def _is_spot(provider: str, node_config: dict) -> bool:
    if provider == "aws":
        return (node_config.get("InstanceMarketOptions") or {}).get("MarketType", "").lower() == "spot"
    if provider == "gcp":
        sched = node_config.get("scheduling") or {}
        for s in sched if isinstance(sched, list) else [sched]:
            if isinstance(s, dict) and (s.get("preemptible") or str(s.get("provisioningModel", "")).upper() == "SPOT"):
                return True
    if provider == "azure":
        return str(node_config.get("azure_arm_parameters", {}).get("priority", "")).lower() == "spot"
    return False


def _launcher_policy(cfg: dict, warnings: list[Issue]) -> list[Issue]:
    import ray

    if not cfg.get("available_node_types") or not cfg.get("head_node_type"):
        return [Issue("available_node_types", "required: a head node type and worker node types")]
    errors = []
    types, head = cfg["available_node_types"], cfg["head_node_type"]
    for key in ("image", "head_image", "worker_image"):
        image = str((cfg.get("docker") or {}).get(key, ""))
        tag = image.rpartition(":")[2] if image.startswith("rayproject/ray:") else ""
        if tag[:1].isdigit() and _version(tag) != _version(ray.__version__):
            warnings.append(Issue(_p("docker", key), f"{image} differs from this Ray ({ray.__version__}); "
                                  "the launcher and the cluster should run the same Ray"))
    provider = cfg["provider"]["type"]
    drivers = []
    for name, t in types.items():
        lo, hi = t.get("min_workers", 0), t.get("max_workers", 0)
        if lo > hi:
            errors.append(Issue(_p("available_node_types", name, "min_workers"),
                                f"min_workers ({lo}) is above max_workers ({hi})"))
        if name != head and hi > cfg["max_workers"]:
            warnings.append(Issue(_p("available_node_types", name, "max_workers"),
                                  f"{hi} exceeds the global max_workers ({cfg['max_workers']}), which caps it"))
        res = t.get("resources", {})
        if name != head and res.get(DRIVER_RESOURCE, 0) > 0 and hi > 0:
            drivers.append(name)
            if _is_spot(provider, t.get("node_config") or {}):
                errors.append(Issue(_p("available_node_types", name, "node_config"),
                                    f"offers {DRIVER_RESOURCE} but runs on spot/preemptible capacity; "
                                    "drivers must live on on-demand nodes"))
        if name != head and res.get("GPU", 0) > 0 and lo > 0:
            warnings.append(Issue(_p("available_node_types", name, "min_workers"),
                                  f"{lo} GPU node(s) stay up while idle; use 0 to scale to zero"))
    if cfg["max_workers"] < 1:
        errors.append(Issue("max_workers", "0 lets the autoscaler add no worker, and the head runs nothing"))
    if types[head].get("resources", {}).get("CPU") != 0:
        errors.append(Issue(_p("available_node_types", head, "resources", "CPU"),
                            "the head must declare CPU: 0 so that no task or trial is scheduled on it"))
    if not drivers:
        errors.append(Issue("available_node_types", f"no worker node type offers {DRIVER_RESOURCE} "
                            f"(resources: {{{DRIVER_RESOURCE}: 1}} on an on-demand CPU type with max_workers > 0); "
                            "study and trial drivers would have nowhere to run"))
    return errors
