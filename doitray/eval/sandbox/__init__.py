"""Run model-written Python (HumanEval / MBPP programs) where it cannot touch the machine or fake a pass.

Threat model: the program is hostile and knows Python, ctypes and Linux. It may try to read or write
host files, reach the network or host sockets (Ray's raylet, GCS, dashboard), signal, trace or join
other processes, escape through namespaces, exhaust memory, processes, disk or time, outlive its run,
leak what it can read through its output, and make a wrong solution count as a pass.

Containment is the operating system's job (``launch``: bubblewrap with every namespace, no capabilities,
uid 65534 in its own user namespace; seccomp; limits set inside the sandbox; in the ``setpriv`` fallback a
fresh unprivileged host uid per run; the Python guards of ``harness`` are a second layer only). Where this
machine cannot give network and file-system isolation (no bubblewrap, or it cannot create namespaces),
``require_isolation`` refuses code suites unless the user allows them (``evaluation.allow_unsafe_code:
true`` in the study, or ``DOITRAY_ALLOW_UNSAFE_CODE=1``); then the best layer that works is used and named
(``isolation()["label"]``, recorded with each code prediction).

A pass is proven, not inferred: the parent puts a per-run random nonce in a pipe; the harness reads it and
writes it back on the report pipe only after the program returned normally, then exits 0. Exit status 0
without the exact nonce, ``SystemExit``, ``os._exit``, ``atexit`` tricks, a replaced ``sys.excepthook``,
junk written to every descriptor, another run's files: all failures. The nonce never sits in the
program's memory while it runs; what it does not stop is a program written against this harness that
reads the harness's nonce descriptor itself (the program shares the harness's process), nor a candidate
returning an object whose ``__eq__`` always agrees: scores are as honest as the program's test, while the
containment above does not depend on the program's cooperation.

Nothing the program prints reaches the store: ``SandboxResult.note`` is the status, the exception type
and a bounded, redacted message (``redact``); ``stdout``/``stderr`` are kept for callers and tests only.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from doitray.console import CommandError
from doitray.eval.sandbox import launch, seccomp
from doitray.eval.sandbox.harness import HARNESS

log = logging.getLogger(__name__)

ALLOW_ENV = "DOITRAY_ALLOW_UNSAFE_CODE"


@dataclass
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout
    returncode: int | None
    stdout: str  # the program's output: for callers and tests, never for the store
    stderr: str
    seconds: float
    error: str | None = None  # exception type and redacted message, or why there is no pass proof

    @property
    def note(self) -> str:
        """What may be stored about this run: status and the redacted error, bounded."""
        return f"{self.status}: {self.error or ''}".strip()[:300]


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall clock, seconds
    cpu_seconds: int = 10
    memory_mb: int = 1024  # address space
    max_procs: int = 64  # processes and threads of the sandbox's user
    max_file_mb: int = 16  # any file written, stdout and stderr included


class UnsafeCodeRefused(CommandError):
    """Code suites were asked for on a machine that cannot isolate model-written programs."""


_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{24,}")
_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,79}")


def redact(text: str, limit: int = 200) -> str:
    """``text`` made safe to store: printable, one line, long tokens (keys, hashes) masked, bounded."""
    text = "".join(c if c.isprintable() else " " for c in text)
    text = _TOKEN.sub("[redacted]", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- isolation --------------------------------------------------------------------------------------
_probe_lock = threading.Lock()
_probed: dict[tuple, dict] = {}


def isolation() -> dict:
    """The isolation a run gets on this machine (probed once per bubblewrap path and cached).

    ``mode``: ``bwrap`` | ``setpriv`` | ``none``; ``full``: network + file-system isolation; ``label``: a
    short name to record; ``missing``: why it is not full (``None`` when it is).
    """
    key = (launch.bwrap_path(), os.geteuid())
    with _probe_lock:
        if key not in _probed:
            _probed[key] = _probe(key[0])
        return dict(_probed[key])


def _probe(bwrap: str | None) -> dict:
    sec_missing = seccomp.available()
    why = sec_missing
    if bwrap and not sec_missing:
        r = _run("bwrap", "pass", Limits(timeout=30))
        if r.passed:
            return {"mode": "bwrap", "full": True, "label": "bwrap+seccomp", "missing": None,
                    "uid": "caller", "seccomp": True}
        why = f"bubblewrap cannot start a sandbox here ({redact(r.stderr.strip()[-300:], 160) or r.note})"
    elif not bwrap:
        why = "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    sec = "+seccomp" if not sec_missing else ""
    if launch.has_setpriv():
        ns = [f.lstrip("-") for f in launch.namespaces() if f in ("--net", "--pid", "--ipc", "--uts", "--user")]
        ns += ["mount"] if launch.namespaces() else []
        r = _run("setpriv", "pass", Limits(timeout=30))
        if r.passed:
            return {"mode": "setpriv", "full": False, "label": f"setpriv[{','.join(ns) or 'no namespaces'}]{sec}",
                    "missing": why, "uid": "per-run" if os.geteuid() == 0 else "caller", "seccomp": not sec_missing}
    return {"mode": "none", "full": False, "label": f"none{sec}", "missing": why, "uid": "caller",
            "seccomp": not sec_missing}


def unsafe_allowed(allow_unsafe: bool = False) -> bool:
    """Whether running code without full isolation was allowed (the study's flag or ``$DOITRAY_ALLOW_UNSAFE_CODE``)."""
    return bool(allow_unsafe) or os.environ.get(ALLOW_ENV, "") not in ("", "0", "false", "no")


def require_isolation(allow_unsafe: bool = False) -> str:
    """The isolation label to run code with, or ``UnsafeCodeRefused`` saying what is missing and how to allow it."""
    iso = isolation()
    if iso["full"]:
        return iso["label"]
    if unsafe_allowed(allow_unsafe):
        log.warning("running model-written code without full isolation (%s): %s", iso["label"], iso["missing"])
        return f"{iso['label']} (unsafe allowed)"
    raise UnsafeCodeRefused(
        f"code suites run model-written programs, and this machine cannot isolate them: {iso['missing']} "
        f"(best available: {iso['label']}) — install bubblewrap and allow user namespaces (see cluster/README.md), "
        f"or accept the risk with evaluation.allow_unsafe_code: true in the study or {ALLOW_ENV}=1")


# -- one run ----------------------------------------------------------------------------------------
def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _private(path: str):
    """A new file only this process's user can read (another run's uid cannot)."""
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb")


def _verdict(report: bytes, nonce: bytes, rc: int | None, timed_out: bool, lim: Limits) -> tuple[str, str | None]:
    if timed_out:
        return "timeout", f"killed after {lim.timeout}s"
    if rc == 0 and report == b"P" + nonce:
        return "passed", None
    if report[:1] == b"F":
        try:
            info = json.loads(report[1:].decode("utf-8", "replace"))
            kind = info.get("type") if isinstance(info.get("type"), str) and _TYPE.fullmatch(info["type"]) else "Exception"
            return "failed", f"{kind}: {redact(str(info.get('message', '')))}".rstrip(": ")
        except (ValueError, AttributeError):
            pass
    if rc is not None and rc < 0:
        try:
            return "failed", f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return "failed", f"killed by signal {-rc}"
    if rc == 0:
        return "failed", "exit status 0 without the harness's pass proof"
    return "failed", f"exit status {rc}"


def _run(mode: str, source: str, lim: Limits) -> SandboxResult:
    work = tempfile.mkdtemp(prefix="doitray-sbx-")
    box = os.path.join(work, "box")
    os.mkdir(box, 0o700)
    uid = launch.fresh_uid() if os.geteuid() == 0 and mode == "setpriv" else None
    if uid is not None:
        os.chmod(work, 0o711)  # the run's uid reaches its box by path, and lists nothing else
        os.chown(box, uid, uid)
    nonce = secrets.token_hex(16).encode()
    to_close: list[int] = []
    try:
        r_nonce, w_nonce = os.pipe()
        os.write(w_nonce, nonce)
        os.close(w_nonce)
        r_report, w_report = os.pipe()
        to_close += [r_nonce, w_report]
        filt = None
        pass_fds = [r_nonce, w_report]
        if seccomp.available() is None:
            filt = seccomp.memfd(seccomp.bpf(program=True, base=mode != "bwrap"))
            to_close.append(filt)
            pass_fds.append(filt)
        cfg = {"limits": asdict(lim), "nonce_fd": r_nonce, "report_fd": w_report, "seccomp_fd": filt}
        python = [launch.interpreter()[0], "-I", "-S", "-B", "-c", HARNESS]
        if mode == "bwrap":
            base = seccomp.memfd(seccomp.bpf(program=False, base=True))
            to_close.append(base)
            cmd = launch.bwrap_command(launch.bwrap_path() or "bwrap", box, base, python)
            pass_fds.append(base)
        elif mode == "setpriv":
            cmd = launch.setpriv_command(box, uid, python)
        else:
            cmd = launch.none_command(box, python)
        in_p, out_p, err_p = (os.path.join(work, n) for n in ("in", "stdout", "stderr"))
        with _private(in_p) as f:
            f.write(json.dumps(cfg).encode() + b"\n" + source.encode("utf-8", "surrogatepass"))
        env = {"PATH": "/usr/bin:/bin", "HOME": box, "TMPDIR": box, "LANG": "C.UTF-8"}
        t0 = time.monotonic()
        timed_out = False
        with open(in_p, "rb") as fin, _private(out_p) as out, _private(err_p) as err:
            proc = subprocess.Popen(cmd.argv, cwd=cmd.cwd, env=env, stdin=fin, stdout=out, stderr=err,
                                    pass_fds=pass_fds, start_new_session=True)
            for fd in to_close:
                os.close(fd)
            to_close = []
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
        os.set_blocking(r_report, False)
        try:
            report = os.read(r_report, 4096)
        except BlockingIOError:
            report = b""
        finally:
            os.close(r_report)
        status, error = _verdict(report, nonce, rc, timed_out, lim)
        return SandboxResult(status == "passed", status, rc, _tail(out_p), _tail(err_p), seconds, error)
    finally:
        for fd in to_close:
            os.close(fd)
        shutil.rmtree(work, ignore_errors=True)


def run_program(source: str, limits: Limits | None = None, *, allow_unsafe: bool = False) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox; passed iff the harness proves it returned normally.

    Raises ``UnsafeCodeRefused`` where the machine cannot isolate it and running unsafely was not allowed.
    """
    require_isolation(allow_unsafe)
    return _run(isolation()["mode"], source, limits or Limits())


def run_many(sources: list[str], limits: Limits | None = None, workers: int = 2, *,
             allow_unsafe: bool = False) -> list[SandboxResult]:
    """``run_program`` over many programs with a small thread pool, in input order."""
    if not sources:
        return []
    require_isolation(allow_unsafe)
    mode, lim = isolation()["mode"], limits or Limits()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(lambda s: _run(mode, s, lim), sources))
