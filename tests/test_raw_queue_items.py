"""Issue 20.3, a raw item in the queue: `LPUSH charrnn "not json {"` or `"[1,2]"` ended the worker
("Unrecoverable error: JSONDecodeError"; kombu decodes in its Redis transport before any task code
runs), and the orchestrator, worker and flower roles may all LPUSH. Here, with a real redis-server
and a real Celery worker: every item that is not one of our task messages is logged and moved
aside to the dead-letter list (keys.DEAD_LETTERS, at most broker.DEAD_LETTER_CAP), the worker
keeps consuming, and the next job runs."""

import base64
import json

import pytest

from worker import broker, keys

from conftest import TINY_JOB, submit, wait_for, wait_status

pytestmark = pytest.mark.integration


def task_message(job_id: str, body: bytes | None = None, **headers) -> bytes:
    """A task message as the orchestrator's client sends it (kombu's envelope, Celery's
    protocol 2 body), with its body or headers replaced."""
    if body is None:
        body = json.dumps([[job_id], {}, {"callbacks": None, "chain": None}]).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": "charrnn.train", "id": job_id, **headers},
            "properties": {
                "correlation_id": job_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "charrnn"},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": f"tag-{job_id}",
            },
        }
    ).encode()


ID = "00000000-0000-4000-8000-000000000000"

RAW_ITEMS_AND_WHY = [
    (b"not json {", "not JSON"),
    (b"[1,2]", "not a kombu message"),
    (b"{}", "not a kombu message"),
    (b"\xff\xfe not utf-8", "not JSON"),
    (b'{"__type__": "datetime", "__value__": "x"}', "not JSON"),  # kombu's own JSON hooks
    (json.dumps({"body": "", "properties": "nope"}).encode(), "not a kombu message"),
    (task_message(ID, body=b"not json {"), "body is not Celery's JSON"),
    (task_message(ID).replace(b'"body": "', b'"body": "%%%'), "body is not base64"),
    (task_message(ID, body=json.dumps([[], {}, {}]).encode()), "args are not [job id]"),
    (task_message(ID, body=json.dumps([[123], {}, {}]).encode()), "args are not [job id]"),
    (task_message(ID, body=json.dumps([ID, {}, {}]).encode()), "args are not [job id]"),
    (task_message("x", body=json.dumps([["x"], {}, {}]).encode()), "args are not [job id]"),
    (task_message(ID, body=json.dumps([[ID], {"x": 1}, {}]).encode()), "unexpected kwargs"),
    (task_message(ID, id="another"), "task id and job id differ"),
    (task_message(ID, body=json.dumps([[ID], {}, {"callbacks": [{}]}]).encode()), "unexpected"),
    (task_message(ID, task="os.system"), "not our task"),
    (task_message(ID, expires="garbage", eta="2026"), "unexpected headers: eta, expires"),
    (task_message(ID, timelimit="x", retries="x"), "unexpected headers: retries, timelimit"),
]
RAW_ITEMS = [raw for raw, _ in RAW_ITEMS_AND_WHY]


@pytest.mark.slow
def test_raw_items_go_to_the_dead_letter_list_and_the_next_job_runs(stack, corpus_file):
    server, worker = stack
    r = server.client()
    w = worker("a")
    for raw in RAW_ITEMS:
        r.lpush("charrnn", raw)
    w.start()
    job_id = submit(server.url(), corpus_file, **TINY_JOB)
    wait_status(r, job_id, "succeeded", timeout=120)
    assert w.proc.poll() is None, "the worker exited"
    wait_for(lambda: r.llen(keys.DEAD_LETTERS) == len(RAW_ITEMS), 30, what="every item aside")
    letters = [json.loads(x) for x in r.lrange(keys.DEAD_LETTERS, 0, -1)]
    # newest first, as LPUSH keeps them; each names its queue and why it was set aside
    assert [x["item"] for x in reversed(letters)] == [
        raw.decode(errors="backslashreplace") for raw in RAW_ITEMS
    ]
    assert {x["queue"] for x in letters} == {"charrnn"}
    assert [x["reason"] for x in reversed(letters)] == [
        broker.problem(raw, "charrnn") for raw in RAW_ITEMS
    ]
    assert all(x["at"] for x in letters)
    assert r.llen("charrnn") == 0
    # the job's own message is acknowledged just after its record says succeeded
    wait_for(lambda: not r.hlen("unacked"), 30, what="every message acknowledged")
    log = open(w.log).read()
    assert "Unrecoverable error" not in log
    assert log.count("set aside in charrnn:dead_letters") == len(RAW_ITEMS)


def test_the_dead_letter_list_is_bounded(r):
    for i in range(broker.DEAD_LETTER_CAP + 5):
        broker.dead_letter(r, f"item {i}", "charrnn", "a test")
    assert r.llen(keys.DEAD_LETTERS) == broker.DEAD_LETTER_CAP
    newest = json.loads(r.lindex(keys.DEAD_LETTERS, 0))
    assert newest["item"] == f"item {broker.DEAD_LETTER_CAP + 4}"


@pytest.mark.parametrize("raw, why", RAW_ITEMS_AND_WHY)
def test_every_raw_item_is_refused_by_the_check(raw, why):
    assert why in broker.problem(raw, "charrnn")


def test_our_task_message_passes_the_check():
    assert broker.problem(task_message(ID), "charrnn") is None
    # on another queue (a client's control replies) only kombu's envelope is checked
    assert broker.problem(task_message(ID, task="os.system"), "x.reply.celery.pidbox") is None
    assert "not a kombu message" in broker.problem(b"[1,2]", "x.reply.celery.pidbox")


@pytest.mark.slow
def test_a_raw_control_message_is_skipped_and_the_next_job_runs(stack, corpus_file):
    """The same on Celery's control channel (a pub/sub channel the orchestrator may PUBLISH
    on): nothing to keep, as nothing waits there, but the worker goes on."""
    server, worker = stack
    r = server.client()
    w = worker("a").start()
    for raw in RAW_ITEMS:
        r.publish("/0.celery.pidbox", raw)
    job_id = submit(server.url(), corpus_file, **TINY_JOB)
    wait_status(r, job_id, "succeeded", timeout=120)
    assert w.proc.poll() is None, "the worker exited"
    log = open(w.log).read()
    assert "Unrecoverable error" not in log
    assert "channel celery.pidbox: not a kombu message (a JSON list); skipped" in log
