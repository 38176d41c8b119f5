"""Cluster definitions: every shipped file validates; broken variants are rejected naming the field.

Launcher YAMLs go through Ray's own prepare_config + validate_config; KubeRay manifests through the
KubeRay v1.7 CRD schema from ../shared/data/kuberay (skipped when absent). No Ray cluster is started.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from doitray.console import CommandError
from doitray.cluster.validate import (DRIVER_RESOURCE, CrdNotFoundError, detect_kind, validate_document,
                                   validate_file, validate_kuberay, validate_launcher)

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
SHIPPED = sorted(CLUSTER.rglob("*.yaml"))
LAUNCHERS = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
MANIFESTS = [CLUSTER / "kuberay" / "raycluster.yaml", CLUSTER / "kuberay" / "rayjob.yaml"]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def errors_of(errors) -> str:
    return "\n".join(str(e) for e in errors)


@pytest.fixture(scope="module")
def crd_dir(shared_data) -> Path:
    d = shared_data / "kuberay"
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    return d


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


# ---------------------------------------------------------------------------------------------- shipped


def test_the_expected_files_are_shipped():
    assert set(LAUNCHERS + MANIFESTS) <= set(SHIPPED)
    assert (CLUSTER / "README.md").is_file()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_shipped_file_validates(path, request):
    kinds = {detect_kind(d) for d in yaml.safe_load_all(path.read_text()) if d}
    crd = request.getfixturevalue("crd_dir") if kinds - {"launcher"} else None
    rep = validate_file(path, crd_dir=crd)
    assert rep.ok, errors_of([e for d in rep.documents for e in d.errors] + rep.errors)
    # the only warnings left are the marked placeholders the user must fill in
    for d in rep.documents:
        assert all("placeholders" in str(w) for w in d.warnings), d.warnings


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_shape(path):
    import ray

    cfg = load(path)
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["cpu-driver"]["resources"][DRIVER_RESOURCE] >= 1
    assert "InstanceMarketOptions" not in types["cpu-driver"]["node_config"]
    assert "scheduling" not in types["cpu-driver"]["node_config"]
    for name, pool in (("gpu-a100", "gpu-a100"), ("gpu-h100", "gpu-h100")):
        t = types[name]
        assert t["min_workers"] == 0 and t["max_workers"] >= 1
        assert t["resources"]["GPU"] == 8
        assert t["labels"] == {"pool": pool}
        nc = t["node_config"]
        assert nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot" \
            or nc.get("scheduling", {}).get("provisioningModel") == "SPOT"
    assert cfg["max_workers"] == sum(t.get("max_workers", 0) for n, t in types.items() if n != cfg["head_node_type"])
    assert cfg["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert any("[gpu]" in c for c in cfg["setup_commands"])
    scheme = "s3://" if cfg["provider"]["type"] == "aws" else "gs://"
    assert any(f"DOITRAY_STORAGE={scheme}" in o for o in cfg["docker"]["run_options"])


def test_kuberay_shape_and_the_job_repeats_the_cluster():
    rc, rj = (load(p) for p in MANIFESTS)
    spec = rc["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["version"] == "v2"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert groups["cpu-driver"]["resources"] == {DRIVER_RESOURCE: "1"}
    for name in ("gpu-a100", "gpu-h100"):
        g = groups[name]
        assert g["labels"] == {"pool": name} and g["minReplicas"] == 0
        pod = g["template"]["spec"]
        c = pod["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        shm = [v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert any(m["mountPath"] == "/dev/shm" and m["name"] in shm for m in c["volumeMounts"])
    # the RayJob's cluster is the RayCluster, so a fix to one cannot silently miss the other
    assert rj["spec"]["rayClusterSpec"] == spec
    assert rj["spec"]["entrypoint"].startswith("python experiments/grid.py --study ")
    assert json.loads(rj["spec"]["entrypointResources"]) == {DRIVER_RESOURCE: 0.01}
    # the study it runs exists and sends its trial drivers to the same resource
    study = REPO / rj["spec"]["entrypoint"].split("--study ")[1].split()[0]
    assert load(study)["driver_resource"] == DRIVER_RESOURCE


# ----------------------------------------------------------------------------------- broken: launcher


def _set(path: str, value):
    def mutate(cfg):
        *parents, last = path.split("/")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _pop(path: str):
    def mutate(cfg):
        *parents, last = path.split("/")
        node = cfg
        for p in parents:
            node = node[p]
        node.pop(last)
    return mutate


LAUNCHER_BREAKS = {
    "fractional-gpu": (_set("available_node_types/gpu-a100/resources/GPU", 0.5),
                       "available_node_types.gpu-a100.resources.GPU: 0.5 is not of type 'integer'"),
    "unknown-top-level-key": (_set("max_worker", 3),
                              "max_worker: unknown field 'max_worker' (did you mean 'max_workers'?)"),
    "unknown-node-type-key": (_set("available_node_types/gpu-h100/min_worker", 0),
                              "available_node_types.gpu-h100.min_worker: unknown field"),
    "min-above-max": (_set("available_node_types/gpu-h100/min_workers", 5),
                      "available_node_types.gpu-h100.min_workers: min_workers (5) is above max_workers (4)"),
    "global-max-below-sum-of-min": (lambda c: (_set("max_workers", 1)(c),
                                               _set("available_node_types/gpu-a100/min_workers", 2)(c)),
                                    "max_workers: Ray validate_config: The specified global `max_workers` is smaller"),
    "global-max-zero": (_set("max_workers", 0), "max_workers: 0 lets the autoscaler add no worker"),
    "non-string-label": (_set("available_node_types/gpu-a100/labels", {"pool": 1}),
                         "available_node_types.gpu-a100.labels.pool: 1 is not of type 'string'"),
    "head-schedules-work": (_set("available_node_types/head/resources", {"CPU": 8}),
                            "available_node_types.head.resources.CPU: the head must declare CPU: 0"),
    "no-driver-node-type": (_pop("available_node_types/cpu-driver"), f"no worker node type offers {DRIVER_RESOURCE}"),
    "unknown-head-type": (_set("head_node_type", "master"), "head_node_type: Ray validate_config"),
    "no-provider": (_pop("provider"), "provider.type: required"),
}


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
@pytest.mark.parametrize("case", sorted(LAUNCHER_BREAKS))
def test_broken_launcher_is_rejected_naming_the_field(path, case):
    mutate, expected = LAUNCHER_BREAKS[case]
    cfg = load(path)
    mutate(cfg)
    errors, _ = validate_launcher(cfg)
    assert expected in errors_of(errors)


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_driver_on_spot_is_rejected(path):
    cfg = load(path)
    nc = cfg["available_node_types"]["cpu-driver"]["node_config"]
    if cfg["provider"]["type"] == "aws":
        nc["InstanceMarketOptions"] = {"MarketType": "spot"}
    else:
        nc["scheduling"] = {"provisioningModel": "SPOT"}
    errors, _ = validate_launcher(cfg)
    assert "available_node_types.cpu-driver.node_config: offers TRAIN_DRIVER but runs on spot" in errors_of(errors)


def test_policy_can_be_switched_off_but_ray_checks_cannot():
    cfg = load(LAUNCHERS[0])
    cfg["available_node_types"]["head"]["resources"] = {"CPU": 8}
    assert validate_launcher(cfg, policy=False)[0] == []
    cfg["available_node_types"]["gpu-a100"]["resources"]["GPU"] = 0.5
    assert "resources.GPU" in errors_of(validate_launcher(cfg, policy=False)[0])


def test_launcher_warnings_for_a_ray_version_mismatch_and_idle_gpus():
    cfg = load(LAUNCHERS[1])
    cfg["docker"]["image"] = "rayproject/ray:2.58.0-py311-gpu"
    cfg["available_node_types"]["gpu-h100"]["min_workers"] = 1
    errors, warnings = validate_launcher(cfg)
    assert errors == []
    text = errors_of(warnings)
    assert "docker.image: rayproject/ray:2.58.0-py311-gpu differs from this Ray" in text
    assert "available_node_types.gpu-h100.min_workers: 1 GPU node(s) stay up while idle" in text


def test_ray_prepare_failures_are_reported_not_raised():
    cfg = load(LAUNCHERS[0])
    del cfg["docker"]["container_name"]
    errors, _ = validate_launcher(cfg)
    assert "Must provide a container & image name" in errors_of(errors)
    cfg = load(LAUNCHERS[0])
    cfg["provider"]["type"] = "nocloud"
    assert "Unsupported node provider: nocloud" in errors_of(validate_launcher(cfg)[0])


# ------------------------------------------------------------------------------------- broken: KubeRay


def _worker(i: int, key: str, value=None, pop: str | None = None):
    def mutate(doc):
        g = cluster_spec(doc)["workerGroupSpecs"][i]
        if pop:
            g[key] = g.pop(pop)
        else:
            g[key] = value
    return mutate


def _gpu_limit(value):
    def mutate(doc):
        cluster_spec(doc)["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resources"]["limits"][
            "nvidia.com/gpu"] = value
    return mutate


def _head_cpus(doc):
    cluster_spec(doc)["headGroupSpec"]["rayStartParams"]["num-cpus"] = "4"


def _dup_port(doc):
    c = cluster_spec(doc)["headGroupSpec"]["template"]["spec"]["containers"][0]
    c["ports"].append({"containerPort": 6379, "name": "gcs2"})


def _both_resource_fields(doc):
    cluster_spec(doc)["workerGroupSpecs"][0]["rayStartParams"] = {"num-cpus": "4"}


def _no_driver_group(doc):
    del cluster_spec(doc)["workerGroupSpecs"][0]


KUBERAY_BREAKS = {  # mutation, expected path (relative to the cluster spec), expected words
    "misspelled-groupName": (_worker(1, "groupname", pop="groupName"), "workerGroupSpecs[1].groupname",
                             "(did you mean 'groupName'?)"),
    "missing-groupName": (_worker(1, "groupname", pop="groupName"), "workerGroupSpecs[1].groupName",
                          "required field is missing"),
    "misspelled-minReplicas": (_worker(1, "minReplica", pop="minReplicas"), "workerGroupSpecs[1].minReplica",
                               "unknown field"),
    "string-minReplicas": (_worker(1, "minReplicas", "1"), "workerGroupSpecs[1].minReplicas", "not of type 'integer'"),
    "fractional-minReplicas": (_worker(1, "minReplicas", 0.5), "workerGroupSpecs[1].minReplicas",
                               "not of type 'integer'"),
    "min-above-max": (_worker(2, "minReplicas", 5), "workerGroupSpecs[2].minReplicas",
                      "minReplicas (5) is above maxReplicas (4)"),
    "replicas-outside-bounds": (_worker(2, "replicas", 9), "workerGroupSpecs[2].replicas", "outside"),
    "int32-overflow": (_worker(2, "maxReplicas", 2**40), "workerGroupSpecs[2].maxReplicas", "int32"),
    "fractional-gpu": (_gpu_limit("0.5"), "workerGroupSpecs[1].template.spec.containers[0].resources.limits"
                       ".nvidia.com/gpu", "whole numbers"),
    "gpu-requests-differ": (_gpu_limit("4"), "workerGroupSpecs[1].template.spec.containers[0].resources.requests"
                            ".nvidia.com/gpu", "requests == limits"),
    "duplicate-group": (_worker(2, "groupName", "gpu-a100"), "workerGroupSpecs[2].groupName", "duplicate"),
    "duplicate-port": (_dup_port, "headGroupSpec.template.spec.containers[0].ports", "duplicate entry"),
    "resources-twice": (_both_resource_fields, "workerGroupSpecs[0].resources", "not both"),
    "restart-policy-v2": (_worker(0, "template", {"spec": {"restartPolicy": "Always", "containers": [
        {"name": "ray-worker", "image": "rayproject/ray:2.60.0-py311-gpu"}]}}),
        "workerGroupSpecs[0].template.spec.restartPolicy", "autoscaler v2"),
    "head-schedules-work": (_head_cpus, "headGroupSpec.rayStartParams.num-cpus", 'must be "0"'),
    "no-driver-group": (_no_driver_group, "workerGroupSpecs", f"no worker group offers {DRIVER_RESOURCE}"),
}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("case", sorted(KUBERAY_BREAKS))
def test_broken_kuberay_is_rejected_naming_the_field(path, case, crd_dir):
    mutate, where, words = KUBERAY_BREAKS[case]
    doc = load(path)
    mutate(doc)
    errors, _ = validate_kuberay(doc, crd_dir)
    prefix = "spec." if doc["kind"] == "RayCluster" else "spec.rayClusterSpec."
    hits = [str(e) for e in errors if e.path == prefix + where]
    assert hits, f"no error at {prefix + where}; got:\n{errors_of(errors)}"
    assert any(words in h for h in hits), hits


RAYJOB_BREAKS = {
    "unknown-spec-field": (lambda d: d["spec"].update(entrypoint_resources="{}"), "spec.entrypoint_resources",
                           "unknown field"),
    "bad-entrypoint-resources": (lambda d: d["spec"].update(entrypointResources='{"TRAIN_DRIVER": "x"}'),
                                 "spec.entrypointResources", "JSON object"),
    "bad-submission-mode": (lambda d: d["spec"].update(submissionMode="BatchMode"), "spec.submissionMode",
                            "K8sJobMode"),
    "ttl-without-shutdown": (lambda d: d["spec"].update(shutdownAfterJobFinishes=False),
                             "spec.ttlSecondsAfterFinished", "shutdownAfterJobFinishes"),
    "runtime-env-not-yaml": (lambda d: d["spec"].update(runtimeEnvYAML="pip: [a"), "spec.runtimeEnvYAML",
                             "not valid YAML"),
    "no-cluster": (lambda d: d["spec"].pop("rayClusterSpec"), "spec.rayClusterSpec", "clusterSelector"),
    "bad-name": (lambda d: d["metadata"].update(name="DoItRay_Study"), "metadata.name", "DNS-1035"),
    "name-too-long": (lambda d: d["metadata"].update(name="d" * 48), "metadata.name", "at most 47"),
    "unknown-metadata-field": (lambda d: d["metadata"].update(lables={}), "metadata.lables", "ObjectMeta"),
}


@pytest.mark.parametrize("case", sorted(RAYJOB_BREAKS))
def test_broken_rayjob_is_rejected_naming_the_field(case, crd_dir):
    mutate, where, words = RAYJOB_BREAKS[case]
    doc = load(MANIFESTS[1])
    mutate(doc)
    errors, _ = validate_kuberay(doc, crd_dir)
    hits = [str(e) for e in errors if e.path == where]
    assert hits and any(words in h for h in hits), errors_of(errors)


def test_kuberay_policy_switch_and_gpu_warnings(crd_dir):
    doc = load(MANIFESTS[0])
    _head_cpus(doc)
    assert validate_kuberay(doc, crd_dir, policy=False)[0] == []
    doc = load(MANIFESTS[0])
    pod = doc["spec"]["workerGroupSpecs"][1]["template"]["spec"]
    del pod["tolerations"], pod["volumes"], pod["containers"][0]["volumeMounts"]
    errors, warnings = validate_kuberay(doc, crd_dir)
    assert errors == []
    text = errors_of(warnings)
    assert "spec.workerGroupSpecs[1].template.spec.volumes: GPU group without a memory-backed /dev/shm" in text
    assert "spec.workerGroupSpecs[1].template.spec.tolerations" in text


def test_multi_document_file_and_foreign_kinds(tmp_path, crd_dir):
    f = tmp_path / "bundle.yaml"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "code"}, "data": {"a": "b"}}
    broken = load(MANIFESTS[0])
    broken["spec"]["workerGroupSpecs"][1]["minReplicas"] = "one"
    f.write_text(yaml.safe_dump_all([load(MANIFESTS[0]), cm, broken]))
    rep = validate_file(f, crd_dir=crd_dir)
    assert [d.kind for d in rep.documents] == ["RayCluster", "ConfigMap", "RayCluster"]
    assert [d.ok for d in rep.documents] == [True, True, False] and not rep.ok
    assert "not validated" in str(rep.documents[1].warnings[0])


def test_missing_crds_is_a_clear_error(tmp_path):
    with pytest.raises(CrdNotFoundError, match="no v1 CustomResourceDefinition for kind RayCluster"):
        validate_file(MANIFESTS[0], crd_dir=tmp_path)


def test_unrecognised_documents(tmp_path):
    assert "not a cluster definition" in errors_of(validate_document({"foo": 1}).errors)
    assert "YAML mapping" in errors_of(validate_document([1, 2]).errors)
    (tmp_path / "bad.yaml").write_text("cluster_name: [unclosed\n")
    assert "not valid YAML" in errors_of(validate_file(tmp_path / "bad.yaml").errors)
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert not validate_file(tmp_path / "empty.yaml").ok


# ------------------------------------------------------------------------------------------------- CLI


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from doitray.cli.cluster import register

    parser = argparse.ArgumentParser(prog="doitray")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc = args.func(args)
    return rc, capsys.readouterr().out


def test_cli_ok_and_invalid(tmp_path, capsys):
    rc, out = run_cli(["cluster", "validate", *map(str, LAUNCHERS)], capsys)
    assert rc == 0
    assert f"{LAUNCHERS[0]}: OK" in out and f"{LAUNCHERS[1]}: OK" in out
    cfg = load(LAUNCHERS[0])
    cfg["available_node_types"]["gpu-a100"]["resources"]["GPU"] = 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    rc, out = run_cli(["cluster", "validate", str(LAUNCHERS[1]), str(bad), "--json"], capsys)
    assert rc == 1
    payload = json.loads(out)
    assert payload["ok"] is False and [f["ok"] for f in payload["files"]] == [True, False]
    assert any("resources.GPU" in e for e in payload["files"][1]["documents"][0]["errors"])
    rc, out = run_cli(["cluster", "validate", str(bad)], capsys)
    assert rc == 1 and f"{bad}: INVALID" in out and "error: available_node_types.gpu-a100.resources.GPU" in out


def test_cli_folder_and_crd_dir(crd_dir, capsys):
    rc, out = run_cli(["cluster", "validate", str(CLUSTER), "--crd-dir", str(crd_dir)], capsys)
    assert rc == 0, out
    assert all(f"{p}: OK" in out for p in SHIPPED)
    with pytest.raises(CommandError, match="no such folder"):
        run_cli(["cluster", "validate", str(MANIFESTS[0]), "--crd-dir", str(crd_dir / "nope")], capsys)
    with pytest.raises(CommandError, match="no such file"):
        run_cli(["cluster", "validate", str(CLUSTER / "nope.yaml")], capsys)


def test_wired_into_the_doitray_command(capsys):
    from doitray.cli import main

    assert main(["cluster", "validate", str(LAUNCHERS[0])]) == 0
    assert "OK" in capsys.readouterr().out


def test_no_crd_folder_anywhere_asks_for_crd_dir(monkeypatch, capsys):
    import doitray.cluster.validate as cluster
    import doitray.cluster.kuberay as cluster_kuberay

    monkeypatch.setattr(cluster_kuberay, "default_crd_dir", lambda: None)
    with pytest.raises(CrdNotFoundError, match="pass --crd-dir"):
        cluster.validate_file(MANIFESTS[0])
    with pytest.raises(CommandError, match="pass --crd-dir"):
        run_cli(["cluster", "validate", str(MANIFESTS[1])], capsys)
    assert run_cli(["cluster", "validate", str(LAUNCHERS[0])], capsys)[0] == 0  # launchers need no CRD
