"""What one delivery of a job does: take the lease (or step aside), restore the latest good
checkpoint, train through hooks that write fenced, and end the job in exactly one status.

The task in tasks.py only calls `run_job`; charrnn knows nothing of Redis or Celery.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time

import redis

from charrnn import Config, Hooks, Trainer, checkpoint
from charrnn.data import Vocab
from charrnn.errors import CharRNNError, CheckpointError, DivergedError

from . import asha, keys, settings
from .errors import JobTooLarge, LostLease, NoSuchJob
from .lease import Lease, retrying
from .limits import check_fits
from .store import JobStore, Status, event, status_moves, validate_job_id

log = logging.getLogger("charrnn.worker")

MAX_ROLLBACKS = 3
"""Divergence rollbacks (each halves the learning rate) before a job fails with "diverged"."""

EXPLODE_FACTOR = 10.0
"""A smoothed training loss above this many times that of guessing uniformly (T ln V nats per
window) is an exploding loss, treated like a non-finite one. Training starts at 1x and a model
that learns only goes down; a learning rate so large that Adagrad's first steps blow the weights
up lands hundreds of times above it (1e3 gives ~200x) while staying finite, so the trainer's own
non-finite check never fires."""

HISTORY_POINTS = 500
"""Roughly how many loss-history rows a job keeps (one per 1/500 of its iterations, plus evals)."""

SHUTDOWN = threading.Event()
"""Set in a pool process when its worker is shutting down (SIGTERM): checkpoint and give back."""


class JobHooks(Hooks):
    """Progress, samples and checkpoints to the store, each a fenced write; cancellation and
    shutdown checked at every progress write and checkpoint."""

    progress_seconds = settings.HEARTBEAT_SECONDS

    def __init__(self, job: dict, lease: Lease, fault: tuple[int, bool] | None):
        self.job_id, self.lease, self.fault = job["job_id"], lease, fault
        self.submitted = job["submitted_at"]
        self.cancel = False
        self.last_ckpt_iteration = -1
        self.last_eval_iteration = -1
        self.best_ckpt_val = job["best_val_loss"]
        self.history_every = max(1, (job["iterations"] or 1) // HISTORY_POINTS)
        self.last_history = -1
        self.diverge_once_done = False

    def metrics(self, t: Trainer) -> dict:
        s = t.stats()
        return {"iteration": s["iteration"], "iterations": s["iterations"],
                "smooth_loss": repr(s["smooth_loss"]),
                "val_loss": "" if s["val_loss"] is None else repr(s["val_loss"]),
                "best_val_loss": "" if s["best_val_loss"] is None else repr(s["best_val_loss"]),
                "chars_per_second": repr(s["chars_per_second"]),
                "learning_rate": repr(s["learning_rate"])}

    def _hset(self, t: Trainer) -> tuple:
        flat = [x for kv in self.metrics(t).items() for x in kv]
        return ("HSET", keys.job(self.job_id), *flat)

    def _history(self, t: Trainer, force: bool = False) -> list[tuple]:
        if not force and t.iteration - self.last_history < self.history_every:
            return []
        self.last_history = t.iteration
        return [("RPUSH", keys.history(self.job_id),
                 json.dumps([t.iteration, t.smooth_loss, t.val_loss]))]

    def on_progress(self, t: Trainer) -> None:
        guard(t)
        self.cancel = self.lease.write([self._hset(t)] + self._history(t))

    def on_eval(self, t: Trainer, val_loss: float | None) -> None:
        guard(t)
        self.last_eval_iteration = t.iteration
        self.cancel = self.lease.write([self._hset(t)] + self._history(t, force=True))

    def on_sample(self, t: Trainer, text: str) -> None:
        self.cancel = self.lease.write([("RPUSH", keys.samples(self.job_id),
                                         json.dumps({"iteration": t.iteration, "text": text}))])

    def on_checkpoint(self, t: Trainer) -> None:
        self._inject_fault(t)
        guard(t)                       # an exploded model is never stored
        raw = checkpoint.to_bytes(t)   # refuses non-finite weights
        sha = hashlib.sha256(raw).hexdigest()
        latest, previous = keys.checkpoint(self.job_id, "latest"), keys.checkpoint(self.job_id, "previous")
        ops = [("RENAMEIFEXISTS", latest, previous),
               ("HSET", latest, "data", raw, "sha256", sha, "iteration", t.iteration),
               self._hset(t), ("HSET", keys.job(self.job_id), "attempts", 0)]
        if t.val_loss is not None and (self.best_ckpt_val is None or t.val_loss < self.best_ckpt_val):
            self.best_ckpt_val = t.val_loss
            ops.append(("COPY", latest, keys.checkpoint(self.job_id, "best"), "REPLACE"))
        self.cancel = self.lease.write(ops)
        self.last_ckpt_iteration = t.iteration

    def should_stop(self, t: Trainer) -> bool:
        return self.cancel or SHUTDOWN.is_set()

    def _inject_fault(self, t: Trainer) -> None:
        if self.fault is None:
            return
        at, always = self.fault
        if t.iteration >= at and (always or not self.diverge_once_done):
            self.diverge_once_done = True
            raise DivergedError(f"diverged: injected fault at iteration {t.iteration}")


def guard(t: Trainer) -> None:
    """DivergedError when the smoothed loss is not finite or has exploded (EXPLODE_FACTOR)."""
    uniform = t.config.seq_length * max(math.log(t.vocab.size), 1.0)
    if not math.isfinite(t.smooth_loss) or t.smooth_loss > EXPLODE_FACTOR * uniform:
        raise DivergedError(f"diverged: smoothed loss {t.smooth_loss:.4g} at iteration "
                            f"{t.iteration} is above {EXPLODE_FACTOR:g}x that of uniform guessing")


def _fault() -> tuple[int, bool] | None:
    raw = os.environ.get(settings.FAULT_DIVERGE_ENV)
    if not raw:
        return None
    at, _, mode = raw.partition(":")
    return int(at), mode == "always"


def _restore(store: JobStore, lease: Lease, job_id: str, cfg: Config, text: str):
    """The trainer at the latest checkpoint that verifies (falling back to the previous one and
    recording why), or a fresh one. Returns (trainer, events to record)."""
    notes = []
    for which in ("latest", "previous"):
        raw = retrying(store.r.hgetall, keys.checkpoint(job_id, which))
        if not raw:
            continue
        try:
            if hashlib.sha256(raw[b"data"]).hexdigest() != raw[b"sha256"].decode():
                raise CheckpointError("stored sha256 does not match its bytes")
            ck = checkpoint.load(raw[b"data"], name=f"{which} checkpoint")
            return ck.trainer(text, cfg), notes
        except (CharRNNError, KeyError) as e:
            notes.append(event("checkpoint_corrupt", which=which, error=str(e)[:300]))
    return Trainer(cfg, text), notes


def run_job(store: JobStore, job_id: str, host: str) -> str:
    """Run one delivery of a job to its end (or step aside). Returns what happened."""
    job_id = validate_job_id(job_id)
    lease = Lease(store.r, job_id, host)
    deadline = time.monotonic() + settings.LEASE_SECONDS + 1.0
    while True:
        got = lease.acquire()
        if got.kind == "missing":
            log.warning("job %s is not in the store (deleted?); dropping the message", job_id)
            return "missing"
        if got.kind == "terminal":
            return got.value
        if got.kind == "acquired":
            break
        # another trainer holds the lease: if it is alive it keeps renewing it, and we step
        # aside; if it is dead the lease expires within LEASE_SECONDS and we take over
        if time.monotonic() > deadline:
            retrying(store.r.incr, keys.stepped_aside(job_id))
            log.info("job %s: a live trainer holds it; this copy steps aside", job_id)
            return "stepped_aside"
        time.sleep(min(0.25, settings.LEASE_SECONDS / 4))

    job = retrying(store.get, job_id)
    now = time.time()
    if got.attempts > settings.MAX_ATTEMPTS:
        return _give_up(lease, job, host, got.attempts)
    try:
        spec = job["spec"]
        cfg = Config.from_dict(spec["hyper"])
        text = retrying(store.get_corpus, spec["corpus_sha256"])
        if job["cancel_requested"]:
            _finish(lease, job, Status.CANCELLED, None, [event("cancelled", host=host)])
            return Status.CANCELLED.value
        # before anything of the job is allocated: a job too large for this pool fails here
        check_fits(cfg, Vocab.from_text(text).size, len(text))
        trainer, notes = _restore(store, lease, job_id, cfg, text)
    except LostLease:
        return "lost_lease"
    except (CharRNNError, NoSuchJob, JobTooLarge, KeyError, ValueError) as e:
        _finish(lease, job, Status.FAILED, None, [event("failed", host=host, error=str(e))],
                error=str(e))
        return Status.FAILED.value
    except MemoryError:
        return _out_of_memory(lease, job, host)

    resumed = trainer.iteration > 0 or job["started_at"] is not None
    start = [("HSET", keys.job(job_id), "status", Status.RUNNING.value, "worker", host,
              "started_at", repr(job["started_at"] or now), "iterations", trainer.total_iterations,
              "iteration", trainer.iteration)]
    start += status_moves(job_id, Status.RUNNING, job["submitted_at"])
    start += [("RPUSH", keys.events(job_id), n) for n in notes]
    if resumed:
        start.append(("HINCRBY", keys.job(job_id), "restarts", 1))
        start.append(("RPUSH", keys.events(job_id),
                      event("resumed", host=host, iteration=trainer.iteration,
                            **_lost_work(store, job, cfg))))
    else:
        start.append(("RPUSH", keys.events(job_id), event("started", host=host)))
    job["iterations"] = trainer.total_iterations
    hooks = JobHooks(job, lease, _fault())
    try:
        hooks.cancel = lease.write(start)
        ckpt_every = int(spec.get("checkpoint_every") or settings.DEFAULT_CHECKPOINT_EVERY)
        rollbacks = job["rollbacks"]
        rungs = asha.Rungs.from_spec(spec)
        while True:
            try:
                outcome, decision = _train(trainer, hooks, ckpt_every, rungs, lease, host)
                break
            except DivergedError as e:
                rollbacks += 1
                failing_lr, diverged_at = trainer.learning_rate, trainer.iteration
                if rollbacks > MAX_ROLLBACKS:
                    _finish(lease, job, Status.FAILED, trainer,
                            [event("failed", host=host, error=f"diverged: {e}")],
                            error=f"diverged after {MAX_ROLLBACKS} rollbacks: {e}",
                            extra=("rollbacks", rollbacks))
                    return Status.FAILED.value
                trainer, notes = _restore(store, lease, job_id, cfg, text)
                trainer.learning_rate = failing_lr / 2
                lease.write([("HSET", keys.job(job_id), "rollbacks", rollbacks,
                              "learning_rate", repr(trainer.learning_rate))]
                            + [("RPUSH", keys.events(job_id), n) for n in notes]
                            + [("RPUSH", keys.events(job_id),
                                event("diverged_rollback", host=host, error=str(e),
                                      iteration=trainer.iteration, diverged_at=diverged_at,
                                      learning_rate=trainer.learning_rate))])
        if outcome == "early_stopped":
            if hooks.last_ckpt_iteration != trainer.iteration:
                hooks.on_checkpoint(trainer)
            _finish(lease, job, Status.STOPPED, trainer,
                    [event("early_stopped", host=host, scheduler="asha", **decision)])
            return Status.STOPPED.value
        if outcome == "finished":
            if hooks.last_ckpt_iteration != trainer.iteration:
                hooks.on_checkpoint(trainer)
            _finish(lease, job, Status.SUCCEEDED, trainer,
                    [event("finished", host=host, iteration=trainer.iteration)])
            return Status.SUCCEEDED.value
        # stopped: cancelled, or this worker is shutting down; keep a checkpoint either way
        # (unless the model diverged since the last one: that one stays the latest)
        if hooks.last_ckpt_iteration != trainer.iteration:
            try:
                hooks.on_checkpoint(trainer)
            except DivergedError:
                pass
        if hooks.cancel:
            _finish(lease, job, Status.CANCELLED, trainer,
                    [event("cancelled", host=host, iteration=trainer.iteration)])
            return Status.CANCELLED.value
        ops = [("HSET", keys.job(job_id), "status", Status.QUEUED.value, "worker", "")]
        ops += status_moves(job_id, Status.QUEUED, job["submitted_at"])
        ops.append(("RPUSH", keys.events(job_id),
                    event("interrupted", host=host, iteration=trainer.iteration,
                          reason="worker shutting down")))
        lease.write_and_release(ops)
        return "requeue"
    except LostLease:
        log.warning("job %s: lost its lease to another trainer; stopping without writing", job_id)
        return "lost_lease"
    except MemoryError:
        return _out_of_memory(lease, job, host)
    except redis.ResponseError as e:
        # Redis answered and refused a write (out of memory, a value above proto-max-bulk-len):
        # no retry will succeed, and a job left `running` would be re-sent by the reaper forever
        return _fail_quietly(lease, job, host, f"the store refused a write: {e}")
    except redis.RedisError:
        raise    # unreachable: not the job's fault; the lease expires and another worker takes it
    except Exception as e:  # noqa: BLE001 - a bug must fail the job, not re-run it forever
        log.exception("job %s: failed", job_id)
        try:
            _finish(lease, job, Status.FAILED, None,
                    [event("failed", host=host, error=f"{type(e).__name__}: {e}")],
                    error=f"{type(e).__name__}: {e}")
        except LostLease:
            return "lost_lease"
        return Status.FAILED.value


def _train(trainer: Trainer, hooks: JobHooks, ckpt_every: int, rungs: asha.Rungs | None,
           lease: Lease, host: str) -> tuple[str, dict | None]:
    """Train to the end, pausing at each ASHA rung for the sweep's decision. Returns (outcome,
    decision): "finished", "stopped" (cancel or shutdown), or "early_stopped" with the decision
    that stopped it. The rungs change nothing in the weights: a job that continues through them
    ends bit-identical to the same job without early stopping."""
    if hooks.should_stop(trainer):
        return "stopped", None
    for m in rungs.ahead(trainer.iteration, trainer.total_iterations) if rungs else ():
        if trainer.iteration < m:
            if trainer.run(hooks, checkpoint_every=ckpt_every, until=m, eval_at_end=True) == "stopped":
                return "stopped", None
        if hooks.last_eval_iteration != trainer.iteration:    # resumed exactly at the rung
            hooks.on_eval(trainer, trainer.evaluate())
        d = asha.decide(lease, rungs, m, hooks.job_id, trainer.val_loss)
        hooks.cancel = lease.write([("RPUSH", keys.events(hooks.job_id),
                                     event("rung", host=host, **d))])
        if not d["continue"]:
            return "early_stopped", d
        if hooks.should_stop(trainer):
            return "stopped", None
    return trainer.run(hooks, checkpoint_every=ckpt_every), None


def _give_up(lease: Lease, job: dict, host: str, attempts: int) -> str:
    """The job's last MAX_ATTEMPTS deliveries all ended without a checkpoint: their worker
    process died under it (killed for memory, most likely). Fail it rather than loop."""
    error = (f"gave up after {attempts - 1} deliveries in a row ended without a checkpoint "
             f"(the worker process died under the job each time: out of memory?); "
             f"CHARRNN_MAX_ATTEMPTS is {settings.MAX_ATTEMPTS}")
    return _fail_quietly(lease, job, host, error)


def _out_of_memory(lease: Lease, job: dict, host: str) -> str:
    """NumPy could not allocate: fail the job, keep the worker (Celery treats a MemoryError that
    escapes a task as unrecoverable and exits the whole worker, and the message would go on to
    kill the next one)."""
    log.error("job %s: out of memory on %s", job["job_id"], host)
    return _fail_quietly(lease, job, host,
                         f"out of memory on worker {host}: the job's arrays could not be "
                         f"allocated (lower its sizes, or run it on workers with more memory)")


def _fail_quietly(lease: Lease, job: dict, host: str, error: str) -> str:
    try:
        _finish(lease, job, Status.FAILED, None, [event("failed", host=host, error=error)],
                error=error)
    except LostLease:
        return "lost_lease"
    return Status.FAILED.value


def _lost_work(store: JobStore, job: dict, cfg: Config) -> dict:
    """What the previous trainer had done past the checkpoint we resume from, for the record.
    last_reported: the last iteration it wrote (it can write no more: our token replaced its
    own). unreported_at_most: how many more it can have trained without writing, since a live
    trainer writes progress at least every HEARTBEAT_SECONDS (0 after a warm shutdown, which
    checkpoints where it stops and requeues the job). latest_checkpoint: the iteration of its
    latest checkpoint (which it cannot have passed by more than checkpoint_every unwritten)."""
    clean = job["status"] == Status.QUEUED.value
    per_beat = (job["chars_per_second"] or 0.0) / cfg.seq_length * settings.HEARTBEAT_SECONDS
    latest = retrying(store.r.hget, keys.checkpoint(job["job_id"], "latest"), "iteration")
    return {"last_reported": job["iteration"] or 0,
            "unreported_at_most": 0 if clean else math.ceil(per_beat) + 16,
            "latest_checkpoint": None if latest is None else int(latest)}


def _finish(lease: Lease, job: dict, status: Status, trainer: Trainer | None, events: list[str],
            error: str | None = None, extra: tuple = ()) -> None:
    job_id = job["job_id"]
    fields = ["status", status.value, "finished_at", repr(time.time()), "error", error or ""]
    if extra:
        fields += list(extra)
    ops = [("HSET", keys.job(job_id), *fields)]
    if trainer is not None:
        ops.append(JobHooks(job, lease, None)._hset(trainer))
    ops += status_moves(job_id, status, job["submitted_at"])
    ops += [("RPUSH", keys.events(job_id), e) for e in events]
    lease.write_and_release(ops)
