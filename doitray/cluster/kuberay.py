"""KubeRay ``RayCluster`` / ``RayJob`` manifests: the CRD schema made strict, the operator's checks, policy.

The CRD's ``openAPIV3Schema`` is made strict the way the API server's strict field validation treats
unknown fields; on top come the checks KubeRay's operator applies and the CRD cannot express, and with
``policy=True`` doitray's rules (nothing on the head, an on-demand ``TRAIN_DRIVER`` group).
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from doitray.cluster.issues import DRIVER_RESOURCE, Issue, _issue, _Loader, _p, _placeholder_warning, _version

RAY_KINDS = ("RayCluster", "RayJob")
_REPO = Path(__file__).resolve().parents[2]


class CrdNotFoundError(Exception):
    """The KubeRay CRD folder is missing or lacks the CRD for a kind."""


_CRD_FILES = {"RayCluster": ("rayclusters.crd.yaml", "ray.io_rayclusters.yaml"),
              "RayJob": ("rayjobs.crd.yaml", "ray.io_rayjobs.yaml")}


def default_crd_dir() -> Path | None:
    """``$DOITRAY_SHARED_DATA/kuberay`` or ``<repo>/../shared/data/kuberay``, when present."""
    env = os.environ.get("DOITRAY_SHARED_DATA")
    for d in ([Path(env) / "kuberay"] if env else []) + [_REPO.parent / "shared" / "data" / "kuberay"]:
        if d.is_dir():
            return d
    return None


def _strict(node: Any) -> Any:
    """Copy of an OpenAPI v3 schema with unknown fields rejected and ``nullable`` honoured."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_strict(s) for s in out[key]]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@lru_cache(maxsize=8)
def _load_crd_schema(crd_dir: str, kind: str) -> dict:
    d = Path(crd_dir)
    if not d.is_dir():
        raise CrdNotFoundError(f"KubeRay CRD folder {crd_dir} does not exist")
    named = [d / n for n in _CRD_FILES.get(kind, ()) if (d / n).is_file()]
    for path in named + sorted(p for p in d.glob("*.y*ml") if p not in named):
        crd = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        if isinstance(crd, dict) and crd.get("kind") == "CustomResourceDefinition" \
                and crd.get("spec", {}).get("names", {}).get("kind") == kind:
            for v in crd["spec"].get("versions", []):
                if v.get("name") == "v1":
                    return _strict(v["schema"]["openAPIV3Schema"])
    raise CrdNotFoundError(f"no v1 CustomResourceDefinition for kind {kind} in {crd_dir}")


def kuberay_schema(kind: str, crd_dir: str | os.PathLike | None = None) -> dict:
    """The strict ``openAPIV3Schema`` (v1) of a KubeRay kind, from the CRD YAMLs in ``crd_dir``."""
    d = crd_dir or default_crd_dir()
    if d is None:
        raise CrdNotFoundError("KubeRay CRDs not found: pass --crd-dir DIR, a folder holding the KubeRay v1.7 CRD "
                               "YAMLs (ray-operator/config/crd/bases or the Helm chart's crds/)")
    return _load_crd_schema(str(Path(d).resolve()), kind)


def _k8s_validator(schema: dict):
    import jsonschema
    from jsonschema import ValidationError

    def list_type(validator, value, instance, schema):
        if not validator.is_type(instance, "array"):
            return
        keys = schema.get("x-kubernetes-list-map-keys", []) if value == "map" else None
        seen = set()
        for item in instance:
            key = (tuple(item.get(k) for k in keys) if keys and isinstance(item, dict)
                   else json.dumps(item, sort_keys=True) if value == "set" else None)
            if key is None:
                continue
            if key in seen:
                shown = {k: v for k, v in zip(keys, key) if v is not None} if keys else item
                yield ValidationError(f"duplicate entry {shown!r} "
                                      f"(x-kubernetes-list-type: {value})")
            seen.add(key)

    checker = jsonschema.FormatChecker(formats=())
    checker.checks("int32")(lambda v: not isinstance(v, int) or -2**31 <= v < 2**31)
    checker.checks("int64")(lambda v: not isinstance(v, int) or -2**63 <= v < 2**63)
    cls = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-type": list_type})
    return cls(schema, format_checker=checker)


