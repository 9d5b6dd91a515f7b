"""The reaper: revives `running` jobs whose trainer is gone and whose message is gone too.

Celery's Redis transport redelivers a message that stays unacknowledged past the visibility
timeout. When the first trainer is still alive, the redelivered copy steps aside (and is acked),
so the job's message has left the broker for good; if that trainer is then killed hard, nothing
would ever run the job again. Every worker's main process runs one reaper thread, and each
REAP_SECONDS one of them, whichever takes the period's turn first (SET NX on a key that expires
just before the next period), reads the `running` index (ZSCAN, never KEYS). A job whose lease
has been absent on two scans in a row under the same fencing token is re-sent (same task, args,
queue). The sightings live in the store, not in a reaper's memory, so the two scans may be made
by different workers, and the pool scans its running jobs once a period, not once a worker: a
pool of N workers reads N jobs a period instead of N * N (the README's capacity section).

The claim is one Lua script: status still running, lease still absent, token unchanged, and not
already re-sent for this token. So even if two reapers scan at once (a scan slower than the
period, a turn taken during a partition), exactly one re-sends, once per lost trainer. A copy too
many is harmless: it steps aside or finds the job finished.

A `queued` job can lose its message too (the submitting client died between storing the job and
sending it; someone cleared the broker's keys). Each scan also reads the `queued` jobs older than
REAP_SECONDS and the ids of every message the broker holds (the queue's lists and the unacked
hash, see broker.py); a queued job whose id is in neither on two scans in a row, with the same
delivery count, is re-sent, claimed in Lua the same way (status still queued, deliveries
unchanged, not already re-sent for them). So every job in the store either has a message, runs,
or has ended.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import redis
from redis.typing import EncodableT, FieldT

from . import job as record
from . import keys, scripts, settings, space
from .broker import QUEUE
from .broker import message_ids as broker_message_ids
from .job import Status, event
from .store import JobStore, as_text

log = logging.getLogger("charrnn.reaper")

# KEYS: job, lease, fence, reaped, events. ARGV: token seen, hold_ms, event json.
CLAIM = (
    """
if redis.call('HGET', KEYS[1], 'status') ~= '"""
    + Status.RUNNING.value
    + """' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local token = redis.call('GET', KEYS[3]) or '0'
if token ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[4]) == token then return 0 end
redis.call('SET', KEYS[4], token, 'PX', ARGV[2])
redis.call('RPUSH', KEYS[5], ARGV[3])
return 1
"""
)

# KEYS: job, reaped, events. ARGV: deliveries seen, mark, hold_ms, event json.
CLAIM_QUEUED = (
    """
if redis.call('HGET', KEYS[1], 'status') ~= '"""
    + Status.QUEUED.value
    + """' then return 0 end
if (redis.call('HGET', KEYS[1], 'deliveries') or '0') ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[4])
return 1
"""
)

PAGE = 500
"""Jobs per pipeline in one scan."""


