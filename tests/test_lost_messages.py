"""Issue 13, lost messages: every job in the store either has a message, runs, or has ended.
A real redis-server and real workers (loopback); the broker's own keys are edited directly, as a
crash or an operator would leave them: Celery's Redis transport keeps the queue as a list named
after it (`charrnn`) and delivered messages in the `unacked` hash."""

import json
import time

import pytest

from worker import keys, settings
from worker.broker import message_id
from worker.reaper import Reaper
from worker.store import JobStore, Status, status_moves

from conftest import (
    assert_matches_reference,
    events,
    job_field,
    make_corpus,
    run_cli,
    submit,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SPEC = dict(
    hidden_size=16, num_layers=1, iterations=3000, eval_every=1000, sample_every=1000, seed=5
)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_corpus(seed=13))
    return path


def queued_ids(r) -> list[str]:
    return [message_id(raw) for raw in r.lrange("charrnn", 0, -1)]


def test_queued_job_whose_message_is_lost_is_resent_once(stack, corpus, report):
    """Two jobs submitted while no worker runs; the message of one is deleted from the queue
    list. Once a worker is up, its reaper finds that queued job with no message on two scans in
    a row and re-sends it, once, with a `requeued_by_reaper` event saying why; the other job,
    whose message waited in the queue, is not re-sent. Both end bit-identical to an
    uninterrupted run."""
    server, worker = stack
    r = server.client()
    url = server.url()
    lost = submit(url, corpus, **SPEC)
    kept = submit(url, corpus, **SPEC)
    assert sorted(queued_ids(r)) == sorted([lost, kept])
    [raw] = [m for m in r.lrange("charrnn", 0, -1) if message_id(m) == lost]
    assert r.lrem("charrnn", 1, raw) == 1 and queued_ids(r) == [kept]
    t0 = time.monotonic()
    worker("a").start()
    for job in (kept, lost):
        assert wait_status(r, job, timeout=90) == "succeeded"
    # lease 2 s: a scan every 2 s, older than one scan, seen messageless twice, plus the runs
    assert time.monotonic() - t0 < 60
    ev = events(r, lost)
    resends = [e for e in ev if e["event"] == "requeued_by_reaper"]
    assert (
        len(resends) == 1
        and resends[0]["was"] == "queued"
        and "neither the queue nor the unacked set" in resends[0]["reason"]
    )
    assert [e["event"] for e in ev].count("started") == 1
    assert not [e for e in events(r, kept) if e["event"] == "requeued_by_reaper"]
    assert int(job_field(r, lost, "deliveries")) == 1
    for job in (kept, lost):
        assert_matches_reference(r, job, corpus.read_text(), SPEC)
    fig = report(r, [lost, kept], 1, "a queued job's message deleted from the broker")
    assert fig["lost"] == 0 and fig["reaper_resends"] == 1


def test_message_whose_job_is_gone_is_dropped_and_the_worker_lives_on(stack, corpus):
    """A message for a job deleted while it waited (and one for an id never stored) is
    dropped with one log line (`Outcome.MISSING`); the worker goes on to run the next job."""
    server, worker = stack
    r = server.client()
    url = server.url()
    gone = submit(url, corpus, **SPEC)
    assert run_cli("delete", gone, url=url).returncode == 0
    assert not r.exists(keys.job(gone)) and queued_ids(r) == [gone]
    w = worker("a").start()
    wait_for(
        lambda: f"job {gone} is not in the store".encode() in open(w.log, "rb").read(),
        timeout=30,
        poll=0.2,
        what="the worker to drop the message",
    )
    assert b"'missing'" in open(w.log, "rb").read()
    job = submit(url, corpus, **SPEC)
    assert wait_status(r, job, timeout=90) == "succeeded"
    assert w.proc.poll() is None and not r.exists(keys.job(gone))
    # the job's status is written before its task returns, and the message acked after (late
    # acknowledgement): both messages are gone once the worker has acked
    wait_for(lambda: r.llen("charrnn") == 0 and r.hlen("unacked") == 0, 30, 0.2, what="the acks")
    assert json.loads(run_cli("list", "--json", url=url).stdout)[0]["job_id"] == job


def test_the_pool_scans_once_a_period_and_two_reapers_share_their_sightings(
    stack, corpus, monkeypatch
):
    """One reaper a period scans, whichever takes the turn first (not every worker's: the pool
    would read N * N jobs a period), and the two sightings that a re-send needs may be made by
    different reapers: the first scan's sightings are in the store, the second scan re-sends
    from them, once."""
    monkeypatch.setattr(settings, "REAP_SECONDS", 1.0)
    server, _ = stack
    r = server.client()
    job = submit(server.url(), corpus, **SPEC)  # no worker: queued, with its message
    # as a trainer killed hard leaves it: running, token 1, no lease
    with r.pipeline() as p:
        p.hset(keys.job(job), "status", Status.RUNNING.value)
        for op in status_moves(job, Status.RUNNING, time.time()):
            p.execute_command(*op)
        p.set(keys.fence(job), "1")
        p.execute()

    sent: dict[str, list[str]] = {"a": [], "b": []}
    a, b = (Reaper(JobStore(r), sent[n].append, host=n) for n in "ab")
    assert a.take_turn() and not b.take_turn(), "one reaper a period"
    assert 0 < r.pttl(keys.REAPER_TURN) <= 900
    time.sleep(1.0)  # the turn expires before the next period
    assert b.take_turn() and not a.take_turn()

    assert a.scan_running() == [] and sent["a"] == []  # first sighting: the grace period
    assert a.sightings("running") == {job: "1"}
    assert b.scan_running() == [job] and sent["b"] == [job]  # second sighting, by another reaper
    assert a.scan_running() == [] and sent["a"] == [], "re-sent once per lost trainer"
    assert [e["event"] for e in events(r, job)].count("requeued_by_reaper") == 1

    # a trainer takes the job over (token 2, lease held): no sighting is left of it
    r.set(keys.fence(job), "2")
    r.set(keys.lease(job), f"2 {b.name}", px=5000)
    assert b.scan_running() == [] and b.sightings("running") == {}
    assert not r.exists(keys.reaper_sightings("running"))
