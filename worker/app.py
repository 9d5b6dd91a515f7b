"""The Celery app and its configuration for long, resumable training jobs."""
from celery import Celery

from . import settings

TASK_NAME = "charrnn.train"
"""The one stable task name; messages carry only a job id."""

QUEUE = "charrnn"
"""The queue workers consume and the orchestrator sends to."""


class Config:
    broker_url = settings.redis_url() or settings.DEFAULT_REDIS_URL
    broker_connection_retry_on_startup = True
    broker_transport_options = {
        "visibility_timeout": settings.VISIBILITY_TIMEOUT,
        "socket_connect_timeout": settings.CONNECT_TIMEOUT,
        # sweep for abandoned (unacked, older than the visibility timeout) messages often
        # enough that recovery after a hard kill takes about the visibility timeout, not 100 s
        "unacked_restore_interval": max(1, min(10, int(settings.VISIBILITY_TIMEOUT // 2))),
        "unacked_restore_throttle": 1,
    }
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
    # and never hold a second job while training one
    task_acks_late = True
    task_reject_on_worker_lost = True
    worker_prefetch_multiplier = 1
    task_default_queue = QUEUE
    task_routes = {TASK_NAME: {"queue": QUEUE}}
    # events so Flower and `orchestrator workers` see what runs where
    worker_send_task_events = True
    task_send_sent_event = True
    worker_hijack_root_logger = False
    worker_redirect_stdouts = False


app = Celery("charrnn")
app.config_from_object(Config)
app.conf.include = ["worker.tasks"]


def use_url(url: str) -> Celery:
    """Point the app at a broker URL chosen at run time (the orchestrator's --redis-url)."""
    app.conf.broker_url = url
    return app
