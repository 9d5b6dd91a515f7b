"""What the changing commands do to jobs and sweeps: cancel, delete, prune."""

from __future__ import annotations

import re

from worker.store import JobStore

from . import jobs, render
from .errors import BadInput

AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def cancel_sweep(store: JobStore, sw: dict) -> dict:
    """Cancel every job of a sweep that has not ended: {"sweep_id", "cancelled",
    "cancel_requested", "already_ended"} (job ids)."""
    out: dict[str, list[str]] = {"cancelled": [], "cancel_requested": [], "already_ended": []}
    for j in store.jobs(sw["job_ids"]):
        st = None if jobs.is_terminal(j) else store.cancel(j["job_id"])
        where: dict[str | None, str] = {"running": "cancel_requested", "cancelled": "cancelled"}
        out[where.get(st, "already_ended")].append(j["job_id"])
    return {"sweep_id": sw["sweep_id"], **out}


def cancel(store: JobStore, kind: str, obj: dict) -> tuple[dict, str]:
    """Cancel a job, or every job of a sweep that has not ended: (what --json prints, the line
    for people)."""
    if kind == "sweep":
        out = cancel_sweep(store, obj)
        return out, render.cancelled(out)
    st = store.cancel(obj["job_id"])
    return {"job_id": obj["job_id"], "status": st}, cancel_message(st)


def cancel_message(st: str) -> str:
    """What `cancel` says for the status a job has after the call."""
    return {
        "cancelled": "cancelled",
        "running": "cancel requested; it stops at its next check",
    }.get(st, f"already {st}; nothing to cancel")


def delete(store: JobStore, kind: str, obj: dict) -> str:
    """Remove a job, or a sweep and all its jobs; returns what was deleted, for people."""
    if kind == "sweep":
        gone = store.delete_sweep(obj["sweep_id"])
        return f"deleted sweep {obj['sweep_id']} and {len(gone)} job(s)"
    store.delete(obj["job_id"])
    return f"deleted {obj['job_id']}"


def parse_age(raw: str) -> float:
    """'90s', '15m', '12h', '7d', '2w' to seconds: a unit is required, and the age must be
    above zero ('30' could be seconds or days; a negative age would prune everything)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])\s*", raw.lower())
    seconds = float(m.group(1)) * AGE_UNITS[m.group(2)] if m else 0.0
    if not m or seconds <= 0:
        raise BadInput(
            f"bad age {raw!r}: give a number above 0 and a unit (s, m, h, d, w), "
            f"for example 30m, 12h or 7d"
        )
    return seconds


def prune(store: JobStore, seconds: float, dry_run: bool) -> list[str]:
    """Delete the jobs that ended more than `seconds` ago (and the sweeps left empty), or with
    dry_run only list them. Returns their ids."""
    return store.prune(seconds, dry_run=dry_run)
