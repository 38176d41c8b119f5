"""Storage paths (local, ``s3://``, ``gs://``) through pyarrow filesystems: JSON files and directory upload."""
from __future__ import annotations

import json
import os
from typing import Any

import pyarrow.fs as pafs


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    return pafs.FileSystem.from_uri(uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_json(uri: str) -> Any:
    fs, path = _fs(uri)
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def write_json(uri: str, obj: Any) -> None:
    """Write atomically on local disks (rename); object stores are atomic per object."""
    fs, path = _fs(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    data = json.dumps(obj, indent=2, default=str).encode()
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def list_dirs(uri: str) -> list[str]:
    fs, path = _fs(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def upload_dir(local_dir: str, uri: str) -> str:
    """Copy a local directory to ``uri`` (a no-op when it already is that path)."""
    fs, path = _fs(uri)
    if isinstance(fs, pafs.LocalFileSystem) and os.path.abspath(local_dir) == path:
        return uri
    fs.create_dir(path, recursive=True)
    pafs.copy_files(local_dir, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return uri


def delete_dir(uri: str) -> None:
    fs, path = _fs(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
