"""The sandbox's seccomp filters, compiled to BPF with libseccomp (through ``pyseccomp``).

Two deny-lists, both "allow by default, EPERM for the listed calls" (a program sees an ``OSError``, not a
crash, so a legitimate program that merely probes gets a clear error):

- ``BASE``: what no sandboxed process may do, whatever else holds: join or make namespaces (``setns``,
  ``unshare``; ``clone`` with namespace flags), trace or write other processes (``ptrace``,
  ``process_vm_*``), mount anything, load BPF or kernel code, kexec, keyrings, ``perf_event_open``,
  ``userfaultfd``, ``io_uring`` (its operations bypass seccomp), handle-based opens, ``chroot``/``pivot_root``.
- ``PROGRAM``: added by the harness right before the model's program runs: no new processes and no exec
  (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``, ``clone3`` answered ``ENOSYS`` so that glibc falls
  back to ``clone``, ``execve``, ``execveat``). Threads still work.

Calls of a foreign architecture (e.g. 32-bit ``int 0x80`` on x86-64) kill the process: libseccomp's
default for an architecture not in the filter.
"""
from __future__ import annotations

import errno
import functools
import os
import tempfile

# CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
_NS_BITS = (0x80, 0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
CLONE_THREAD = 0x00010000

BASE = ("setns", "unshare", "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root",
        "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "bpf",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "keyctl", "add_key",
        "request_key", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot", "acct", "quotactl",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "personality", "lookup_dcookie",
        "pidfd_getfd", "kcmp")
PROGRAM = ("fork", "vfork", "execve", "execveat")


def _build(program: bool, base: bool) -> bytes:
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    names = (BASE if base else ()) + (PROGRAM if program else ())
    for name in names:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except OSError:  # a call this kernel/libseccomp does not know on this architecture
            continue
    if base:  # clone asking for a new namespace
        for bit in _NS_BITS:
            f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, bit, bit))
    if program:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    if program or base:
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # its flags are behind a pointer: make glibc use clone
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


@functools.lru_cache(maxsize=4)
def bpf(*, program: bool, base: bool) -> bytes:
    """The filter as raw ``struct sock_filter`` instructions (what ``bwrap --seccomp`` and ``prctl`` take)."""
    return _build(program, base)


def available() -> str | None:
    """``None`` when filters can be built here, else why not (pyseccomp or libseccomp missing)."""
    try:
        bpf(program=True, base=True)
    except (ImportError, OSError, AttributeError) as e:
        return f"seccomp filters cannot be built ({type(e).__name__}: {e}); install libseccomp2 and pyseccomp"
    return None


def memfd(data: bytes) -> int:
    """A memory file descriptor holding ``data`` at offset 0 (to hand to the sandbox with ``pass_fds``)."""
    fd = os.memfd_create("doitray-seccomp", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
