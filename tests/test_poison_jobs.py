"""Issue 12, the poison job: one submit must never take the pool down.

Reproduced first: `submit --hidden-size 100000` passed validation, NumPy's MemoryError made Celery
log "Unrecoverable error" and exit the worker, the message went back on the queue and killed the
next worker, and the job stayed `queued` forever. Here, with a real redis-server and two real
Celery workers: sizes are bounded, the memory a job needs is checked at submit and again in the
worker, an allocation that still fails fails the job (not the worker), and a job whose worker
process dies under it again and again fails with a reason after CHARRNN_MAX_ATTEMPTS deliveries.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from worker import keys

from conftest import REPO, Worker, cli_submit, job_field, run_cli, submit, wait_for, wait_status

pytestmark = pytest.mark.integration

HUGE = {"hidden_size": 4096, "num_layers": 8}  # within each bound, ~8.6 GiB in all


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in p.stderr, (
        p.stderr
    )
    return lines[0]


def test_a_size_past_its_bound_is_refused_at_submit(r, redis_server, corpus_file):
    p = run_cli(
        "submit", "--corpus", str(corpus_file), "--hidden-size", "100000", url=redis_server.url()
    )
    assert p.returncode == 2
    assert "hidden-size must be <= 8192, got 100000" in one_error_line(p)
    assert r.zcard(keys.jobs_by_time()) == 0


def test_a_job_too_large_for_the_pool_is_refused_at_submit(r, redis_server, corpus_file):
    args = ["submit", "--corpus", str(corpus_file)]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in HUGE.items()]
    p = run_cli(*args, url=redis_server.url())
    assert p.returncode == 2
    line = one_error_line(p)
    assert "GiB of memory" in line and "above the pool's limit of 4.00 GiB" in line
    assert "CHARRNN_MAX_JOB_BYTES" in line
    # the limit is the operator's: lowered, a small job is refused too; raised, HUGE's
    # checkpoint limit is the next to say no
    p = cli_submit(
        corpus_file,
        "--hidden-size",
        "64",
        url=redis_server.url(),
        env={"CHARRNN_MAX_JOB_BYTES": "100000"},
    )
    assert p.returncode == 2 and "limit of 0.1 MiB" in one_error_line(p)
    p = run_cli(*args, url=redis_server.url(), env={"CHARRNN_MAX_JOB_BYTES": str(1 << 40)})
    assert p.returncode == 2 and "CHARRNN_MAX_CHECKPOINT_BYTES" in one_error_line(p)
    assert r.zcard(keys.jobs_by_time()) == 0


def enqueue_bypassing_the_cli(url: str, text: str, hyper: dict) -> str:
    """A client that skips the orchestrator's checks: the record and message as it writes them."""
    code = f"""
import json, sys
from charrnn import Config
from orchestrator import jobs
from worker.store import JobStore, connect
store = JobStore(connect({url!r}))
cfg = Config.from_dict({hyper!r})
job_id, _ = jobs.submit(store, {url!r}, "corpus.txt", {text!r}, cfg, 10**6, 1000, None, ())
print(job_id)
"""
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def assert_alive_and_serving(r, url, corpus_file, workers):
    for w in workers:
        assert w.proc.poll() is None, open(w.log).read()[-2000:]
    job = submit(url, corpus_file, iterations=300, hidden_size=16, eval_every=0)
    assert wait_status(r, job, timeout=60) == "succeeded"


@pytest.mark.slow
def test_the_worker_refuses_a_job_too_large_before_allocating(stack, corpus_file):
    """Two workers; a client that bypasses submit's checks enqueues HUGE. The first worker to
    take it fails it with the size and the limit; neither dies; a normal job then succeeds."""
    server, worker = stack
    ws = [worker("a"), worker("b")]
    for w in ws:
        w.start(wait=False)
    for w in ws:
        w.wait_ready()
    r = server.client()
    job = enqueue_bypassing_the_cli(server.url(), corpus_file.read_text(), HUGE)
    assert wait_status(r, job, timeout=60) == "failed"
    error = job_field(r, job, "error")
    assert "above the pool's limit" in error and "CHARRNN_MAX_JOB_BYTES" in error
    assert int(job_field(r, job, "deliveries")) == 1
    assert not r.exists(keys.checkpoint(job, "latest"))
    assert_alive_and_serving(r, server.url(), corpus_file, ws)


class LimitedWorker(Worker):
    """A worker whose address space is capped, so NumPy's allocations fail for real."""

    def __init__(self, *a, address_space: int, **kw):
        super().__init__(*a, **kw)
        self.address_space = address_space

    def popen(self, log, **kw):
        cap = self.address_space
        limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap))  # noqa: E731
        return super().popen(log, preexec_fn=limit)


@pytest.mark.slow
def test_a_memory_error_fails_the_job_and_no_worker(stack, corpus_file, tmp_path):
    """The reproduction itself: limits raised so the checks pass, address space capped so the
    allocation fails in NumPy. Both workers survive, the job fails with the reason, the next
    job succeeds."""
    server, _ = stack
    env = {"CHARRNN_MAX_JOB_BYTES": str(1 << 40), "CHARRNN_MAX_CHECKPOINT_BYTES": str(1 << 40)}
    ws = [
        LimitedWorker(server.url(), name, str(tmp_path), address_space=2 << 30, **env)
        for name in ("a", "b")
    ]
    try:
        for w in ws:
            w.start(wait=False)
        for w in ws:
            w.wait_ready()
        r = server.client()
        job = enqueue_bypassing_the_cli(
            server.url(), corpus_file.read_text(), {"hidden_size": 4096, "num_layers": 4}
        )
        assert wait_status(r, job, timeout=60) == "failed"
        assert "out of memory on worker" in job_field(r, job, "error")
        time.sleep(1.0)  # a worker that was going to exit on it has done so by now
        assert_alive_and_serving(r, server.url(), corpus_file, ws)
        for w in ws:
            assert b"Unrecoverable error" not in open(w.log, "rb").read()
    finally:
        for w in ws:
            w.stop()


