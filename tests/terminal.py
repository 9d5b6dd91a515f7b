"""Run `orchestrator` on a pseudo-terminal of a given width, as a user at an 80-column terminal
runs it (rich sees a terminal and sizes its tables to it); returns the exit code and the text,
escape sequences removed."""

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from stack import REPO

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")


def _window(fd: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))


def start(*args, url: str, columns: int = 80):
    """(process, master fd): `orchestrator ARGS` on a new pseudo-terminal; SIGINT at its default
    (a test run in the background may have inherited it ignored)."""
    master, slave = pty.openpty()
    _window(slave, columns)
    env = dict(os.environ, COLUMNS=str(columns), CHARRNN_REDIS_URL=url)
    p = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(slave)
    return p, master


def read_all(p, master: int, timeout: float = 120) -> tuple[int, str]:
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other end closed
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    code = p.wait(10)
    os.close(master)
    return code, text_of(b"".join(chunks))


def text_of(raw: bytes) -> str:
    return ANSI.sub("", raw.decode("utf-8", "replace")).replace("\r\n", "\n").replace("\r", "\n")


def run(*args, url: str, columns: int = 80, timeout: float = 120) -> tuple[int, str]:
    return read_all(*start(*args, url=url, columns=columns), timeout=timeout)
