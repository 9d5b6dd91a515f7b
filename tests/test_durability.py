"""Issue 13, "Acknowledged means durable": once a command has printed a job id (or a worker has
been told a checkpoint is stored), no crash loses it. The embedded stack as shipped (real
redis-server, real workers, the CLI as a user runs it):

- every reply Redis sends after writing to its append-only file comes after that file's fsync
  (watched with strace on the server: submit, status transitions and checkpoints alike), which is
  what survives a power loss; the same check on a server with `appendfsync everysec` catches the
  replies sent before their fsync, so it can fail;
- a SIGKILL of redis-server right after the last of several submits loses none of them, and they
  all run to the end once the stack is started again."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import RedisServer, run_cli, wait_for

pytestmark = pytest.mark.integration

TINY = ["--hidden-size", "8", "--num-layers", "1", "--iterations", "400", "--eval-every", "0",
        "--sample-every", "0", "--checkpoint-every", "100"]  # fmt: skip
SYSCALL = re.compile(r"^(\d+)\s+(\w+)\((\d+)<([^>]*)>")
"""An strace -f -y line: pid, syscall, fd and what the fd is (a path, or socket:[inode])."""


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    env = {"CHARRNN_HOME": str(path), "CHARRNN_LEASE_SECONDS": "2",
           "CHARRNN_STORE_RETRY_SECONDS": "5"}  # fmt: skip
    yield path, env
    run_cli("down", env=env, timeout=120)


def strace_of(pid: int, out: str) -> subprocess.Popen:
    """strace attached to a running redis-server: its file and socket writes and fsyncs, with
    what each descriptor is (-y). Waits until it is attached."""
    if not shutil.which("strace"):
        pytest.fail("strace not found: apt-get install strace (.ci/run installs it)")
    p = subprocess.Popen(
        ["strace", "-f", "-y", "-qq", "-s", "40", "-o", out, "-p", str(pid),
         "-e", "trace=write,writev,fsync,fdatasync"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.0)  # attaching takes a moment; writes before it would go unseen
    if p.poll() is not None:
        pytest.fail(f"strace could not attach to redis-server: {p.stderr.read().decode()}")
    return p


def stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGINT)  # strace detaches and flushes its output
    p.wait(30)


def replies_before_fsync(trace: str) -> tuple[int, list[str]]:
    """(append-only file writes seen, replies sent while one of them was not yet fsynced). A
    reply is a write to a socket; the append-only file is any file named appendonly*."""
    aof_writes, pending, early = 0, False, []
    for line in trace.splitlines():
        m = SYSCALL.match(line)
        if not m:
            continue
        call, what = m.group(2), m.group(4)
        if "appendonly" in what:
            if call in ("write", "writev"):
                aof_writes += 1
                pending = True
            elif call in ("fsync", "fdatasync"):
                pending = False
        elif what.startswith("socket:") and call in ("write", "writev") and pending:
            early.append(line)
    return aof_writes, early


@pytest.mark.slow
def test_every_acknowledged_write_is_fsynced_before_the_reply(home, corpus_file, tmp_path):
    path, env = home
    run_cli("up", "--workers", "1", env=env, check=True, timeout=180)
    state = json.loads((path / "embedded.json").read_text())
    out = str(tmp_path / "redis.strace")
    tracer = strace_of(state["redis_pid"], out)
    try:
        p = run_cli("submit", "--corpus", str(corpus_file), "--json", "--wait", *TINY, env=env,
                    timeout=300)  # fmt: skip
    finally:
        stop(tracer)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "succeeded"
    trace = open(out).read()
    writes, early = replies_before_fsync(trace)
    # the submit's corpus and record, the task message, started, 4 checkpoints, the progress
    # writes and the end: each one an append-only write before its reply
    assert writes >= 10, trace[-3000:]
    assert not early, "replies sent before the append-only file was fsynced:\n" + "\n".join(
        early[:5]
    )


def test_the_check_sees_replies_sent_before_their_fsync(tmp_path):
    """The same check against `appendfsync everysec` (the usual setting, and this stack's before
    issue 13): Redis replies first and fsyncs in a background thread, and the check says so."""
    server = RedisServer(str(tmp_path / "redis"), appendfsync="everysec").start()
    out = str(tmp_path / "redis.strace")
    try:
        tracer = strace_of(server.proc.pid, out)
        r = server.client()
        for i in range(20):
            r.set(f"k{i}", "v")
        stop(tracer)
    finally:
        server.stop(kill=True)
    writes, early = replies_before_fsync(open(out).read())
    # everysec batches its file writes while a background fsync runs: fewer writes than SETs,
    # and replies go out before any of them is on disk
    assert writes >= 1 and len(early) >= 1, (writes, early)


@pytest.mark.slow
def test_a_sigkill_of_redis_loses_no_acknowledged_job(home, corpus_file):
    path, env = home
    env = dict(env, CHARRNN_VISIBILITY_TIMEOUT="5")
    run_cli("up", "--workers", "1", env=env, check=True, timeout=180)
    state = json.loads((path / "embedded.json").read_text())
    ids = []
    for _ in range(3):
        p = run_cli("submit", "--corpus", str(corpus_file), "--json", *TINY, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        ids.append(json.loads(p.stdout)["job_id"])
    os.kill(state["redis_pid"], signal.SIGKILL)  # at once: the last id was printed just now

    run_cli("up", "--workers", "1", env=env, check=True, timeout=180)  # Redis replays its file
    for job_id in ids:  # acknowledged, so stored; and each runs to its end
        p = run_cli("status", job_id, "--json", env=env, timeout=60)
        assert p.returncode == 0, f"job {job_id} acknowledged but lost: {p.stderr}"

    def ended():
        rows = [json.loads(run_cli("status", j, "--json", env=env, check=True).stdout) for j in ids]
        return all(r["status"] == "succeeded" for r in rows) and rows

    wait_for(ended, timeout=240, poll=2, what="every acknowledged job to finish")


def test_a_worker_names_each_setting_that_can_lose_acknowledged_work(tmp_path):
    """worker.serverconf, run by every worker at start, against a real Redis set three ways."""
    import logging

    from worker import serverconf

    server = RedisServer(str(tmp_path / "redis")).start()  # appendfsync always, noeviction
    try:
        r = server.client()
        assert serverconf.problems(r) == []
        r.config_set("appendfsync", "everysec")
        r.config_set("maxmemory-policy", "allkeys-lru")
        (l1, fsync), (l2, policy) = serverconf.problems(r)
        assert l1 == logging.WARNING and "fsyncs its append-only file 'everysec'" in fsync
        assert "set appendfsync always" in fsync
        assert l2 == logging.ERROR and "maxmemory-policy is allkeys-lru" in policy
        r.config_set("appendonly", "no")
        r.config_set("maxmemory-policy", "volatile-lru")
        (l1, aof), (l2, policy) = serverconf.problems(r)
        assert l1 == logging.WARNING and "keeps no append-only file" in aof
        assert l2 == logging.WARNING and "volatile-lru" in policy
    finally:
        server.stop(kill=True)
