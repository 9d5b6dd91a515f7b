"""Our own processes, told apart from any other by their identity: a PID alone may name another
process after a reboot, so the embedded stack records each process's start time and command line
(/proc/PID/stat field 22 and /proc/PID/cmdline) and signals only a process that still has them."""

from __future__ import annotations

import os
import signal
import time

IDENTITY_SECONDS = 5.0
"""How long a start waits for a new process's command line to appear in /proc."""


def identity(pid: int) -> dict | None:
    """What names a process for good: its PID, start time (clock ticks after boot, /proc/PID/stat
    field 22) and command line. None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b") ", 1)[1].split()  # the name in (...) may hold spaces
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return {
        "pid": pid,
        "start": int(fields[19]),  # fields[0] is field 3, the state
        "cmdline": cmdline.rstrip(b"\0").decode(errors="replace").split("\0"),
    }


def remember(st: dict, pid: int, argv: list[str] | None = None) -> bool:
    """Record the identity of a process just started (in the state's `identities`, by PID; the
    `redis_pid` and `workers` fields stay plain PIDs for the commands that read them). Popen
    returns as exec begins, before the kernel has set up the new command line, so wait for it."""
    deadline = time.monotonic() + IDENTITY_SECONDS
    while True:
        ident = identity(pid)
        settled = ident and ident["cmdline"] != [""] and (argv is None or ident["cmdline"] == argv)
        if settled or ident is None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if settled:
        st.setdefault("identities", {})[str(pid)] = ident
    return bool(settled)


def ours(st: dict, pid) -> bool:
    """Whether a PID of the state file still names the process that was started. A PID with no
    recorded identity (a state file of earlier versions) cannot be checked, so it is not."""
    recorded = (st.get("identities") or {}).get(str(pid))
    return isinstance(pid, int) and recorded is not None and identity(pid) == recorded


def alive(pid) -> bool:
    return isinstance(pid, int) and pid > 0 and identity(pid) is not None


def signal_ours(st: dict, pid: int, sig: int, group: bool = False) -> bool:
    """Signal the process (or its process group) if it is still the one recorded. A pidfd holds
    the process while its identity is checked, so its PID cannot go to another in between."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, TypeError):
        return False
    try:
        if not ours(st, pid):
            return False
        if group:  # no new process gets a PID that is a live process group's ID
            os.killpg(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def works_in(data: str, pid) -> bool:
    try:
        return isinstance(pid, int) and os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(data)
    except OSError:
        return False


def strays(data: str, known: list) -> list[int]:
    """Processes working in the stack's Redis directory that the state file does not name: a
    redis-server orphaned by an earlier version (two could start at once), still writing the
    append-only file."""
    pids = (int(n) for n in os.listdir("/proc") if n.isdigit())
    return sorted(p for p in pids if p not in known and works_in(data, p))


def wait_gone(st: dict, pids: list, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(ours(st, p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
