"""Hostile programs through the evaluation's own path (``build_program`` → the sandbox): each test is one
attack and fails if the attack succeeds. Targets are decoys the test creates under its own temp folder.

Every test runs twice: with bubblewrap (full isolation), and with bubblewrap made unavailable and unsafe
code allowed (the ``setpriv`` layer, which must still block what it claims to). The refusal without the
allowance is tested at the end.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from doitray.eval import sandbox
from doitray.eval.programs import build_program
from doitray.records import make_record

FAST = sandbox.Limits(timeout=8, cpu_seconds=4, memory_mb=512, max_file_mb=2)
ESCAPED = "ESCAPED-" + "x" * 3  # printed by an attack that worked


@pytest.fixture(params=["bwrap", "setpriv"])
def layer(request, monkeypatch):
    if request.param == "bwrap":
        monkeypatch.delenv("DOITRAY_BWRAP", raising=False)
        iso = sandbox.isolation()
        if iso["mode"] != "bwrap":
            pytest.skip(f"bubblewrap sandbox unavailable here: {iso['missing']} (CI installs bubblewrap)")
    else:
        if os.geteuid() != 0:
            pytest.skip("the setpriv layer's per-run uid needs root (CI runs as root)")
        monkeypatch.setenv("DOITRAY_BWRAP", "")
        monkeypatch.setenv(sandbox.ALLOW_ENV, "1")
        assert sandbox.isolation()["mode"] == "setpriv"
    return request.param


def run(src: str) -> sandbox.SandboxResult:
    return sandbox.run_many([src], FAST)[0]


def assert_blocked(r: sandbox.SandboxResult) -> None:
    assert ESCAPED not in r.stdout, r.stdout
    assert not r.passed


def attempt(body: str) -> str:
    """A program that runs ``body`` (which may ``print(ESCAPED)``) and always ends in a failed assertion."""
    return f"ESCAPED = {ESCAPED!r}\n{body}\nassert False, 'attack over'\n"


@pytest.fixture()
def decoy(tmp_path):
    d = tmp_path / "decoys"
    d.mkdir()
    f = d / "victim.txt"
    f.write_text("precious")
    return f


def intact(f) -> bool:
    return f.exists() and f.read_text() == "precious"


# -- the file system ------------------------------------------------------------------------------
def test_write_and_delete_through_open_and_os(layer, decoy):
    r = run(attempt(f"import os, shutil\nP = {str(decoy)!r}\n"
                    "for f in (lambda: open(P, 'w').write('pwned'), lambda: os.remove(P),\n"
                    "          lambda: shutil.rmtree(os.path.dirname(P))):\n"
                    "    try:\n        f(); print(ESCAPED)\n    except Exception as e:\n        print(type(e).__name__)"))
    assert_blocked(r)
    assert intact(decoy)


def test_write_and_unlink_through_ctypes(layer, decoy):
    r = run(attempt(f"import ctypes, os\nlibc = ctypes.CDLL(None)\nP = {str(decoy).encode()!r}\n"
                    "fd = libc.open(P, os.O_WRONLY | os.O_TRUNC)\n"
                    "if fd >= 0 and libc.write(fd, b'pwned', 5) == 5: print(ESCAPED)\n"
                    "if libc.unlink(P) == 0: print(ESCAPED)"))
    assert_blocked(r)
    assert intact(decoy)


def test_write_through_fileio_and_the_guards_originals(layer, decoy):
    r = run(attempt(f"import _io, builtins, os, posix\nP = {str(decoy)!r}\n"
                    "def tries():\n"
                    "    yield lambda: _io.FileIO(P, 'w').write(b'pwned')\n"
                    "    yield lambda: builtins.open.__globals__['_open'](P, 'w').write('pwned')\n"
                    "    yield lambda: os.unlink.__closure__[0].cell_contents(P)\n"
                    "    yield lambda: builtins.open.__globals__['_osopen'](P, os.O_WRONLY | os.O_TRUNC)\n"
                    "for t in tries():\n"
                    "    try:\n        t(); print(ESCAPED)\n    except Exception as e:\n        print(type(e).__name__, e)"))
    assert_blocked(r)
    assert intact(decoy)


def test_a_planted_secret_file_is_not_readable(layer, tmp_path):
    secret = tmp_path / "secret.txt"
    token = "tok" + os.urandom(8).hex()
    secret.write_text(token)
    secret.chmod(0o600)
    r = run(attempt(f"import ctypes\ntry:\n    print(open({str(secret)!r}).read())\nexcept Exception as e:\n"
                    f"    print(type(e).__name__)\nlibc = ctypes.CDLL(None)\nbuf = ctypes.create_string_buffer(64)\n"
                    f"fd = libc.open({str(secret).encode()!r}, 0)\nif fd >= 0:\n    libc.read(fd, buf, 64)\n"
                    "    print(buf.value.decode())\n    raise ValueError(buf.value.decode())"))
    assert token not in r.stdout + r.stderr + r.note


def test_another_process_environment_is_not_readable(layer):
    token = "env" + os.urandom(8).hex()
    dec = subprocess.Popen(["sleep", "30"], env={"PATH": "/usr/bin:/bin", "DOITRAY_DECOY_SECRET": token})
    try:
        r = run(attempt(f"import os\nfor p in [{dec.pid}] + [x for x in os.listdir('/proc') if x.isdigit()]:\n"
                        "    try:\n        e = open(f'/proc/{p}/environ', 'rb').read()\n"
                        "        print(e.decode(errors='replace'))\n        if b'DOITRAY_DECOY' in e: raise KeyError(e)\n"
                        "    except OSError:\n        pass"))
        assert token not in r.stdout + r.stderr + r.note
    finally:
        dec.kill()
        dec.wait()


def test_a_sibling_run_cannot_be_rewritten(layer, tmp_path):
    """Two programs at once: the first rewrites every file it can reach; the second (wrong) must still fail."""
    attacker = attempt(
        "import os, time\nfor root in ('/tmp', '/var/tmp', '/dev/shm', %r):\n"
        "    for d, dirs, files in os.walk(root):\n"
        "        for n in files:\n"
        "            try:\n                open(os.path.join(d, n), 'w').write('pass\\n'); print(ESCAPED, d, n)\n"
        "            except Exception:\n                pass\n" % os.path.dirname(str(tmp_path)))
    victim = "import time\ntime.sleep(0.5)\nassert 1 == 2\n"
    r_att, r_vic = sandbox.run_many([attacker, victim], FAST, workers=2)
    assert not r_vic.passed and "AssertionError" in r_vic.note
    assert_blocked(r_att)


# -- processes ------------------------------------------------------------------------------------
FRESH_POSIX = ("import _imp, importlib.machinery\n"
               "p = _imp.create_builtin(importlib.machinery.ModuleSpec('posix', importlib.machinery.BuiltinImporter))\n")
ROUTES = {
    "os.fork": "import posix\npid = posix.fork()\nprint(ESCAPED) if pid else posix._exit(0)",
    "os.system": "import os\nif os.system('true') == 0: print(ESCAPED)",
    "subprocess": "import subprocess\nif subprocess.run(['true']).returncode == 0: print(ESCAPED)",
    "posix_spawn": "import os\nos.posix_spawn('/bin/true', ['true'], {})\nprint(ESCAPED)",
    "_posixsubprocess": ("import _posixsubprocess, os\nr, w = os.pipe()\n"
                         "pid = _posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'echo ' + ESCAPED.encode()],"
                         " [b'/bin/sh'], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w, True, False, -1,"
                         " None, None, None, -1, None, False)\nprint(ESCAPED, pid)"),
    "ctypes.fork": "import ctypes\nlibc = ctypes.CDLL(None)\npid = libc.fork()\nif pid == 0: libc._exit(0)\n"
                   "if pid > 0: print(ESCAPED)",
    "ctypes.execv": ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                     "argv = (ctypes.c_char_p * 4)(b'/bin/sh', b'-c', b'echo ' + ESCAPED.encode(), None)\n"
                     "libc.execv(b'/bin/sh', argv)"),
    "os.execv": "import posix\nposix.execv('/bin/sh', ['sh', '-c', 'echo ' + ESCAPED])",
    # a fresh copy of the posix module: the originals, past the Python guards
    "fresh posix.fork": FRESH_POSIX + "pid = p.fork()\nprint(ESCAPED) if pid else p._exit(0)",
    "fresh posix.system": FRESH_POSIX + "if p.system('true') == 0: print(ESCAPED)",
    "fresh posix.execv": FRESH_POSIX + "p.execv('/bin/sh', ['sh', '-c', 'echo ' + ESCAPED])",
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_no_fork_or_exec(layer, route):
    assert_blocked(run(attempt(f"try:\n    " + ROUTES[route].replace("\n", "\n    ")
                               + "\nexcept Exception as e:\n    print(type(e).__name__, e)")))


def test_a_decoy_process_cannot_be_killed(layer):
    dec = subprocess.Popen(["sleep", "30"])
    try:
        r = run(attempt(f"import ctypes, posix, signal\nlibc = ctypes.CDLL(None)\n"
                        f"if libc.kill({dec.pid}, 9) == 0: print(ESCAPED)\n"
                        f"if libc.kill(-1, 9) == 0: print('killed everything it could see')"))
        assert_blocked(r)
        assert dec.poll() is None, "the decoy was killed"
    finally:
        dec.kill()
        dec.wait()


def test_no_setns_into_the_host_namespaces(layer):
    me = os.getpid()
    r = run(attempt("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    f"for p in ({me}, 1, 'self'):\n"
                    "    for ns in ('net', 'mnt', 'pid', 'user'):\n"
                    "        try:\n            fd = os.open(f'/proc/{p}/ns/{ns}', os.O_RDONLY)\n"
                    "        except OSError:\n            continue\n"
                    "        if libc.setns(fd, 0) == 0: print(ESCAPED, p, ns)\n"
                    "if libc.unshare(0x10000000 | 0x40000000) == 0: print(ESCAPED, 'unshare')"))
    assert_blocked(r)


def test_a_fork_bomb_gets_no_process(layer):
    r = run(attempt("import ctypes, time\nlibc = ctypes.CDLL(None)\nok = 0\nfor i in range(200):\n"
                    "    pid = libc.fork()\n    if pid == 0:\n        time.sleep(30); libc._exit(0)\n"
                    "    ok += pid > 0\nif ok: print(ESCAPED, ok)"))
    assert_blocked(r)


def test_a_memory_bomb_is_stopped(layer):
    r = run("x = []\nwhile True:\n    x.append(bytearray(64 * 1024 * 1024))")
    assert not r.passed and r.status == "failed" and "MemoryError" in r.note


def test_endless_output_is_capped(layer):
    r = run("while True:\n    print('y' * 10000)")
    assert not r.passed and len(r.stdout) <= 4000


# -- network --------------------------------------------------------------------------------------
def test_no_tcp_to_a_local_listener(layer):
    srv = socket.create_server(("127.0.0.1", 0))
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        r = run(attempt(f"import _socket\ns = _socket.SocketType()\ns.settimeout(2)\n"
                        f"try:\n    s.connect(('127.0.0.1', {port})); print(ESCAPED)\n"
                        f"except OSError as e:\n    print(type(e).__name__, e)"))
        assert_blocked(r)
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


def test_no_unix_socket_to_the_host(layer, tmp_path):
    path = str(tmp_path / "raylet.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    srv.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0doitray-test-" + os.urandom(4).hex().encode())
    abstract.listen()
    abstract.setblocking(False)
    try:
        r = run(attempt(f"import _socket\nfor a in ({path!r}, {abstract.getsockname()!r}):\n"
                        f"    s = _socket.SocketType(_socket.AF_UNIX)\n"
                        f"    try:\n        s.connect(a); print(ESCAPED, a)\n"
                        f"    except OSError as e:\n        print(type(e).__name__, e)"))
        assert_blocked(r)
        for s in (srv, abstract):
            with pytest.raises(BlockingIOError):
                s.accept()
    finally:
        srv.close()
        abstract.close()


# -- faked passes ---------------------------------------------------------------------------------
def he_record():
    meta = {"metric": "code_exec", "entry_point": "add", "prompt": "def add(a, b):\n    \"\"\"Add.\"\"\"\n",
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}
    return make_record(id="he", ability="code", source="t", split="test", question_format="generate",
                       messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], meta=meta)


WRONG = "def add(a, b):\n    return a - b\n"
FAKES = {
    "os._exit": "import os\nos._exit(0)\n",
    "sys.exit": "import sys\nsys.exit(0)\n",
    "SystemExit": "raise SystemExit(0)\n",
    "atexit": "import atexit, os\natexit.register(os._exit, 0)\n",
    "excepthook": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "every fd": ("import os\nfor fd in range(3, 300):\n    for junk in (b'P', b'P' + b'0' * 32, b'ok'):\n"
                 "        try:\n            os.write(fd, junk)\n        except OSError:\n            pass\n"
                 "os._exit(0)\n"),
}


@pytest.mark.parametrize("trick", sorted(FAKES))
def test_a_wrong_solution_cannot_fake_a_pass(layer, trick):
    src = FAKES[trick]
    if trick in ("atexit", "excepthook"):  # armed first, then the wrong solution fails the check
        r = run(build_program(he_record(), f"```python\n{src}{WRONG}```"))
    else:  # the trick ends the program before the check can fail
        r = run(build_program(he_record(), f"```python\n{WRONG}{src}```"))
    assert not r.passed and r.status == "failed", (trick, r.note)


def test_the_right_solution_passes(layer):
    r = run(build_program(he_record(), "```python\ndef add(a, b):\n    return a + b\n```"))
    assert r.passed, r.stderr


def test_output_never_reaches_the_note_raw(layer):
    r = run("import sys\nprint('x' * 5000, file=sys.stderr)\nraise ValueError('key ' + 'A1b2' * 20 + ' \\x1b[31m')")
    assert not r.passed and r.note.startswith("failed: ValueError: key [redacted]")
    assert "\x1b" not in r.note and len(r.note) <= 300 and "x" * 100 not in r.note


# -- refusal --------------------------------------------------------------------------------------
def test_code_is_refused_without_isolation_unless_allowed(monkeypatch, tmp_path, capsys):
    from doitray.cli import main

    monkeypatch.setenv("DOITRAY_BWRAP", "")
    monkeypatch.delenv(sandbox.ALLOW_ENV, raising=False)
    iso = sandbox.isolation()
    assert not iso["full"] and "bubblewrap" in iso["missing"]
    with pytest.raises(sandbox.UnsafeCodeRefused, match="allow_unsafe_code: true"):
        sandbox.run_program("print(1)")
    suite = tmp_path / "mbpp_tiny.jsonl"
    suite.write_text('{"task_id": 1, "text": "Add.", "code": "def add(a, b):\\n    return a + b", '
                     '"test_list": ["assert add(1, 2) == 3"]}\n')
    assert main(["eval", "check", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "cannot isolate" in err and "DOITRAY_ALLOW_UNSAFE_CODE=1" in err
    assert sandbox.run_program("print(1)", allow_unsafe=True).passed
    monkeypatch.setenv(sandbox.ALLOW_ENV, "1")
    assert main(["eval", "check", str(suite)]) == 0
