"""`doitray` command line: every command has --help; failures exit non-zero with one clear line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from doitray.cli import build_parser, main


def _commands():
    parser = build_parser()
    out = []
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            out.append([name])
            for a in getattr(sub, "_subparsers", None)._group_actions if sub._subparsers else []:
                out += [[name, n] for n in a.choices]
    return out


def test_every_command_has_help(capsys):
    cmds = _commands()
    assert ["study", "plan"] in cmds and ["data", "inspect"] in cmds and ["report"] in cmds
    for cmd in cmds:
        with pytest.raises(SystemExit) as e:
            main(cmd + ["--help"])
        assert e.value.code == 0, cmd
        assert "usage:" in capsys.readouterr().out


def test_bad_study_file_fails_with_named_field(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nstorage: /tmp/x\nsources: [{name: a, format: synthetic}]\nmodels: {s: {preset: tiny-s}}\n"
                 "factors: {model: [s], strategy: [zigzag]}\ntokenizer: {train_vocab_size: 512}\n")
    assert main(["study", "plan", str(p), "--no-data"]) == 2
    err = capsys.readouterr().err
    assert "factors.strategy.0" in err and "mixed_sequential" in err


def test_study_plan_json_is_one_document():
    out = subprocess.run([sys.executable, "-m", "doitray.cli", "study", "plan", "experiments/studies/dmt.yaml",
                          "--no-data", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["n_cells"] == 89
    assert {c["fits"] for c in doc["cells"]} == {True}
