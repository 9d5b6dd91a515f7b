"""Issue 4, for real: signals to real worker processes, a real redis-server restarted, real
messages pushed into the real queue. Every completed job's final checkpoint is compared bit for bit
with an uninterrupted in-process run of the same spec. Run with `pytest -m faults`.

Each test appends one JSON line of what held to the fault report (CHARRNN_FAULT_REPORT, default
/tmp/charrnn-fault-report.jsonl; the session also writes the markdown table beside it, .md)."""

import base64
import itertools
import json
import os
import pickle
import re
import signal
import time
import uuid

import numpy as np
import pytest

from worker import keys

from conftest import (
    LONG_JOB,
    LONG_JOB_EVERY,
    assert_matches_reference,
    cli_submit,
    events,
    job_field,
    make_corpus,
    run_cli,
    start_together,
    submit,
    wait_for,
    wait_iteration,
    wait_status,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SPEC, EVERY = LONG_JOB, LONG_JOB_EVERY
CKPT = ("--checkpoint-every", str(EVERY))
FAST = {"CHARRNN_VISIBILITY_TIMEOUT": "3"}  # a hard-killed job comes back within seconds


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_corpus(seed=11))
    return path


def names(r, job):
    return [e["event"] for e in events(r, job)]


def test_sigkill_pool_child_mid_job(stack, corpus, report):
    server, worker = stack
    w = worker("a").start()
    r = server.client()
    job = submit(server.url(), corpus, *CKPT, **SPEC)
    wait_iteration(r, job, 8000)
    [child] = w.children()
    os.kill(child, signal.SIGKILL)
    assert wait_status(r, job) == "succeeded"
    assert "resumed" in names(r, job) and int(job_field(r, job, "restarts")) == 1
    assert_matches_reference(r, job, corpus.read_text(), SPEC)
    fig = report(r, [job], 1, "SIGKILL the pool child mid-job")
    assert fig["interruptions"] == 1 and fig["max_recomputed"] <= EVERY


def test_sigkill_whole_worker_then_a_fresh_one(stack, corpus, report):
    server, worker = stack
    env = {"CHARRNN_VISIBILITY_TIMEOUT": "3"}
    w = worker("a", **env).start()
    r = server.client()
    job = submit(server.url(), corpus, *CKPT, **SPEC)
    wait_iteration(r, job, 8000)
    w.kill_all()
    t0 = time.monotonic()
    worker("b", **env).start()
    wait_for(lambda: "resumed" in names(r, job), timeout=30, what="resume on the fresh worker")
    assert time.monotonic() - t0 < 2 + 3 + 10  # lease + visibility timeout + worker start
    assert wait_status(r, job) == "succeeded"
    assert_matches_reference(r, job, corpus.read_text(), SPEC)
    fig = report(r, [job], 1, "SIGKILL the whole worker, start a fresh one")
    assert fig["interruptions"] == 1 and fig["max_recomputed"] <= EVERY


def test_sigterm_checkpoints_and_requeues(stack, corpus, report):
    server, worker = stack
    w = worker("a").start()
    r = server.client()
    job = submit(server.url(), corpus, "--checkpoint-every", "100000", **SPEC)
    wait_iteration(r, job, 8000)
    t0 = time.monotonic()
    assert w.terminate(timeout=20) == 0
    assert time.monotonic() - t0 < 10
    ev = events(r, job)
    stop = [e for e in ev if e["event"] == "interrupted"]
    assert stop and stop[0]["iteration"] >= 8000
    ck_it = int(r.hget(keys.checkpoint(job, "latest"), "iteration"))
    assert ck_it == stop[0]["iteration"]  # checkpoint written at the stop, not before
    assert job_field(r, job, "status") == "queued"
    worker("b").start()
    assert wait_status(r, job) == "succeeded"
    assert [e for e in events(r, job) if e["event"] == "resumed"][0]["iteration"] == ck_it
    assert_matches_reference(r, job, corpus.read_text(), SPEC)
    fig = report(r, [job], 1, "SIGTERM the worker mid-job (warm shutdown)")
    assert fig["interruptions"] == 1 and fig["recomputed"] == 0