class Reaper:
    def __init__(self, store: JobStore, resend, host: str, queue: str = QUEUE):
        """resend(job_id) puts one task message for the job on the queue."""
        self.store, self.resend, self.host, self.queue = store, resend, host, queue
        self.claim = scripts.Script(store.r, CLAIM)
        self.claim_queued = scripts.Script(store.r, CLAIM_QUEUED)
        self.name = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # whose turn it is
        self.stop = threading.Event()

    def take_turn(self) -> bool:
        """True when this reaper scans this period: the first of the pool's reapers to ask. The
        turn expires a little before the next period, so a reaper that died with it is replaced
        at once, and the period's turn goes to whoever asks first (no one reaper is relied on)."""
        ms = max(1, int(settings.REAP_SECONDS * 900))
        return bool(self.store.r.set(keys.REAPER_TURN, self.name, nx=True, px=ms))

    def sightings(self, kind: str) -> dict[str, str]:
        """What the previous scan saw unattended: job id -> token (running) or deliveries
        (queued). Made by whichever reaper scanned last."""
        raw = self.store.r.hgetall(keys.reaper_sightings(kind))
        return {as_text(k): as_text(v) for k, v in raw.items()}

    def remember(self, kind: str, seen: dict[str, str]) -> None:
        """Replace the sightings with this scan's. They expire after three periods with no scan:
        older ones would not be 'two scans in a row'."""
        key = keys.reaper_sightings(kind)
        with self.store.r.pipeline(transaction=True) as p:
            p.delete(key)
            if seen:
                fields: dict[FieldT, EncodableT] = {k: v for k, v in seen.items()}
                p.hset(key, mapping=fields)
                p.pexpire(key, int(settings.REAP_SECONDS * 3000))
            p.execute()

    def scan(self) -> list[str]:
        """One pass over running jobs, then queued ones, then live tunes (a trial that ended
        with nobody to ask for the next: worker/tune.py). Returns the ids sent."""
        return self.scan_running() + self.scan_queued() + self.scan_tunes()

    def scan_tunes(self) -> list[str]:
        from . import tune

        try:
            return tune.reap(self.store, self.resend, f"reaper {self.host}")
        except redis.RedisError:
            raise
        except tune.OptunaMissing:
            tune.tell_missing_once()
            return []
        except Exception:  # noqa: BLE001 - a tune's proposal must not stop the reaper's scans
            log.exception("reaper: could not advance a tune")
            return []

    def scan_running(self) -> list[str]:
        """Running jobs whose lease is gone. Returns the ids re-sent."""
        r, seen, sent = self.store.r, {}, []
        before = self.sightings("running")
        ids = [
            raw.decode()
            for raw, _ in r.zscan_iter(keys.status_index(Status.RUNNING.value), count=500)
        ]
        for start in range(0, len(ids), 500):
            page = ids[start : start + 500]
            with r.pipeline(transaction=False) as p:
                for job_id in page:
                    p.exists(keys.lease(job_id))
                    p.get(keys.fence(job_id))
                    p.hget(keys.job(job_id), record.field_name("iteration"))
                rows = p.execute()
            for i, job_id in enumerate(page):
                held, token, iteration = rows[3 * i : 3 * i + 3]
                if held:
                    continue
                token = (token or b"0").decode()
                seen[job_id] = token
                if before.get(job_id) != token:
                    continue  # first sighting: the grace period starts now
                ev = event(
                    "requeued_by_reaper",
                    host=self.host,
                    token=int(token),
                    iteration=int(iteration or 0),
                )
                if self.claim(
                    [
                        keys.job(job_id),
                        keys.lease(job_id),
                        keys.fence(job_id),
                        keys.reaped(job_id),
                        keys.events(job_id),
                    ],
                    [token, int(settings.REAP_HOLD_SECONDS * 1000), ev],
                ):
                    try:
                        self.resend(job_id)
                    except Exception:
                        r.delete(keys.reaped(job_id))  # unclaim: the next scan tries again
                        raise
                    log.warning(
                        "job %s: running with no live trainer (token %s); re-sent", job_id, token
                    )
                    sent.append(job_id)
        self.remember("running", seen)
        return sent

    def message_ids(self) -> set[str]:
        """The job ids of every message the broker holds for our queue (broker.py)."""
        return broker_message_ids(self.store.r, self.queue)

    def scan_queued(self) -> list[str]:
        """Queued jobs (older than one scan period) whose message is gone. Returns the ids
        re-sent."""
        r, seen, sent = self.store.r, {}, []
        before = self.sightings("queued")
        cutoff = time.time() - settings.REAP_SECONDS
        ids = [
            raw.decode() if isinstance(raw, bytes) else str(raw)
            for raw in r.zrangebyscore(keys.status_index(Status.QUEUED.value), "-inf", cutoff)
        ]
        held = self.message_ids() if ids else set()
        ids = [j for j in ids if j not in held]
        for start in range(0, len(ids), PAGE):
            page = ids[start : start + PAGE]
            with r.pipeline(transaction=False) as p:
                for job_id in page:
                    p.hget(keys.job(job_id), record.field_name("deliveries"))
                rows = p.execute()
            for job_id, deliveries in zip(page, rows, strict=True):
                deliveries = (deliveries or b"0").decode()
                seen[job_id] = deliveries
                if before.get(job_id) != deliveries:
                    continue  # first sighting: the message may be between two of kombu's keys
                ev = event(
                    "requeued_by_reaper",
                    host=self.host,
                    was=Status.QUEUED.value,
                    deliveries=int(deliveries),
                    reason="queued, and its message was in neither the queue nor the unacked set",
                )
                if self.claim_queued(
                    [keys.job(job_id), keys.reaped(job_id), keys.events(job_id)],
                    [
                        deliveries,
                        f"queued:{deliveries}",
                        int(settings.REAP_HOLD_SECONDS * 1000),
                        ev,
                    ],
                ):
                    try:
                        self.resend(job_id)
                    except Exception:
                        r.delete(keys.reaped(job_id))  # unclaim: the next scan tries again
                        raise
                    log.warning("job %s: queued with no message in the broker; re-sent", job_id)
                    sent.append(job_id)
        self.remember("queued", seen)
        return sent

    def loop(self) -> None:
        while not self.stop.wait(settings.REAP_SECONDS):
            try:
                if self.take_turn():
                    self.scan()
            except redis.RedisError as e:  # Redis restarting, or full: try again next time
                log.info(
                    "reaper: %s (%s); next scan in %.0f s",
                    "store full" if space.is_full(e) else "store unreachable",
                    type(e).__name__,
                    settings.REAP_SECONDS,
                )
            except Exception:  # noqa: BLE001 - the thread must not die
                log.exception("reaper: scan failed")

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.loop, name="charrnn-reaper", daemon=True)
        t.start()
        return t
