"""The reaper: revives `running` jobs whose trainer is gone and whose message is gone too.

Celery's Redis transport redelivers a message that stays unacknowledged past the visibility
timeout. When the first trainer is still alive, the redelivered copy steps aside (and is acked),
so the job's message has left the broker for good; if that trainer is then killed hard, nothing
would ever run the job again. Every worker's main process runs one reaper thread: each
REAP_SECONDS it reads the `running` index (ZSCAN, never KEYS), and a job whose lease has been
absent on two scans in a row under the same fencing token is re-sent (same task, args, queue).

The claim is one Lua script: status still running, lease still absent, token unchanged, and not
already re-sent for this token. So among all the workers' reapers exactly one re-sends, once per
lost trainer. A copy too many is harmless: it steps aside or finds the job finished.
"""
from __future__ import annotations

import logging
import threading

import redis

from . import keys, settings
from .store import JobStore, Status, event

log = logging.getLogger("charrnn.reaper")

# KEYS: job, lease, fence, reaped, events. ARGV: token seen, hold_ms, event json.
CLAIM = """
if redis.call('HGET', KEYS[1], 'status') ~= '""" + Status.RUNNING.value + """' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local token = redis.call('GET', KEYS[3]) or '0'
if token ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[4]) == token then return 0 end
redis.call('SET', KEYS[4], token, 'PX', ARGV[2])
redis.call('RPUSH', KEYS[5], ARGV[3])
return 1
"""


class Reaper:
    def __init__(self, store: JobStore, resend, host: str):
        """resend(job_id) puts one task message for the job on the queue."""
        self.store, self.resend, self.host = store, resend, host
        self.claim = store.r.register_script(CLAIM)
        self.suspects: dict[str, str] = {}   # job id -> token under which its lease was absent
        self.stop = threading.Event()

    def scan(self) -> list[str]:
        """One pass. Returns the ids re-sent."""
        r, seen, sent = self.store.r, {}, []
        ids = [raw.decode() for raw, _ in
               r.zscan_iter(keys.status_index(Status.RUNNING.value), count=500)]
        for start in range(0, len(ids), 500):
            page = ids[start:start + 500]
            with r.pipeline(transaction=False) as p:
                for job_id in page:
                    p.exists(keys.lease(job_id))
                    p.get(keys.fence(job_id))
                    p.hget(keys.job(job_id), "iteration")
                rows = p.execute()
            for i, job_id in enumerate(page):
                held, token, iteration = rows[3 * i:3 * i + 3]
                if held:
                    continue
                token = (token or b"0").decode()
                seen[job_id] = token
                if self.suspects.get(job_id) != token:
                    continue      # first sighting: the grace period starts now
                ev = event("requeued_by_reaper", host=self.host, token=int(token),
                           iteration=int(iteration or 0))
                if self.claim([keys.job(job_id), keys.lease(job_id), keys.fence(job_id),
                               keys.reaped(job_id), keys.events(job_id)],
                              [token, int(settings.REAP_HOLD_SECONDS * 1000), ev]):
                    try:
                        self.resend(job_id)
                    except Exception:
                        r.delete(keys.reaped(job_id))    # unclaim: the next scan tries again
                        raise
                    log.warning("job %s: running with no live trainer (token %s); re-sent",
                                job_id, token)
                    sent.append(job_id)
        self.suspects = seen
        return sent

    def loop(self) -> None:
        while not self.stop.wait(settings.REAP_SECONDS):
            try:
                self.scan()
            except redis.RedisError as e:          # Redis restarting: try again next time
                log.info("reaper: store unreachable (%s); next scan in %.0f s",
                         type(e).__name__, settings.REAP_SECONDS)
            except Exception:                      # noqa: BLE001 - the thread must not die
                log.exception("reaper: scan failed")

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.loop, name="charrnn-reaper", daemon=True)
        t.start()
        return t
