"""What one delivery of a job does: take the lease (or step aside), restore the latest good
checkpoint, train through hooks that write fenced, and end the job in exactly one status.

Each policy is a function of its own: `take_lease` (the redelivery rule), `restore` (which
checkpoint to trust), `begin` (the start transition), `train_with_rollbacks` (the divergence
policy), `train_through_rungs` (ASHA), `end` (the three endings and the requeue) and `run_job`'s
error triage (what fails a job, what gives it to another worker). The task in tasks.py only
calls `run_job`; charrnn knows nothing of Redis or Celery.
"""

from __future__ import annotations

import hashlib
import logging
import time

import redis

from charrnn import Config, Trainer
from charrnn.data import Vocab
from charrnn.errors import CharRNNError, CheckpointError, DivergedError

from . import asha, budgets, settings, space
from . import job as record
from .endings import Outcome, end, fail, finish, requeue, stopped_waiting
from .errors import JobTooLarge, LostLease, NoSuchJob, StoreFull
from .hooks import MAX_EVENTS, MAX_HISTORY, MAX_SAMPLES, SHUTDOWN, JobHooks, guard, push_events
from .job import MESSAGE_SCHEMA, Job, Status, event, validate_job_id
from .lease import Lease, retrying
from .limits import check_fits, load_checkpoint
from .spec import JobSpec
from .store import JobStore

__all__ = [  # for the task, the tests and the benchmarks, which import them from here
    "MAX_EVENTS", "MAX_HISTORY", "MAX_SAMPLES", "SHUTDOWN", "Outcome", "guard", "requeue",
]  # fmt: skip

log = logging.getLogger("charrnn.worker")

MAX_ROLLBACKS = 3
"""Divergence rollbacks (each halves the learning rate) before a job fails with "diverged"."""

HOOKS: type[JobHooks] = JobHooks
"""The hooks class a delivery trains with; the fault suite's worker module replaces it."""


# --- the delivery, from message to ending ----------------------------------------------------
def run_job(store: JobStore, job_id: str, host: str, message_schema: int | None = None) -> Outcome:
    """Run one delivery of a job to its end (or step aside), and say how it ended.

    A job this worker cannot read (its record or message from a newer version: job.py) fails
    once, with the version it needs, rather than waiting for a newer worker: the rolling upgrade
    order (workers first) means no such job reaches an old worker unless that order was broken,
    and a job left waiting would be re-sent every REAP_SECONDS forever where no newer worker
    runs; a failed job is seen at once, and submitted again once the pool is upgraded."""
    job_id = validate_job_id(job_id)
    lease = Lease(store.r, job_id, host)
    lease.wait_for_space = lambda what, nbytes: space.Wait(
        lease, what, nbytes, SHUTDOWN.is_set, push_events
    )
    early = take_lease(store, lease)
    if early is not None:
        return early
    try:
        job = read(store, job_id)
    except NoSuchJob:
        log.warning("job %s is not in the store (deleted?); dropping the message", job_id)
        return Outcome.MISSING
    if (message_schema or 1) > MESSAGE_SCHEMA:
        job.unreadable = job.unreadable or (
            f"sent with message schema {message_schema}; this worker reads up to "
            f"{MESSAGE_SCHEMA}: it needs a newer charrnn"
        )
    if job.unreadable:
        return fail(lease, job, host, f"this worker cannot run the job: {job.unreadable}")
    return triage(store, lease, job, host)


def read(store: JobStore, job_id: str) -> Job:
    """The job's record. Reading never fails for what a record holds (job.py); should it fail
    all the same, the job still gets its one failure instead of endless redelivery."""
    try:
        return retrying(store.job, job_id)
    except (NoSuchJob, redis.RedisError):
        raise
    except Exception as e:  # noqa: BLE001 - a record that cannot be read is this job's alone
        log.exception("job %s: its record cannot be read", job_id)
        why = f"its record cannot be read ({type(e).__name__}: {e})"
        return Job(job_id, Status.RUNNING.value, record.StoredSpec({}), unreadable=why)


