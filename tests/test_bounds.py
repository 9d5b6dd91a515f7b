"""Issue 12, growth that never ended: every list a job writes is bounded, a corpus leaves the
store with its last job, and a sweep cannot ask for an unbounded rung plan. Real redis-server,
real Celery workers (the session's pool)."""

import json

import pytest

from worker import keys
from worker.training import MAX_EVENTS, MAX_HISTORY, MAX_SAMPLES

from conftest import cli_submit, run_cli, submit, wait_status

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_a_job_that_evaluates_and_samples_every_iteration_stays_bounded(
    pool, r, redis_server, corpus_file
):
    """Reproduced: --eval-every 1 --sample-every 1 over 3,000 iterations wrote 3,000 history
    rows and 3,000 samples. Now the history keeps a few hundred rows per kind, the samples the
    newest MAX_SAMPLES, and the watcher's count of samples still counts every one written."""
    job = submit(
        redis_server.url(),
        corpus_file,
        iterations=3000,
        hidden_size=8,
        num_layers=1,
        seq_length=5,
        eval_every=1,
        sample_every=1,
        sample_length=5,
        val_max_chars=50,
    )
    assert wait_status(r, job, timeout=300) == "succeeded"
    history = [json.loads(x) for x in r.lrange(keys.history(job), 0, -1)]
    assert 500 <= len(history) <= min(MAX_HISTORY, 2 * 500 + 2), len(history)
    assert history[-1][0] == 3000 and history[-1][2] is not None  # the end, with its val loss
    samples = [json.loads(x) for x in r.lrange(keys.samples(job), 0, -1)]
    assert len(samples) == MAX_SAMPLES
    assert [s["iteration"] for s in samples] == list(range(3001 - MAX_SAMPLES, 3001))
    assert int(r.hget(keys.job(job), "samples_written")) == 3000
    assert r.llen(keys.events(job)) <= MAX_EVENTS
    # a watcher that had seen 2,950 samples is shown exactly the 50 written since
    from worker.store import JobStore

    later = JobStore(r).samples(job, start=2950)
    assert [s["iteration"] for s in later] == list(range(2951, 3001))


@pytest.mark.slow
def test_a_corpus_is_collected_with_its_last_job(pool, r, redis_server, corpus_file, tmp_path):
    url = redis_server.url()
    a = submit(url, corpus_file, iterations=50, hidden_size=8, eval_every=0)
    b = submit(url, corpus_file, iterations=50, hidden_size=8, eval_every=0)
    for j in (a, b):
        assert wait_status(r, j) == "succeeded"
    [corpus_key] = [k for k in r.scan_iter(keys.corpus("*"))]
    run_cli("delete", a, url=url, check=True)
    assert r.exists(corpus_key), "b still uses the corpus"
    run_cli("delete", b, url=url, check=True)
    assert not r.exists(corpus_key) and not list(r.scan_iter(keys.PREFIX + "corpus*"))
    # and the same text submitted again is uploaded again, and trains
    c = json.loads(
        cli_submit(
            corpus_file,
            "--iterations",
            "50",
            "--hidden-size",
            "8",
            "--json",
            url=url,
            check=True,
        ).stdout
    )
    assert c["corpus_uploaded"] is True and wait_status(r, c["job_id"]) == "succeeded"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reduction-factor", "1.00001"], "reduction factor"),
        (["--rungs", ",".join(str(10 * i) for i in range(1, 30))], "rungs"),
    ],
)
def test_a_sweep_cannot_ask_for_an_unbounded_rung_plan(r, redis_server, corpus_file, args, message):
    """Reproduced: eta = 1.00001 over 200k iterations gave 169,315 rungs, 1.24 MB of JSON in
    each job spec. Refused before anything is stored, one line, exit 2."""
    p = run_cli(
        "sweep",
        "--corpus",
        str(corpus_file),
        "--grid",
        "hidden_size=8,16",
        "--iterations",
        "200000",
        "--early-stop",
        "asha",
        *args,
        url=redis_server.url(),
    )
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and message in lines[0], p.stderr
    assert r.zcard(keys.jobs_by_time()) == 0 and r.zcard(keys.sweeps_by_time()) == 0


@pytest.mark.slow
def test_a_short_fast_job_still_draws_a_curve(pool, r, redis_server, corpus_file):
    """Issue 14: history was written with progress, about once a second, so a job of a second or
    two had two or three points, and one validation point (at its end: the evaluation interval
    was 5000 whatever the run's length). Now a row at least every 1/500 of the run, and by
    default an evaluation every tenth of it."""
    job = submit(
        redis_server.url(),
        corpus_file,
        iterations=2000,
        hidden_size=8,
        num_layers=1,
        seq_length=10,
        sample_every=0,
        val_max_chars=200,
    )
    assert wait_status(r, job, timeout=120) == "succeeded"
    history = [json.loads(x) for x in r.lrange(keys.history(job), 0, -1)]
    assert len(history) >= 400, len(history)
    assert [it for it, _, _ in history] == sorted(it for it, _, _ in history)
    evals = {it for it, _, val in history if val is not None and it % 200 == 0}
    assert evals >= set(range(200, 2001, 200)), sorted(evals)


def test_a_poll_reads_only_the_samples_written_since(wr):
    """`samples(job, start=k)` reads from Redis the rows from the k-th written on, not the whole
    kept list; those trimmed away are gone, and none is read twice."""
    from worker.store import JobStore

    job = "0b7e4f2c-0000-4000-8000-000000000001"
    for it in range(6, 11):  # samples 1..5 were trimmed; 6..10 are kept
        wr.rpush(keys.samples(job), json.dumps({"iteration": it, "text": "x" * 1000}))
    wr.hset(keys.job(job), "samples_written", 10)
    store = JobStore(wr)
    iterations = {k: [s["iteration"] for s in store.samples(job, start=k)] for k in (2, 7, 9, 10)}
    assert iterations == {2: [6, 7, 8, 9, 10], 7: [8, 9, 10], 9: [10], 10: []}
    wr.execute_command("CONFIG", "RESETSTAT")
    store.samples(job, start=9)
    read = wr.info("stats")["total_net_output_bytes"]
    assert read < 1000 + 500  # the one new row, not the five
