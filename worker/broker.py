"""kombu's Redis layout, in one module: where Celery's Redis transport keeps a queue's messages,
what one of our task messages looks like there, and the transport our Celery apps use.

kombu keeps its own keys beside the job store's (keys.py), in the same database:

    {queue}, {queue}{SEP}{3,6,9}     list  messages waiting, one list per priority step
    unacked                          hash  delivery tag -> JSON [message, exchange, routing key]
    unacked_index, unacked_mutex           the delivery times and the lock of its restore sweep
    _kombu.binding.{exchange}        set   the queues bound to an exchange

The layout is read from the installed kombu (its Channel's class attributes), never copied, and
tests/test_broker.py checks it against a real broker. The reaper reads it to tell a waiting
message from a lost one; a submit that could not finish withdraws its messages through it.

A raw item in a queue (`LPUSH charrnn "not json {"`: every role that may send a task may LPUSH)
made kombu's BRPOP reader raise, and Celery end the worker ("Unrecoverable error"). Our transport
screens each item BRPOP takes off a queue before kombu decodes it: anything that is not a kombu
message, and, on our queue, anything that is not one of our task messages, is logged and set
aside in keys.DEAD_LETTERS (at most DEAD_LETTER_CAP items, each cut to DEAD_LETTER_ITEM_CHARS),
and the worker goes on consuming. A message published on a pub/sub channel (Celery's control
commands and events) that is not a kombu message with a JSON body is logged and skipped: kombu
decodes its JSON itself, and then ended the worker on `[1,2]` just the same.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import Iterable

import kombu
import redis
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from . import keys

log = logging.getLogger("charrnn.broker")

QUEUE = "charrnn"
"""The queue workers consume and the orchestrator sends to (a Redis list of that name)."""

TASK_NAME = "charrnn.train"
"""The one stable task name; messages carry only a job id."""

SEP: str = kombu_redis.Channel.sep
"""kombu's separator between a queue's name and a priority step."""

PRIORITY_STEPS: tuple[int, ...] = tuple(p for p in kombu_redis.Channel.priority_steps if p)
"""The priority steps that have a list of their own (priority 0 waits in the queue's list)."""

UNACKED: str = kombu_redis.Channel.unacked_key
"""kombu's hash of delivered, not yet acknowledged messages."""

DEAD_LETTER_CAP = 1000
"""Items kept in keys.DEAD_LETTERS, newest first: an operator's evidence, not a store. A flood of
raw items costs at most this many entries (LTRIM on each write)."""

DEAD_LETTER_ITEM_CHARS = 64 * 1024
"""An item set aside is kept up to this many characters (with its full length): a task message
is a few hundred bytes; a 512 MB raw item must not be copied whole into the store."""

PAGE = 500
"""Messages per LRANGE when reading a queue's lists."""


def queue_lists(queue: str = QUEUE) -> list[str]:
    """The lists a queue's waiting messages are in, one per priority step."""
    return [queue] + [f"{queue}{SEP}{p}" for p in PRIORITY_STEPS]


def message_id(raw: bytes | str) -> str | None:
    """The task id (our job id) of a message as kombu stores it: the message JSON in a queue's
    list, [message, exchange, routing key] in the unacked hash. None for anything else."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):
            msg = msg[0]
        return str(msg["headers"]["id"])
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        return None


def message_ids(r: redis.Redis, queue: str = QUEUE) -> set[str]:
    """The job ids of every message the broker holds for a queue: waiting in its lists, or
    delivered and not yet acknowledged."""
    ids: set[str | None] = set()
    for q in queue_lists(queue):
        start = 0
        while True:
            page = r.lrange(q, start, start + PAGE - 1)
            ids.update(message_id(raw) for raw in page)
            if len(page) < PAGE:
                break
            start += PAGE
    ids.update(message_id(raw) for _, raw in r.hscan_iter(UNACKED, count=PAGE))
    ids.discard(None)
    return ids  # type: ignore[return-value]  # None discarded


def withdraw(r: redis.Redis, job_ids: Iterable[str], queue: str = QUEUE) -> int:
    """Remove the waiting messages of these jobs from the queue (a submit taking itself back).
    A message a worker already took is not in the lists: it finds no record and is dropped with
    a log line. Returns how many were removed."""
    withdrawn, removed = set(job_ids), 0
    for q in queue_lists(queue):
        for raw in r.lrange(q, 0, -1):
            if message_id(raw) in withdrawn:
                removed += r.lrem(q, 0, raw)  # type: ignore[arg-type]  # bytes as read
    return removed


# --- what a queue may hold ---------------------------------------------------------------


def problem(item: str | bytes, queue: str) -> str | None:
    """Why an item taken off `queue` cannot be delivered, or None. Anything kombu could not
    turn into a message, and, on our queue, anything but one of our task messages."""
    try:  # exactly as kombu reads it: UTF-8 with replacement, its own JSON hooks
        message = kombu_json.loads(
            item.decode(errors="replace") if isinstance(item, bytes) else item
        )
    except (ValueError, TypeError, RecursionError) as e:
        return f"not JSON ({type(e).__name__})"
    body, why = _envelope(message)
    if why or queue != QUEUE:
        return why
    return _task(message, body)


def fanout_problem(message: object) -> str | None:
    """Why a message kombu read off a pub/sub channel (Celery's control commands and events,
    already decoded from JSON) cannot be delivered, or None: kombu's envelope and a JSON body,
    which is all Celery sends there."""
    body, why = _envelope(message)
    if why:
        return why
    try:
        kombu_json.loads(body.decode(errors="replace"))
    except (ValueError, TypeError, RecursionError):
        return "body is not JSON"
    return None


def _envelope(message: object) -> tuple[bytes, str | None]:
    """(body, None) for the dict kombu's Message is built from, or (b"", why not)."""
    if not isinstance(message, dict):
        return b"", f"not a kombu message (a JSON {type(message).__name__})"
    props, headers, body = message.get("properties"), message.get("headers"), message.get("body")
    if not isinstance(props, dict) or type(props.get("delivery_tag")) not in (str, int):
        return b"", "not a kombu message (no properties with a delivery tag)"
    if not isinstance(props.get("delivery_info", {}), dict):
        return b"", "not a kombu message (delivery_info is not an object)"
    if not isinstance(headers, (dict, type(None))) or not isinstance(body, (str, type(None))):
        return b"", "not a kombu message (headers or body of the wrong type)"
    if props.get("body_encoding") == "base64":
        try:
            return base64.b64decode(body or "", validate=True), None
        except (binascii.Error, ValueError):
            return b"", "body is not base64"
    if props.get("body_encoding") is not None:  # kombu knows only base64
        return b"", f"body encoding {str(props.get('body_encoding'))[:80]!r}"
    return (body or "").encode(), None


def _task(message: dict, body: bytes) -> str | None:
    """None for one of our task messages: Celery's protocol 2, JSON, our task, one job id."""
    headers = message.get("headers") or {}
    if headers.get("task") != TASK_NAME:
        return f"not our task ({str(headers.get('task'))[:80]!r})"
    if message.get("content-type") != "application/json":
        return f"content type {str(message.get('content-type'))[:80]!r}, not JSON"
    try:  # as Celery decodes it
        args, kwargs, embed = kombu_json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return "body is not Celery's JSON [args, kwargs, options]"
    if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], str)):
        return "args are not [job id]"
    if kwargs or not isinstance(kwargs, dict) or not isinstance(embed, dict) or any(embed.values()):
        return "unexpected kwargs or options"  # no callbacks, chains or chords: we send none
    try:
        uuid.UUID(args[0])
    except ValueError:
        return "args are not [job id]"
    if headers.get("id") != args[0]:
        return "task id and job id differ"
    unexpected = [k for k, ok in HEADERS.items() if k in headers and not ok(headers[k])]
    if unexpected:
        return f"unexpected headers: {', '.join(sorted(unexpected))}"
    return None


