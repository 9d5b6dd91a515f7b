"""Least privilege (issue 13): Redis ACL users from worker/acl.py, loaded into a real redis-server,
with real Celery workers and the orchestrator in subprocesses, as users run them.

A job runs to completion with the worker's and the orchestrator's credentials, and Redis refuses
none of their commands on the way (its ACL LOG says so); the viewer reads everything and can
change nothing (one `permission denied` line, exit 6, the store byte for byte as it was); no
role's credentials can flush, reconfigure, list every key, debug, save, replicate or stop Redis.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import redis

from worker import acl, broker, keys

from conftest import (
    REPO,
    TINY_JOB,
    RedisServer,
    Worker,
    free_port,
    run_cli,
    submit,
    wait_for,
    wait_status,
)
from stack import DASHBOARD_AUTH, start_dashboard

pytestmark = pytest.mark.integration

ROLES = ("worker", "orchestrator", "viewer", "flower")

DANGEROUS = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "SET", "appendonly", "no"),
    ("CONFIG", "GET", "requirepass"),
    ("KEYS", "*"),
    ("SHUTDOWN", "NOSAVE"),
    ("DEBUG", "SLEEP", "0"),
    ("ACL", "SETUSER", "worker", "+@all"),
    ("ACL", "LIST"),
    ("MODULE", "LIST"),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("SAVE",),
    ("BGSAVE",),
    ("BGREWRITEAOF",),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("SCRIPT", "FLUSH"),
    ("MONITOR",),
]
"""What no service's user may run: each would let a stolen worker credential wipe, reconfigure,
enumerate or stop the store."""


class ComposeWorker(Worker):
    """A worker as the compose file starts it: with mingle and gossip (which the other tests'
    workers leave out to start faster), so every broker command a deployed worker sends is used."""

    def command(self) -> list[str]:
        skip = ("--without-mingle", "--without-gossip")
        return [c for c in super().command() if c not in skip]


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    """A redis-server with the ACL users of worker/acl.py, and one worker under the worker user."""
    folder = tmp_path_factory.mktemp("acl")
    server = RedisServer(str(folder / "redis"), users=ROLES).start()
    worker = ComposeWorker(server.url(user="worker"), "aclw", str(folder))
    try:
        worker.start(wait=False).wait_ready(timeout=120)  # mingle waits for neighbours
        yield server, worker
    finally:
        worker.stop()
        server.stop(kill=True)


@pytest.fixture
def admin(users):
    """The default user (every right): to look at the store and at Redis's ACL LOG."""
    client = users[0].client()
    client.execute_command("ACL", "LOG", "RESET")
    return client


def refusals(admin) -> list[tuple[str, str, str]]:
    """(user, reason, object) of every command Redis refused since the log was reset, but for
    CLIENT SETINFO, which redis-py sends on connecting and whose refusal it ignores (Redis before
    7.2 has no such subcommand to allow)."""
    out = []
    for e in admin.acl_log(200):
        if e["object"] != "client":
            out.append((e["username"], e["reason"], e["object"]))
    return out


def snapshot(admin) -> dict[bytes, bytes]:
    """Every lasting key of the server (the store and the broker) with its serialized value.
    Keys that expire by themselves (a job's lease, a reaper's mark) are left out."""
    return {k: admin.dump(k) for k in admin.scan_iter("*", count=1000) if admin.pttl(k) == -1}


