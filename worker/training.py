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
import json
import logging
import math
import threading
import time
from enum import Enum

import redis

from charrnn import Config, Hooks, Trainer, checkpoint
from charrnn.data import Vocab
from charrnn.errors import CharRNNError, CheckpointError, DivergedError

from . import asha, budgets, keys, settings, space
from .errors import JobTooLarge, LostLease, NoSuchJob, StoreFull
from .lease import Lease, retrying
from .limits import check_fits
from .spec import JobSpec
from .store import JobStore, Status, event, status_moves, validate_job_id

log = logging.getLogger("charrnn.worker")

MAX_ROLLBACKS = 3
"""Divergence rollbacks (each halves the learning rate) before a job fails with "diverged"."""

EXPLODE_FACTOR = 10.0
"""A smoothed training loss above this many times that of guessing uniformly (ln V nats per
character) is an exploding loss, treated like a non-finite one. Training starts at 1x and a model
that learns only goes down; a learning rate so large that Adagrad's first steps blow the weights
up lands hundreds of times above it (1e3 gives ~200x) while staying finite, so the trainer's own
non-finite check never fires."""

HISTORY_POINTS = 500
"""Roughly how many loss-history rows a job keeps (one per 1/500 of its iterations)."""

MAX_HISTORY, MAX_SAMPLES, MAX_EVENTS = 2 * HISTORY_POINTS, 100, 1000
"""Hard caps on a job's lists (the newest kept): whatever its eval, sample and checkpoint
intervals, and however often it is resumed, a job's record stays bounded."""

SHUTDOWN = threading.Event()
"""Set in a pool process when its worker is shutting down (SIGTERM): checkpoint and give back."""


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


def push(key: str, item: str, keep: int) -> list[tuple]:
    """Append to a bounded list: the ops of one fenced write."""
    return [("RPUSH", key, item), ("LTRIM", key, -keep, -1)]


def push_events(job_id: str, *items: str) -> list[tuple]:
    return [op for e in items for op in push(keys.events(job_id), e, MAX_EVENTS)]