def _none_or(*types: type):
    return lambda v: v is None or (type(v) in types)


HEADERS = {
    **dict.fromkeys(
        ("eta", "expires", "shadow", "group", "group_index", "parent_id", "stamped_headers"),
        lambda v: v is None,
    ),
    "timelimit": lambda v: v in (None, [None, None]),
    "retries": _none_or(int),
    "replaced_task_nesting": _none_or(int),
    "ignore_result": _none_or(bool),
    "stamps": lambda v: v in (None, {}),
    **dict.fromkeys(("root_id", "argsrepr", "kwargsrepr", "origin", "lang"), _none_or(str)),
}
"""The headers Celery interprets, and what our senders (the orchestrator, the reaper) put there:
no ETA, expiry, time limit, group or stamp. Celery would drop a malformed ETA or expiry with a
log line; a well-formed one would hold a job's message in a worker's memory until then, or
revoke it. Either way the message is not ours, and is kept for the operator instead."""


def dead_letter(r: redis.Redis, item: str | bytes, queue: str, reason: str) -> None:
    """Keep an item set aside, newest first, at most DEAD_LETTER_CAP of them."""
    text = item.decode(errors="backslashreplace") if isinstance(item, bytes) else item
    entry: dict[str, str | int] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "queue": queue,
        "reason": reason,
        "item": text[:DEAD_LETTER_ITEM_CHARS],
    }
    if len(text) > DEAD_LETTER_ITEM_CHARS:
        entry["length"] = len(text)
    with r.pipeline(transaction=True) as p:
        p.lpush(keys.DEAD_LETTERS, json.dumps(entry))
        p.ltrim(keys.DEAD_LETTERS, 0, DEAD_LETTER_CAP - 1)
        p.execute()


