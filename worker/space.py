"""A full store: Redis at its `maxmemory` with `noeviction` refuses every write that could grow
its memory ("OOM") and keeps everything it holds. Here: telling that refusal from others, the one
line that says so with the figures a user acts on, and how a trainer waits for space.

Redis checks its memory before each command, counting the command's own arguments (they sit in
its query buffer), so a checkpoint larger than the room left is refused while small writes
(progress, a heartbeat) still fit. A refused write is refused whole: MULTI/EXEC and our Lua
scripts are checked at their first write, before anything is applied.

The policy, a trainer's: wait, do not fail. A full store is the operator's to fix (prune, delete,
a larger maxmemory) and is usually fixed; the trainer holds everything since its last stored
checkpoint in memory, and failing would throw that away for a condition that is not the job's
fault. So a refused write is retried, unchanged (same write id), until Redis takes it; meanwhile
the job's record says why it waits (`waiting`, shown by status, list and watch, and a
`store_full` event), the lease is renewed, and `cancel` or a worker shutdown end the wait. The
job then ends bit-identical to an uninterrupted run. A checkpoint larger than the whole
`maxmemory` waits too (the line says so): only a larger maxmemory makes room for it, and an
operator may set one at run time (CONFIG SET maxmemory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from . import job as record
from . import settings
from .errors import StoreFull
from .job import event

if TYPE_CHECKING:
    from .lease import Lease

log = logging.getLogger("charrnn.worker")

OOM_TEXT = "command not allowed when used memory > 'maxmemory'"
"""How Redis words the refusal; kombu (a task message) and Redis 6.2's scripts pass it on as
text in other exception types."""

ADVICE = "free space with 'orchestrator prune' or 'orchestrator delete', or raise maxmemory"


def is_full(e: BaseException) -> bool:
    """Whether an exception is Redis refusing a write because it is at its maxmemory."""
    return isinstance(e, redis.OutOfMemoryError) or OOM_TEXT in str(e)


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def memory(r: redis.Redis) -> tuple[int, int] | None:
    """(used_memory, maxmemory) in bytes from INFO memory (a read, allowed while full), or None
    where it cannot be read (INFO not permitted to this user, Redis gone)."""
    try:
        info = r.info("memory")
        return int(info["used_memory"]), int(info["maxmemory"])
    except (redis.RedisError, KeyError, TypeError, ValueError):
        return None


def figures(r: redis.Redis) -> str:
    """`OOM, maxmemory 64.0 MB, 63.9 MB used`, or `OOM` where the figures cannot be read."""
    m = memory(r)
    if m is None or not m[1]:
        return "OOM"
    used, limit = m
    return f"OOM, maxmemory {megabytes(limit)}, {megabytes(used)} used"


def refused_line(r: redis.Redis, what: str = "the write") -> str:
    """What a command line says when the store refused its write."""
    return f"store full: Redis refused {what} ({figures(r)}); {ADVICE}"


def size_of(ops: list[tuple]) -> int:
    return sum(len(a) for op in ops for a in op if isinstance(a, bytes | str))


class Wait:
    """One wait of a trainer for space, from the first refused write to the one Redis takes.

    `begin` words why the job waits; `pause` renews the lease every heartbeat (recording why
    with the first heartbeat that fits) until it is time to retry and INFO shows room, raising
    StoreFull when the job is cancelled or the worker stops; `end` clears the record and notes
    how long it waited."""

    def __init__(
        self,
        lease: Lease,
        what: str,
        nbytes: int,
        should_stop: Callable[[], bool],
        push_events: Callable[..., list[tuple]],
    ):
        self.lease, self.what, self.nbytes = lease, what, nbytes
        self.should_stop, self.push_events = should_stop, push_events
        self.since = time.monotonic()
        self.line = ""
        self.noted = False

    def begin(self) -> Wait:
        m = memory(self.lease.r)
        larger = m is not None and 0 < m[1] <= self.nbytes  # no prune can make room for it
        self.line = (
            f"store full: {self.what} refused ({figures(self.lease.r)}"
            + ("; larger than the whole maxmemory" if larger else "")
            + "); waiting for space"
        )
        log.warning("job %s: %s (%s)", self.lease.job_id, self.line, ADVICE)
        return self

    def note(self) -> list[tuple]:
        """The ops that record why the job waits: sent with each heartbeat until one fits (the
        refused write's own arguments can keep Redis over its limit for a second or so)."""
        if self.noted:
            return []
        return [record.hset(self.lease.job_id, waiting=self.line)] + self.push_events(
            self.lease.job_id, event("store_full", reason=self.line)
        )

    def pause(self) -> None:
        retry_at = time.monotonic() + settings.STORE_FULL_RETRY_SECONDS
        while True:
            if self.should_stop():
                raise StoreFull(f"{self.line}; the worker is stopping", cancelled=False)
            note = self.note()
            cancel = self.lease.try_write(note)  # the heartbeat, and the job's cancel flag
            self.noted = self.noted or cancel is not None
            if cancel:
                raise StoreFull(f"{self.line}; cancelled while waiting", cancelled=True)
            if time.monotonic() >= retry_at:
                if self.room():
                    return
                retry_at = time.monotonic() + settings.STORE_FULL_RETRY_SECONDS
            time.sleep(min(settings.HEARTBEAT_SECONDS, settings.STORE_FULL_RETRY_SECONDS))

    def room(self) -> bool:
        """Whether INFO memory shows room for the write (or cannot tell): a large checkpoint is
        sent again only then, not across the network every retry only to be refused (and a
        refused command's arguments occupy Redis's memory for a while, crowding out the
        heartbeats)."""
        m = memory(self.lease.r)
        return m is None or not m[1] or m[0] + self.nbytes <= m[1]

    def end(self) -> None:
        waited = time.monotonic() - self.since
        log.info("job %s: the store took the write after %.0f s", self.lease.job_id, waited)
        if self.noted:
            self.lease.try_write(
                [record.hset(self.lease.job_id, waiting=None)]
                + self.push_events(self.lease.job_id, event("store_space", waited=round(waited, 1)))
            )
