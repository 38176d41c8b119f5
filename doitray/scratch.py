"""Node-local scratch, and the one way data crosses nodes: through the study's storage.

On a cluster whose nodes share no disk, nothing written on one node is opened on another. What a process
needs (a prepared model, the tokenizer, the pool, a checkpoint's export) is published under the study's
storage URI (``publish``) by the process that made it, and every other node fetches its own copy into its
scratch folder (``fetch``): once per node, under a file lock, logged. Local paths pass through both
unchanged (local storage is a folder every process of the study can see: one machine, or a shared mount the
user names).

The scratch folder is ``$DOITRAY_SCRATCH`` (``{node}`` in it becomes the Ray node id, so several simulated
nodes on one machine keep separate folders), else ``~/.cache/doitray/scratch``: put it on the instance's
local disk (NVMe) on a cluster.

A published directory may hold ``links.json`` (``{file name: URI}``): files fetched from elsewhere into the
copy, so a prepared model whose only new files are its resized embeddings does not re-upload the other
shards of the original.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pyarrow.fs as pafs

log = logging.getLogger("doitray.scratch")
LINKS = "links.json"
# the files of an HF model folder that describe it without its weights (``fetch(..., include=META_FILES)``)
META_FILES = ("config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json", "added_tokens.json",
              "chat_template.jinja", "vocab*", "merges.txt", "*.model")
COMPLETE = ".complete"


def is_remote(path: str | os.PathLike | None) -> bool:
    """True for ``s3://``, ``gs://``, … URIs (``file://`` counts as local)."""
    return path is not None and "://" in str(path) and not str(path).startswith("file://")


def _local(path: str) -> str:
    return str(path).removeprefix("file://")


def node_id() -> str:
    """This process's Ray node id (``local`` outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a Ray process
        pass
    return "local"


def scratch_root() -> Path:
    """This node's scratch folder (created)."""
    raw = os.environ.get("DOITRAY_SCRATCH") or "~/.cache/doitray/scratch"
    if "{node}" in raw:
        raw = raw.replace("{node}", node_id()[:16])
    root = Path(os.path.expanduser(raw))
    root.mkdir(parents=True, exist_ok=True)
    return root


