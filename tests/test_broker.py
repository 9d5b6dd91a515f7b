"""Issue 22.2 and 22.3: the job store imports neither Celery nor kombu, a bad setting is said where
it is used, and worker/broker.py, the one module that knows kombu's Redis layout, agrees with the
installed kombu on a real redis-server (no worker: a kombu client sends and takes messages)."""

import logging
import os
import subprocess
import sys

import pytest

from worker import broker
from worker.app import client_app
from worker.store import JobStore, connect, new_job_id

from conftest import REPO, run_cli

STORE_SIDE = (
    "worker.store",
    "worker.keys",
    "worker.spec",
    "worker.errors",
    "worker.settings",
    "worker.lease",
    "worker.space",
    "worker.limits",
    "worker.asha",
    "worker.training",
    "worker.presence",
    "worker.serverconf",
)
"""The job store and what a trainer needs of it: what the orchestrator's read commands and the
dashboard import."""


def python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=120,
    )


def test_importing_the_store_imports_neither_celery_nor_kombu():
    p = python(
        f"import sys; import {', '.join(STORE_SIDE)}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu')))"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_a_bad_setting_fails_where_it_is_used_not_at_import(redis_server, corpus_file):
    bad = {"CHARRNN_MAX_CORPUS_BYTES": "lots"}
    p = python(f"import {', '.join(STORE_SIDE)}, orchestrator.cli", **bad)
    assert p.returncode == 0 and not p.stderr, p.stderr
    # a command that reads it: one line, exit 2 (bad input), nothing stored
    p = run_cli("submit", "--corpus", str(corpus_file), url=redis_server.url(), env=bad)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == "error: CHARRNN_MAX_CORPUS_BYTES must be a number, got 'lots'"
    # one it does not read is not stopped by it
    assert run_cli("list", url=redis_server.url(), env=bad).returncode == 0


def test_a_worker_with_a_bad_setting_stops_with_one_line():
    p = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "CHARRNN_LEASE_SECONDS": "-1", "PYTHONPATH": REPO},
        timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip() == "error: CHARRNN_LEASE_SECONDS must be positive, got '-1'"


@pytest.fixture
def app(workerless_server, wr):
    """A client app on a server no worker consumes from: the messages sent stay where kombu put
    them until the test reads them."""
    yield client_app(workerless_server.url())


def send(app, job_id: str, priority: int = 0) -> None:
    app.send_task(
        broker.TASK_NAME, args=[job_id], task_id=job_id, queue=broker.QUEUE, priority=priority
    )


def test_kombu_keeps_each_priority_in_the_list_broker_names(app, wr):
    ids = {p: new_job_id() for p in (0, *broker.PRIORITY_STEPS)}
    for p, job_id in ids.items():
        send(app, job_id, p)
    lists = broker.queue_lists()
    assert len(lists) == 1 + len(broker.PRIORITY_STEPS)
    for q, (p, job_id) in zip(lists, ids.items(), strict=True):
        assert [broker.message_id(raw) for raw in wr.lrange(q, 0, -1)] == [job_id], (q, p)
        assert broker.problem(wr.lindex(q, 0), broker.QUEUE) is None  # as the client sends it
    assert broker.message_ids(wr) == set(ids.values())


def test_a_delivered_message_is_in_the_unacked_hash_broker_names(app, wr):
    job_id = new_job_id()
    send(app, job_id)
    with app.connection_for_read() as conn, conn.channel() as channel:
        message = channel.basic_get(broker.QUEUE, no_ack=False)
        assert message.headers["id"] == job_id
        assert wr.llen(broker.QUEUE) == 0 and wr.hlen(broker.UNACKED) == 1
        assert broker.message_ids(wr) == {job_id}
        message.ack()
    assert broker.message_ids(wr) == set()


def test_withdraw_takes_back_only_the_jobs_named(app, wr):
    keep, take = new_job_id(), [new_job_id(), new_job_id()]
    for job_id in (take[0], keep, take[1]):
        send(app, job_id, priority=9 if job_id == take[1] else 0)
    assert broker.withdraw(wr, take) == 2
    assert broker.message_ids(wr) == {keep}


def test_an_undo_that_fails_is_said_not_swallowed(stack, caplog):
    """A submit taking itself back while Redis is gone: the submit's own error is raised by the
    caller, and the undo's failure is said on stderr (a log warning), not passed over."""
    from orchestrator import jobs

    server, _ = stack
    store = JobStore(connect(server.url()))
    server.stop(kill=True)
    with caplog.at_level(logging.WARNING, logger="charrnn.orchestrator"):
        jobs._undo(store, ["00000000-0000-4000-8000-000000000000"], set())
    assert "could not take back the submit (ConnectionError" in caplog.text


@pytest.mark.parametrize(
    "url", ["redis://:pw@10.0.0.5:6379/0", "rediss://:pw@10.0.0.5:6380/0", "unix://:pw@/tmp/r.sock"]
)
def test_every_url_form_gets_the_transport_that_screens_items(url):
    """kombu still picks its Redis transport from the URL; ours takes its place for each form
    the workers and the orchestrator use (a unix socket as Celery spells it)."""
    from worker.app import celery_url, make_app

    with make_app(url).connection_for_write() as conn:
        assert isinstance(conn.transport, broker.Transport)
        assert conn.transport.Channel is broker.Channel
    assert celery_url(url).split("://")[0] in ("redis", "rediss", "redis+socket")


def test_a_password_in_the_query_reaches_kombu_in_the_netloc():
    """redis-py reads ?password=; kombu failed on it ('multiple values for keyword argument
    password'), so a worker could not start from such a URL."""
    from kombu.utils.url import url_to_parts

    from worker.app import celery_url

    url = celery_url("redis://h:6379/0?password=s%40c%2Fret&socket_timeout=3")
    parts = url_to_parts(url)
    assert parts.password == "s@c/ret" and parts.hostname == "h" and parts.port == 6379
    assert "password=" not in url and "socket_timeout=3" in url
    user = celery_url("redis://h/1?username=worker&password=pw")
    assert url_to_parts(user).username == "worker" and url_to_parts(user).password == "pw"
    sock = celery_url("unix:///run/r.sock?db=2&password=pw")
    assert sock.startswith("redis+socket://:pw@/run/r.sock") and "virtual_host=2" in sock
    assert celery_url("redis://:pw@h:6379/0") == "redis://:pw@h:6379/0"