def fetch(port: int, page: str) -> int | None:
    """The HTTP status of a dashboard page, or None while the server is not up yet."""
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{page}", headers=DASHBOARD_AUTH)
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def one_denial(p, user: str, what: str) -> None:
    assert p.returncode == acl.EXIT_DENIED, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == [
        f"error: permission denied: Redis user '{user}' may not {what}"
    ], p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_a_job_runs_with_the_worker_and_orchestrator_users(users, admin, tmp_path, corpus_file):
    server, worker = users
    job = submit(server.url(user="orchestrator"), corpus_file, **TINY_JOB)
    assert wait_status(admin, job, timeout=180) == "succeeded"
    workers = run_cli("workers", "--json", "--timeout", "3", url=server.url(user="orchestrator"))
    assert workers.returncode == 0, workers.stderr
    assert [w["name"] for w in json.loads(workers.stdout)["workers"]] == [
        f"aclw@{socket.gethostname()}"
    ]
    viewer = server.url(user="viewer")
    for args in (
        ["status", job, "--json"],
        ["list", "--json"],
        ["results", job, "--json"],
        ["samples", job, "--json"],
        ["compare", job, "--json"],
        ["sweeps", "--json"],
        ["plot", job, "-o", str(tmp_path / "loss.png")],
        ["checkpoint", job, "-o", str(tmp_path / "model.npz")],
    ):
        p = run_cli(*args, url=viewer)
        assert p.returncode == 0, (args, p.stderr)
    assert json.loads(run_cli("status", job, "--json", url=viewer).stdout)["status"] == "succeeded"
    assert json.loads(run_cli("samples", job, "--json", url=viewer).stdout)
    assert (tmp_path / "model.npz").stat().st_size > 0
    # the dashboard, as the compose file runs it: as the viewer
    port = free_port()
    dashboard = start_dashboard(viewer, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for page in (
            "/jobs.json",
            f"/job/{job}.json",
            "/sweeps.json",
            "/workers.json",
            f"/job/{job}",
        ):
            got = wait_for(lambda page=page: fetch(port, page), timeout=60, poll=0.5, what=page)
            assert got == 200, page
    finally:
        dashboard.terminate()
        dashboard.wait(30)
    assert refusals(admin) == [], "Redis refused a command the worker, orchestrator or viewer needs"


@pytest.mark.slow
def test_the_viewer_changes_nothing(users, admin, corpus_file):
    server, worker = users
    orchestrator, viewer = server.url(user="orchestrator"), server.url(user="viewer")
    done = submit(orchestrator, corpus_file, **TINY_JOB)
    assert wait_status(admin, done, timeout=180) == "succeeded"
    running = submit(orchestrator, corpus_file, **dict(TINY_JOB, iterations=10**6))
    wait_status(admin, running, ("running",), timeout=120)
    # the worker stopped, so that nothing but the viewer could change the store meanwhile
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(1)  # a write it sent just before is applied, before the snapshot
        before = snapshot(admin)
        for args, what in (
            (["submit", "--corpus", str(corpus_file), "--iterations", "10"], "submit jobs"),
            (["sweep", "--corpus", str(corpus_file), "--grid", "hidden_size=4,8"], "submit sweeps"),
            (["cancel", running], "cancel jobs"),
            (["delete", done], "delete jobs"),
            (["delete", running], "delete jobs"),
            (["prune", "--older-than", "1s"], "prune jobs"),
            (["workers"], "ask the workers what they run (Celery's control channel)"),
        ):
            one_denial(run_cli(*args, url=viewer), "viewer", what)
        assert snapshot(admin) == before, "a refused command changed the store"
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)
    assert run_cli("cancel", running, url=orchestrator).returncode == 0
    assert wait_status(admin, running, ("cancelled",), timeout=120) == "cancelled"
    assert {u for u, _, _ in refusals(admin)} == {"viewer"}


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_no_role_can_flush_reconfigure_or_stop_redis(users, admin, role):
    server, _ = users
    admin.set(keys.corpus("canary"), "still here")
    client = redis.Redis.from_url(server.url(user=role), socket_timeout=10)
    for command in DANGEROUS:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    assert admin.get(keys.corpus("canary")) == b"still here" and admin.ping()
    assert {(u, reason) for u, reason, _ in refusals(admin)} == {(role, "command")}
    admin.delete(keys.corpus("canary"))


@pytest.mark.parametrize("role", ["worker", "orchestrator", "flower"])
def test_each_consuming_role_may_set_an_item_aside_and_the_viewer_read_it(users, admin, role):
    """Every role whose kombu consumer reads a queue (a worker its queue, the orchestrator and
    Flower their control replies) keeps a raw item in the dead-letter list, and nothing more;
    an operator reads it as the viewer."""
    server, _ = users
    admin.delete(keys.DEAD_LETTERS)
    client = redis.Redis.from_url(server.url(user=role), socket_timeout=10)
    broker.dead_letter(client, b"not json {", "charrnn", "a test")
    viewer = redis.Redis.from_url(server.url(user="viewer"), socket_timeout=10)
    [entry] = viewer.lrange(keys.DEAD_LETTERS, 0, -1)
    assert json.loads(entry)["item"] == "not json {"
    assert not refusals(admin)
    admin.delete(keys.DEAD_LETTERS)