def triage(store: JobStore, lease: Lease, job: Job, host: str) -> Outcome:
    """Deliver the job and sort what went wrong: bad input and bugs fail the job; an
    unreachable Redis is not the job's fault (the exception leaves, the lease expires, another
    delivery resumes it)."""
    job_id = job.job_id
    try:
        return _deliver(store, lease, job, host)
    except LostLease:
        log.warning("job %s: lost its lease to another trainer; stopping without writing", job_id)
        return Outcome.LOST_LEASE
    except StoreFull as e:
        return stopped_waiting(lease, job, host, e)
    except (CharRNNError, NoSuchJob, JobTooLarge) as e:
        return fail(lease, job, host, str(e))
    except MemoryError:
        # Celery treats a MemoryError that escapes a task as unrecoverable and exits the whole
        # worker, and the redelivered message would go on to kill the next one
        log.error("job %s: out of memory on %s", job_id, host)
        return fail(
            lease,
            job,
            host,
            f"out of memory on worker {host}: the job's arrays could "
            f"not be allocated (lower its sizes, or run it on workers "
            f"with more memory)",
        )
    except redis.ResponseError as e:
        if space.is_full(e):
            # a write outside the lease's (a rung decision, say) refused by a full store: not
            # the job's fault; its lease expires and the reaper revives it once there is space
            raise
        # Redis answered and refused a write (a value above proto-max-bulk-len, say): no retry
        # will succeed, and a job left running would be re-sent by the reaper forever
        return fail(lease, job, host, f"the store refused a write: {e}")
    except redis.RedisError:
        raise
    except Exception as e:  # noqa: BLE001 - a bug must fail the job, not re-run it forever
        log.exception("job %s: failed", job_id)
        return fail(lease, job, host, f"{type(e).__name__}: {e}")


def take_lease(store: JobStore, lease: Lease) -> Outcome | None:
    """None once this delivery holds the job. A live trainer keeps renewing its lease, so a
    copy that waited a whole lease period in vain steps aside; a dead trainer's lease expires
    within LEASE_SECONDS and this copy takes over."""
    deadline = time.monotonic() + settings.LEASE_SECONDS + 1.0
    while True:
        got = lease.acquire()
        if got.kind == "missing":
            log.warning("job %s is not in the store (deleted?); dropping the message", lease.job_id)
            return Outcome.MISSING
        if got.kind == "terminal":
            return Outcome.ALREADY_ENDED
        if got.kind == "acquired":
            return None
        if time.monotonic() > deadline:
            retrying(store.note_stepped_aside, lease.job_id)
            log.info("job %s: a live trainer holds it; this copy steps aside", lease.job_id)
            return Outcome.STEPPED_ASIDE
        time.sleep(min(0.25, settings.LEASE_SECONDS / 4))


def _deliver(store: JobStore, lease: Lease, job: Job, host: str) -> Outcome:
    if lease.attempts > settings.MAX_ATTEMPTS:
        return fail(
            lease,
            job,
            host,
            f"gave up after {lease.attempts - 1} deliveries in a row ended without a "
            f"checkpoint (the worker process died under the job each time: out of "
            f"memory?); CHARRNN_MAX_ATTEMPTS is {settings.MAX_ATTEMPTS}",
        )
    spec = job.spec
    assert isinstance(spec, JobSpec)  # run_job fails a job whose spec cannot be read
    text = retrying(store.get_corpus, spec.corpus_sha256)
    if job.cancel_requested:
        return finish(lease, job, Status.CANCELLED, None, [event("cancelled", host=host)])
    # before anything of the job is allocated: a job too large for this pool fails here
    check_fits(spec.config, Vocab.from_text(text).size, len(text))
    settled = budgets.settle(lease, job, text, host)  # a budget in minutes: iterations, once
    if settled is None:
        return Outcome.CANCELLED  # its deadline had passed: cancelled, not started
    job = settled
    spec = job.spec
    assert isinstance(spec, JobSpec)
    trainer, notes = restore(store, job.job_id, spec.config, text)
    hooks = HOOKS(job, lease)
    hooks.cancel = begin(store, lease, job, trainer, notes, host)
    outcome, decision, trainer = train_with_rollbacks(store, lease, job, trainer, text, hooks, host)
    return end(lease, job, trainer, hooks, outcome, decision, host)


def restore(store: JobStore, job_id: str, cfg: Config, text: str) -> tuple[Trainer, list[str]]:
    """The trainer at the latest checkpoint that verifies (falling back to the previous one and
    recording why), or a fresh one. Returns (trainer, events to record)."""
    notes: list[str] = []
    for which in ("latest", "previous"):
        stored = retrying(store.checkpoint_record, job_id, which)
        if stored is None:
            continue
        raw, sha = stored
        try:
            if hashlib.sha256(raw).hexdigest() != sha:
                raise CheckpointError("stored sha256 does not match its bytes")
            ck = load_checkpoint(raw, f"{which} checkpoint")
            return ck.trainer(text, cfg), notes
        except CharRNNError as e:
            notes.append(event("checkpoint_corrupt", which=which, error=str(e)[:300]))
    return Trainer(cfg, text), notes