def _drop_nulls(obj: Any, path: str, dropped: list[str]) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if v is None:
                dropped.append(_p(path, str(k)))
            else:
                out[k] = _drop_nulls(v, _p(path, str(k)), dropped)
        return out
    if isinstance(obj, list):
        return [_drop_nulls(v, _p(path, i), dropped) for i, v in enumerate(obj)]
    return obj


def validate_kuberay(doc: dict, crd_dir: str | os.PathLike | None = None, *,
                     policy: bool = True) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) for a RayCluster or RayJob manifest, against the KubeRay v1 CRD."""
    kind = doc.get("kind")
    if kind not in RAY_KINDS:
        return [Issue("kind", f"unsupported kind {kind!r}; validated kinds: {', '.join(RAY_KINDS)}")], []
    if doc.get("apiVersion") != "ray.io/v1":
        return [Issue("apiVersion", f"{doc.get('apiVersion')!r}: this validator checks ray.io/v1 manifests")], []
    dropped: list[str] = []
    doc = _drop_nulls(doc, "", dropped)
    warnings = [Issue(p, "null value: the API server prunes it") for p in dropped]
    errors = sorted((_issue(e) for e in _k8s_validator(kuberay_schema(kind, crd_dir)).iter_errors(doc)),
                    key=lambda i: i.path)
    if errors:  # semantic checks assume the shapes the schema guarantees
        return errors, warnings + _placeholder_warning(doc)
    errors += _operator_checks(doc, warnings)
    if policy:
        errors += _kuberay_policy(doc, warnings)
    return errors, warnings + _placeholder_warning(doc)


_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_MAX = {"RayCluster": 53, "RayJob": 47}  # KubeRay appends suffixes for services / clusters
_OBJECT_META = {"name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences",
                "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                "deletionGracePeriodSeconds", "managedFields", "selfLink"}
_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")
_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
_GPU = "nvidia.com/gpu"
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+|[KMGTPE]i?|[mkMGTPE])?$")


def _label_problems(key: str, value: Any) -> list[str]:
    out = []
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUB.match(prefix)):
        out.append(f"label key {key!r}: prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        out.append(f"label key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.'")
    if not isinstance(value, str) or len(value) > 63 or (value and not _LABEL_NAME.match(value)):
        out.append(f"label value {value!r} for {key!r}: must be <= 63 alphanumerics, '-', '_' or '.'")
    return out


def _head_env(head: dict) -> dict[str, str]:
    containers = ((head.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return {e.get("name"): str(e.get("value", "")) for e in containers[0].get("env") or []}


def _containers(group: dict) -> list[dict]:
    return ((group.get("template") or {}).get("spec") or {}).get("containers") or []


def _gpu_count(group: dict) -> int:
    counts = [str((c.get("resources") or {}).get("limits", {}).get(_GPU, "0")) for c in _containers(group)]
    return sum(int(n) for n in counts if n.isdigit())


def _group_checks(path: str, g: dict, *, v2: bool, autoscaling: bool, ray_version: Any,
                  warnings: list[Issue]) -> list[Issue]:
    errors = []
    rsp, res = g.get("rayStartParams") or {}, g.get("resources") or {}
    pod = (g.get("template") or {}).get("spec") or {}
    if not _containers(g):
        errors.append(Issue(_p(path, "template.spec.containers"), "needs at least one container (the Ray one first)"))
    if res and any(k in rsp for k in _START_RESOURCES):
        errors.append(Issue(_p(path, "resources"), "set resources here or in rayStartParams "
                            f"({', '.join(_START_RESOURCES)}), not both (KubeRay rejects the group)"))
    if "labels" in rsp:
        errors.append(Issue(_p(path, "rayStartParams.labels"), "not supported: use the group's top-level labels"))
    for k, v in (g.get("labels") or {}).items():
        errors += [Issue(_p(path, "labels", k), m) for m in _label_problems(k, v)]
    for k, v in res.items():
        if not _QUANTITY.match(str(v)):
            errors.append(Issue(_p(path, "resources", k), f"{v!r} is not a non-negative quantity"))
    if v2 and pod.get("restartPolicy") not in (None, "", "Never"):
        errors.append(Issue(_p(path, "template.spec.restartPolicy"),
                            f"{pod['restartPolicy']!r}: must be Never or unset with autoscaler v2"))
    if autoscaling and g.get("suspend"):
        errors.append(Issue(_p(path, "suspend"), "a worker group cannot be suspended with the autoscaler enabled"))
    for ci, c in enumerate(_containers(g)):
        cres = c.get("resources") or {}
        for section in ("limits", "requests"):
            n = (cres.get(section) or {}).get(_GPU)
            if n is not None and not re.fullmatch(r"\d+", str(n)):
                errors.append(Issue(_p(path, "template.spec.containers", ci, "resources", section, _GPU),
                                    f"{n!r}: GPU counts are whole numbers"))
        lim, req = (cres.get("limits") or {}).get(_GPU), (cres.get("requests") or {}).get(_GPU)
        if lim is not None and req is not None and str(lim) != str(req):
            errors.append(Issue(_p(path, "template.spec.containers", ci, "resources.requests", _GPU),
                                f"{req!r} differs from limits {lim!r}; extended resources need requests == limits"))
        image = str(c.get("image", ""))
        tag = image.rpartition(":")[2] if "rayproject/ray" in image and ":" in image else ""
        if ci == 0 and ray_version and tag[:1].isdigit() and _version(tag) != _version(ray_version):
            warnings.append(Issue(_p(path, "template.spec.containers", ci, "image"),
                                  f"{image} does not match rayVersion {ray_version}"))
    return errors


def _cluster_spec_checks(spec: dict, prefix: str, warnings: list[Issue]) -> list[Issue]:
    """The checks KubeRay's operator applies to a RayCluster spec, plus replica bounds."""
    errors = []
    head = spec.get("headGroupSpec") or {}
    opts = spec.get("autoscalerOptions") or {}
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    env = _head_env(head)
    v2_env = env.get("RAY_enable_autoscaler_v2") in ("1", "true")
    v2 = autoscaling and (opts.get("version") == "v2" or v2_env or (
        opts.get("version") is None and _version(spec.get("rayVersion", "0")) >= (2, 47)))
    if not autoscaling and v2_env:
        errors.append(Issue(_p(prefix, "headGroupSpec.template.spec.containers[0].env"),
                            "RAY_enable_autoscaler_v2 is set but enableInTreeAutoscaling is false"))
    if autoscaling and opts.get("version") and "RAY_enable_autoscaler_v2" in env:
        errors.append(Issue(_p(prefix, "autoscalerOptions.version"),
                            "set either autoscalerOptions.version or the head env RAY_enable_autoscaler_v2, not both"))
    kw = dict(v2=v2, autoscaling=autoscaling, ray_version=spec.get("rayVersion"), warnings=warnings)
    errors += _group_checks(_p(prefix, "headGroupSpec"), head, **kw)
    seen: set[str] = set()
    for i, g in enumerate(spec.get("workerGroupSpecs") or []):
        path = _p(prefix, "workerGroupSpecs", i)
        errors += _group_checks(path, g, **kw)
        name = g.get("groupName")
        if name in seen:
            errors.append(Issue(_p(path, "groupName"), f"duplicate worker group name {name!r}"))
        seen.add(name)
        lo, hi = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1)
        reps = g.get("replicas", lo)
        for f, v in (("minReplicas", lo), ("maxReplicas", hi), ("replicas", reps)):
            if v < 0:
                errors.append(Issue(_p(path, f), f"{v} is negative"))
        if lo > hi:
            errors.append(Issue(_p(path, "minReplicas"), f"minReplicas ({lo}) is above maxReplicas ({hi})"))
        elif not lo <= reps <= hi:
            errors.append(Issue(_p(path, "replicas"), f"{reps} is outside [minReplicas, maxReplicas] = [{lo}, {hi}]"))
    return errors


