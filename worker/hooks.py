"""A delivery's hooks into the trainer: progress, samples and checkpoints written to the store,
each a fenced write (lease.py), and the divergence guard. Shutdown and cancellation are checked at
every progress write and checkpoint. The job record's fields are written through job.py."""

from __future__ import annotations

import hashlib
import json
import math
import threading

from charrnn import Hooks, Trainer, checkpoint
from charrnn.errors import DivergedError

from . import job as record
from . import keys, settings, space
from .job import Job
from .lease import Lease

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

    def __init__(self, job: Job, lease: Lease):
        self.job_id, self.lease = job.job_id, lease
        self.cancel = False
        self.last_ckpt_iteration = -1
        self.last_eval_iteration = -1
        self.last_sample_iteration = -1
        # (trainer, iteration, bytes) of an evaluation that set a new best, stored with the next
        # checkpoint: the best copy holds exactly the weights of best_val_loss, in one write
        self.best: tuple[Trainer, int, bytes] | None = None
        self.history_every = max(1, (job.spec.total_iterations or 1) // HISTORY_POINTS)
        # a history row at least every 1/HISTORY_POINTS of the run, however fast it trains: a
        # job of a few seconds still draws a curve (its writes stay bounded by HISTORY_POINTS)
        self.progress_every = self.history_every
        self.last_history = {"progress": -1, "eval": -1}

    def metrics(self, t: Trainer) -> tuple:
        """The job record's metric fields, one HSET."""
        return record.metrics(self.job_id, t.stats())

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
        if val_loss is not None and val_loss == t.best_val_loss:
            # nanoGPT's rule: keep the weights when an evaluation is a new best. Serialised now
            # (an evaluation already costs a pass over the held-out text), written with the next
            # checkpoint: a run evaluating every few steps makes no extra Redis write for it
            self.best = (t, t.iteration, checkpoint.to_bytes(t))
        self.cancel = self.lease.write([self.metrics(t)] + self._history(t, evaluation=True))

    def on_sample(self, t: Trainer, text: str) -> None:
        self.last_sample_iteration = t.iteration
        row = json.dumps({"iteration": t.iteration, "text": text})
        self.cancel = self.lease.write(
            push(keys.samples(self.job_id), row, MAX_SAMPLES)
            + [record.hincrby(self.job_id, "samples_written")]
        )

    def on_checkpoint(self, t: Trainer) -> None:
        guard(t)  # an exploded model is never stored
        best = self.best if self.best is not None and self.best[0] is t else None
        # anew even after an evaluation at this iteration: a sample drawn since moved its stream
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
            record.hset(self.job_id, attempts=0),
        ]
        if best is not None:
            # with the checkpoint whose best_val_loss it is, so a resume from it agrees with the
            # best copy; a best of a trainer since rolled back (a new object) is dropped
            _, it, data = best
            to = keys.checkpoint(self.job_id, "best")
            if it == t.iteration:
                ops.append(("COPY", latest, to, "REPLACE"))
            else:
                sha_best = hashlib.sha256(data).hexdigest()
                ops.append(("HSET", to, "data", data, "sha256", sha_best, "iteration", it))
        self.cancel = self.lease.write(ops, what=f"checkpoint of {space.megabytes(len(raw))}")
        self.best = None
        self.last_ckpt_iteration = t.iteration

    def final_sample(self, t: Trainer) -> None:
        """A job ends with a sample from its final weights, however short the run (drawn after
        the last checkpoint, so the stored state is that of a run without it)."""
        stored = self.last_ckpt_iteration == t.iteration  # so the weights are sound
        if stored and t.iteration > 0 and self.last_sample_iteration != t.iteration:
            self.on_sample(t, t.sample_during_training())

    def checkpoint_if_needed(self, t: Trainer) -> None:
        if self.last_ckpt_iteration != t.iteration:
            self.on_checkpoint(t)

    def should_stop(self, t: Trainer) -> bool:
        return self.cancel or SHUTDOWN.is_set()


def guard(t: Trainer) -> None:
    """DivergedError when the smoothed loss is not finite or has exploded (EXPLODE_FACTOR).

    It reads the raw moving average (Trainer.smooth_loss, which starts at uniform guessing), not
    the debiased one the record stores as `train_loss`: debiasing divides by 1 - 0.999^n, which
    in the first iterations would magnify one noisy batch into a false explosion."""
    raw_ema = t.smooth_loss
    uniform = max(math.log(t.vocab.size), 1.0)  # nats/char, as raw_ema
    if not math.isfinite(raw_ema) or raw_ema > EXPLODE_FACTOR * uniform:
        raise DivergedError(
            f"diverged: smoothed loss {raw_ema:.4g} at iteration "
            f"{t.iteration} is above {EXPLODE_FACTOR:g}x that of uniform guessing"
        )
