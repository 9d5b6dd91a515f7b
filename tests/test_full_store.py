"""Issue 13, "A full store": Redis at a small maxmemory with noeviction, filled by a dummy key the
test writes. A submit is refused in one line (exit 7) and leaves every key as it was; a running
job whose checkpoint does not fit waits, says so in status and list, and finishes bit-identical
once space is freed; nothing stored before is lost. Real redis-server, real workers."""

import hashlib
import os
import time

import pytest

from worker import keys

from conftest import (
    assert_matches_reference,
    events,
    job_field,
    run_cli,
    submit,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

EXIT_STORE_FULL = 7
FILL = "test:fill"
"""The dummy key that fills the store (not a charrnn key)."""


def snapshot(r) -> dict:
    """Every key and its value, read by type: what a refused write must leave untouched. (Not
    DUMP: a hash stored as a hash table serializes in its table's order, which Redis may change
    by resizing the table with no write at all.)"""
    out = {}
    for k in r.scan_iter(count=1000):
        kind = r.type(k)
        if kind == b"hash":
            out[k] = r.hgetall(k)
        elif kind == b"list":
            out[k] = r.lrange(k, 0, -1)
        elif kind == b"set":
            out[k] = r.smembers(k)
        elif kind == b"zset":
            out[k] = r.zrange(k, 0, -1, withscores=True)
        else:
            out[k] = r.dump(k)
    return out


def fill(r, headroom: int, dummy: int = 8_000_000) -> None:
    """A dummy value of `dummy` bytes, then maxmemory set `headroom` bytes above what Redis uses
    once settled (negative: already over the limit, so every write that could grow memory is
    refused). Written in 100 kB pieces: Redis keeps a client's query buffer as large as the
    largest argument it last read, for a second or so, and counts it as used memory."""
    r.config_set("maxmemory-policy", "noeviction")
    r.delete(FILL)
    for _ in range(dummy // 100_000):
        r.append(FILL, os.urandom(100_000))
    used = settled(r)
    r.config_set("maxmemory", str(max(1, used + headroom)))


def settled(r) -> int:
    """used_memory once two readings 1.5 s apart agree within 64 kB (query buffers of earlier
    large writes, such as a checkpoint, are shrunk by Redis's cron within about a second)."""
    last = r.info("memory")["used_memory"]
    for _ in range(20):
        time.sleep(1.5)
        now = r.info("memory")["used_memory"]
        if abs(now - last) < 64_000:
            return now
        last = now
    raise AssertionError("Redis's memory use did not settle")


def test_a_submit_to_a_full_store_is_one_line_and_writes_nothing(stack, corpus_file, tmp_path):
    server, _ = stack
    r = server.client()
    queued = submit(server.url(), corpus_file, iterations=100, hidden_size=8)  # no worker: queued
    fill(r, headroom=-200_000)
    before = snapshot(r)
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text() + "a corpus not yet in the store\n")

    p = run_cli("submit", "--corpus", str(other), "--iterations", "100", url=server.url())
    assert p.returncode == EXIT_STORE_FULL, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("error: store full: Redis refused the write (OOM, maxmemory "), lines
    assert (
        "free space with 'orchestrator prune' or 'orchestrator delete', or raise maxmemory"
        in (lines[0])
    )
    assert server.password not in p.stderr
    assert p.stdout == "", "no job id may be printed for a job that was not stored"
    assert snapshot(r) == before, "a refused submit changed the store"

    # any write command says the same; reads work; a delete frees space
    p = run_cli("cancel", queued, url=server.url())
    assert p.returncode == EXIT_STORE_FULL and p.stderr.startswith("error: store full:"), p.stderr
    assert snapshot(r) == before
    assert run_cli("status", queued, url=server.url()).returncode == 0
    p = run_cli("delete", queued, url=server.url())
    assert p.returncode == 0, p.stderr
    assert not r.exists(keys.job(queued))
    assert r.exists(FILL), "the store's own data (here the dummy key) is never evicted"


def waiting_for_space(stack, corpus_file, iterations: int) -> tuple:
    """A job on one worker whose checkpoint the store, filled after its first one, refuses:
    (server, client, job id, its hyperparameters, the job's waiting note)."""
    server, worker = stack
    worker("a", CHARRNN_STORE_FULL_RETRY_SECONDS="1").start()
    r = server.client()
    # hidden 256: a checkpoint of about 1.3 MB, far more than the room left; progress rows fit
    hyper = dict(iterations=iterations, hidden_size=256, num_layers=1, eval_every=0, sample_every=0)
    job = submit(server.url(), corpus_file, "--checkpoint-every", "500", **hyper)
    wait_for(lambda: r.exists(keys.checkpoint(job, "latest")), timeout=120, what="a checkpoint")
    fill(r, headroom=300_000)
    line = wait_for(lambda: job_field(r, job, "waiting"), timeout=120, what="the waiting note")
    return server, r, job, hyper, line


def test_a_checkpoint_that_does_not_fit_waits_then_finishes_bit_identical(
    stack, corpus_file, report
):
    server, r, job, hyper, line = waiting_for_space(stack, corpus_file, iterations=6000)
    stored = r.hgetall(keys.checkpoint(job, "latest"))
    assert line.startswith("store full: checkpoint of 1."), line
    assert "MB refused (OOM, maxmemory " in line and line.endswith("waiting for space"), line
    assert job_field(r, job, "status") == "running"
    assert any(e["event"] == "store_full" for e in events(r, job))
    status = run_cli("status", job, url=server.url(), check=True).stdout
    assert f"waiting           {line}" in status, status
    listing = run_cli("list", url=server.url(), check=True).stdout
    assert "running (waiting: store full)" in listing, listing
    at = job_field(r, job, "iteration")
    ttl = r.pttl(keys.lease(job))
    wait_for(lambda: r.pttl(keys.lease(job)) > ttl, timeout=10, what="the lease, renewed")
    # stored before the store filled: still whole (the refused write applied nothing)
    assert r.hgetall(keys.checkpoint(job, "latest")) == stored
    assert hashlib.sha256(stored[b"data"]).hexdigest() == stored[b"sha256"].decode()
    assert job_field(r, job, "iteration") == at, "trained on while its checkpoint was refused"

    r.delete(FILL)  # the operator frees space
    assert wait_status(r, job, ("succeeded", "failed"), timeout=180) == "succeeded"
    assert not job_field(r, job, "waiting")
    evs = [e["event"] for e in events(r, job)]
    assert evs.index("store_full") < evs.index("store_space") < evs.index("finished"), evs
    assert_matches_reference(r, job, corpus_file.read_text(), hyper)
    fig = report(r, [job], 1, "the store full when a checkpoint is due (noeviction): it waits")
    assert fig["lost"] == 0 and fig["trainers"] == 1


def test_a_job_cancelled_while_waiting_for_space_ends_cancelled(stack, corpus_file, report):
    server, r, job, _, _ = waiting_for_space(stack, corpus_file, iterations=200000)
    p = run_cli("cancel", job, url=server.url())
    assert p.returncode == 0, p.stderr
    assert wait_status(r, job, ("cancelled", "failed"), timeout=60) == "cancelled"
    last = events(r, job)[-1]
    assert last["event"] == "cancelled" and "store full" in last["reason"], last
    assert r.exists(keys.checkpoint(job, "latest")) and r.exists(FILL)
    fig = report(r, [job], 1, "cancel while waiting for space in a full store", "cancelled")
    assert fig["lost"] == 0
