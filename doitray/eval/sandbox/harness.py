"""The harness: the trusted first code inside the sandbox, run as ``python -I -S -B -c HARNESS``.

Its stdin is a file: one JSON line of settings, then the program. It reads both, puts ``/dev/null`` on
stdin, and before a line of the program runs: sets the resource limits (from inside, so that a process
count set in the sandbox's user namespace counts the sandbox's processes only), sets ``no_new_privs`` and
loads the seccomp filter it was handed (``seccomp.PROGRAM``: no fork, no exec; plus ``seccomp.BASE``
where bubblewrap did not load that one), installs the Python-level guards (a second layer only), then
runs the program as ``__main__``.

The pass proof: the parent put a random nonce into a pipe (``nonce_fd``) and closed its end. Only
after the program returned normally does the harness read the nonce and write ``P<nonce>`` to the
report pipe (``report_fd``), then ``os._exit(0)`` (the program's ``atexit`` handlers never run). Any
exception, ``SystemExit`` included, writes ``F`` and a JSON ``{type, message}`` instead and exits 1.
"""

HARNESS = r'''
import json, os, resource, sys
_read, _write, _exit, _close = os.read, os.write, os._exit, os.close
_raw = sys.stdin.buffer.read()
_nl = _raw.index(b"\n")
_cfg = json.loads(_raw[:_nl])
_src = _raw[_nl + 1:].decode("utf-8", "replace")
del _raw
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
_NONCE, _REPORT = _cfg["nonce_fd"], _cfg["report_fd"]

def _limit(name, value):
    try:
        resource.setrlimit(getattr(resource, name), (value, value))
    except (ValueError, OSError):
        pass
_L = _cfg["limits"]
_limit("RLIMIT_CPU", _L["cpu_seconds"])
_limit("RLIMIT_AS", _L["memory_mb"] << 20)
_limit("RLIMIT_NPROC", _L["max_procs"])
_limit("RLIMIT_FSIZE", _L["max_file_mb"] << 20)
_limit("RLIMIT_CORE", 0)
_limit("RLIMIT_NOFILE", 256)

import ctypes, traceback, types
_streams = (sys.stdout, sys.stderr)
def _flush():
    for s in _streams:
        try:
            s.flush()
        except BaseException:
            pass
def _seccomp(fd):
    data = b""
    while True:
        chunk = _read(fd, 65536)
        if not chunk:
            break
        data += chunk
    _close(fd)
    libc = ctypes.CDLL(None, use_errno=True)
    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    buf = ctypes.create_string_buffer(data, len(data))
    prog = _Prog(len(data) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")

def _fail(e):
    try:
        msg = str(e)
    except BaseException:
        msg = ""
    name = type(e).__name__ if isinstance(type(e).__name__, str) else "Exception"
    _write(_REPORT, b"F" + json.dumps({"type": name[:80], "message": msg[:400]}).encode())
    try:
        traceback.print_exception(e, file=_streams[1])
    except BaseException:
        pass
    _flush()
    _exit(1)

''' + r'''
import builtins, io, posix
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
_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_osopen = os.open
def _g_osopen(path, flags, *a, **k):
    if k.get("dir_fd") is not None or (flags & _W and not _inside(path)):
        raise PermissionError(f"opening {path!r} for writing outside the sandbox directory is not allowed")
    return _osopen(path, flags, *a, **k)
def _guard_paths(name, fn, nargs):
    def g(*a, **k):
        if k.get("dir_fd") is not None or k.get("src_dir_fd") is not None or k.get("dst_dir_fd") is not None:
            raise PermissionError(f"os.{name} with dir_fd is not allowed in the sandbox")
        for p in a[:nargs]:
            if not _inside(p):
                raise PermissionError(f"os.{name}({p!r}) outside the sandbox directory is not allowed")
        return fn(*a, **k)
    return g
def _guards():
    builtins.open = io.open = _g_open
    for m in (os, posix):
        m.open = _g_osopen
    for n, k in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("rename", 2), ("replace", 2),
                 ("chmod", 1), ("chown", 1), ("lchown", 1), ("symlink", 2), ("link", 2), ("truncate", 1),
                 ("utime", 1), ("mkfifo", 1), ("mknod", 1)):
        for m in (os, posix):
            if hasattr(m, n):
                setattr(m, n, _guard_paths(n, getattr(posix, n), k))
    for n in ("fork", "forkpty", "vfork", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
              "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle",
              "kill", "killpg", "setsid", "chdir", "chroot"):
        for m in (os, posix):
            if hasattr(m, n):
                setattr(m, n, _deny(f"os.{n}"))
    import _socket, socket
    class _NoSocket:
        def __init__(self, *a, **k):
            raise PermissionError("network access is not allowed in the sandbox")
    socket.socket = _socket.socket = _NoSocket
    for n in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname"):
        setattr(socket, n, _deny(f"socket.{n}"))
    import subprocess
    subprocess.Popen = type("Popen", (), {"__init__": _deny("subprocess")})
    for n in ("run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        setattr(subprocess, n, _deny("subprocess"))

try:
    _code = compile(_src, "prog.py", "exec")
except BaseException as e:
    _fail(e)
if _cfg.get("seccomp_fd") is not None:
    _seccomp(_cfg["seccomp_fd"])
_guards()
sys.argv = ["prog.py"]
_main = types.ModuleType("__main__")  # the program's own module: the harness's globals are not sys.modules["__main__"]
_main.__builtins__ = builtins
sys.modules["__main__"] = _main
try:
    exec(_code, _main.__dict__)
except BaseException as e:
    _fail(e)
_flush()
_write(_REPORT, b"P" + _read(_NONCE, 64))
_exit(0)
'''
