"""How a sandboxed run is started on this machine: the command line of each isolation layer.

- ``bwrap`` (full isolation): bubblewrap with every namespace unshared (user, mount, PID, network, IPC,
  UTS, cgroup) and nested user namespaces disabled, a new session, ``--die-with-parent``, every
  capability dropped, uid/gid 65534 inside; read-only binds of the system directories and the Python
  prefix, a fresh ``/proc`` and ``/dev``, a private ``/tmp``, the run's own folder at ``/sandbox`` (the
  only writable path), no host socket reachable; seccomp ``BASE`` loaded by bubblewrap. bwrap runs as
  the caller; started by root its user namespace maps the sandbox's uid to root outside, with no
  capability there and nothing of the host visible but read-only binds (the kernel does not count root's
  processes against ``RLIMIT_NPROC``: the seccomp ``PROGRAM`` filter, which forbids new processes, and
  the address-space limit, which bounds threads, hold instead).
- ``setpriv`` (partial, used only when allowed): ``unshare`` with the namespaces that work here (network,
  PID with a fresh ``/proc``, IPC, UTS, mount), then ``setpriv`` to a fresh unprivileged uid per run (as
  root), no capabilities, ``no_new_privs``; the harness loads seccomp ``BASE`` + ``PROGRAM``. The host
  file system stays visible: what protects it is the uid's permissions (world-readable files can be read,
  world-writable folders written).
- ``none`` (used only when allowed): the harness's seccomp filter, limits and guards only.
"""
from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass

BOX = "/sandbox"  # the run's folder, inside the bwrap sandbox
SANDBOX_UID = 65534
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
UNSHARE_FLAGS = ("--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts")


def bwrap_path() -> str | None:
    """The bubblewrap binary: ``$DOITRAY_BWRAP`` when set (empty: none), else ``bwrap`` on ``PATH``."""
    if "DOITRAY_BWRAP" in os.environ:
        p = os.environ["DOITRAY_BWRAP"]
        return p if p and os.access(p, os.X_OK) else None
    return shutil.which("bwrap")


def interpreter() -> tuple[str, str]:
    """(the real Python binary, its installation prefix): what the sandbox runs and binds read-only."""
    exe = os.path.realpath(sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def fresh_uid() -> int:
    """A random unprivileged uid for one run (root only): no file or process on the host belongs to it."""
    return 1_000_000 + secrets.randbelow(2**30)


def _drop_to(uid: int | None) -> list[str]:
    ids = ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"] if uid is not None else []
    return ["setpriv", *ids, "--inh-caps=-all", "--bounding-set=-all", "--nnp", "--"]


@dataclass
class Command:
    argv: list[str]
    cwd: str


def bwrap_command(bwrap: str, box: str, seccomp_fd: int, python: list[str]) -> Command:
    """The bwrap command line for one run whose folder is ``box`` (host path)."""
    exe, prefix = interpreter()
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
            "--clearenv"]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args.extend(["--symlink", os.readlink(d), d])
        elif os.path.isdir(d):
            args.extend(["--ro-bind", d, d])
    for f in SYSTEM_FILES:
        if os.path.isfile(f):
            args.extend(["--ro-bind", f, f])
    for d in sorted({prefix, os.path.dirname(exe)}):
        if not d.startswith(tuple(x + "/" for x in SYSTEM_DIRS)):
            args.extend(["--ro-bind", d, d])
    args.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/run", "--bind", box, BOX,
                 "--chdir", BOX, "--seccomp", str(seccomp_fd)])
    for k, v in {"PATH": "/usr/bin:/bin", "HOME": BOX, "TMPDIR": BOX, "LANG": "C.UTF-8"}.items():
        args.extend(["--setenv", k, v])
    return Command(args + ["--", *python], box)


def setpriv_command(box: str, uid: int | None, python: list[str]) -> Command:
    """The ``unshare`` + ``setpriv`` command line for one run in ``box`` (namespaces: ``namespaces()``).

    A Python the run's uid cannot reach (e.g. under ``/root``) is bind-mounted on ``/mnt`` inside the
    run's mount namespace first, still as root, so that the interpreter finds its own standard library.
    """
    exe, prefix = interpreter()
    ns = namespaces()
    if uid is not None and "--mount-proc" in ns and not _reachable(exe) and exe.startswith(prefix + "/") \
            and os.path.isdir("/mnt") and shutil.which("mount"):
        python = ["/mnt" + exe[len(prefix):], *python[1:]]
        return Command([*ns, "/bin/sh", "-c", 'mount --bind "$0" /mnt && exec "$@"', prefix, *_drop_to(uid),
                        *python], box)
    return Command([*ns, *_drop_to(uid), *python], box)


def _reachable(path: str) -> bool:
    """Whether a uid that owns nothing can reach ``path`` (every ancestor searchable by others)."""
    p = os.path.dirname(path)
    while True:
        try:
            if not os.stat(p).st_mode & 0o001:
                return False
        except OSError:
            return False
        if p == "/":
            return True
        p = os.path.dirname(p)


def none_command(box: str, python: list[str]) -> Command:
    return Command(list(python), box)


@functools.lru_cache(maxsize=1)
def namespaces() -> tuple[str, ...]:
    """The ``unshare`` prefix that works here (as root, else in a user namespace), or ``()``."""
    if not shutil.which("unshare"):
        return ()
    for extra in ((), ("--user", "--map-root-user")):
        cmd = ("unshare", *extra, *UNSHARE_FLAGS, "--")
        try:
            if subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0:
                return cmd
        except (OSError, subprocess.SubprocessError):
            continue
    return ()


def has_setpriv() -> bool:
    return shutil.which("setpriv") is not None
