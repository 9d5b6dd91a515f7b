"""A job's time budget settled on the pool: `submit --minutes M` stores the minutes, and the
worker that first starts the job turns them into iterations with its own measured speed
(charrnn.budget.iterations_for_minutes) and records them in the stored spec with a fenced write.
From then on the job is exactly the `--iterations N` job: a resume on another worker, faster or
slower, continues the same run to the same bits, and the cosine ends where the budget does.

A budget with a deadline (a tune's trial) is clipped to what is left of it, read on Redis's
clock, so a trial that waited in the queue does not run past its tune's end.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace as replaced

from charrnn.budget import iterations_for_minutes

from . import job as record
from . import keys, settings
from .job import Job, Status, event
from .lease import Lease, retrying
from .spec import JobSpec


def redis_now(lease: Lease) -> float:
    """Unix seconds on Redis's clock: the one clock every worker and the tune's creator share."""
    sec, usec = retrying(lease.r.time)
    return sec + usec / 1e6


def settle(lease: Lease, job: Job, text: str, host: str) -> Job | None:
    """The job with its budget settled (unchanged when it has none or it is settled already),
    or None when its deadline passed before it started: it is cancelled here (a tune's trial
    that waited in the queue past the tune's end; not a failure). ConfigError when the budget
    does not buy a run (the job fails with that line)."""
    spec = job.spec
    assert isinstance(spec, JobSpec)  # a spec this version cannot read fails before this
    if not spec.unsettled:
        return job
    assert spec.minutes is not None
    minutes = spec.minutes
    if spec.deadline is not None:
        left = (spec.deadline - redis_now(lease)) / 60.0
        if left * 60 < MIN_SECONDS:
            _cancel(lease, job, host)
            return None
        minutes = min(minutes, left)
    with _renewing(lease):  # the probe takes seconds; the lease must not lapse meanwhile
        b = iterations_for_minutes(spec.config, text, minutes)
    config = spec.config.replace(iterations=b.iterations, epochs=None)
    rungs = spec.rungs.settled(b.iterations) if spec.rungs is not None else None
    settled = replaced(
        spec, config=config, total_iterations=b.iterations, budget=b.to_dict(), rungs=rungs
    )
    lease.write(
        [
            ("HSET", keys.job(job.job_id), "spec", settled.to_json()),
            record.hset(job.job_id, iterations=b.iterations),
            ("RPUSH", keys.events(job.job_id), event("budget", host=host, **b.to_dict())),
        ]
    )
    return replaced(job, spec=settled, iterations=b.iterations)


MIN_SECONDS = 5.0
"""Less time than this left before the deadline: the job does not start (the probe alone
takes a second or more)."""


def _cancel(lease: Lease, job: Job, host: str) -> None:
    reason = "its deadline passed before it started"
    ops = record.end(job, Status.CANCELLED, time.time(), None) + [
        ("RPUSH", keys.events(job.job_id), event("cancelled", host=host, reason=reason)),
    ]
    lease.write_and_release(ops)


class _renewing:
    """Renew the lease from a thread while the main thread probes (it writes nothing then)."""

    def __init__(self, lease: Lease):
        self.lease, self.stop = lease, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(settings.HEARTBEAT_SECONDS):
            try:
                self.lease.write([])
            except Exception:  # noqa: BLE001 - the settling write after the probe reports it
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
