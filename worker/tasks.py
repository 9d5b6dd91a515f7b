"""The one task: a job id in, the job trained through the store. Short, like a web view."""

from __future__ import annotations

import logging
import os
import signal
import sys

import redis
from celery.exceptions import Reject
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from . import acl, scripts, serverconf, tune
from .broker import QUEUE, TASK_NAME
from .celery import app
from .job import SCHEMA_HEADER, message_headers
from .presence import Presence
from .reaper import Reaper
from .store import JobStore, connect
from .training import SHUTDOWN, Outcome, run_job

log = logging.getLogger("charrnn.worker")
_store: JobStore | None = None
_reaper: Reaper | None = None
_presence: Presence | None = None


def store() -> JobStore:
    global _store
    if _store is None:
        _store = JobStore(connect(app.conf.broker_url))
    return _store


@app.task(name=TASK_NAME, bind=True)
def train(self, job_id: str) -> str:
    # billiard resets SIGTERM after worker_process_init, so the handler is installed here, in
    # the pool process's main thread, each time a job starts
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        host = self.request.hostname or "worker"
        outcome = run_job(store(), job_id, host, self.request.get(SCHEMA_HEADER))
    except MemoryError:
        # run_job fails the job itself when its arrays do not fit; this is the last line, for an
        # allocation outside that (the record, the corpus). A MemoryError escaping a task makes
        # Celery exit the whole worker; here the message is acknowledged instead, the lease
        # expires, and the reaper's re-sends count against CHARRNN_MAX_ATTEMPTS.
        log.error("job %s: out of memory outside training; message dropped", job_id)
        return "out_of_memory"
    _advance_tune(job_id, outcome, self.request.hostname or "worker")
    if outcome == Outcome.REQUEUED:
        # warm shutdown: the checkpoint is written; give the message back to the queue
        raise Reject("worker shutting down; job checkpointed and requeued", requeue=True)
    return outcome.value


def _advance_tune(job_id: str, outcome: Outcome, host: str) -> None:
    """A tune's trial that ended here asks for the tune's next trial (worker/tune.py); a
    failure is logged, never the task's: a follower of the tune advances it instead."""
    if outcome in (Outcome.REQUEUED, Outcome.STEPPED_ASIDE, Outcome.LOST_LEASE, Outcome.MISSING):
        return
    try:
        tune.after_job(store(), job_id, resend, host)
    except tune.OptunaMissing:
        tune.tell_missing_once()
    except Exception:  # noqa: BLE001
        log.exception("job %s: could not advance its tune", job_id)


def _on_sigterm(signum, frame):
    """In a pool process: the worker is shutting down; the hooks checkpoint and requeue."""
    SHUTDOWN.set()


@worker_process_init.connect
def _pool_process_init(**_):
    """In each pool process: a fresh Redis connection, never one inherited across fork."""
    global _store
    _store = None


def resend(job_id: str) -> None:
    """One more task message for a job, as the orchestrator sends it, on a connection of its own
    (the reaper runs in a thread of the worker's main process, beside its consumer)."""
    with app.connection_for_write() as conn:
        app.send_task(
            TASK_NAME,
            args=[job_id],
            task_id=job_id,
            queue=QUEUE,
            connection=conn,
            headers=message_headers(),
        )


@worker_init.connect
def _check_permissions(**_):
    """In the worker's main process, before it consumes: a Redis user without a worker's rights
    (the viewer's, say) gets one line and a non-zero exit, instead of a consumer that retries
    its refused commands forever."""
    url = app.conf.broker_url
    try:
        acl.probe(connect(url))
    except scripts.NotLoaded as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(acl.EXIT_DENIED) from None
    except redis.RedisError as e:
        if not acl.is_denied(e):
            return  # unreachable or starting: Celery retries the broker connection itself
        print(
            f"error: permission denied: Redis user '{acl.user_of(url)}' may not run a worker "
            f"(it needs the worker user's rules: python -m worker.acl --rules worker)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(acl.EXIT_DENIED) from None


@worker_ready.connect
def _start_reaper(sender=None, **_):
    """In the worker's main process: revive running jobs whose trainer and message are gone,
    and say that this worker lives (for the dashboard's workers page)."""
    global _reaper, _presence
    host = getattr(sender, "hostname", None) or "worker"
    store = JobStore(connect(app.conf.broker_url))
    serverconf.report(store.r)  # durability and eviction, once per worker
    _reaper = Reaper(store, resend, host)
    _reaper.start()
    concurrency = getattr(getattr(sender, "controller", None), "concurrency", None)
    _presence = Presence(connect(app.conf.broker_url), host, concurrency)
    _presence.start()


@worker_shutdown.connect
def _stop_reaper(**_):
    if _reaper is not None:
        _reaper.stop.set()
    if _presence is not None:
        _presence.stop.set()
        try:  # now, not from the thread: a daemon thread may not run again before exit
            _presence.forget()
        except Exception:  # noqa: BLE001 - Redis gone: the entry expires by itself
            pass


@worker_shutting_down.connect
def _tell_pool_processes(sig=None, how=None, **_):
    """Warm shutdown waits for running tasks; ask them to checkpoint and stop now instead."""
    if how != "Warm":
        return
    for pid in _children(os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        try:
            from billiard.process import active_children

            out = [p.pid for p in active_children()]
        except Exception:  # noqa: BLE001 - best effort; warm shutdown still waits for the task
            pass
    return out