@pytest.mark.slow
def test_the_viewer_writes_nothing_and_publishes_no_control_command(users, admin):
    viewer = redis.Redis.from_url(users[0].url(user="viewer"), socket_timeout=10)
    for command in (
        ("SET", keys.job("x"), "1"),
        ("DEL", keys.jobs_by_time()),
        ("LPUSH", "charrnn", "{}"),
        ("PUBLISH", acl.control_channel(0), "{}"),
        ("EVAL", "return 1", "0"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            viewer.execute_command(*command)


@pytest.mark.slow
def test_a_worker_under_the_viewer_user_exits_with_one_line(users, tmp_path):
    server, _ = users
    w = Worker(server.url(user="viewer"), "aclv", str(tmp_path))
    p = subprocess.run(
        w.command(), env=w.env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == acl.EXIT_DENIED, (p.returncode, p.stderr[-3000:])
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: permission denied: Redis user 'viewer' may not run a worker "
        "(it needs the worker user's rules: python -m worker.acl --rules worker)"
    ], p.stderr[-3000:]
    assert "Traceback" not in p.stderr


def test_the_acl_file_holds_digests_and_refuses_placeholders(tmp_path):
    env = dict(
        os.environ,
        REDIS_PASSWORD="a" * 32,
        REDIS_WORKER_PASSWORD="w" * 32,
        REDIS_VIEWER_PASSWORD="v" * 32,
    )
    for name in ("REDIS_ORCHESTRATOR_PASSWORD", "REDIS_FLOWER_PASSWORD"):
        env.pop(name, None)
    out = tmp_path / "users.acl"
    cmd = [sys.executable, "-m", "worker.acl"]
    p = subprocess.run([*cmd, "-o", str(out)], env=env, cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert [line.split()[1] for line in text.splitlines()] == ["default", "worker", "viewer"]
    assert "w" * 32 not in text and f"#{acl.digest('w' * 32)} " in text
    assert f"user viewer reset on #{acl.digest('v' * 32)} {acl.roles()['viewer'].rules()}" in text
    for bad, message in (
        ("change-me-worker", "REDIS_WORKER_PASSWORD is still the placeholder"),
        ("short", "REDIS_WORKER_PASSWORD must be at least 16 characters"),
    ):
        p = subprocess.run(
            cmd, env=dict(env, REDIS_WORKER_PASSWORD=bad), cwd=REPO, capture_output=True, text=True
        )
        assert p.returncode == 2 and p.stdout == "", p
        assert p.stderr.startswith(f"error: {message}") and len(p.stderr.splitlines()) == 1
    rules = subprocess.run([*cmd, "--rules", "worker"], cwd=REPO, capture_output=True, text=True)
    assert rules.stdout.strip() == acl.roles()["worker"].rules()


def test_the_compose_file_grants_what_worker_acl_defines():
    """The redis service writes its ACL file from copies of the rules (its image has no Python):
    they must be these."""
    import yaml

    compose = yaml.safe_load(open(os.path.join(REPO, "docker-compose.yml")))
    env = compose["services"]["redis"]["environment"]
    for name, role in acl.roles().items():
        assert env[f"{name.upper()}_ACL_RULES"] == role.rules(), name
        service = {"worker": "worker", "orchestrator": "orchestrator", "viewer": "dashboard"}
        if name in service:
            url = compose["services"][service[name]]["environment"]["CHARRNN_REDIS_URL"]
            assert url.startswith(f"redis://${{REDIS_{name.upper()}_USER:-{name}}}:"), url
    assert "REDIS_FLOWER_USER" in compose["services"]["flower"]["environment"]["CHARRNN_REDIS_URL"]


@pytest.mark.slow
def test_a_refused_write_is_mapped_once(users):
    """Denied inside MULTI/EXEC (a queued command refused, the transaction aborted) reads as
    permission denied too, not as 'unreachable'."""
    viewer = redis.Redis.from_url(users[0].url(user="viewer"), socket_timeout=10)
    with pytest.raises(redis.RedisError) as e:
        with viewer.pipeline(transaction=True) as p:
            p.hset(keys.job("x"), "a", "1")
            p.execute()
    assert acl.is_denied(e.value)