def _rayjob_checks(spec: dict, warnings: list[Issue]) -> list[Issue]:
    errors = []
    mode = spec.get("submissionMode", "K8sJobMode")
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    selector = spec.get("clusterSelector") or {}
    if mode not in _MODES:
        errors.append(Issue("spec.submissionMode", f"{mode!r}; allowed: {', '.join(_MODES)}"))
    if not spec.get("entrypoint") and mode != "InteractiveMode":
        errors.append(Issue("spec.entrypoint", f"required in {mode}"))
    if spec.get("suspend") and not shutdown:
        errors.append(Issue("spec.suspend", "a RayJob can be suspended only with shutdownAfterJobFinishes: true"))
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    if ttl < 0 or (ttl > 0 and not shutdown):
        errors.append(Issue("spec.ttlSecondsAfterFinished",
                            "must be >= 0" if ttl < 0 else "needs shutdownAfterJobFinishes: true"))
    if not spec.get("rayClusterSpec") and not selector:
        errors.append(Issue("spec.rayClusterSpec", "one of rayClusterSpec or clusterSelector must be set"))
    if selector and not selector.get("ray.io/cluster"):
        errors.append(Issue("spec.clusterSelector.ray.io/cluster", "required: the name of the RayCluster to use"))
    if selector and mode == "SidecarMode":
        errors.append(Issue("spec.clusterSelector", "not supported in SidecarMode"))
    if mode == "SidecarMode" and (spec.get("submitterPodTemplate") or spec.get("submitterConfig")):
        errors.append(Issue("spec.submissionMode",
                            "SidecarMode supports neither submitterPodTemplate nor submitterConfig"))
    if mode == "InteractiveMode" and spec.get("backoffLimit", 0) > 0:
        errors.append(Issue("spec.backoffLimit", "must be 0 in InteractiveMode"))
    if spec.get("backoffLimit", 0) < 0:
        errors.append(Issue("spec.backoffLimit", "must be >= 0"))
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        errors.append(Issue("spec.activeDeadlineSeconds", "must be a positive integer"))
    try:
        env = yaml.safe_load(spec.get("runtimeEnvYAML") or "")
        if env is not None and not isinstance(env, dict):
            errors.append(Issue("spec.runtimeEnvYAML", f"must be a YAML mapping, got {type(env).__name__}"))
    except yaml.YAMLError as e:
        errors.append(Issue("spec.runtimeEnvYAML", f"not valid YAML: {' '.join(str(e).split())}"))
    if spec.get("entrypointResources"):
        try:
            res = json.loads(spec["entrypointResources"])
            if not isinstance(res, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in res.values()):
                raise ValueError
        except ValueError:
            errors.append(Issue("spec.entrypointResources", 'must be a JSON object of non-negative numbers, '
                                'e.g. \'{"TRAIN_DRIVER": 0.01}\''))
    ds = spec.get("deletionStrategy")
    if ds:
        warnings.append(Issue("spec.deletionStrategy", "needs the operator's RayJobDeletionPolicy feature gate"))
        if ds.get("deletionRules") and shutdown:
            errors.append(Issue("spec.deletionStrategy.deletionRules",
                                "deletionRules and shutdownAfterJobFinishes are mutually exclusive"))
    if spec.get("rayClusterSpec"):
        errors += _cluster_spec_checks(spec["rayClusterSpec"], "spec.rayClusterSpec", warnings)
    return errors


