"""Baseline for bench/sandbox_overhead.py: the code sandbox as it was before issue #15 (unshare + prlimit +
Python guards, exit status 0 = pass), kept verbatim below its docstring so the overhead ratio is measured in one run.
Not part of doitray: it does not contain hostile programs (see doitray/eval/sandbox/).
"""
from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_BOOT = r'''
import builtins, io, os, posix, sys
_ROOT = os.path.realpath(os.getcwd())
def _inside(p):
    if isinstance(p, int):
        return False
    try:
        rp = os.path.realpath(os.fsdecode(p))
    except Exception:
        return False
    return rp == _ROOT or rp.startswith(_ROOT + os.sep)
def _deny(what):
    def f(*a, **k):
        raise PermissionError(f"{what} is not allowed in the sandbox")
    return f
_open = builtins.open
def _g_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError(f"writing {file!r} outside the sandbox directory is not allowed")
    return _open(file, mode, *a, **k)
builtins.open = io.open = _g_open
_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_osopen = os.open
def _g_osopen(path, flags, *a, **k):
    if k.get("dir_fd") is not None or (flags & _W and not _inside(path)):
        raise PermissionError(f"opening {path!r} for writing outside the sandbox directory is not allowed")
    return _osopen(path, flags, *a, **k)
for _m in (os, posix):
    _m.open = _g_osopen
def _guard_paths(name, fn, nargs):
    def g(*a, **k):
        if k.get("dir_fd") is not None or k.get("src_dir_fd") is not None or k.get("dst_dir_fd") is not None:
            raise PermissionError(f"os.{name} with dir_fd is not allowed in the sandbox")
        for p in a[:nargs]:
            if not _inside(p):
                raise PermissionError(f"os.{name}({p!r}) outside the sandbox directory is not allowed")
        return fn(*a, **k)
    return g
for _n, _k in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("rename", 2), ("replace", 2),
               ("chmod", 1), ("chown", 1), ("lchown", 1), ("symlink", 2), ("link", 2), ("truncate", 1),
               ("utime", 1), ("mkfifo", 1), ("mknod", 1)):
    for _m in (os, posix):
        if hasattr(_m, _n):
            setattr(_m, _n, _guard_paths(_n, getattr(posix, _n), _k))
for _n in ("fork", "forkpty", "vfork", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
           "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle",
           "kill", "killpg", "setsid", "chdir", "chroot"):
    for _m in (os, posix):
        if hasattr(_m, _n):
            setattr(_m, _n, _deny(f"os.{_n}"))
import _socket, socket
class _NoSocket:
    def __init__(self, *a, **k):
        raise PermissionError("network access is not allowed in the sandbox")
socket.socket = _socket.socket = _NoSocket
for _n in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname"):
    setattr(socket, _n, _deny(f"socket.{_n}"))
import subprocess
subprocess.Popen = type("Popen", (), {"__init__": _deny("subprocess")})
for _n in ("run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
    setattr(subprocess, _n, _deny("subprocess"))
del _m, _n
with _open("prog.py", encoding="utf-8") as _f:
    _src = _f.read()
sys.argv = ["prog.py"]
exec(compile(_src, "prog.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
'''


@dataclass
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall clock, seconds
    cpu_seconds: int = 10
    memory_mb: int = 1024  # address space
    max_procs: int = 64
    max_file_mb: int = 16


@functools.lru_cache(maxsize=1)
def _ns_prefix() -> tuple[str, ...]:
    """The ``unshare`` prefix that works on this machine (root, then user namespaces), or none."""
    if not shutil.which("unshare"):
        return ()
    for flags in (("-n", "-p", "-f", "--kill-child"), ("-r", "-n", "-p", "-f", "--kill-child")):
        try:
            r = subprocess.run(["unshare", *flags, "--", "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return ("unshare", *flags, "--")
    return ()


def isolation() -> dict:
    """Which layers are active here (for logs and reports)."""
    ns = _ns_prefix()
    return {"network_namespace": bool(ns), "pid_namespace": bool(ns), "prlimit": bool(shutil.which("prlimit")),
            "python_guards": True, "scrubbed_env": True, "root": os.geteuid() == 0}


def _limits_args(lim: Limits) -> list[str]:
    mem = lim.memory_mb * 1024 * 1024
    fsz = lim.max_file_mb * 1024 * 1024
    return ["prlimit", f"--cpu={lim.cpu_seconds}", f"--as={mem}", f"--nproc={lim.max_procs}",
            f"--fsize={fsz}", "--core=0", "--"]


def _set_limits(lim: Limits) -> None:  # fallback when prlimit is missing (runs in the child)
    resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds))
    mem = lim.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim.max_procs, lim.max_procs))
    fsz = lim.max_file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsz, fsz))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_program(source: str, limits: Limits | None = None) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox; passed iff it exits 0 within the limits."""
    lim = limits or Limits()
    work = tempfile.mkdtemp(prefix="doitray-sbx-")
    box = os.path.join(work, "box")
    os.mkdir(box)
    with open(os.path.join(box, "prog.py"), "w", encoding="utf-8") as f:
        f.write(source)
    with open(os.path.join(work, "boot.py"), "w", encoding="utf-8") as f:
        f.write(_BOOT)
    env = {"PATH": "/usr/bin:/bin", "HOME": box, "TMPDIR": box, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1"}
    has_prlimit = bool(shutil.which("prlimit"))
    cmd = [*_ns_prefix(), *(_limits_args(lim) if has_prlimit else []),
           sys.executable, "-I", "-S", os.path.join(work, "boot.py")]
    t0 = time.monotonic()
    out_p, err_p = os.path.join(work, "stdout"), os.path.join(work, "stderr")
    timed_out = False
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=box, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True,
                                preexec_fn=None if has_prlimit else functools.partial(_set_limits, lim))
        try:
            rc: int | None = proc.wait(timeout=lim.timeout)
        except subprocess.TimeoutExpired:
            timed_out, rc = True, None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group, even after a normal exit
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
    seconds = time.monotonic() - t0
    stdout, stderr = _tail(out_p), _tail(err_p)
    shutil.rmtree(work, ignore_errors=True)
    if timed_out:
        return SandboxResult(False, "timeout", None, stdout, stderr + f"\n[sandbox] killed after {lim.timeout}s",
                             seconds)
    return SandboxResult(rc == 0, "passed" if rc == 0 else "failed", rc, stdout, stderr, seconds)


def run_many(sources: list[str], limits: Limits | None = None, workers: int = 2) -> list[SandboxResult]:
    """``run_program`` over many programs with a small thread pool, in input order."""
    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(lambda s: run_program(s, limits), sources))
