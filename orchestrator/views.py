"""What the reading commands show, as plain dicts: the same dict is printed as JSON with --json
and rendered for people otherwise. Whether an id names a job or a sweep is asked of the store
once, in `resolve`."""

from __future__ import annotations

from worker.errors import NoCheckpoint
from worker.limits import load_checkpoint
from worker.store import JobStore

from . import jobs, leaderboard

resolve = leaderboard.resolve


def sweep_view(store: JobStore, sw: dict) -> dict:
    """A sweep, its status counts, what varies, and every job's status and parameters."""
    rows = store.jobs(sw["job_ids"])
    names = leaderboard.varying(rows)
    return {
        "sweep_id": sw["sweep_id"],
        "name": sw["name"],
        "created_at": sw["created_at"],
        "spec": sw["spec"],
        "counts": leaderboard.counts(rows),
        "varying": names,
        "jobs": [
            dict(
                jobs.status_view(j),
                best_val_loss=j["best_val_loss"],
                params=leaderboard.params(j, names),
            )
            for j in rows
        ],
    }


RESULT_FIELDS = (
    "name",
    "tags",
    "sweep_id",
    "spec",
    "best_val_loss",
    "restarts",
    "rollbacks",
    "learning_rate",
)


def results_view(store: JobStore, job: dict) -> dict:
    """Everything about a job: status, spec, final metrics, loss history, samples, events."""
    job_id = job["job_id"]
    return {
        **jobs.status_view(job),
        **{k: job[k] for k in RESULT_FIELDS},
        "spec": job["spec"].to_dict(),
        "history": store.history(job_id),
        "samples": store.samples(job_id),
        "events": store.events(job_id),
    }


def list_view(rows: list[dict]) -> list[dict]:
    return [dict(jobs.status_view(j), name=j["name"], tags=j["tags"]) for j in rows]


def sweeps_view(store: JobStore, limit: int) -> list[dict]:
    """Sweeps, newest first, with how many of their jobs are in each status."""
    return [
        {
            "sweep_id": sw["sweep_id"],
            "name": sw["name"],
            "created_at": sw["created_at"],
            "jobs": sw["n_jobs"],
            "counts": leaderboard.counts(store.jobs(sw["job_ids"])),
        }
        for sw in store.list_sweeps(limit)
    ]


def samples(store: JobStore, job_id: str, last: bool, required: bool) -> list[dict]:
    """A job's samples (only the latest with last); NoCheckpoint when required and none yet."""
    job = store.get(job_id)
    rows = store.samples(job["job_id"], last=last)
    if required and not rows:
        raise NoCheckpoint(f"job {job['job_id']} has no samples yet")
    return rows


def checkpoint(store: JobStore, job_id: str, best: bool):
    """(bytes, loaded checkpoint) of a job's latest or best checkpoint, verified."""
    which = "best" if best else "latest"
    raw, _ = store.checkpoint(store.get(job_id)["job_id"], which)
    return raw, load_checkpoint(raw, f"the job's {which} checkpoint")


def active_workers(url: str, timeout: float) -> dict[str, list[str]]:
    """Live workers, as Celery's remote control sees them: {worker name: [job ids it runs]} for
    every worker that answers within timeout."""
    from worker.app import client_app  # the Celery app only for the command that asks it

    replies = client_app(url).control.inspect(timeout=timeout).active() or {}
    return {
        name: [t["args"][0] if t.get("args") else t.get("id") for t in tasks]
        for name, tasks in sorted(replies.items())
    }