def test_same_job_delivered_twice_at_once(stack, corpus, report):
    server, worker = stack
    start_together(worker(n) for n in ("a", "b"))
    r = server.client()
    job = submit(server.url(), corpus, *CKPT, **SPEC)
    from worker.app import QUEUE, TASK_NAME, client_app

    client_app(server.url()).send_task(TASK_NAME, args=[job], task_id=job, queue=QUEUE)
    assert wait_status(r, job) == "succeeded"
    wait_for(
        lambda: int(r.get(keys.stepped_aside(job)) or 0) == 1,
        10,
        what="the duplicate to step aside",
    )
    assert names(r, job).count("started") == 1 and "resumed" not in names(r, job)
    assert int(r.get(keys.fence(job))) == 1  # one trainer ever held it
    assert_matches_reference(r, job, corpus.read_text(), SPEC)
    fig = report(r, [job], 1, "the same job delivered twice at once")
    assert fig["recomputed"] == 0 and fig["stale_writes_refused"] == 0


def test_visibility_timeout_shorter_than_job(stack, corpus, report):
    server, worker = stack
    env = {"CHARRNN_VISIBILITY_TIMEOUT": "2"}
    start_together(worker(n, **env) for n in ("a", "b"))
    r = server.client()
    job = submit(server.url(), corpus, *CKPT, **dict(SPEC, iterations=80000))
    assert wait_status(r, job, timeout=120) == "succeeded"
    assert int(r.get(keys.stepped_aside(job)) or 0) >= 1  # redelivered, stood aside
    assert names(r, job).count("started") == 1 and "resumed" not in names(r, job)
    assert int(r.get(keys.fence(job))) == 1
    assert_matches_reference(r, job, corpus.read_text(), dict(SPEC, iterations=80000))
    copies = int(r.get(keys.stepped_aside(job)))
    fig = report(r, [job], copies, "visibility timeout (2 s) shorter than the job: redeliveries")
    assert fig["recomputed"] == 0 and fig["stale_writes_refused"] == 0


def test_holder_killed_after_its_redelivered_copy_stepped_aside(stack, corpus, report):
    """The gap the reaper closes: the redelivered copy stepped aside and was acked, so when the
    live trainer is then killed hard no message for the job is left anywhere."""
    server, worker = stack
    # longer than lease + 1 s (how long a copy watches the lease before stepping aside), so the
    # copy is acked before it could be redelivered once more
    env = {"CHARRNN_VISIBILITY_TIMEOUT": "5"}
    ws = start_together(worker(n, **env) for n in ("a", "b"))
    r = server.client()
    spec = dict(SPEC, iterations=150000)
    job = submit(server.url(), corpus, *CKPT, **spec)
    wait_for(
        lambda: int(r.get(keys.stepped_aside(job)) or 0) >= 1,
        timeout=60,
        poll=0.2,
        what="the redelivered copy to step aside",
    )
    wait_for(
        lambda: r.llen("charrnn") == 0 and r.hlen("unacked") == 0,
        timeout=10,
        poll=0.1,
        what="the stepped-aside copy to be acked",
    )
    for w in ws:  # the holder and the bystander, whole workers, SIGKILL
        w.kill_all()
    assert (
        job_field(r, job, "status") == "running"
        and int(job_field(r, job, "iteration")) < spec["iterations"]
    )
    assert r.llen("charrnn") == 0 and r.hlen("unacked") == 0  # no message left anywhere
    t0 = time.monotonic()
    worker("c", **env).start()
    wait_for(
        lambda: "resumed" in names(r, job),
        timeout=30,
        poll=0.2,
        what="the reaper to re-send the job",
    )
    assert time.monotonic() - t0 < 2 + 2 * 2 + 10  # lease + two reaper scans + worker start
    assert wait_status(r, job, timeout=120) == "succeeded"
    ev = names(r, job)
    assert ev.count("requeued_by_reaper") == 1 and ev.index("requeued_by_reaper") < ev.index(
        "resumed"
    )
    assert_matches_reference(r, job, corpus.read_text(), spec)
    fig = report(
        r,
        [job],
        2,
        "redelivered copy steps aside, then SIGKILL the holder "
        "(no message left; the reaper re-sends)",
    )
    assert fig["interruptions"] == 1 and fig["max_recomputed"] <= EVERY


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]  # R, S, T (stopped), ...