# --- the transport --------------------------------------------------------------------------


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, screening each item BRPOP takes off a queue before kombu decodes
    it. The screen is a response callback on the polling client (redis-py's own hook): an item
    with a problem is answered as an empty BRPOP, so kombu waits again, and is set aside once
    kombu's read is over."""

    def __init__(self, *args, **kwargs):
        self._aside: list[tuple[str, bytes, str]] = []
        super().__init__(*args, **kwargs)

    def _create_client(self, asynchronous=False):
        client = super()._create_client(asynchronous=asynchronous)
        client.set_response_callback("BRPOP", self._screen)
        return client

    def _screen(self, response, **_):
        if not response:
            return None
        dest, item = response
        queue = (dest.decode(errors="replace") if isinstance(dest, bytes) else dest).rsplit(
            self.sep, 1
        )[0]
        why = problem(item, queue)
        if why is None:
            return tuple(response)
        self._aside.append((queue, item, why))
        return None

    def _brpop_read(self, **options):
        try:
            return super()._brpop_read(**options)
        finally:
            while self._aside:
                self._set_aside(*self._aside.pop())

    def _set_aside(self, queue: str, item: bytes, why: str) -> None:
        shown = item[:200].decode(errors="backslashreplace")
        try:
            with self.conn_or_acquire() as client:
                dead_letter(client, item, queue, why)
        except redis.RedisError as e:  # refused or gone: the item is already off the queue
            log.error("queue %s: %s; dropped (%s): %r", queue, why, type(e).__name__, shown)
            return
        log.error("queue %s: %s; set aside in %s: %r", queue, why, keys.DEAD_LETTERS, shown)

    def _deliver_fanout_message(self, message, exchange):
        """A control command or event with a problem (PUBLISH needs no queue: the orchestrator
        and Flower may send one) is skipped with a log line: nothing waits there to keep."""
        why = fanout_problem(message)
        if why is None:
            return super()._deliver_fanout_message(message, exchange)
        log.error("channel %s: %s; skipped: %.200r", exchange, why, message)
        return False


class Transport(kombu_redis.Transport):
    Channel = Channel


class Connection(kombu.Connection):
    """A kombu connection that uses our Transport wherever the URL (redis://, rediss://,
    redis+socket://) chose kombu's Redis transport, so kombu still parses every URL."""

    def get_transport_cls(self):
        cls = super().get_transport_cls()
        return Transport if cls is kombu_redis.Transport else cls
