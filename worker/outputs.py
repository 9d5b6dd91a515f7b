"""What a job produced, as the job store reads it: loss history, samples, events and checkpoints
(`keys.py` has the layout). A mixin of `JobStore`; the trainer writes them fenced (hooks.py)."""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING

import redis

from . import keys
from .errors import NoCheckpoint
from .job import field_name


def as_text(v: object) -> str:
    """A Redis string reply as text. redis-py types replies as bytes or str (it depends on
    decode_responses, off for this store: bytes); anything else is a bug, said at once."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, str):
        return v
    raise TypeError(f"expected a Redis string reply, got {type(v).__name__}")


def as_bytes(v: object) -> bytes:
    """A Redis string reply as the bytes stored (checkpoints): see as_text."""
    if isinstance(v, bytes):
        return v
    raise TypeError(f"expected a Redis bytes reply, got {type(v).__name__}")


class JobOutputs:
    r: redis.Redis

    if TYPE_CHECKING:

        def get(self, job_id: str) -> dict: ...

    def history(self, job_id: str) -> list[list]:
        return [json.loads(x) for x in self.r.lrange(keys.history(job_id), 0, -1)]

    def samples(self, job_id: str, last: bool = False, start: int = 0) -> list[dict]:
        """The samples kept (the newest MAX_SAMPLES), only the last, or those from the
        `start`-th ever written on (`sample_count` is the number written so far)."""
        if last or not start:
            rows = self.r.lrange(keys.samples(job_id), -1 if last else 0, -1)
        else:
            rows = self._samples_from(job_id, start)
        return [json.loads(x) for x in rows]

    def _samples_from(self, job_id: str, start: int) -> list:
        """The rows from the `start`-th written on, only those read from Redis (a live page's
        poll: ten kept samples of 100,000 characters are a megabyte a poll otherwise). WATCH:
        a sample written between the count and the read would shift the tail by one."""
        key = keys.samples(job_id)
        while True:
            with self.r.pipeline(transaction=True) as p:
                try:
                    p.watch(key)
                    written = p.hget(keys.job(job_id), field_name("samples_written"))
                    new = (int(written) if written else p.llen(key)) - start
                    if new <= 0:
                        return []
                    p.multi()
                    p.lrange(key, -new, -1)  # the kept ones of them, if some were trimmed
                    (rows,) = p.execute()
                    return rows
                except redis.WatchError:
                    continue

    def sample_count(self, job_id: str) -> int:
        """Samples written so far, including those trimmed away."""
        with self.r.pipeline(transaction=False) as p:
            p.hget(keys.job(job_id), field_name("samples_written"))
            p.llen(keys.samples(job_id))
            written, n = p.execute()
        return int(written or n)

    def events(self, job_id: str) -> list[dict]:
        return [json.loads(x) for x in self.r.lrange(keys.events(job_id), 0, -1)]

    def note_stepped_aside(self, job_id: str) -> None:
        """A duplicate delivery found a live trainer and left (counted for the fault report)."""
        self.r.incr(keys.stepped_aside(job_id))

    def checkpoint_record(self, job_id: str, which: str) -> tuple[bytes, str] | None:
        """(bytes, stored sha256) of a checkpoint, unverified, or None: for the worker, which
        verifies it and falls back."""
        raw = self.r.hmget(keys.checkpoint(job_id, which), "data", "sha256")
        return None if raw[0] is None or raw[1] is None else (as_bytes(raw[0]), as_text(raw[1]))

    def checkpoint_iteration(self, job_id: str) -> int | None:
        raw = self.r.hget(keys.checkpoint(job_id, "latest"), "iteration")
        return None if raw is None else int(raw)

    def checkpoint(self, job_id: str, which: str = "latest") -> tuple[bytes, dict]:
        """(bytes of the .npz, {"sha256", "iteration"}) or NoCheckpoint."""
        self.get(job_id)
        raw = self.r.hgetall(keys.checkpoint(job_id, which))
        if not raw:
            raise NoCheckpoint(f"job {job_id} has no {which} checkpoint yet")
        return as_bytes(raw[b"data"]), {
            "sha256": as_text(raw[b"sha256"]),
            "iteration": int(raw[b"iteration"]),
        }

    def last_samples(self, job_ids: builtins.list[str]) -> builtins.list[dict | None]:
        """Each job's newest sample (or None), one round trip."""
        with self.r.pipeline(transaction=False) as p:
            for j in job_ids:
                p.lindex(keys.samples(j), -1)
            return [json.loads(r) if r else None for r in p.execute()]

    def histories(self, job_ids: builtins.list[str]) -> builtins.list[builtins.list[builtins.list]]:
        """Each job's loss history, one round trip."""
        with self.r.pipeline(transaction=False) as p:
            for j in job_ids:
                p.lrange(keys.history(j), 0, -1)
            return [[json.loads(x) for x in rows] for rows in p.execute()]