def test_stale_trainer_frozen_past_its_lease_is_fenced_off(stack, corpus, report):
    """A trainer alive but stalled past its lease (its pool child frozen with SIGSTOP): the reaper
    re-sends the job (its message is still unacked on the frozen worker, and the visibility
    timeout, 30 s here, has not passed), the other worker takes it over under a new fencing
    token, and when the stale trainer wakes its first write is refused and it stops without
    touching the job."""
    server, worker = stack
    ws = {w.name: w for w in start_together(worker(n) for n in ("a", "b"))}
    r = server.client()
    spec = dict(SPEC, iterations=60000)
    job = submit(server.url(), corpus, *CKPT, **spec)
    key = keys.job(job)
    wait_iteration(r, job, 5000)  # past a checkpoint
    a = ws[job_field(r, job, "worker").split("@")[0]]  # the holder: "a" or "b"
    b = next(w for w in ws.values() if w is not a)
    [child] = a.children()
    os.kill(child, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait_for(lambda: _proc_state(child) == "T", timeout=5, what="the pool child to stop")
        time.sleep(0.2)  # a write it sent just before lands first
        stale_at = int(job_field(r, job, "iteration"))
        assert int(r.get(f"{key}:fence")) == 1
        # lease (2 s) expires, two reaper scans (2 s apart) see it gone, the job is re-sent
        wait_for(
            lambda: int(r.get(f"{key}:fence") or 0) == 2,
            timeout=20,
            poll=0.05,
            what="the other worker to take the lease over",
        )
        wait_for(lambda: "resumed" in names(r, job), timeout=5, what="the resume")
        resumed = [e for e in events(r, job) if e["event"] == "resumed"][0]
        assert resumed["host"].startswith(b.name + "@") and resumed["last_reported"] == stale_at
        assert 0 < resumed["iteration"] <= stale_at  # from its last checkpoint
        wait_for(
            lambda: int(job_field(r, job, "iteration")) > resumed["iteration"],
            timeout=10,
            what="the new trainer's progress",
        )
        assert time.monotonic() - t0 > 2  # frozen for longer than its lease
        assert _proc_state(child) == "T" and int(r.get(f"{key}:refused") or 0) == 0
        history_from = r.llen(f"{key}:history")  # every row from here on is the new trainer's
    finally:
        os.kill(child, signal.SIGCONT)
    # the overlap: both trainers alive; the job record must only ever move forward, under B
    seen, deadline = [], time.monotonic() + 60
    while True:
        status, it, holder = r.hmget(key, "status", "iteration", "worker")
        seen.append((status.decode(), int(it), holder.decode().split("@")[0]))
        if status != b"running":
            break
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.01)
    back = [(x, y) for (_, x, _), (_, y, _) in itertools.pairwise(seen) if y < x]
    assert not back, f"iteration went backwards (from, to): {back[:5]}"
    assert {h for _, _, h in seen} == {b.name} and seen[-1][0] == "succeeded"
    assert [s for s, _, _ in seen[:-1]] == ["running"] * (len(seen) - 1)
    # the stale trainer's first write was refused; it stopped there (no second attempt)
    assert int(r.get(f"{key}:refused")) == 1
    wait_for(
        lambda: b"lost its lease" in open(a.log, "rb").read(),
        timeout=10,
        what="the stale trainer to log that it lost its lease",
    )
    assert re.search(rb"succeeded in [0-9.]+s: 'lost_lease'", open(a.log, "rb").read())
    rows = [json.loads(x)[0] for x in r.lrange(f"{key}:history", history_from, -1)]
    back = [(x, y) for x, y in itertools.pairwise(rows) if y < x]
    assert rows and not back, f"history rows written out of order (from, to): {back[:5]}"
    ev = names(r, job)
    assert ev.count("started") == 1 and ev.count("resumed") == 1 and ev.count("finished") == 1
    assert ev.count("requeued_by_reaper") == 1 and int(job_field(r, job, "restarts")) == 1
    assert int(r.get(f"{key}:fence")) == 2 and not r.exists(f"{key}:lease")
    assert r.zscore(keys.status_index("succeeded"), job) is not None
    assert r.zscore(keys.status_index("running"), job) is None
    assert_matches_reference(r, job, corpus.read_text(), spec)
    fig = report(
        r,
        [job],
        1,
        "SIGSTOP the pool child past its lease, SIGCONT after the "
        "takeover (stale trainer fenced off)",
    )
    assert fig["interruptions"] == 1 and fig["max_recomputed"] <= EVERY
    assert fig["trainers"] == 2 and fig["stale_writes_refused"] == 1 and fig["lost"] == 0