def _operator_checks(doc: dict, warnings: list[Issue]) -> list[Issue]:
    """What the API server and KubeRay's operator reject beyond the CRD schema."""
    errors = []
    kind, meta = doc["kind"], doc.get("metadata") or {}
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        errors.append(Issue("metadata.name", "required"))
    elif name and (len(name) > _NAME_MAX[kind] or not _DNS1035.match(name)):
        errors.append(Issue("metadata.name", f"{name!r}: a {kind} name is a DNS-1035 label (lower-case letters, "
                            f"digits, '-', starting with a letter) of at most {_NAME_MAX[kind]} characters"))
    for k in sorted(set(meta) - _OBJECT_META):
        errors.append(Issue(_p("metadata", k), "unknown field (not in ObjectMeta)"))
    for k, v in (meta.get("labels") or {}).items():
        errors += [Issue(_p("metadata.labels", k), m) for m in _label_problems(k, v)]
    for k, v in (meta.get("annotations") or {}).items():
        if not isinstance(v, str):
            errors.append(Issue(_p("metadata.annotations", k), "annotation values are strings"))
    if not isinstance(doc.get("spec"), dict):
        return errors + [Issue("spec", "required")]
    if kind == "RayCluster":
        return errors + _cluster_spec_checks(doc["spec"], "spec", warnings)
    return errors + _rayjob_checks(doc["spec"], warnings)


