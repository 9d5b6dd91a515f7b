"""The configuration of our Celery apps for long, resumable training jobs, and the apps a client
(the orchestrator) sends with. The workers' own app is built in worker/celery.py."""

from __future__ import annotations

import functools
import ssl
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from celery import Celery
from celery.app.amqp import AMQP

from . import broker, settings
from .broker import QUEUE, TASK_NAME

__all__ = ["QUEUE", "TASK_NAME", "client_app", "make_app"]


def credentials_in_netloc(url: str) -> str:
    """redis-py takes the user and password from the query too (?password=...), kombu only from
    the netloc, and with both it fails ('got multiple values for keyword argument
    password'): the same URL for both, with the query's credentials moved into the netloc."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {k: v for k, v in query if k in ("username", "password")}
    if not given:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = given.get("username", unquote(parts.username or ""))
    password = given.get("password", unquote(parts.password or ""))
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    rest = urlencode([(k, v) for k, v in query if k not in given])
    return urlunsplit((parts.scheme, netloc, parts.path, rest, parts.fragment))


def celery_url(url: str) -> str:
    """redis-py spells a unix socket unix://[:pw@]/path?db=N, Celery's Redis transport
    redis+socket://[:pw@]/path?virtual_host=N: one CHARRNN_REDIS_URL serves both (the
    embedded stack listens on a socket only its user can open)."""
    url = credentials_in_netloc(url)
    if not url.startswith("unix://"):
        return url
    parts = urlsplit(url)
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return urlunsplit(("redis+socket", parts.netloc, parts.path, f"virtual_host={db}", ""))


def broker_ssl(url: str) -> dict | None:
    """Celery's broker_use_ssl for a rediss:// URL that names no ssl_* option: verify the
    server's certificate, as redis-py (the job store) does by default. kombu alone would accept
    any certificate (CERT_NONE, with a warning). The URL's own ssl_cert_reqs and ssl_ca_certs,
    when given, reach kombu from the URL and win over this."""
    parts = urlsplit(url)
    if parts.scheme != "rediss" or any(k.startswith("ssl_") for k in parse_qs(parts.query)):
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def transport_options() -> dict:
    """kombu's Redis transport options, from the settings (read here, when an app is made)."""
    return {
        "visibility_timeout": settings.VISIBILITY_TIMEOUT,
        "socket_connect_timeout": settings.CONNECT_TIMEOUT,
        # sweep for abandoned (unacked, older than the visibility timeout) messages often
        # enough that recovery after a hard kill takes about the visibility timeout, not 100 s
        "unacked_restore_interval": max(1, min(10, int(settings.VISIBILITY_TIMEOUT // 2))),
        "unacked_restore_throttle": 1,
    }


class BrokerAMQP(AMQP):
    """Celery's messaging with our kombu connection: its Redis transport sets aside a raw
    item in a queue instead of ending the worker (worker/broker.py)."""

    Connection = broker.Connection


class CeleryConfig:
    broker_connection_retry_on_startup = True
    # JSON only: a pickled message in the broker would run code on every worker
    accept_content = ["json"]
    task_serializer = "json"
    result_serializer = "json"
    event_serializer = "json"
    result_accept_content = ["json"]
    # the job store is ours; Celery results would only duplicate it
    result_backend = None
    task_ignore_result = True
    # long jobs: acknowledge when done, give the job back if the process running it dies,
    # and never hold a second job while training one (a poison job is bounded by the job
    # record's delivery count, CHARRNN_MAX_ATTEMPTS, not by Celery)
    task_acks_late = True
    task_reject_on_worker_lost = True
    worker_prefetch_multiplier = 1
    # a pool process replacing one that died must say it is up within this many seconds or be
    # killed and replaced in turn. Celery's 4 s is too short for a fork on a loaded host: the
    # 30-minute chaos soak saw a replacement killed at 4 s, and a child that always takes
    # longer (a busy machine, a slow disk) would be replaced forever with no job run
    # (tests/test_faults_jobs.py: test_a_pool_process_slow_to_start_is_waited_for)
    worker_proc_alive_timeout = 60.0
    task_default_queue = QUEUE
    task_routes = {TASK_NAME: {"queue": QUEUE}}
    # events so Flower and `orchestrator workers` see what runs where
    worker_send_task_events = True
    task_send_sent_event = True
    worker_hijack_root_logger = False
    worker_redirect_stdouts = False


def make_app(url: str, include: tuple[str, ...] = (), current: bool = False) -> Celery:
    """A Celery app configured for charrnn, on the broker at `url` (`current`: the process's
    default app, as the workers' is)."""
    celery = Celery("charrnn", set_as_current=current, amqp=BrokerAMQP)
    celery.config_from_object(CeleryConfig)
    celery.conf.broker_transport_options = transport_options()
    celery.conf.broker_url = celery_url(url)
    if broker_ssl(url):
        celery.conf.broker_use_ssl = broker_ssl(url)
    celery.conf.include = list(include)
    return celery


@functools.lru_cache(maxsize=8)
def client_app(url: str) -> Celery:
    """The app a client (the orchestrator) sends tasks and control commands with, one per URL."""
    return make_app(url)