def test_redis_restart_mid_job(stack, corpus, report):
    server, worker = stack
    worker("a").start()
    r = server.client()
    job = submit(server.url(), corpus, *CKPT, **SPEC)
    wait_iteration(r, job, 8000)
    server.stop()
    p = run_cli("status", job, url=server.url(), timeout=20)
    assert p.returncode == 4 and "unreachable" in p.stderr
    time.sleep(1.0)
    server.start()
    r = server.client()
    assert wait_status(r, job) == "succeeded"
    assert run_cli("status", job, url=server.url()).returncode == 0
    assert_matches_reference(r, job, corpus.read_text(), SPEC)
    fig = report(r, [job], 1, "restart redis-server mid-job")
    assert fig["recomputed"] == 0


def test_corrupt_latest_checkpoint_resumes_from_previous(stack, corpus, report):
    server, worker = stack
    w = worker("a", **FAST).start()
    r = server.client()
    job = submit(server.url(), corpus, *CKPT, **SPEC)
    wait_iteration(r, job, 10000)
    w.kill_all()
    key = keys.checkpoint(job, "latest")
    data = bytearray(r.hget(key, "data"))
    data[len(data) // 2] ^= 0xFF
    r.hset(key, "data", bytes(data))
    previous = int(r.hget(keys.checkpoint(job, "previous"), "iteration"))
    worker("b", **FAST).start()
    assert wait_status(r, job) == "succeeded"
    ev = events(r, job)
    assert any(e["event"] == "checkpoint_corrupt" and e["which"] == "latest" for e in ev)
    assert [e for e in ev if e["event"] == "resumed"][0]["iteration"] == previous > 0
    assert_matches_reference(r, job, corpus.read_text(), SPEC)
    fig = report(r, [job], 2, "SIGKILL the worker and corrupt its latest checkpoint")
    assert fig["interruptions"] == 1 and EVERY <= fig["max_recomputed"] <= 2 * EVERY


def test_divergence_rolls_back_and_halves_learning_rate(stack, corpus, report):
    # no real hyperparameter diverges at one learning rate and reliably not at half of it, so
    # this one divergence is injected (tests/fault_worker.py: hooks that raise once past an
    # iteration, installed in a worker started with `celery -A fault_worker`)
    server, worker = stack
    worker("a", app="fault_worker", CHARRNN_TEST_DIVERGE_AT="5000").start()
    r = server.client()
    # evaluations every 1000: the one at 5000 finds a best that the rollback to 4000 undoes
    job = submit(server.url(), corpus, *CKPT, **dict(SPEC, iterations=12000, eval_every=1000))
    assert wait_status(r, job) == "succeeded"
    roll = [e for e in events(r, job) if e["event"] == "diverged_rollback"]
    assert len(roll) == 1 and roll[0]["iteration"] == 4000 and roll[0]["diverged_at"] == 6000
    assert float(job_field(r, job, "learning_rate")) == SPEC.get("learning_rate", 0.02) / 2
    from charrnn import checkpoint

    ck = checkpoint.load(r.hget(keys.checkpoint(job, "latest"), "data"))
    assert ck.meta["learning_rate"] == 0.01 and np.isfinite(ck.theta).all()
    # the best copy agrees with the reported best across the rollback (issue 21): a best found
    # after the checkpoint rolled back to was dropped with the weights that made it
    best = checkpoint.load(r.hget(keys.checkpoint(job, "best"), "data"))
    reported = float(job_field(r, job, "best_val_loss"))
    assert best.trainer(corpus.read_text()).evaluate() == reported == best.meta["val_loss"]
    fig = report(r, [job], 1, "divergence (injected once): roll back, halve the learning rate")
    assert fig["interruptions"] == 1 and fig["max_recomputed"] <= EVERY


def test_real_divergence_fails_after_three_rollbacks(stack, corpus, report):
    # a real one: at a learning rate of 1e6 Adagrad's first steps blow the weights up and the
    # smoothed loss explodes (finite, ~1e5 times uniform guessing); halving it three times
    # does not save it, so the job fails with "diverged" and never stores the exploded weights
    server, worker = stack
    worker("a").start()
    r = server.client()
    spec = dict(SPEC, iterations=12000, learning_rate=1e6)
    job = submit(server.url(), corpus, *CKPT, **spec)
    assert wait_status(r, job) == "failed"
    assert "diverged" in job_field(r, job, "error")
    roll = [e for e in events(r, job) if e["event"] == "diverged_rollback"]
    assert [e["learning_rate"] for e in roll] == [5e5, 2.5e5, 1.25e5]
    assert int(job_field(r, job, "rollbacks")) == 4
    assert r.hget(keys.checkpoint(job, "latest"), "data") is None  # nothing exploded stored
    fig = report(
        r,
        [job],
        4,
        "real divergence (learning rate 1e6): fails after 3 rollbacks",
        expected="failed",
    )
    assert fig["interruptions"] == 3 and fig["max_recomputed"] <= EVERY
    p = cli_submit(
        corpus,
        "--wait",
        "--iterations",
        "12000",
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
        "--checkpoint-every",
        "2000",
        "--learning-rate",
        "1e6",
        url=server.url(),
        timeout=90,
    )
    assert p.returncode == 1 and "status: failed" in p.stdout


def test_two_hundred_jobs_on_two_workers(stack, corpus, report):
    server, worker = stack
    start_together(worker(n) for n in ("a", "b"))
    r = server.client()
    p = run_cli(
        "sweep",
        "--corpus",
        str(corpus),
        "--json",
        "--hidden-size",
        "8",
        "--num-layers",
        "1",
        "--iterations",
        "20",
        "--eval-every",
        "0",
        "--sample-every",
        "0",
        "--grid",
        "seed=" + ",".join(str(i) for i in range(200)),
        url=server.url(),
        timeout=120,
        check=True,
    )
    ids = json.loads(p.stdout)["job_ids"]
    assert len(set(ids)) == 200
    wait_for(
        lambda: r.zcard(keys.status_index("succeeded")) == 200,
        timeout=180,
        poll=0.5,
        what="200 jobs to succeed",
    )
    for j in ids:
        assert names(r, j).count("started") == 1 and "resumed" not in names(r, j)
    assert {job_field(r, j, "worker") for j in ids} == {
        "a@" + os.uname().nodename,
        "b@" + os.uname().nodename,
    }
    fig = report(r, ids, 0, "load: 200 jobs submitted at once to 2 workers")
    assert fig["trainers"] == 200 and fig["recomputed"] == 0


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickled_message_is_rejected(stack, corpus, tmp_path, report):
    server, worker = stack
    worker("a").start()
    r = server.client()
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.path = str(marker)
    body = pickle.dumps(((evil,), {}, {}))
    msg = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {
            "lang": "py",
            "task": "charrnn.train",
            "id": str(uuid.uuid4()),
            "argsrepr": "",
            "kwargsrepr": "",
            "origin": "attacker",
        },
        "properties": {
            "delivery_info": {"exchange": "", "routing_key": "charrnn"},
            "delivery_mode": 2,
            "delivery_tag": str(uuid.uuid4()),
            "body_encoding": "base64",
            "correlation_id": str(uuid.uuid4()),
            "priority": 0,
        },
    }
    r.lpush("charrnn", json.dumps(msg))
    job = submit(server.url(), corpus, **dict(SPEC, iterations=500))  # the worker lives on
    assert wait_status(r, job) == "succeeded"
    assert not marker.exists()
    # set aside by the transport before Celery sees it (worker/broker.py), with the reason
    [letter] = [json.loads(x) for x in r.lrange(keys.DEAD_LETTERS, 0, -1)]
    assert letter["reason"] == "content type 'application/x-python-serialize', not JSON"
    report(r, [job], 1, "a pickled message pushed into the queue (rejected, never run)")


