"""The workers' Celery app, in its own module as in Celery's `proj/celery.py` layout:

    celery -A worker worker            # with CHARRNN_REDIS_URL=redis://:password@host:6379/0

finds `worker.celery.app`. Nothing else builds it: importing the job store (worker.store,
worker.keys, ...) imports neither Celery nor kombu, and the orchestrator sends with its own
client apps (worker.app.client_app)."""

from __future__ import annotations

import sys

from . import settings
from .app import make_app

try:
    settings.check()  # every setting a worker reads, now: not in the middle of a job
    app = make_app(settings.broker_url(), include=("worker.tasks",), current=True)
    """The workers' app, on CHARRNN_REDIS_URL."""
except settings.BadSetting as e:  # Celery is loading its app: say why in one line, and stop
    print(f"error: {e}", file=sys.stderr, flush=True)
    raise SystemExit(settings.EXIT_BAD_SETTING) from None

__all__ = ["app"]