@pytest.fixture
def dying_worker(stack, corpus_file):
    """dying_worker(max_attempts, checkpoint_every, **hyper) -> (server, worker, r, job): one
    worker that gives up on a job after max_attempts deliveries without a checkpoint and gets a
    hard-killed job back within seconds, and a job on it that neither evaluates nor samples."""
    server, worker = stack

    def start(max_attempts: int, checkpoint_every: int, **hyper):
        env = dict(CHARRNN_MAX_ATTEMPTS=str(max_attempts), CHARRNN_VISIBILITY_TIMEOUT="3")
        w = worker("a", **env).start()
        every = ("--checkpoint-every", str(checkpoint_every))
        job = submit(server.url(), corpus_file, *every, eval_every=0, sample_every=0, **hyper)
        return server, w, server.client(), job

    return start


@pytest.mark.slow
def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(dying_worker, corpus_file):
    """The OOM killer's pattern, with real signals: the pool child running the job is SIGKILLed
    before it writes a checkpoint, delivery after delivery. After CHARRNN_MAX_ATTEMPTS the job
    fails with the reason instead of looping, and the worker still serves."""
    server, w, r, job = dying_worker(2, 1000000, iterations=1000000, hidden_size=32)
    for attempt in (1, 2):
        wait_for(
            lambda attempt=attempt: (
                job_field(r, job, "status") == "running"
                and int(job_field(r, job, "attempts") or 0) == attempt
            ),
            timeout=60,
            what=f"delivery {attempt} running",
        )
        time.sleep(0.3)
        for child in w.children():
            os.kill(child, signal.SIGKILL)
    assert wait_status(r, job, timeout=90) == "failed"
    error = job_field(r, job, "error")
    assert "gave up after 2 deliveries in a row ended without a checkpoint" in error
    assert int(job_field(r, job, "deliveries")) == 3
    evs = [json.loads(x) for x in r.lrange(keys.events(job), 0, -1)]
    assert evs[-1]["event"] == "failed"
    assert_alive_and_serving(r, server.url(), corpus_file, [w])


@pytest.mark.slow
def test_a_checkpoint_resets_the_attempts(dying_worker):
    """A job killed after it checkpointed is not counted toward giving up: long jobs survive
    any number of worker restarts."""
    _, w, r, job = dying_worker(1, 200, iterations=3000, hidden_size=16)
    wait_for(lambda: r.exists(keys.checkpoint(job, "latest")), timeout=60, what="a checkpoint")
    assert job_field(r, job, "attempts") == "0"
    for child in w.children():
        os.kill(child, signal.SIGKILL)
    assert wait_status(r, job, timeout=90) == "succeeded"
    assert int(job_field(r, job, "deliveries")) == 2


@pytest.mark.slow
def test_a_store_that_refuses_every_write_stops_the_job_without_looping(stack, corpus_file):
    """Reproduced: a write Redis refused (out of memory) left the job running, the reaper re-sent
    it and it retrained, five restarts in 45 seconds. A store that refuses every write cannot
    record a failure either, so the job waits instead: its trainer waits at the refused write
    (worker/space.py) and nothing is retrained while Redis says no. Celery's own writes may be
    refused too, which can make Celery exit the worker's main process ("Unrecoverable error"); a
    supervisor restarts it (the compose file's restart policy), and once Redis accepts writes
    again the job goes on (or is resumed) and finishes, bit-identical to an uninterrupted run."""
    server, worker = stack
    env = {"CHARRNN_VISIBILITY_TIMEOUT": "3", "CHARRNN_STORE_RETRY_SECONDS": "2"}
    worker("a", **env).start()
    r = server.client()
    hyper = dict(iterations=30000, hidden_size=16, num_layers=1, eval_every=0, sample_every=0)
    job = submit(server.url(), corpus_file, "--checkpoint-every", "1000", **hyper)
    wait_for(lambda: r.exists(keys.checkpoint(job, "latest")), timeout=60, what="a checkpoint")
    r.config_set("maxmemory", "1")  # noeviction (the default): every write is refused with OOM
    try:
        time.sleep(4)
        restarts, iteration = job_field(r, job, "restarts"), job_field(r, job, "iteration")
        time.sleep(8)  # longer than the lease and two reaper scans
        assert job_field(r, job, "status") == "running"
        assert (job_field(r, job, "restarts"), job_field(r, job, "iteration")) == (
            restarts,
            iteration,
        ), "trained or retrained while the store refused every write"
    finally:
        r.config_set("maxmemory", "0")
    worker("b", **env).start()  # the supervisor's restart
    assert wait_status(r, job, timeout=120) == "succeeded"
    from conftest import assert_matches_reference

    assert_matches_reference(r, job, corpus_file.read_text(), hyper)
