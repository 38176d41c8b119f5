"""Offline validation of cluster definitions: Ray cluster-launcher YAML and KubeRay manifests.

The public entry point: ``validate_file`` / ``validate_document`` detect what each YAML document is and
hand it to ``cluster_launcher.validate_launcher`` (Ray's own validator) or
``cluster_kuberay.validate_kuberay`` (the strict KubeRay CRD schema plus the operator's checks). On top
come doitray's own rules (``policy=True``): nothing scheduled on the head, on-demand nodes offering
``TRAIN_DRIVER``. ``Issue`` and the shared helpers live in ``cluster_issues``; the names callers use are
re-exported here. Pure: needs no running Ray and makes no network call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from doitray.cluster.issues import DRIVER_RESOURCE, PLACEHOLDER, Issue, _Loader
from doitray.cluster.kuberay import (RAY_KINDS, CrdNotFoundError, default_crd_dir, kuberay_schema,
                                           validate_kuberay)
from doitray.cluster.launcher import validate_launcher

__all__ = ["DRIVER_RESOURCE", "PLACEHOLDER", "RAY_KINDS", "LAUNCHER", "CrdNotFoundError", "Issue",
           "DocumentReport", "FileReport", "default_crd_dir", "detect_kind", "kuberay_schema",
           "validate_document", "validate_file", "validate_kuberay", "validate_launcher"]

LAUNCHER = "launcher"


@dataclass
class DocumentReport:
    """The outcome for one YAML document of a file."""

    index: int
    kind: str
    name: str | None = None
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class FileReport:
    file: str
    documents: list[DocumentReport] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)   # file-level: unreadable, not YAML, empty

    @property
    def ok(self) -> bool:
        return not self.errors and all(d.ok for d in self.documents)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "ok": self.ok, "errors": [str(e) for e in self.errors],
                "documents": [{"index": d.index, "kind": d.kind, "name": d.name, "ok": d.ok,
                               "errors": [str(e) for e in d.errors], "warnings": [str(w) for w in d.warnings]}
                              for d in self.documents]}


def detect_kind(doc: Any) -> str:
    """``"launcher"`` for a cluster-launcher config, else the manifest's ``kind`` (e.g. ``RayJob``)."""
    if not isinstance(doc, dict):
        raise ValueError(f"a cluster definition is a YAML mapping, got {type(doc).__name__}")
    if "apiVersion" in doc or "kind" in doc:
        return str(doc.get("kind") or "(no kind)")
    if "provider" in doc or "cluster_name" in doc or "available_node_types" in doc:
        return LAUNCHER
    raise ValueError("not a cluster definition: expected a Ray cluster-launcher config (cluster_name, provider, "
                     "available_node_types) or a KubeRay manifest (apiVersion ray.io/v1, kind RayCluster|RayJob)")


def validate_document(doc: Any, *, index: int = 0, crd_dir: str | os.PathLike | None = None,
                      policy: bool = True) -> DocumentReport:
    """Detect what ``doc`` is and validate it accordingly."""
    try:
        kind = detect_kind(doc)
    except ValueError as e:
        return DocumentReport(index, "unknown", errors=[Issue("", str(e))])
    if kind == LAUNCHER:
        rep = DocumentReport(index, kind, name=doc.get("cluster_name"))
        rep.errors, rep.warnings = validate_launcher(doc, policy=policy)
    elif str(doc.get("apiVersion", "")).startswith("ray.io/") or kind in RAY_KINDS:
        rep = DocumentReport(index, kind, name=(doc.get("metadata") or {}).get("name"))
        rep.errors, rep.warnings = validate_kuberay(doc, crd_dir, policy=policy)
    else:  # a ConfigMap or Secret shipped beside the manifest
        rep = DocumentReport(index, kind, name=(doc.get("metadata") or {}).get("name"),
                             warnings=[Issue("kind", f"{kind} is not a Ray resource; not validated")])
    return rep


def validate_file(path: str | os.PathLike, *, crd_dir: str | os.PathLike | None = None,
                  policy: bool = True) -> FileReport:
    """Validate every YAML document in ``path``. Raises ``CrdNotFoundError`` when a KubeRay manifest
    needs CRDs that cannot be found."""
    rep = FileReport(str(path))
    try:
        docs = [d for d in yaml.load_all(Path(path).read_text(encoding="utf-8"), Loader=_Loader) if d is not None]
    except OSError as e:
        rep.errors.append(Issue("", f"cannot read: {e.strerror or e}"))
        return rep
    except yaml.YAMLError as e:
        rep.errors.append(Issue("", f"not valid YAML: {e}"))
        return rep
    if not docs:
        rep.errors.append(Issue("", "empty file: no YAML document"))
    rep.documents = [validate_document(d, index=i, crd_dir=crd_dir, policy=policy) for i, d in enumerate(docs)]
    return rep
