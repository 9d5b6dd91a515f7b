"""Live workers, as Celery's remote control sees them."""

from __future__ import annotations


def active(url: str, timeout: float) -> dict[str, list[str]]:
    """{worker name: [job ids it runs]} for every worker that answers within timeout."""
    from worker.app import client_app

    replies = client_app(url).control.inspect(timeout=timeout).active() or {}
    return {
        name: [t["args"][0] if t.get("args") else t.get("id") for t in tasks]
        for name, tasks in sorted(replies.items())
    }
