"""The registry of live workers (worker/presence.py), with a real redis-server and real Celery
workers: an idle worker is listed, a clean stop leaves the list at once, a hard kill within
three renewal periods."""

import glob
import os
import signal
import socket
import time

import pytest

from worker import keys, presence

from conftest import wait_for

pytestmark = pytest.mark.integration

FAST = {"CHARRNN_PRESENCE_SECONDS": "1"}
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), "")
"""Debian's faketime, wherever the architecture puts it; .ci/run installs it, and on CI its
absence is a failure, not a skip."""


def skewed(offset: str) -> dict:
    """A worker whose every clock read (time.time, in Python, Celery, kombu) is `offset` off:
    libfaketime (Debian's faketime) preloaded; its monotonic clock left alone."""
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def names(r) -> list[str]:
    # the reader's window is this process's forget_after() (30 s by default): read with the
    # workers' own period instead
    cutoff = time.time() - 3 * float(FAST["CHARRNN_PRESENCE_SECONDS"])
    return sorted(n.decode() for n in r.zrangebyscore(keys.workers(), cutoff, "+inf"))


@pytest.mark.slow
def test_idle_workers_are_listed_and_leave_when_stopped_or_killed(stack):
    server, worker = stack
    r = server.client()
    a = worker("pa", **FAST).start()
    b = worker("pb", **FAST).start()
    host = socket.gethostname()
    wait_for(lambda: names(r) == [f"pa@{host}", f"pb@{host}"], 20, 0.2, what="both workers listed")
    entries = {w["name"]: w for w in presence.live(r)}
    assert entries[f"pa@{host}"]["host"] == host
    assert entries[f"pa@{host}"]["pid"] == a.proc.pid  # the worker's main process
    assert entries[f"pa@{host}"]["concurrency"] == 1
    seen = entries[f"pb@{host}"]["seen_at"]
    wait_for(
        lambda: float(r.hget(keys.worker(f"pb@{host}"), "seen_at") or 0) > seen,
        10,
        0.2,
        what="a renewal",
    )

    a.stop()  # a warm shutdown: forgotten at once, not after three periods
    assert f"pa@{host}" not in names(r)
    assert not r.exists(keys.worker(f"pa@{host}"))

    os.kill(b.proc.pid, signal.SIGKILL)  # no shutdown hook runs: the entry expires
    b.proc.wait()
    wait_for(lambda: not r.exists(keys.worker(f"pb@{host}")), 15, 0.5, what="the entry to expire")
    assert names(r) == []


def test_a_renewal_sweeps_out_entries_of_dead_workers(redis_server):
    r = redis_server.client()
    r.delete(keys.workers())
    r.zadd(keys.workers(), {"dead@nowhere": time.time() - 10 * presence.forget_after()})
    p = presence.Presence(r, "alive@here", 2)
    p.renew()
    assert [w["name"] for w in presence.live(r)] == ["alive@here"]
    assert r.zscore(keys.workers(), "dead@nowhere") is None
    p.forget()
    assert presence.live(r) == []


@pytest.mark.slow
@pytest.mark.skipif(
    not LIBFAKETIME and not os.environ.get("CI"),
    reason="needs faketime (apt-get install faketime)",
)
def test_presence_keeps_redis_time_not_the_workers_clocks(stack):
    """Issue 20, item 9: a worker 45 s behind was never listed, one an hour ahead stayed listed
    after it died (and its renewals swept every other worker out). Real workers, their clocks
    skewed by libfaketime; the reader's clock is this process's."""
    assert LIBFAKETIME, "faketime is not installed (apt-get install faketime)"
    server, worker = stack
    r = server.client()
    host = socket.gethostname()
    behind = worker("behind", **FAST, **skewed("-45s")).start()
    ahead = worker("ahead", **FAST, **skewed("+1h")).start()
    both = {f"behind@{host}", f"ahead@{host}"}
    wait_for(
        lambda: {w["name"] for w in presence.live(r)} == both, 30, 0.2, what="both workers listed"
    )
    for w in presence.live(r):  # seen at Redis's time, whatever the worker's clock says
        assert abs(w["seen_at"] - r.time()[0]) < 10, w
    os.kill(ahead.proc.pid, signal.SIGKILL)  # no shutdown hook: its entry must expire
    ahead.proc.wait()
    wait_for(
        lambda: {w["name"] for w in presence.live(r)} == {f"behind@{host}"},
        20,
        0.5,
        what="the dead worker to leave the list, the live one to stay",
    )
    seen = float(r.hget(keys.worker(f"behind@{host}"), "seen_at") or 0)
    wait_for(
        lambda: float(r.hget(keys.worker(f"behind@{host}"), "seen_at") or 0) > seen,
        10,
        0.2,
        what="a renewal",
    )
    assert [w["name"] for w in presence.live(r)] == [f"behind@{host}"]
    behind.stop()
