"""`doitray data inspect|sample`: --json output, --strict, --help, errors."""
from __future__ import annotations

import json

import pytest

from doitray.cli import main
from tests.data.conftest import SMALL_SUITE, doit_row, write_jsonl


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_inspect_json_and_text(tmp_path, capsys):
    root = tmp_path / "c"
    write_jsonl(root / "train" / "ethics.json", [doit_row("ethics", i, reply="AB") for i in range(3)]
                + [json.dumps(doit_row("astrology", 9))])
    rc, out, _ = run(capsys, "data", "inspect", str(root), "--cache-dir", str(tmp_path / "cache"), "--json")
    payload = json.loads(out)
    assert rc == 0 and payload["counts"] == {"train/ethics/curated": 3} and payload["n_rejected"] == 1
    assert payload["rejected"][0]["line"] == 4 and payload["rejected"][0]["reason"].startswith("unknown ability")
    rc, out, _ = run(capsys, "data", "inspect", str(root), "--cache-dir", str(tmp_path / "cache"))
    assert rc == 0 and "ethics" in out and "1 rejected" in out and "ethics.json:4" in out
    rc, out, err = run(capsys, "data", "inspect", str(root), "--cache-dir", str(tmp_path / "cache"), "--strict", "--json")
    assert rc == 2 and out == "" and "rejected" in err
    rc, out, err = run(capsys, "data", "inspect", str(tmp_path / "nope"), "--json")
    assert rc == 2 and "does not exist" in err


def test_help_on_every_command(capsys):
    for argv in (["data", "--help"], ["data", "inspect", "--help"], ["data", "sample", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_sample_json(ray_local, tmp_path, capsys, data_cache):
    out_dir = tmp_path / "mix"
    rc, out, _ = run(capsys, "data", "sample", "synthetic", "--seed-suite", str(SMALL_SUITE["seed"]),
                     "--cache-dir", str(tmp_path / "cache"), "--recipe", "balanced:40", "--seed", "1",
                     "--out", str(out_dir), "--json")
    payload = json.loads(out)
    assert rc == 0 and payload["n"] == 40 and set(payload["counts"].values()) == {4}
    assert (out_dir / "records.parquet").exists() and (out_dir / "mixture.json").exists()
    rc, out, err = run(capsys, "data", "sample", "synthetic", "--recipe", "bogus:1", "--out", str(out_dir), "--json",
                       "--cache-dir", str(tmp_path / "cache"))
    assert rc == 2 and out == "" and "not understood" in err
