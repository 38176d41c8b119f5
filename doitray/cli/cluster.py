"""`doitray cluster validate FILE...`: check cluster-launcher YAMLs and KubeRay manifests offline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from doitray.console import CommandError, add_json_flag, emit


def register(sub) -> None:
    """Add ``doitray cluster validate`` to the top-level subparsers."""
    p = sub.add_parser("cluster", help="cluster definitions (Ray cluster launcher, KubeRay)")
    csub = p.add_subparsers(dest="cluster_command", required=True, metavar="SUBCOMMAND")
    v = csub.add_parser(
        "validate", help="validate launcher YAMLs (Ray's validator) and KubeRay manifests (the CRD schema)",
        description="Exit status 0 when every file is valid, 1 when any is not, 2 on a usage error.")
    v.add_argument("files", nargs="+", metavar="FILE", help="YAML files or folders (searched for *.yaml)")
    v.add_argument("--crd-dir", default=None,
                   help="folder with the KubeRay v1.7 CRD YAMLs (default: ../shared/data/kuberay when present)")
    v.add_argument("--schema-only", action="store_true",
                   help="skip doitray's own rules (CPU-0 head, a TRAIN_DRIVER node type); keep Ray's and KubeRay's")
    add_json_flag(v)
    v.set_defaults(func=_validate)


def _expand(paths: list[str]) -> list[Path]:
    out = []
    for s in paths:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file())
            if not found:
                raise CommandError(f"{s}: no *.yaml file in this folder")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise CommandError(f"{s}: no such file")
    return out


def _text(reports: list) -> str:
    lines = []
    for r in reports:
        lines.append(f"{r.file}: {'OK' if r.ok else 'INVALID'}")
        lines += [f"  error: {e}" for e in r.errors]
        multi = len(r.documents) > 1
        for d in r.documents:
            tag = f"  [{d.index}] {d.kind}{f' {d.name}' if d.name else ''}: " if multi else "  "
            if multi:
                lines.append(f"{tag.rstrip()} {'OK' if d.ok else 'INVALID'}")
                tag = "    "
            lines += [f"{tag}error: {e}" for e in d.errors]
            lines += [f"{tag}warning: {w}" for w in d.warnings]
    return "\n".join(lines)


def _validate(args: argparse.Namespace) -> int:
    from doitray.cluster.validate import CrdNotFoundError, validate_file

    if args.crd_dir and not Path(args.crd_dir).is_dir():
        raise CommandError(f"--crd-dir {args.crd_dir}: no such folder")
    try:
        reports = [validate_file(p, crd_dir=args.crd_dir, policy=not args.schema_only) for p in _expand(args.files)]
    except CrdNotFoundError as e:
        raise CommandError(str(e)) from None
    ok = all(r.ok for r in reports)
    emit(args, {"ok": ok, "files": [r.to_dict() for r in reports]}, lambda _: _text(reports))
    sys.stdout.flush()
    return 0 if ok else 1
