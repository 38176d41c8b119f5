"""Storage as the only thing nodes share (``doitray.scratch``), against a real S3 API (moto's server)."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pyarrow.fs as pafs

from doitray.scratch import META_FILES, fetch, publish, remote_listing

BUCKET = "s3://doitray-test"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.startswith(".")}


def test_publish_then_fetch_round_trips_a_folder_once_per_node(s3, tmp_path, caplog):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"vocab_size": 8}')
    (src / "model.safetensors").write_bytes(os.urandom(3000))
    (src / "sub" / "tokenizer.json").write_text("{}")
    uri = publish(str(src), f"{BUCKET}/cache/model")
    assert fetch(str(src)) == str(src)  # a local path is its own copy
    with caplog.at_level("WARNING", logger="doitray.scratch"):
        got = [None] * 4
        ts = [threading.Thread(target=lambda i=i: got.__setitem__(i, fetch(uri))) for i in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
    assert len(set(got)) == 1 and got[0].startswith(str(tmp_path / "scratch"))
    assert _tree(Path(got[0])) == _tree(src)
    assert sum("fetched s3://doitray-test/cache/model" in r.message for r in caplog.records) == 1  # once, logged
    # only what is asked for: a checkpoint's tokenizer and config, without its weights
    meta = Path(fetch(uri, include=META_FILES))
    assert set(_tree(meta)) == {"config.json", "sub/tokenizer.json"}
    assert not (meta / "model.safetensors").exists()


def test_links_fetch_unchanged_files_from_the_original(s3, tmp_path):
    """A prepared model publishes only its new files; the others are fetched from where the original lies."""
    orig = tmp_path / "orig"
    orig.mkdir()
    (orig / "model-00002.safetensors").write_bytes(b"big shard")
    orig_uri = publish(str(orig), f"{BUCKET}/models/orig")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "model-00001.safetensors").write_bytes(b"resized embeddings")
    os.symlink(orig / "model-00002.safetensors", prepared / "model-00002.safetensors")
    uri = publish(str(prepared), f"{BUCKET}/cache/prepared",
                  links={"model-00002.safetensors": f"{orig_uri}/model-00002.safetensors"})
    fs, path = pafs.FileSystem.from_uri(uri)
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(path))}
    assert "model-00002.safetensors" not in names and "links.json" in names   # not uploaded twice
    local = Path(fetch(uri))
    assert (local / "model-00002.safetensors").read_bytes() == b"big shard"
    assert (local / "model-00001.safetensors").read_bytes() == b"resized embeddings"


def test_a_source_in_object_storage_keys_by_its_listing_not_its_copy(s3, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "math.json").write_text(json.dumps({"x": 1}) + "\n")
    uri = publish(str(d), f"{BUCKET}/data/suite")
    first = remote_listing(uri)
    assert [f[0] for f in first] == ["math.json"] and first[0][1] > 0
    assert remote_listing(uri) == first
