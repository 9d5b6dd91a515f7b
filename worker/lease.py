"""One live trainer per job: a lease (set-if-absent with an expiry, renewed by heartbeats) and a
fencing token (a counter incremented on every takeover). Every write a trainer makes goes through
one Lua script that first checks, inside Redis, that the trainer's token is still the job's
current one; a stale or duplicate trainer's writes are refused atomically, never half applied.

The scripts touch keys they do not declare in KEYS: the store targets one Redis server (or a
primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from . import keys, scripts, settings, space
from .errors import LostLease
from .job import TERMINAL

# KEYS: job, lease, fence. ARGV: lease_ms, holder. Returns {kind, value[, attempts]}.
# A delivery that acquires counts in `deliveries` (all of them) and `attempts` (those since the
# last checkpoint, which resets it): a job whose worker keeps dying under it is seen here.
# The terminal statuses are written in from store.TERMINAL, so a new one cannot be forgotten here.
ACQUIRE = (
    """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if """
    + " or ".join(f"st == '{s.value}'" for s in TERMINAL)
    + """ then return {'terminal', st} end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'held', tostring(redis.call('PTTL', KEYS[2]))}
end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], token .. ' ' .. ARGV[2], 'PX', ARGV[1])
redis.call('HSET', KEYS[1], 'token', token)
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {'acquired', tostring(token), tostring(attempts)}
"""
)

# KEYS: fence, job, refused. ARGV: token, write id, then commands as (argc, name, args...).
# RENAMEIFEXISTS src dst is ours: RENAME src dst when src exists (O(1), where COPY would copy a
# whole checkpoint inside Redis on every write).
# A refused write is counted (while the job exists): the duplicate trainers the fence stopped.
# The write id ("token:n", n counting one trainer's writes) makes a write idempotent: when Redis
# applied it but the reply was lost (a restart) the trainer sends it again, and the replay must
# not append history twice or turn the previous checkpoint into a copy of the latest.
FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCR', KEYS[3]) end
  return {0, false}
end
if redis.call('HGET', KEYS[2], 'write_id') == ARGV[2] then
  return {1, redis.call('HGET', KEYS[2], 'cancel_requested')}
end
redis.call('HSET', KEYS[2], 'write_id', ARGV[2])
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local name = ARGV[i + 1]
  if name == 'RENAMEIFEXISTS' then
    if redis.call('EXISTS', ARGV[i + 2]) == 1 then
      redis.call('RENAME', ARGV[i + 2], ARGV[i + 3])
    end
  else
    redis.call(unpack(ARGV, i + 1, i + n))
  end
  i = i + n + 1
end
return {1, redis.call('HGET', KEYS[2], 'cancel_requested')}
"""


@dataclass
class Acquired:
    kind: str  # acquired | held | terminal | missing
    value: str  # the token, the lease's remaining ms, or the terminal status
    attempts: int = (
        0  # when acquired: deliveries since the job's last checkpoint, this one included
    )


def retrying(fn, *args, deadline_seconds: float | None = None):
    """Call fn, retrying while Redis is unreachable (a restart) for up to STORE_RETRY_SECONDS."""
    deadline = time.monotonic() + (deadline_seconds or settings.STORE_RETRY_SECONDS)
    delay = 0.1
    while True:
        try:
            return fn(*args)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Lease:
    def __init__(self, r: redis.Redis, job_id: str, holder: str):
        self.r, self.job_id, self.holder = r, job_id, holder
        self.token: str | None = None
        self.attempts = 0  # deliveries since the job's last checkpoint, this one included
        self.writes = 0
        self._acquire = scripts.Script(r, ACQUIRE)
        self._fenced = scripts.Script(r, FENCED)
        self.wait_for_space: Callable[[str, int], space.Wait] | None = None
        """Set by the trainer: how to wait when the store is full (space.Wait); without it a
        write the store refuses raises."""

    @property
    def lease_ms(self) -> int:
        return int(settings.LEASE_SECONDS * 1000)

    def acquire(self) -> Acquired:
        kind, value, *rest = retrying(
            self._acquire,
            [keys.job(self.job_id), keys.lease(self.job_id), keys.fence(self.job_id)],
            [self.lease_ms, self.holder],
        )
        a = Acquired(kind.decode(), value.decode(), int(rest[0]) if rest else 0)
        if a.kind == "acquired":
            self.token, self.attempts = a.value, a.attempts
        return a

    def _fenced_keys(self) -> list[str]:
        return [keys.fence(self.job_id), keys.job(self.job_id), keys.refused(self.job_id)]

    def heartbeat_op(self) -> tuple:
        return ("SET", keys.lease(self.job_id), f"{self.token} {self.holder}", "PX", self.lease_ms)

    def write(self, ops: list[tuple], what: str | None = None) -> bool:
        """Apply ops atomically if our token is current (renewing the lease too). Returns the
        job's cancel flag; raises LostLease if another trainer took the job. `what` names the
        write in the line that says the store is full ("checkpoint of 3.7 MB")."""
        cancel = self._apply(list(ops) + [self.heartbeat_op()], what)
        return bool(cancel) and cancel != b"0"

    def try_write(self, ops: list[tuple]) -> bool | None:
        """`write` once, or None when the store is full: for the small writes made while
        waiting for space, which must not wait themselves."""
        try:
            return self.write(ops) if self.wait_for_space is None else self._once(ops)
        except redis.ResponseError as e:
            if space.is_full(e):
                return None
            raise

    def _once(self, ops: list[tuple]) -> bool:
        wait, self.wait_for_space = self.wait_for_space, None
        try:
            return self.write(ops)
        finally:
            self.wait_for_space = wait

    def write_and_release(self, ops: list[tuple]) -> None:
        """The last write of a trainer: ops, then the lease is gone (no heartbeat appended)."""
        self._apply(list(ops) + [self.release_op()])

    def release_op(self) -> tuple:
        return ("DEL", keys.lease(self.job_id))

    def fenced_argv(self, ops: list[tuple]) -> list:
        """ARGV of the FENCED script: token, a fresh write id, then each op as (argc, *op)."""
        assert self.token is not None
        self.writes += 1
        argv: list = [self.token, f"{self.token}:{self.writes}"]
        for op in ops:
            argv.append(len(op))
            argv.extend(op)
        return argv

    def _apply(self, ops: list[tuple], what: str | None = None):
        argv = self.fenced_argv(ops)  # built once: a retry replays the same write id
        wait = None
        while True:
            try:
                ok, cancel = retrying(self._fenced, self._fenced_keys(), argv)
                break
            except redis.ResponseError as e:
                # the store is full: wait for space and send the same write again (space.py)
                if not space.is_full(e) or self.wait_for_space is None:
                    raise
                if wait is None:
                    size = space.size_of(ops)
                    what = what or f"a write of {space.megabytes(size)}"
                    wait = self.wait_for_space(what, size).begin()
                wait.pause()
        if not ok:
            raise LostLease(f"job {self.job_id}: another trainer holds it now")
        if wait is not None:
            wait.end()
        return cancel