class JobHooks(Hooks):
    """Progress, samples and checkpoints to the store, each a fenced write; cancellation and
    shutdown checked at every progress write and checkpoint. Tests install a subclass through
    `HOOKS` (a fault to inject); production code never branches on a test's wish."""

    progress_seconds = settings.HEARTBEAT_SECONDS

    def __init__(self, job: dict, lease: Lease):
        self.job_id, self.lease = job["job_id"], lease
        self.cancel = False
        self.last_ckpt_iteration = -1
        self.last_eval_iteration = -1
        self.best_ckpt_val = job["best_val_loss"]
        self.history_every = max(1, (job["spec"].total_iterations or 1) // HISTORY_POINTS)
        # a history row at least every 1/HISTORY_POINTS of the run, however fast it trains: a
        # job of a few seconds still draws a curve (its writes stay bounded by HISTORY_POINTS)
        self.progress_every = self.history_every
        self.last_history = {"progress": -1, "eval": -1}

    def metrics(self, t: Trainer) -> tuple:
        """The job record's metric fields, one HSET."""
        s = t.stats()
        fields = {
            "iteration": s["iteration"],
            "iterations": s["iterations"],
            "smooth_loss": repr(s["smooth_loss"]),
            "val_loss": "" if s["val_loss"] is None else repr(s["val_loss"]),
            "best_val_loss": "" if s["best_val_loss"] is None else repr(s["best_val_loss"]),
            "chars_per_second": repr(s["chars_per_second"]),
            "learning_rate": repr(s["learning_rate"]),
        }
        return ("HSET", keys.job(self.job_id), *[x for kv in fields.items() for x in kv])

    def _history(self, t: Trainer, evaluation: bool = False) -> list[tuple]:
        """A history row, at most one per 1/HISTORY_POINTS of the run for progress and as many
        again for evaluations (and always at the end): a curve needs a few hundred points, and
        an eval every iteration must not make thousands."""
        kind = "eval" if evaluation else "progress"
        if (
            t.iteration - self.last_history[kind] < self.history_every
            and t.iteration != t.total_iterations
        ):
            return []
        self.last_history[kind] = t.iteration
        return push(
            keys.history(self.job_id),
            json.dumps([t.iteration, t.train_loss, t.val_loss]),
            MAX_HISTORY,
        )

    def on_progress(self, t: Trainer) -> None:
        guard(t)
        self.cancel = self.lease.write([self.metrics(t)] + self._history(t))

    def on_eval(self, t: Trainer, val_loss: float | None) -> None:
        guard(t)
        self.last_eval_iteration = t.iteration
        self.cancel = self.lease.write([self.metrics(t)] + self._history(t, evaluation=True))

    def on_sample(self, t: Trainer, text: str) -> None:
        row = json.dumps({"iteration": t.iteration, "text": text})
        self.cancel = self.lease.write(
            push(keys.samples(self.job_id), row, MAX_SAMPLES)
            + [("HINCRBY", keys.job(self.job_id), "samples_written", 1)]
        )

    def on_checkpoint(self, t: Trainer) -> None:
        guard(t)  # an exploded model is never stored
        raw = checkpoint.to_bytes(t)  # refuses non-finite weights
        sha = hashlib.sha256(raw).hexdigest()
        latest, previous = (
            keys.checkpoint(self.job_id, "latest"),
            keys.checkpoint(self.job_id, "previous"),
        )
        ops = [
            ("RENAMEIFEXISTS", latest, previous),
            ("HSET", latest, "data", raw, "sha256", sha, "iteration", t.iteration),
            self.metrics(t),
            ("HSET", keys.job(self.job_id), "attempts", 0),
        ]
        if t.val_loss is not None and (
            self.best_ckpt_val is None or t.val_loss < self.best_ckpt_val
        ):
            self.best_ckpt_val = t.val_loss
            ops.append(("COPY", latest, keys.checkpoint(self.job_id, "best"), "REPLACE"))
        self.cancel = self.lease.write(ops, what=f"checkpoint of {space.megabytes(len(raw))}")
        self.last_ckpt_iteration = t.iteration

    def checkpoint_if_needed(self, t: Trainer) -> None:
        if self.last_ckpt_iteration != t.iteration:
            self.on_checkpoint(t)

    def should_stop(self, t: Trainer) -> bool:
        return self.cancel or SHUTDOWN.is_set()


HOOKS: type[JobHooks] = JobHooks
"""The hooks class a delivery trains with; the fault suite's worker module replaces it."""


def guard(t: Trainer) -> None:
    """DivergedError when the smoothed loss is not finite or has exploded (EXPLODE_FACTOR)."""
    uniform = max(math.log(t.vocab.size), 1.0)  # nats/char, as smooth_loss
    if not math.isfinite(t.smooth_loss) or t.smooth_loss > EXPLODE_FACTOR * uniform:
        raise DivergedError(
            f"diverged: smoothed loss {t.smooth_loss:.4g} at iteration "
            f"{t.iteration} is above {EXPLODE_FACTOR:g}x that of uniform guessing"
        )


# --- the delivery, from message to ending ----------------------------------------------------
def run_job(store: JobStore, job_id: str, host: str) -> Outcome:
    """Run one delivery of a job to its end (or step aside), and say how it ended. The error
    triage: bad input and bugs fail the job; an unreachable Redis is not the job's fault (the
    exception leaves, the lease expires, another delivery resumes it)."""
    job_id = validate_job_id(job_id)
    lease = Lease(store.r, job_id, host)
    lease.wait_for_space = lambda what, nbytes: space.Wait(
        lease, what, nbytes, SHUTDOWN.is_set, push_events
    )
    early = take_lease(store, lease)
    if early is not None:
        return early
    job = retrying(store.get, job_id)
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


def _deliver(store: JobStore, lease: Lease, job: dict, host: str) -> Outcome:
    if lease.attempts > settings.MAX_ATTEMPTS:
        return fail(
            lease,
            job,
            host,
            f"gave up after {lease.attempts - 1} deliveries in a row ended without a "
            f"checkpoint (the worker process died under the job each time: out of "
            f"memory?); CHARRNN_MAX_ATTEMPTS is {settings.MAX_ATTEMPTS}",
        )
    spec: JobSpec = job["spec"]
    text = retrying(store.get_corpus, spec.corpus_sha256)
    if job["cancel_requested"]:
        return finish(lease, job, Status.CANCELLED, None, [event("cancelled", host=host)])
    # before anything of the job is allocated: a job too large for this pool fails here
    check_fits(spec.config, Vocab.from_text(text).size, len(text))
    settled = budgets.settle(lease, job, text, host)  # a budget in minutes: iterations, once
    if settled is None:
        return Outcome.CANCELLED  # its deadline had passed: cancelled, not started
    job, spec = settled, settled["spec"]
    trainer, notes = restore(store, job["job_id"], spec.config, text)
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
            ck = checkpoint.load(raw, name=f"{which} checkpoint")
            return ck.trainer(text, cfg), notes
        except CharRNNError as e:
            notes.append(event("checkpoint_corrupt", which=which, error=str(e)[:300]))
    return Trainer(cfg, text), notes


def begin(
    store: JobStore, lease: Lease, job: dict, trainer: Trainer, notes: list[str], host: str
) -> bool:
    """The start transition: running on this host, started or resumed. Returns the cancel flag."""
    job_id, now = job["job_id"], time.time()
    resumed = trainer.iteration > 0 or job["started_at"] is not None
    ops: list[tuple] = [
        (
            "HSET",
            keys.job(job_id),
            "status",
            Status.RUNNING.value,
            "worker",
            host,
            "started_at",
            repr(job["started_at"] or now),
            "iterations",
            trainer.total_iterations,
            "iteration",
            trainer.iteration,
            "waiting",
            "",
        )
    ]
    ops += status_moves(job_id, Status.RUNNING, job["submitted_at"])
    ops += push_events(job_id, *notes)
    if resumed:
        latest = retrying(store.checkpoint_iteration, job_id)
        ops.append(("HINCRBY", keys.job(job_id), "restarts", 1))
        ops += push_events(
            job_id,
            event(
                "resumed",
                host=host,
                iteration=trainer.iteration,
                last_reported=job["iteration"] or 0,
                latest_checkpoint=latest,
            ),
        )
    else:
        ops += push_events(job_id, event("started", host=host))
    return lease.write(ops)


def train_with_rollbacks(
    store: JobStore,
    lease: Lease,
    job: dict,
    trainer: Trainer,
    text: str,
    hooks: JobHooks,
    host: str,
) -> tuple[Outcome, dict | None, Trainer]:
    """Train to an ending. The divergence policy: roll back to the last good checkpoint and halve
    the learning rate, up to MAX_ROLLBACKS times, then fail with "diverged"."""
    rollbacks = job["rollbacks"]
    while True:
        try:
            return (*train_through_rungs(lease, job, trainer, hooks, host), trainer)
        except DivergedError as e:
            rollbacks += 1
            failing_scale, diverged_at = trainer.rollback_scale, trainer.iteration
            if rollbacks > MAX_ROLLBACKS:
                error = f"diverged after {MAX_ROLLBACKS} rollbacks: {e}"
                finish(
                    lease,
                    job,
                    Status.FAILED,
                    trainer,
                    [event("failed", host=host, error=f"diverged: {e}")],
                    error=error,
                    extra=("rollbacks", rollbacks),
                )
                return Outcome.FAILED, None, trainer
            trainer, notes = restore(store, job["job_id"], job["spec"].config, text)
            # half the rate that failed (the checkpoint may predate an earlier halving)
            trainer.rollback_scale = failing_scale
            trainer.halve_learning_rate()
            lease.write(
                [
                    (
                        "HSET",
                        keys.job(job["job_id"]),
                        "rollbacks",
                        rollbacks,
                        "learning_rate",
                        repr(trainer.learning_rate),
                    )
                ]
                + push_events(
                    job["job_id"],
                    *notes,
                    event(
                        "diverged_rollback",
                        host=host,
                        error=str(e),
                        iteration=trainer.iteration,
                        diverged_at=diverged_at,
                        learning_rate=trainer.learning_rate,
                    ),
                )
            )


def train_through_rungs(
    lease: Lease, job: dict, trainer: Trainer, hooks: JobHooks, host: str
) -> tuple[Outcome, dict | None]:
    """Train to the end, pausing at each ASHA rung for the sweep's decision. SUCCEEDED (trained
    to the end), EARLY_STOPPED with the decision that stopped it, or REQUEUED when interrupted
    (cancel or shutdown: `end` tells which). The rungs change nothing in the weights: a job that continues
    through them ends bit-identical to the same job without early stopping."""
    spec: JobSpec = job["spec"]
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


def end(
    lease: Lease,
    job: dict,
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


def requeue(lease: Lease, job: dict, iteration: int | None, host: str) -> Outcome:
    """The worker is shutting down: the job goes back to `queued` (the task then gives its
    message back to the broker) and the lease is released for the next worker at once."""
    job_id = job["job_id"]
    ops: list[tuple] = [
        ("HSET", keys.job(job_id), "status", Status.QUEUED.value, "worker", "", "waiting", "")
    ]
    ops += status_moves(job_id, Status.QUEUED, job["submitted_at"])
    ops += push_events(
        job_id,
        event("interrupted", host=host, iteration=iteration, reason="worker shutting down"),
    )
    lease.write_and_release(ops)
    return Outcome.REQUEUED


def stopped_waiting(lease: Lease, job: dict, host: str, e: StoreFull) -> Outcome:
    """Cancelled, or the worker shutting down, while the store was full: the job ends cancelled
    or goes back to the queue, from its last stored checkpoint (what was trained since could
    not be stored). These last writes are small; if even they are refused, the error leaves and
    the reaper revives the job once the store takes writes again."""
    lease.wait_for_space = None
    stored = lease.r.hget(keys.checkpoint(job["job_id"], "latest"), "iteration")
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


def fail(lease: Lease, job: dict, host: str, error: str) -> Outcome:
    try:
        return finish(
            lease, job, Status.FAILED, None, [event("failed", host=host, error=error)], error=error
        )
    except LostLease:
        return Outcome.LOST_LEASE


def finish(
    lease: Lease,
    job: dict,
    status: Status,
    trainer: Trainer | None,
    events: list[str],
    error: str | None = None,
    extra: tuple = (),
) -> Outcome:
    """The job's last write: its terminal status, times, final metrics and events; the lease
    is released with it."""
    job_id = job["job_id"]
    ops = [
        (
            "HSET",
            keys.job(job_id),
            "status",
            status.value,
            "finished_at",
            repr(time.time()),
            "error",
            error or "",
            "waiting",
            "",
            *extra,
        )
    ]
    if trainer is not None:
        ops.append(JobHooks(job, lease).metrics(trainer))
    ops += status_moves(job_id, status, job["submitted_at"])
    ops += push_events(job_id, *events)
    lease.write_and_release(ops)
    return Outcome(status.value) if status != Status.STOPPED else Outcome.EARLY_STOPPED
