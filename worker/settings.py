"""Settings read from the environment, by workers and the orchestrator alike.

Every timeout is a named setting with the trade-off of its default. Each is read when first used
(`settings.LEASE_SECONDS`, through the module's __getattr__), not when this module is imported: a
malformed variable is a BadSetting where it is used (the orchestrator's commands say it in one
line with exit code 2; a worker reads them all as its app is built, and stops the same way), and
importing the job store never fails for a setting it does not read."""

from __future__ import annotations

import os
from collections.abc import Callable


class BadSetting(ValueError):
    """A CHARRNN_* variable that is not what its setting needs."""


EXIT_BAD_SETTING = 2
"""A worker's exit code for a bad setting: bad input, as the orchestrator's exit code 2."""


def _float(name: str, default: float, what: str = "a number of seconds") -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadSetting(f"{name} must be {what}, got {raw!r}") from None
    if not value > 0:
        raise BadSetting(f"{name} must be positive, got {raw!r}")
    return value


REDIS_URL_ENV = "CHARRNN_REDIS_URL"
"""The one setting a worker needs: redis://[:password@]host:port/db (rediss:// for TLS)."""

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
"""Where a worker looks when CHARRNN_REDIS_URL is not set."""

LEASE_SECONDS: float
"""How long a job's lease lives without a heartbeat. Shorter: a dead worker's job is taken over
sooner. Longer: a trainer stalled in a long evaluation or a slow Redis round trip is less likely to
lose its job to a second copy (it would stop cleanly, but recompute work). 30 s is ~30 missed
heartbeats."""

VISIBILITY_TIMEOUT: float
"""Seconds before the Redis broker redelivers an unacknowledged message (after the whole worker was
killed, for example). Shorter: faster recovery after a hard kill. Longer: fewer redelivered copies
of long jobs (each steps aside harmlessly, after watching the lease for LEASE_SECONDS). A job
whose message is gone for good (a copy stepped aside, then its trainer died) is re-sent by the
reaper (REAP_SECONDS) instead, so with workers alive a hard-killed job runs again within
min(LEASE_SECONDS + VISIBILITY_TIMEOUT, LEASE_SECONDS + 2 * REAP_SECONDS) or so."""

HEARTBEAT_SECONDS: float
"""Progress writes (which renew the lease) happen at least this often while training."""

REAP_SECONDS: float
"""How often each worker's reaper looks for `running` jobs with no lease (and `queued` jobs with
no message). A job is re-sent once its lease has been seen absent on two scans in a row with the
same fencing token, so a job whose trainer died with no message left to revive it (its redelivered copy stepped aside earlier) runs
again within about LEASE_SECONDS + 2 * REAP_SECONDS."""

REAP_HOLD_SECONDS: float
"""How long a re-send for one fencing token is remembered: the same lost trainer is re-sent at
most once per this period (a re-sent message waiting in a busy queue is not spammed)."""

PRESENCE_SECONDS: float
"""How often each worker renews its entry in the registry of live workers (presence.py). A worker
killed hard leaves the list within three of these; one that stops cleanly leaves at once."""

STORE_RETRY_SECONDS: float
"""How long a worker keeps retrying a store write while Redis is unreachable (a restart) before
giving the job up to another worker."""

STORE_FULL_RETRY_SECONDS: float
"""How often a trainer whose write a full store refused sends it again (renewing its lease in
between). Shorter: training resumes sooner after space is freed. Longer: fewer retries of a
large checkpoint, each of which crosses the network whole."""

MAX_CORPUS_BYTES: int
"""Largest corpus the store accepts (UTF-8 bytes). Each worker holds its job's corpus in memory
several times over (text, ids); 64 MB keeps that well under a gigabyte."""

MAX_JOB_BYTES: int
"""Largest memory footprint a job may need (charrnn.footprint: parameters, optimizer state,
buffers, corpus). Checked at submit and again in the worker before it allocates anything, so a job
too large for the pool fails with a reason instead of killing the worker that picks it up. Raise it
on pools whose workers have the memory."""

MAX_CHECKPOINT_BYTES: int
"""Largest checkpoint a job may write. The store keeps up to three per job (latest, previous,
best), each one Redis value, and Redis refuses a value above its proto-max-bulk-len (512 MB by
default): a job whose checkpoint cannot be stored could never make durable progress."""

MAX_ATTEMPTS: int
"""Deliveries in a row that may end without a checkpoint (the worker process died under the job:
killed for memory, a crash in native code) before the job fails with that reason instead of
being redelivered forever. Each checkpoint written resets the count, so a long job that survives
many worker restarts is never failed by it."""

CONNECT_TIMEOUT: float
"""Seconds to wait for a TCP connection to Redis before saying it is unreachable."""

SOCKET_TIMEOUT: float
"""Seconds to wait for one Redis reply (a checkpoint of a large model takes a while to transfer)."""


def broker_url() -> str:
    """The one reading of the broker URL a worker connects to: CHARRNN_REDIS_URL or the
    default. (The orchestrator's own choice, option or embedded stack, is made in its context
    object and handed to `worker.app.client_app`.)"""
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


_READERS: dict[str, Callable[[], float]] = {
    "LEASE_SECONDS": lambda: _float("CHARRNN_LEASE_SECONDS", 30.0),
    "VISIBILITY_TIMEOUT": lambda: _float("CHARRNN_VISIBILITY_TIMEOUT", 3600.0),
    "HEARTBEAT_SECONDS": lambda: min(1.0, _get("LEASE_SECONDS") / 3),
    "REAP_SECONDS": lambda: _get("LEASE_SECONDS"),
    "REAP_HOLD_SECONDS": lambda: max(_get("VISIBILITY_TIMEOUT"), 10 * _get("LEASE_SECONDS")),
    "PRESENCE_SECONDS": lambda: _float("CHARRNN_PRESENCE_SECONDS", 10.0),
    "STORE_RETRY_SECONDS": lambda: _float("CHARRNN_STORE_RETRY_SECONDS", 120.0),
    "STORE_FULL_RETRY_SECONDS": lambda: _float("CHARRNN_STORE_FULL_RETRY_SECONDS", 10.0),
    "MAX_CORPUS_BYTES": lambda: int(
        _float("CHARRNN_MAX_CORPUS_BYTES", 64 * 1024 * 1024, "a number")
    ),
    "MAX_JOB_BYTES": lambda: int(_float("CHARRNN_MAX_JOB_BYTES", 4 * 1024**3, "a number")),
    "MAX_CHECKPOINT_BYTES": lambda: int(
        _float("CHARRNN_MAX_CHECKPOINT_BYTES", 256 * 1024**2, "a number")
    ),
    "MAX_ATTEMPTS": lambda: int(_float("CHARRNN_MAX_ATTEMPTS", 5, "a number")),
    "CONNECT_TIMEOUT": lambda: _float("CHARRNN_CONNECT_TIMEOUT", 3.0),
    "SOCKET_TIMEOUT": lambda: _float("CHARRNN_SOCKET_TIMEOUT", 20.0),
}
"""How each setting is read; a setting derived from others reads them first."""


def _get(name: str) -> float:
    value = _READERS[name]()
    globals()[name] = value  # read once a process, as the constant it stands for
    return value


def __getattr__(name: str) -> float:
    if name in _READERS:
        return _get(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check() -> None:
    """Read every setting now (a worker does, before it takes a job): the first bad one raises."""
    for name in _READERS:
        _get(name)