def begin(
    store: JobStore, lease: Lease, job: Job, trainer: Trainer, notes: list[str], host: str
) -> bool:
    """The start transition: running on this host, started or resumed. Returns the cancel flag."""
    job_id, now = job.job_id, time.time()
    resumed = trainer.iteration > 0 or job.started_at is not None
    ops = record.start(job, host, now, trainer.iteration, trainer.total_iterations)
    ops += push_events(job_id, *notes)
    if resumed:
        latest = retrying(store.checkpoint_iteration, job_id)
        ops.append(record.hincrby(job_id, "restarts"))
        ops += push_events(
            job_id,
            event(
                "resumed",
                host=host,
                iteration=trainer.iteration,
                last_reported=job.iteration or 0,
                latest_checkpoint=latest,
            ),
        )
    else:
        ops += push_events(job_id, event("started", host=host))
    return lease.write(ops)


def train_with_rollbacks(
    store: JobStore,
    lease: Lease,
    job: Job,
    trainer: Trainer,
    text: str,
    hooks: JobHooks,
    host: str,
) -> tuple[Outcome, dict | None, Trainer]:
    """Train to an ending. The divergence policy: roll back to the last good checkpoint and halve
    the learning rate, up to MAX_ROLLBACKS times, then fail with "diverged"."""
    rollbacks = job.rollbacks
    while True:
        try:
            return (*train_through_rungs(lease, job, trainer, hooks, host), trainer)
        except DivergedError as e:
            rollbacks += 1
            if rollbacks > MAX_ROLLBACKS:
                error = f"diverged after {MAX_ROLLBACKS} rollbacks: {e}"
                finish(
                    lease,
                    job,
                    Status.FAILED,
                    trainer,
                    [event("failed", host=host, error=f"diverged: {e}")],
                    error=error,
                    more={"rollbacks": rollbacks},
                )
                return Outcome.FAILED, None, trainer
            trainer = roll_back(store, lease, job, trainer, text, host, e, rollbacks)


def roll_back(
    store: JobStore,
    lease: Lease,
    job: Job,
    diverged: Trainer,
    text: str,
    host: str,
    e: DivergedError,
    rollbacks: int,
) -> Trainer:
    """The trainer at the last good checkpoint, at half the learning rate that failed (the
    checkpoint may predate an earlier halving), and the rollback recorded."""
    assert isinstance(job.spec, JobSpec)
    trainer, notes = restore(store, job.job_id, job.spec.config, text)
    trainer.rollback_scale = diverged.rollback_scale
    trainer.halve_learning_rate()
    rolled = event(
        "diverged_rollback",
        host=host,
        error=str(e),
        iteration=trainer.iteration,
        diverged_at=diverged.iteration,
        learning_rate=trainer.learning_rate,
    )
    lease.write(
        [record.hset(job.job_id, rollbacks=rollbacks, learning_rate=trainer.learning_rate)]
        + push_events(job.job_id, *notes, rolled)
    )
    return trainer


def train_through_rungs(
    lease: Lease, job: Job, trainer: Trainer, hooks: JobHooks, host: str
) -> tuple[Outcome, dict | None]:
    """Train to the end, pausing at each ASHA rung for the sweep's decision. SUCCEEDED (trained
    to the end), EARLY_STOPPED with the decision that stopped it, or REQUEUED when interrupted
    (cancel or shutdown: `end` tells which). The rungs change nothing in the weights: a job that continues
    through them ends bit-identical to the same job without early stopping."""
    spec = job.spec
    assert isinstance(spec, JobSpec)
    every = spec.checkpoint_every
    if hooks.should_stop(trainer):
        return Outcome.REQUEUED, None
    rungs = spec.rungs.ahead(trainer.iteration, trainer.total_iterations) if spec.rungs else []
    for m in rungs:
        if trainer.iteration < m:
            if trainer.run(hooks, checkpoint_every=every, until=m, eval_at_end=True) == "stopped":
                return Outcome.REQUEUED, None
        if hooks.last_eval_iteration != trainer.iteration:  # resumed exactly at the rung
            hooks.on_eval(trainer, trainer.evaluate())
        # rungs come only from a plan, and the evaluation above set the loss
        assert spec.rungs is not None and trainer.val_loss is not None
        d = asha.decide(lease, spec.rungs, m, hooks.job_id, trainer.val_loss)
        hooks.cancel = lease.write(push_events(hooks.job_id, event("rung", host=host, **d)))
        if not d["continue"]:
            return Outcome.EARLY_STOPPED, d
        if hooks.should_stop(trainer):
            return Outcome.REQUEUED, None
    if trainer.run(hooks, checkpoint_every=every) == "stopped":
        return Outcome.REQUEUED, None
    return Outcome.SUCCEEDED, None
