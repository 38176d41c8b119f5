"""The sandbox contains hostile programs: each fails and harms nothing."""
from __future__ import annotations

import os
import time

import pytest

from doitray.eval import sandbox
from doitray.eval.programs import build_program, extract_code
from doitray.records import make_record

FAST = sandbox.Limits(timeout=4, cpu_seconds=3, memory_mb=512, max_file_mb=2)


def run(src, lim=FAST):
    return sandbox.run_program(src, lim)


def test_good_and_failing_programs():
    r = run("print(sum(range(10)))")
    assert r.passed and r.status == "passed" and r.stdout.strip() == "45"
    r = run("assert 1 == 2, 'nope'")
    assert not r.passed and r.status == "failed" and "AssertionError" in r.stderr


def test_writes_inside_its_directory_only(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    r = run(f"open({str(target)!r}, 'w').write('pwned')")
    assert not r.passed and "PermissionError" in r.stderr
    r = run(f"import os; os.remove({str(target)!r})")
    assert not r.passed
    r = run(f"import shutil; shutil.rmtree({str(tmp_path)!r})")
    assert not r.passed
    assert target.read_text() == "precious"
    r = run("open('scratch.txt', 'w').write('ok'); print(open('scratch.txt').read())")
    assert r.passed and r.stdout.strip() == "ok"


def test_no_network():
    r = run("import socket; socket.create_connection(('1.1.1.1', 80), timeout=2)")
    assert not r.passed
    r = run("import _socket; s = _socket.socket(); s.connect(('1.1.1.1', 80))")
    assert not r.passed
    if sandbox.isolation()["full"]:  # the OS-level block, even if the guard is undone
        # _socket.SocketType is the real class the guard did not replace: only the namespace stops it
        r = run("import _socket\ns = _socket.SocketType()\ns.settimeout(3)\ns.connect(('1.1.1.1', 80))")
        assert not r.passed and "OSError" in r.stderr


def test_fork_without_end_is_stopped():
    t0 = time.monotonic()
    r = run("import os\nwhile True:\n    os.fork()")
    assert not r.passed and time.monotonic() - t0 < 10
    r = run("import subprocess\nsubprocess.run(['sleep', '100'])")
    assert not r.passed


def test_allocation_without_end_is_stopped():
    r = run("x = []\nwhile True:\n    x.append(bytearray(50 * 1024 * 1024))")
    assert not r.passed and ("MemoryError" in r.stderr or r.status == "timeout" or r.returncode != 0)


def test_infinite_loop_is_killed_at_the_wall_clock():
    t0 = time.monotonic()
    r = sandbox.run_program("while True:\n    pass", sandbox.Limits(timeout=1.5, cpu_seconds=30))
    assert not r.passed and r.status == "timeout"
    assert time.monotonic() - t0 < 8


def test_file_size_limit():
    r = run("open('big', 'wb').write(b'x' * (8 * 1024 * 1024))")
    assert not r.passed


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("DOITRAY_TEST_SECRET", "hunter2")
    r = run("import os\nprint(sorted(os.environ))\nassert 'DOITRAY_TEST_SECRET' in os.environ")
    assert not r.passed
    assert "hunter2" not in r.stdout + r.stderr and "DOITRAY_TEST_SECRET" not in r.stdout


def _procs_with(arg: bytes) -> list[str]:
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if arg in f.read().split(b"\0"):
                        found.append(p)
            except OSError:
                pass
    return found


def test_background_children_die_with_the_program():
    marker = f"{600 + os.getpid() % 97}.{time.time_ns() % 10**6}".encode()
    # bypass the Python guard with a raw fork + exec through ctypes; the PID namespace / process group still ends it
    src = ("import ctypes, time\nlibc = ctypes.CDLL(None)\npid = libc.fork()\n"
           "if pid == 0:\n    argv = (ctypes.c_char_p * 3)(b'sleep', %r, None)\n    libc.execv(b'/bin/sleep', argv)\n"
           "else:\n    time.sleep(0.5)\n    print('parent done')\n") % marker
    r = run(src)
    assert r.passed, r.stderr
    time.sleep(0.5)
    assert not _procs_with(marker)


def test_run_many_keeps_order():
    res = sandbox.run_many([f"print({i})" for i in range(5)], FAST, workers=2)
    assert [r.stdout.strip() for r in res] == [str(i) for i in range(5)]


def test_build_program_humaneval_style():
    meta = {"metric": "code_exec", "entry_point": "add", "prompt": "import math\n\ndef add(a, b):\n    \"\"\"Add.\"\"\"\n",
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}
    r = make_record(id="he", ability="code", source="t", split="test", question_format="generate",
                    messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], meta=meta)
    assert run(build_program(r, "    return a + b\n")).passed  # a body continuing the prompt
    assert run(build_program(r, "```python\ndef add(a, b):\n    return a + b\n```")).passed  # a whole function
    assert not run(build_program(r, "")).passed  # empty body
    assert not run(build_program(r, "    return a - b\n")).passed
    assert extract_code("text\n```py\nx = 1\n```\nmore") == "x = 1\n"
