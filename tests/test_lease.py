"""The lease and its fenced writes, against a real redis-server (the session's, from conftest)."""

import pytest

from charrnn import Config
from worker import keys
from worker.errors import LostLease
from worker.lease import Lease
from worker.spec import JobSpec
from worker.store import JobStore, new_job_id

pytestmark = pytest.mark.integration


def _job(r) -> str:
    job_id = new_job_id()
    store = JobStore(r)
    sha = store.put_corpus("ab" * 50)[0]
    store.create(job_id, JobSpec(corpus_sha256=sha, config=Config(), total_iterations=10))
    return job_id


def test_a_write_replayed_after_a_lost_reply_applies_once(r):
    """Redis applied the write, the reply was lost, the trainer sends the same write again."""
    job_id = _job(r)
    lease = Lease(r, job_id, "host-a")
    assert lease.acquire().kind == "acquired"
    r.hset(keys.checkpoint(job_id, "latest"), mapping={"data": b"old", "iteration": 1})
    ops = [
        ("RPUSH", keys.history(job_id), "[2, 1.0, null]"),
        ("RENAMEIFEXISTS", keys.checkpoint(job_id, "latest"), keys.checkpoint(job_id, "previous")),
        ("HSET", keys.checkpoint(job_id, "latest"), "data", b"new", "iteration", 2),
    ]
    argv = lease.fenced_argv(ops + [lease.heartbeat_op()])
    fenced_keys = lease._fenced_keys()
    assert lease._fenced(fenced_keys, argv)[0] == 1
    assert lease._fenced(fenced_keys, argv)[0] == 1  # the replay: accepted, not re-applied
    assert r.llen(keys.history(job_id)) == 1
    assert r.hget(keys.checkpoint(job_id, "previous"), "data") == b"old"
    assert r.hget(keys.checkpoint(job_id, "latest"), "data") == b"new"
    lease.write([("RPUSH", keys.history(job_id), "[3, 1.0, null]")])  # the next write applies
    assert r.llen(keys.history(job_id)) == 2


def test_a_stale_token_is_refused_and_counted(r):
    job_id = _job(r)
    old = Lease(r, job_id, "host-a")
    assert old.acquire().kind == "acquired"
    r.delete(keys.lease(job_id))  # its lease expired
    new = Lease(r, job_id, "host-b")
    assert new.acquire().kind == "acquired" and new.token != old.token
    with pytest.raises(LostLease):
        old.write([("HSET", keys.job(job_id), "iteration", 999)])
    assert r.hget(keys.job(job_id), "iteration") == b"0"
    assert int(r.get(keys.refused(job_id))) == 1
    new.write([("HSET", keys.job(job_id), "iteration", 5)])
    assert r.hget(keys.job(job_id), "iteration") == b"5"