def test_tampered_checkpoint_is_refused(stack, corpus, tmp_path, report):
    server, worker = stack
    w = worker("a", **FAST).start()
    r = server.client()
    job = submit(server.url(), corpus, *CKPT, **SPEC)
    wait_iteration(r, job, 10000)
    w.kill_all()
    # a checkpoint holding a pickled object array, with a matching stored sha256
    import hashlib
    import io

    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.array([{"format": "charrnn-checkpoint"}], dtype=object),
        theta=np.zeros(3),
        mem=np.zeros(3),
        h=np.zeros(3),
    )
    evil = buf.getvalue()
    r.hset(
        keys.checkpoint(job, "latest"),
        mapping={"data": evil, "sha256": hashlib.sha256(evil).hexdigest()},
    )
    p = run_cli("sample", job, url=server.url())
    assert p.returncode == 2 and "pickled object array; refused" in p.stderr
    p = run_cli("checkpoint", job, "-o", str(tmp_path / "x.npz"), url=server.url())
    assert p.returncode == 2 and not (tmp_path / "x.npz").exists()
    worker("b", **FAST).start()
    assert wait_status(r, job) == "succeeded"
    assert any(e["event"] == "checkpoint_corrupt" for e in events(r, job))
    assert_matches_reference(r, job, corpus.read_text(), SPEC)
    fig = report(r, [job], 2, "SIGKILL the worker, replace its checkpoint with a pickled one")
    assert fig["interruptions"] == 1 and fig["max_recomputed"] <= 2 * EVERY


