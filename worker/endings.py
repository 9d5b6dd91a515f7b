"""How a delivery ends: the job's last write (`finish`: a terminal status, its times, final
metrics and events, with the lease released), the three endings of training (`end`), the
requeue when the worker shuts down, and the way out of a wait for space. Each delivery ends in
exactly one of them."""

from __future__ import annotations

import time
from enum import Enum

from charrnn import Trainer
from charrnn.errors import DivergedError

from . import job as record
from . import keys
from .errors import LostLease, StoreFull
from .hooks import JobHooks, push_events
from .job import Job, Status, event
from .lease import Lease


class Outcome(str, Enum):
    """How one delivery ended (the task's return value; the job's status is in the store)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EARLY_STOPPED = "early_stopped"  # ASHA stopped it at a rung: status `stopped`
    REQUEUED = "requeued"  # the worker is shutting down: checkpointed, given back
    STEPPED_ASIDE = "stepped_aside"  # a live trainer holds the job; this copy is redundant
    LOST_LEASE = "lost_lease"  # another trainer took the job over; this one stopped
    ALREADY_ENDED = "already_ended"  # the job had ended before this delivery
    MISSING = "missing"  # no such job (deleted): the message is dropped


def end(
    lease: Lease,
    job: Job,
    trainer: Trainer,
    hooks: JobHooks,
    outcome: Outcome,
    decision: dict | None,
    host: str,
) -> Outcome:
    """Every ending keeps a checkpoint where the trainer stands (unless the model diverged since
    the last one: that one stays the latest), then moves the job to its status."""
    if outcome == Outcome.FAILED:
        return outcome
    try:
        hooks.checkpoint_if_needed(trainer)
    except DivergedError:
        if outcome != Outcome.REQUEUED:
            raise
    if outcome in (Outcome.SUCCEEDED, Outcome.EARLY_STOPPED) or hooks.cancel:
        hooks.final_sample(trainer)
    if outcome == Outcome.SUCCEEDED:
        return finish(
            lease,
            job,
            Status.SUCCEEDED,
            trainer,
            [event("finished", host=host, iteration=trainer.iteration)],
        )
    if outcome == Outcome.EARLY_STOPPED:
        finish(
            lease,
            job,
            Status.STOPPED,
            trainer,
            [event("early_stopped", host=host, scheduler="asha", **(decision or {}))],
        )
        return Outcome.EARLY_STOPPED
    if hooks.cancel:
        return finish(
            lease,
            job,
            Status.CANCELLED,
            trainer,
            [event("cancelled", host=host, iteration=trainer.iteration)],
        )
    return requeue(lease, job, trainer.iteration, host)


def requeue(lease: Lease, job: Job, iteration: int | None, host: str) -> Outcome:
    """The worker is shutting down: the job goes back to `queued` (the task then gives its
    message back to the broker) and the lease is released for the next worker at once."""
    job_id = job.job_id
    ops = record.requeue(job)
    ops += push_events(
        job_id,
        event("interrupted", host=host, iteration=iteration, reason="worker shutting down"),
    )
    lease.write_and_release(ops)
    return Outcome.REQUEUED


def stopped_waiting(lease: Lease, job: Job, host: str, e: StoreFull) -> Outcome:
    """Cancelled, or the worker shutting down, while the store was full: the job ends cancelled
    or goes back to the queue, from its last stored checkpoint (what was trained since could
    not be stored). These last writes are small; if even they are refused, the error leaves and
    the reaper revives the job once the store takes writes again."""
    lease.wait_for_space = None
    stored = lease.r.hget(keys.checkpoint(job.job_id, "latest"), "iteration")
    iteration = None if stored is None else int(stored)
    if e.cancelled:
        return finish(
            lease,
            job,
            Status.CANCELLED,
            None,
            [event("cancelled", host=host, iteration=iteration, reason=str(e))],
        )
    return requeue(lease, job, iteration, host)


def fail(lease: Lease, job: Job, host: str, error: str) -> Outcome:
    try:
        return finish(
            lease, job, Status.FAILED, None, [event("failed", host=host, error=error)], error=error
        )
    except LostLease:
        return Outcome.LOST_LEASE


def finish(
    lease: Lease,
    job: Job,
    status: Status,
    trainer: Trainer | None,
    events: list[str],
    error: str | None = None,
    more: dict | None = None,
) -> Outcome:
    """The job's last write: its terminal status, times, final metrics and events; the lease
    is released with it."""
    ops = record.end(job, status, time.time(), error, **(more or {}))
    if trainer is not None:
        ops.append(record.metrics(job.job_id, trainer.stats()))
    ops += push_events(job.job_id, *events)
    lease.write_and_release(ops)
    return Outcome(status.value) if status != Status.STOPPED else Outcome.EARLY_STOPPED