def join(base: str, *parts: str) -> str:
    """``base/part/…`` for URIs and local paths."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/")] + [p.strip("/") for p in parts])
    return os.path.join(_local(base), *parts)


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri)


def _lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def _download(uri: str, dest: Path, include: tuple[str, ...] | None) -> tuple[int, int]:
    """Copy the file or directory ``uri`` into ``dest`` (a directory); remote mtimes kept. (files, bytes)."""
    fs, base = _fs(uri)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri} does not exist")
    infos = ([info] if info.type == pafs.FileType.File
             else [i for i in fs.get_file_info(pafs.FileSelector(base, recursive=True)) if i.type == pafs.FileType.File])
    n = size = 0
    for i in infos:
        rel = i.base_name if info.type == pafs.FileType.File else os.path.relpath(i.path, base)
        if include is not None and rel != LINKS and not any(Path(rel).match(p) for p in include):
            continue
        _copy_file(fs, i, dest / rel)
        n, size = n + 1, size + (i.size or 0)
    links = dest / LINKS
    if links.exists():
        for name, src in json.loads(links.read_text()).items():
            if include is not None and not any(Path(name).match(p) for p in include):
                continue
            if is_remote(src):
                sfs, spath = _fs(src)
                i = sfs.get_file_info(spath)
                _copy_file(sfs, i, dest / name)
                n, size = n + 1, size + (i.size or 0)
            else:
                shutil.copy2(_local(src), dest / name)
    return n, size


def _copy_file(fs: pafs.FileSystem, info: pafs.FileInfo, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(info.path) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    if info.mtime_ns is not None:
        os.utime(out, ns=(info.mtime_ns, info.mtime_ns))


def fetch(uri: str, *, include: tuple[str, ...] | None = None) -> str:
    """A local path for ``uri``: the path itself when local, else this node's copy (downloaded once).

    ``uri`` is a file or a directory. ``include``: glob patterns of the files wanted (e.g. a checkpoint's
    tokenizer and config without its weights); a copy is kept per (uri, include). Safe to call from any
    number of processes of a node at once.
    """
    if not is_remote(uri):
        return _local(uri)
    key = hashlib.sha256(json.dumps([str(uri).rstrip("/"), include]).encode()).hexdigest()[:20]
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    out = scratch_root() / "fetched" / f"{key}-{name}"
    done = out / COMPLETE
    if done.exists():
        return _single(out)
    with _lock(out):
        if done.exists():
            return _single(out)
        tmp = out.with_name(out.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        n, size = _download(uri, tmp, include)
        (tmp / COMPLETE).write_text(json.dumps({"uri": uri, "include": include, "files": n, "bytes": size}))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        log.warning("doitray: fetched %s to %s on node %s (%d files, %.1f MB, %.1f s)", uri, out, node_id()[:12], n,
                    size / 1e6, time.perf_counter() - t0)
    return _single(out)


def _single(out: Path) -> str:
    """The fetched path: the file itself when ``uri`` was one file."""
    meta = json.loads((out / COMPLETE).read_text())
    name = meta["uri"].rstrip("/").rsplit("/", 1)[-1]
    return str(out / name) if (out / name).is_file() else str(out)


def publish(local: str, uri: str, *, links: dict[str, str] | None = None) -> str:
    """Upload the file or directory ``local`` to ``uri`` (nothing when ``uri`` is that same local path).

    ``links``: files of a directory not to upload but to fetch from their own URI (see ``links.json``).
    Written as a whole: a ``.complete`` marker is uploaded last, and an already complete copy is kept.
    """
    if not is_remote(uri):
        if os.path.abspath(_local(uri)) != os.path.abspath(local):
            if os.path.isdir(local):
                shutil.copytree(local, _local(uri), dirs_exist_ok=True, symlinks=True)
            else:
                os.makedirs(os.path.dirname(os.path.abspath(_local(uri))), exist_ok=True)
                shutil.copy2(local, _local(uri))
        return uri
    fs, base = _fs(uri)
    if os.path.isfile(local):
        fs.create_dir(os.path.dirname(base), recursive=True)
        with open(local, "rb") as src, fs.open_output_stream(base) as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        return uri
    if fs.get_file_info(f"{base}/{COMPLETE}").type == pafs.FileType.File:
        return uri
    links = dict(links or {})
    for p in sorted(Path(local).rglob("*")):
        rel = str(p.relative_to(local))
        if p.is_dir() or rel in links or rel == COMPLETE:
            continue
        fs.create_dir(os.path.dirname(f"{base}/{rel}"), recursive=True)
        with open(p, "rb") as src, fs.open_output_stream(f"{base}/{rel}") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
    if links:
        with fs.open_output_stream(f"{base}/{LINKS}") as f:
            f.write(json.dumps(links, indent=1).encode())
    with fs.open_output_stream(f"{base}/{COMPLETE}") as f:
        f.write(b"{}")
    return uri


def remote_listing(uri: str) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime ns)`` of every file under ``uri``: what it is, for content keys."""
    fs, base = _fs(uri)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri} does not exist")
    if info.type == pafs.FileType.File:
        return [(info.base_name, info.size or 0, info.mtime_ns or 0)]
    files = [i for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if i.type == pafs.FileType.File and i.base_name != COMPLETE]
    return sorted((os.path.relpath(i.path, base), i.size or 0, i.mtime_ns or 0) for i in files)


def exists(uri: str) -> bool:
    """Whether the file or directory ``uri`` exists."""
    if not is_remote(uri):
        return os.path.exists(_local(uri))
    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound
