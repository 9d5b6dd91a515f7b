"""Every error of the orchestrator's own, and the one table from an error to its exit code.

Exit codes: 0 success; 1 a job failed or was cancelled (submit --wait, sweep --wait, watch); 2
usage or bad input (options, corpus, hyperparameter, search space, id syntax, Redis URL, prime,
checkpoint file, a malformed CHARRNN_* setting); 3 unknown job or sweep id; 4 Redis unreachable,
refused the password, or no embedded stack running; 5 the job has no checkpoint or sample yet; 6
permission denied: the Redis user may not do this (a viewer's submit, cancel, delete;
worker/acl.py has the users' rules); 7 the store is full (Redis at its maxmemory refused the write;
nothing of it was kept); 130 Ctrl-C (while following a job or sweep: it goes on running, and the
line says how to follow or cancel it).

A domain error (here, in `worker.errors` or `charrnn.errors`) becomes a `Fail` through `failure`,
called once for every command by `edge.Group`; `Fail` is the `charrnn` command's `Failure`, so
both command lines fail in one style.
"""

from __future__ import annotations

import redis

from charrnn.errors import CharRNNError
from charrnn.exits import EXIT_INTERRUPTED as EXIT_INTERRUPTED  # shared with the charrnn command
from charrnn.exits import EXIT_USAGE, Failure
from worker import acl, space
from worker.errors import (
    CorpusTooLarge,
    InvalidJobId,
    JobTooLarge,
    NoCheckpoint,
    NoSuchCorpus,
    NoSuchJob,
    StoreFull,
    Unreachable,
)
from worker.settings import BadSetting
from worker.store import redact

from . import render

EXIT_OK, EXIT_JOB_FAILED = 0, 1
EXIT_UNKNOWN_JOB, EXIT_UNREACHABLE, EXIT_NOT_YET = 3, 4, 5
EXIT_DENIED = acl.EXIT_DENIED  # 6: the worker exits with it too
EXIT_STORE_FULL = 7


class BadInput(ValueError):
    """A bad hyperparameter value or corpus, found before anything is enqueued."""


class AmbiguousId(BadInput):
    """A prefix that names more than one job or sweep (exit 2, listing them)."""


class NoStack(Exception):
    """No --redis-url, and the embedded stack is not running (a read-only command never starts
    it)."""


class EmbeddedError(Exception):
    """The embedded stack cannot start or be used: its home, its binary, its lock, its processes."""


class Fail(Failure):
    """One line on stderr (printed by charrnn.cli.run) and its exit code; the message is made
    safe to print (control characters removed, on one line)."""

    def __init__(self, message: str, code: int):
        super().__init__(render.plain(message), code)


ERRORS: tuple[tuple[tuple[type, ...], int], ...] = (
    ((NoSuchJob,), EXIT_UNKNOWN_JOB),
    ((NoSuchCorpus,), EXIT_UNKNOWN_JOB),
    ((InvalidJobId, CorpusTooLarge, JobTooLarge, CharRNNError, BadInput, BadSetting), EXIT_USAGE),
    ((NoCheckpoint,), EXIT_NOT_YET),
    ((StoreFull,), EXIT_STORE_FULL),
    ((Unreachable, EmbeddedError, NoStack), EXIT_UNREACHABLE),
)
"""Each domain error and its exit code; redis.RedisError is 'permission denied' (NOPERM: an ACL
user without the right), else 'unreachable' (or 'refused the password'), naming the URL without
its password."""

DENIED = {
    "submit": "submit jobs",
    "sweep": "submit sweeps",
    "cancel": "cancel jobs",
    "delete": "delete jobs",
    "prune": "prune jobs",
    "workers": "ask the workers what they run (Celery's control channel)",
}
"""What a command that Redis refused was for, in `permission denied: ... may not {what}`."""


def denied(url: str, command: str | None) -> Fail:
    """Redis refused a command to the URL's user. Nothing was written: the first write of every
    changing command is refused before it is applied, inside MULTI/EXEC or alone."""
    what = DENIED.get(command or "") or (f"run `{command}`" if command else "do this")
    return Fail(f"permission denied: Redis user '{acl.user_of(url)}' may not {what}", EXIT_DENIED)


def failure(
    e: Exception, url: str | None, command: str | None = None, r: redis.Redis | None = None
) -> Fail | None:
    """The Fail a domain error becomes, or None for anything else (a bug: let it show).
    `command`: the subcommand that ran, to say what a refused user may not do; `r`, the store's
    connection if one was opened, gives a full store's figures."""
    for types, code in ERRORS:
        if isinstance(e, types):
            return Fail(str(e), code)
    if acl.is_denied(e):
        return denied(url or "", command)
    if space.is_full(e):  # from redis-py, or from kombu sending a task message
        return Fail(space.refused_line(r) if r is not None else f"store full: Redis refused "
                    f"the write (OOM); {space.ADVICE}", EXIT_STORE_FULL)  # fmt: skip
    if isinstance(e, redis.RedisError):
        return unreachable(url or "redis://?", e)
    return None


PLAIN_TO_TLS = ("connection reset by peer", "connection closed by server")
"""How a plain redis:// connection to a TLS-only port ends: the server drops it (a restart
may look the same, hence a hint, not a verdict)."""


def unreachable(url: str, e: Exception) -> Fail:
    text = str(e)
    if isinstance(e, redis.AuthenticationError) or any(
        s in text.lower()
        for s in ("wrongpass", "noauth", "invalid password", "invalid username-password")
    ):
        return Fail(f"Redis at {redact(url)} refused the password", EXIT_UNREACHABLE)
    reason = text.splitlines()[0] if text else type(e).__name__
    if url.lower().startswith("redis://") and any(s in text.lower() for s in PLAIN_TO_TLS):
        reason += " (if that Redis serves TLS only, use rediss://)"
    return Fail(f"Redis unreachable at {redact(url)}: {reason}", EXIT_UNREACHABLE)