def test_asha_sweep_survives_a_kill_just_after_a_rung(stack, corpus, report):
    """A job of an ASHA sweep is killed just after its rung decision, before its next checkpoint:
    it resumes at the rung's checkpoint, reaches the rung again and gets the decision it got the
    first time (stored, not recomputed against the jobs that arrived since). No job is lost; the
    bad configurations are stopped; every job that finished is bit-identical to a run without
    early stopping and without the kill."""
    server, worker = stack
    ws = {w.name: w for w in start_together(worker(n, **FAST) for n in ("a", "b"))}
    r = server.client()
    rung = 6000
    p = run_cli(
        "sweep",
        "--corpus",
        str(corpus),
        "--json",
        "--checkpoint-every",
        str(rung),
        "--grid",
        "learning_rate=0.05,0.03,0.000001,0.0000005",
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
        "--iterations",
        "30000",
        "--eval-every",
        "10000",
        "--sample-every",
        "10000",
        "--model-seed",
        "7",
        "--early-stop",
        "asha",
        "--rungs",
        f"{rung},{3 * rung}",
        url=server.url(),
        timeout=120,
        check=True,
    )
    out = json.loads(p.stdout)
    sid, ids = out["sweep_id"], out["job_ids"]

    def continued_at_rung():
        for j in ids:
            if (
                any(
                    e["event"] == "rung" and e["iteration"] == rung and e["continue"]
                    for e in events(r, j)
                )
                and job_field(r, j, "status") == "running"
            ):
                return j

    job = wait_for(continued_at_rung, timeout=120, poll=0.02, what="a job past its first rung")
    [child] = ws[job_field(r, job, "worker").split("@")[0]].children()
    os.kill(child, signal.SIGKILL)
    assert int(job_field(r, job, "iteration")) < 2 * rung  # before its next checkpoint
    ended = ("succeeded", "stopped")
    for j in ids:
        assert wait_status(r, j, ended + ("failed", "cancelled"), timeout=240) in ended
    ev = events(r, job)
    resumed = [e for e in ev if e["event"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["iteration"] == rung
    again = [e for e in ev if e["event"] == "rung" and e["iteration"] == rung]
    assert len(again) == 2 and all(e["continue"] for e in again)
    assert (again[0]["rank"], again[0]["reached"]) == (again[1]["rank"], again[1]["reached"])
    decisions = r.hgetall(keys.rung_decisions(sid, rung))
    assert len(decisions) == 4 and r.zcard(keys.rung(sid, rung)) == 4
    for j in ids[2:]:
        assert job_field(r, j, "status") == "stopped" and int(job_field(r, j, "iteration")) == rung
    text = corpus.read_text()
    finished = [j for j in ids if job_field(r, j, "status") == "succeeded"]
    for j in finished:
        assert_matches_reference(r, j, text, json.loads(job_field(r, j, "spec"))["hyper"])
    fig = report(r, ids, 1, "SIGKILL a pool child just after an ASHA rung decision", expected=ended)
    assert fig["lost"] == 0 and fig["completed"] == 4


def test_a_pool_process_slow_to_start_is_waited_for(stack, corpus_file):
    """The pool child that replaces a killed one, when it takes longer than Celery's default
    4 s to say it is up (a fork on a loaded host: the 30-minute chaos soak saw one), is waited
    for, and runs the job; with the default it would be killed and replaced by another as
    slow, forever, and the job would never start."""
    server, worker = stack
    r = server.client()
    w = worker("slow", app="fault_worker", CHARRNN_TEST_SLOW_START="7").start()
    [child] = w.children()
    os.kill(child, signal.SIGKILL)  # its replacement is watched for the UP message
    job = submit(server.url(), corpus_file, hidden_size=8, iterations=200, eval_every=0)
    assert wait_status(r, job, timeout=90) == "succeeded"
    log = open(w.log, "rb").read()
    assert b"Timed out waiting for UP message" not in log, log[-2000:]
    assert w.proc.poll() is None, "the worker lives on"
