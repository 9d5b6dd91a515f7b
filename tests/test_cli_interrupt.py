"""Issue 21, item 4: Ctrl-C while following a job or a sweep (`submit --wait`, `watch`, `sweep
--wait`) stops the view, not the work. SIGINT is sent to the real command in a subprocess, with
real workers: exit 130, one line saying the job is still running and how to follow or cancel
it, and the job goes on."""

import os
import signal
import subprocess
import sys
import time

import pytest

from worker import keys

from conftest import REPO, job_field, run_cli, wait_for, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LONG = ["--hidden-size", "8", "--num-layers", "1", "--iterations", "2000000", "--eval-every", "0"]


def start(url, *args):
    env = dict(os.environ, CHARRNN_REDIS_URL=url)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        # a test run in the background inherits SIGINT ignored; a user's shell does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def newest_job(r):
    ids = r.zrevrange(keys.jobs_by_time(), 0, 0)
    return ids[0].decode() if ids else None


def interrupt(p, r, job):
    wait_for(lambda: job_field(r, job, "status") == "running", 120, what="job running")
    time.sleep(1.5)  # the command is in its follow loop
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return out, err


def assert_still_running_line(p, err, kind, some_id):
    assert p.returncode == 130, (p.returncode, err)
    assert "error: aborted" not in err and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted: {kind} {some_id} is still running"), err
    assert f"orchestrator watch {some_id}" in line and f"orchestrator cancel {some_id}" in line


def test_ctrl_c_in_submit_wait_and_watch_leaves_the_job_running(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    p = start(url, "submit", "--corpus", str(corpus_file), *LONG, "--wait")
    job = wait_for(lambda: newest_job(r), 60, what="the job submitted")
    out, err = interrupt(p, r, job)
    assert_still_running_line(p, err, "job", job)
    w = start(url, "watch", job[:8])
    out, err = interrupt(w, r, job)
    assert_still_running_line(w, err, "job", job)
    time.sleep(1)
    assert job_field(r, job, "status") == "running"
    run_cli("cancel", job, url=url, check=True)
    assert wait_status(r, job) == "cancelled"


def test_ctrl_c_in_sweep_wait_leaves_the_sweep_running(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    p = start(url, "sweep", "--corpus", str(corpus_file), "--grid", "hidden_size=8,9", *LONG[2:],
              "--num-layers", "1", "--wait")  # fmt: skip
    sweep = wait_for(
        lambda: (ids := r.zrange(keys.sweeps_by_time(), 0, -1)) and ids[0].decode(), 60
    )
    job = wait_for(lambda: newest_job(r), 60)
    out, err = interrupt(p, r, job)
    assert_still_running_line(p, err, "sweep", sweep)
    assert job_field(r, job, "status") == "running"
    run_cli("cancel", sweep, url=url, check=True)
