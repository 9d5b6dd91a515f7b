"""Issue 3 end to end: real redis-server, real Celery workers, the orchestrator CLI as a user runs
it (subprocesses). Run with `pytest -m integration`."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from worker import keys

from conftest import (
    REPO,
    assert_matches_reference,
    cli_submit,
    events,
    free_port,
    job_field,
    run_cli,
    submit,
    wait_for,
    wait_iteration,
    wait_status,
)

pytestmark = pytest.mark.integration

TINY = dict(
    hidden_size=16,
    num_layers=1,
    iterations=300,
    eval_every=100,
    sample_every=100,
    sample_length=40,
    seed=3,
)
LONG = dict(hidden_size=32, num_layers=1, iterations=200000, eval_every=0, sample_every=0, seed=1)


@pytest.mark.slow
def test_submit_to_results_end_to_end(pool, r, redis_server, corpus_file):
    job = submit(
        redis_server.url(),
        corpus_file,
        "--name",
        "e2e",
        "--tag",
        "it-e2e",
        "--checkpoint-every",
        "100",
        **TINY,
    )
    assert wait_status(r, job) == "succeeded"
    res = json.loads(run_cli("results", job, "--json", url=redis_server.url(), check=True).stdout)
    assert res["status"] == "succeeded" and res["iteration"] == 300 == res["iterations"]
    assert res["spec"]["hyper"]["hidden_size"] == 16 and res["name"] == "e2e"
    assert res["val_loss"] is not None and res["history"] and len(res["samples"]) == 3
    assert [e["event"] for e in res["events"]] == ["submitted", "started", "finished"]
    st = json.loads(run_cli("status", job, "--json", url=redis_server.url(), check=True).stdout)
    assert set(st) == {
        "job_id",
        "status",
        "iteration",
        "iterations",
        "smooth_loss",
        "train_loss",  # the same value, named for what it is (the debiased moving average)
        "val_loss",
        "chars_per_second",
        "worker",
        "submitted_at",
        "started_at",
        "finished_at",
        "error",
        "waiting",  # what a job waits for (a full store), None when it does not
        "unreadable",  # what this version cannot read of the record (worker/job.py), or None
    }
    assert st["worker"].startswith("it") and st["chars_per_second"] > 0
    assert st["waiting"] is None
    listed = json.loads(
        run_cli("list", "--tag", "it-e2e", "--json", url=redis_server.url(), check=True).stdout
    )
    assert [j["job_id"] for j in listed] == [job]
    assert_matches_reference(r, job, corpus_file.read_text(), TINY)


@pytest.mark.slow
def test_submit_wait_prints_result_and_exit_code(pool, r, redis_server, corpus_file):
    p = cli_submit(
        corpus_file,
        "--wait",
        hidden_size=16,
        num_layers=1,
        iterations=200,
        sample_every=100,
        url=redis_server.url(),
        timeout=90,
    )
    assert p.returncode == 0, p.stderr
    assert "status: succeeded" in p.stdout and "validation loss:" in p.stdout
    assert "sample (iteration 200)" in p.stdout


@pytest.mark.slow
def test_watch_follows_a_job_to_its_end(pool, r, redis_server, corpus_file):
    """`watch` shows samples as they appear and the outcome; exit 0, or 1 for a cancelled job."""
    url = redis_server.url()
    # long enough (a few seconds) that samples still arrive after `watch` has started: a job of
    # 3000 windows could end before the command was up, leaving no sample to show live
    job = submit(url, corpus_file, **dict(TINY, iterations=40000, sample_every=5000))
    p = run_cli("watch", job, url=url, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "status: succeeded" in p.stdout and "iterations: 40000/40000" in p.stdout
    assert "sample at iteration" in p.stderr  # live samples go with the progress bar
    long = submit(url, corpus_file, **LONG)
    wait_iteration(r, long, 10)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "watch", long],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "CHARRNN_REDIS_URL": url},
    )
    run_cli("cancel", long, url=url, check=True)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 1, err
    assert "status: cancelled" in out


@pytest.mark.slow
def test_two_jobs_on_two_workers_at_once(pool, r, redis_server, corpus_file):
    a = submit(redis_server.url(), corpus_file, **LONG)
    b = submit(redis_server.url(), corpus_file, **dict(LONG, seed=2))
    wait_for(
        lambda: job_field(r, a, "status") == "running" == job_field(r, b, "status"),
        timeout=30,
        what="both jobs running at once",
    )
    assert job_field(r, a, "worker") != job_field(r, b, "worker")
    out = json.loads(run_cli("workers", "--json", url=redis_server.url(), check=True).stdout)
    assert sorted(j for w in out["workers"] for j in w["jobs"]) == sorted([a, b])
    for j in (a, b):
        run_cli("cancel", j, url=redis_server.url(), check=True)
    for j in (a, b):
        assert wait_status(r, j) == "cancelled"


@pytest.mark.slow
def test_samples_and_checkpoint_fetched_and_sampled(pool, r, redis_server, corpus_file, tmp_path):
    job = submit(redis_server.url(), corpus_file, **TINY)
    wait_status(r, job)
    url = redis_server.url()
    last = json.loads(run_cli("samples", job, "--last", "--json", url=url, check=True).stdout)
    assert len(last) == 1 and last[0]["iteration"] == 300 and len(last[0]["text"]) == 40
    out = tmp_path / "model.npz"
    run_cli("checkpoint", job, "-o", str(out), url=url, check=True)
    best = tmp_path / "best.npz"
    run_cli("checkpoint", job, "-o", str(best), "--best", url=url, check=True)
    from charrnn import checkpoint

    ck = checkpoint.load(str(out))
    assert ck.iteration == 300 and checkpoint.load(str(best)).iteration in (100, 200, 300)
    opts = ["--length", "80", "--temperature", "0.7", "--seed", "5", "--prime", "the "]
    p = run_cli("sample", job, *opts, url=url, check=True)
    assert p.stdout == ck.sample(length=80, temperature=0.7, seed=5, prime="the ") + "\n"
    assert p.stderr == ""
    # the same checkpoint through the library's own command line: the same text
    c = subprocess.run(
        [sys.executable, "-m", "charrnn.cli", "sample", "--checkpoint", str(out), *opts],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert c.returncode == 0 and c.stdout == p.stdout, c.stderr


@pytest.mark.slow
def test_cancel_queued_and_running(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    running = [submit(url, corpus_file, **dict(LONG, seed=s)) for s in (1, 2)]
    queued = submit(url, corpus_file, **TINY)
    wait_for(
        lambda: all(job_field(r, j, "status") == "running" for j in running),
        30,
        what="two running jobs",
    )
    assert job_field(r, queued, "status") == "queued"
    p = run_cli("cancel", queued, "--json", url=url, check=True)
    assert json.loads(p.stdout)["status"] == "cancelled"
    for j in running:
        wait_iteration(r, j, 1)
        run_cli("cancel", j, url=url, check=True)
    for j in running:
        assert wait_status(r, j) == "cancelled"
        assert r.hget(keys.checkpoint(j, "latest"), "data")  # keeps its final checkpoint
    time.sleep(1.0)  # the queued copy is delivered now, and must not start
    assert job_field(r, queued, "status") == "cancelled"
    assert "started" not in [e["event"] for e in events(r, queued)]
    assert run_cli("sample", queued, url=url).returncode == 5


@pytest.mark.slow
def test_corpus_uploaded_once(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    a = json.loads(
        cli_submit(
            corpus_file,
            "--json",
            iterations=50,
            hidden_size=8,
            url=url,
            check=True,
        ).stdout
    )
    b = json.loads(
        cli_submit(
            corpus_file,
            "--json",
            iterations=60,
            hidden_size=8,
            url=url,
            check=True,
        ).stdout
    )
    assert a["corpus_uploaded"] is True and b["corpus_uploaded"] is False
    assert len(list(r.scan_iter(keys.corpus("*")))) == 1
    for j in (a["job_id"], b["job_id"]):
        assert wait_status(r, j) == "succeeded"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--corpus", "/nonexistent/corpus.txt"], 2, "corpus file not found"),
        (["--hidden-size", "abc"], 2, "--hidden-size"),
        (["--learning-rate", "-1"], 2, "learning-rate must be positive"),
        # (seq-length is at most 4096 since Config's bounds: the split leaves fewer characters)
        (
            ["--hidden-size", "16", "--seq-length", "4096", "--val-fraction", "0.9"],
            2,
            "corpus too short",
        ),
    ],
)
def test_bad_submit_input(r, redis_server, corpus_file, args, code, message):
    if "--corpus" not in args:
        args = ["--corpus", str(corpus_file), *args]
    p = run_cli("submit", *args, url=redis_server.url())
    assert p.returncode == code and message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert r.zcard(keys.jobs_by_time()) == 0  # nothing enqueued


def test_non_utf8_corpus(r, redis_server, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"hello caf\xe9 world\n" * 10)
    p = run_cli("submit", "--corpus", str(bad), url=redis_server.url())
    assert p.returncode == 2 and "not UTF-8" in p.stderr and "offset 9" in p.stderr


def test_corpus_above_size_limit(r, redis_server, corpus_file):
    p = cli_submit(
        corpus_file,
        url=redis_server.url(),
        env={"CHARRNN_MAX_CORPUS_BYTES": "1000"},
    )
    assert p.returncode == 2 and "above the limit" in p.stderr


def test_unknown_and_invalid_job_ids(r, redis_server):
    url = redis_server.url()
    unknown = str(uuid.uuid4())
    for cmd in (
        ["status", unknown],
        ["results", unknown],
        ["cancel", unknown],
        ["sample", unknown],
        ["delete", unknown],
        ["watch", unknown],
    ):
        p = run_cli(*cmd, url=url)
        # commands that also take a sweep id say so
        what = "sweep or job" if cmd[0] in ("status", "cancel", "delete", "watch") else "job"
        assert p.returncode == 3 and f"no {what} with id {unknown}" in p.stderr, (cmd, p.stderr)
    p = run_cli("status", "charrnn:*", url=url)
    assert p.returncode == 2 and "not a job id" in p.stderr
    p = run_cli("status", "charrnn:*", url=f"redis://127.0.0.1:{free_port()}/0")  # Redis down
    assert p.returncode == 2 and "not a job id" in p.stderr


def test_redis_down_and_wrong_password(redis_server, corpus_file):
    port = free_port()
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    t0 = time.monotonic()
    p = run_cli("status", str(uuid.uuid4()), url=url, timeout=20)
    assert time.monotonic() - t0 < 8
    assert p.returncode == 4 and "unreachable" in p.stderr and f"127.0.0.1:{port}" in p.stderr
    assert "s3cret-pw" not in p.stderr + p.stdout
    p = run_cli("submit", "--corpus", str(corpus_file), url=url, timeout=20)
    assert p.returncode == 4 and "s3cret-pw" not in p.stderr
    wrong = f"redis://:wrong-pw@127.0.0.1:{redis_server.port}/0"
    p = run_cli("list", url=wrong, timeout=20)
    assert p.returncode == 4 and "refused the password" in p.stderr
    assert "wrong-pw" not in p.stderr + p.stdout


def test_a_password_in_the_urls_query_is_never_printed(redis_server, corpus_file):
    """redis-py reads `?password=` too (issue 20, item 5): masked in every error, as `:pw@` is."""
    down = f"redis://127.0.0.1:{free_port()}/0?password=s3cret-pw"
    wrong = f"redis://127.0.0.1:{redis_server.port}/0?password=wrong-pw"
    for url, said in ((down, "unreachable"), (wrong, "refused the password")):
        for args in (("list",), ("submit", "--corpus", str(corpus_file))):
            p = run_cli(*args, url=url, timeout=20)
            assert p.returncode == 4 and said in p.stderr, p.stderr
            assert "pw" not in p.stderr + p.stdout and "password=***" in p.stderr
    p = run_cli("list", url="http://h/0?password=s3cret-pw", timeout=20)  # a malformed URL
    assert p.returncode == 2 and "s3cret-pw" not in p.stderr + p.stdout


@pytest.mark.slow
def test_delete_and_prune(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    a = submit(url, corpus_file, iterations=30, hidden_size=8)
    b = submit(url, corpus_file, iterations=30, hidden_size=8)
    wait_status(r, a), wait_status(r, b)
    run_cli("delete", a, url=url, check=True)
    assert run_cli("status", a, url=url).returncode == 3
    assert not list(r.scan_iter(keys.job(a) + "*"))
    time.sleep(0.2)
    p = run_cli("prune", "--older-than", "0.1s", "--json", url=url, check=True)
    assert json.loads(p.stdout)["deleted"] == [b]


def test_list_stays_fast_with_ten_thousand_jobs(r, redis_server):
    """`list` does work proportional to --limit, not to the store: one index page and one hash
    per row read, never KEYS or SCAN. Counted with Redis's own command statistics, not timed."""
    from charrnn import Config
    from worker.spec import JobSpec
    from worker.store import JobStore

    s = JobStore(r)
    spec = JobSpec(corpus_sha256="0" * 64, config=Config(), total_iterations=1).to_json()
    with r.pipeline(transaction=False) as p:
        for i in range(10_000):
            jid = str(uuid.uuid4())
            p.hset(
                keys.job(jid),
                mapping={
                    "job_id": jid,
                    "status": "succeeded",
                    "submitted_at": repr(i),
                    "spec": spec,
                },
            )
            p.zadd(keys.jobs_by_time(), {jid: i})
            p.zadd(keys.status_index("succeeded"), {jid: i})
        p.execute()
    p = run_cli("list", "--limit", "20", "--json", url=redis_server.url(), check=True)
    listed = json.loads(p.stdout)
    assert [j["submitted_at"] for j in listed] == [float(i) for i in range(9999, 9979, -1)]

    def calls():
        return {k: v["calls"] for k, v in r.info("commandstats").items()}

    before = calls()
    rows = s.list(limit=20, status="succeeded")
    after = calls()
    spent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert [j["submitted_at"] for j in rows] == [float(i) for i in range(9999, 9979, -1)]
    assert spent.get("cmdstat_zrevrange", 0) == 1, spent
    assert spent.get("cmdstat_hgetall", 0) == 20, spent  # one read per row listed
    assert not any(k in spent for k in ("cmdstat_keys", "cmdstat_scan")), spent


@pytest.mark.slow
def test_embedded_stack_from_nothing(tmp_path, corpus_file):
    env = {"CHARRNN_HOME": str(tmp_path / "home")}
    try:
        p = run_cli("up", "--workers", "1", env=env, check=True)
        assert "***" in p.stdout
        p = cli_submit(
            corpus_file,
            "--json",
            "--wait",
            hidden_size=16,
            num_layers=1,
            iterations=200,
            env=env,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        job = json.loads(p.stdout)
        assert job["status"] == "succeeded"
        run_cli("down", env=env, check=True)
        run_cli("up", "--workers", "1", env=env, check=True)
        res = json.loads(run_cli("results", job["job_id"], "--json", env=env, check=True).stdout)
        assert res["status"] == "succeeded" and res["iteration"] == 200
        state = json.loads((tmp_path / "home" / "embedded.json").read_text())
        assert oct(os.stat(tmp_path / "home" / "embedded.json").st_mode & 0o777) == "0o600"
        assert state["url"].startswith("unix://:")
    finally:
        run_cli("down", env=env)