def _offers_driver(g: dict) -> bool:
    v = (g.get("resources") or {}).get(DRIVER_RESOURCE)
    if v is None:
        try:
            v = json.loads((g.get("rayStartParams") or {}).get("resources") or "{}").get(DRIVER_RESOURCE)
        except (ValueError, AttributeError):
            v = None
    try:
        return float(v) > 0 and g.get("maxReplicas", 1) > 0
    except (TypeError, ValueError):
        return False


def _kuberay_policy(doc: dict, warnings: list[Issue]) -> list[Issue]:
    """doitray's rules: nothing on the head, an on-demand driver group, GPU groups that scale from zero."""
    errors = []
    spec = doc["spec"]
    cs, prefix = (spec, "spec") if doc["kind"] == "RayCluster" else (spec.get("rayClusterSpec"), "spec.rayClusterSpec")
    if doc["kind"] == "RayJob":
        try:
            has_driver = DRIVER_RESOURCE in json.loads(spec.get("entrypointResources") or "{}")
        except ValueError:
            has_driver = False
        if not has_driver:
            warnings.append(Issue("spec.entrypointResources", f'without {{"{DRIVER_RESOURCE}": 0.01}} the job driver '
                                  "runs on the head"))
    if not cs:
        return errors
    head = cs["headGroupSpec"]
    cpus = (head.get("rayStartParams") or {}).get("num-cpus", (head.get("resources") or {}).get("CPU"))
    if str(cpus) != "0":
        errors.append(Issue(_p(prefix, "headGroupSpec.rayStartParams.num-cpus"),
                            f'{cpus!r}: must be "0" so that no task or trial is scheduled on the head'))
    workers = cs.get("workerGroupSpecs") or []
    if not any(_offers_driver(g) for g in workers):
        errors.append(Issue(_p(prefix, "workerGroupSpecs"), f"no worker group offers {DRIVER_RESOURCE} "
                            f'(resources: {{{DRIVER_RESOURCE}: "1"}} on an on-demand CPU group with maxReplicas > 0)'))
    for i, g in enumerate(workers):
        if _gpu_count(g) == 0:
            continue
        path = _p(prefix, "workerGroupSpecs", i)
        pod = g["template"].get("spec") or {}
        shm = {v.get("name") for v in pod.get("volumes") or [] if (v.get("emptyDir") or {}).get("medium") == "Memory"}
        if not any(m.get("mountPath") == "/dev/shm" and m.get("name") in shm
                   for c in _containers(g) for m in c.get("volumeMounts") or []):
            warnings.append(Issue(_p(path, "template.spec.volumes"), "GPU group without a memory-backed /dev/shm "
                                  "(emptyDir medium: Memory); NCCL and the object store need it"))
        if not any(t.get("key") == _GPU for t in pod.get("tolerations") or []):
            warnings.append(Issue(_p(path, "template.spec.tolerations"), f"no toleration for the {_GPU} taint"))
        if g.get("minReplicas", 0) > 0:
            warnings.append(Issue(_p(path, "minReplicas"), "GPU pods stay up while idle; use 0 to scale to zero"))
    return errors
