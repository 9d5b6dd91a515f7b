"""What each dashboard page shows, as plain dicts: the JSON twins serve them as they are and the
templates render them. Everything is read through the job store (`JobStore`) and
`orchestrator.leaderboard`, the functions `list`, `results`, `compare` and `checkpoint` use: the
dashboard has no data path of its own. Nothing here writes.

No Flask here, so these functions are the dashboard's logic and can be called from anywhere.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

from charrnn.errors import CharRNNError
from worker import presence
from worker.errors import NoCheckpoint
from worker.limits import load_checkpoint
from worker.store import JobStore, Status, validate_job_id
from worker.training import MAX_HISTORY, MAX_SAMPLES

from .. import jobs, leaderboard

PAGE = 50
"""Jobs per page of the jobs table: one ZREVRANGE and one pipelined HGETALL per page."""

CURVES_MAX = 50
"""Loss curves drawn on a sweep's chart, best first; a larger sweep shows its best ones only (the
leaderboard still ranks every job). 50 histories of ~500 rows load in a few hundred ms; 1,000
would take seconds and draw an unreadable chart."""

LEADERBOARD_ROWS = 100
"""Leaderboard rows a sweep page renders unless asked for all (its JSON twin always has all)."""

BIG_SWEEP = 200
"""A sweep with more jobs than this is polled every 10 s instead of 2 s: its twin is ~400 bytes
a job."""

WORKER_LIMIT = 1000
"""Running jobs read for the workers page."""


class BadCheckpoint(Exception):
    """A stored checkpoint whose bytes do not match its stored sha256, or that does not load."""


def job_row(job: dict) -> dict:
    """One line of the jobs table: what `orchestrator list --json` prints, with the loss per char."""
    return {
        **jobs.status_view(job),
        "name": job["name"],
        "tags": job["tags"],
        "sweep_id": job["sweep_id"],
        "best_val_loss": job["best_val_loss"],
        "loss": job["smooth_loss"],
    }


def jobs_page(
    store: JobStore,
    status: str | None = None,
    tag: str | None = None,
    offset: int = 0,
    limit: int = PAGE,
) -> dict:
    """A page of jobs, newest first, as `JobStore.list` reads them (the same index, ZREVRANGE,
    then the records in one pipelined read), from position `offset` of the index on. With a
    status or a tag alone that is one read per page whatever the number of jobs; with both, the
    tag's index is read page by page and filtered by status, as `JobStore.list` does.
    Returns {"jobs", "offset", "next" (offset of the next page, or None), "total" (in the index)}."""
    jobs, nxt, total = store.page(status, tag, offset, limit)
    rows = [job_row(j) for j in jobs]
    return {
        "jobs": rows,
        "offset": offset,
        "next": nxt,
        "total": total,
        "status": status,
        "tag": tag,
        "limit": limit,
    }


def job_view(store: JobStore, job_id: str, samples_since: int = 0, history_since: int = 0) -> dict:
    """A job page: its row, spec, loss curves against characters seen (as `orchestrator plot`
    draws them), samples in order, events, and its checkpoints. NoSuchJob or InvalidJobId.

    A live page polls this every second: with `samples_since` (the samples written it holds)
    and `history_since` (the history rows it holds) it gets only what is new, and the two
    `*_since` fields of the answer say where its lists start (0: whole, start over). Ten kept
    samples of 100,000 characters made each poll 12 MB; now a poll carries the new ones alone."""
    job = store.get(validate_job_id(job_id))
    job_id = job["job_id"]
    history = store.history(job_id)
    written = store.sample_count(job_id)
    # the history list is trimmed at MAX_HISTORY rows, with no count of rows written: once full,
    # a row's index moves, so a full list is sent whole
    if not 0 < history_since <= len(history) < MAX_HISTORY:
        history_since = 0
    if not 0 < samples_since <= written:
        samples_since = 0
    return {
        "samples_since": samples_since,
        "history_since": history_since,
        "samples_kept": MAX_SAMPLES,
        "job": {
            **job_row(job),
            "restarts": job["restarts"],
            "rollbacks": job["rollbacks"],
            "learning_rate": job["learning_rate"],
        },
        "spec": job["spec"].to_dict(),
        "curves": leaderboard.curves(job, history[history_since:]),
        "history_rows": len(history),
        "samples": new_samples(store, job_id, samples_since, written),
        "samples_written": written,
        "events": store.events(job_id),
        "checkpoint_iteration": store.checkpoint_iteration(job_id),
        "finished": jobs.is_terminal(job),
    }


def new_samples(store: JobStore, job_id: str, since: int, written: int) -> list[dict]:
    """The samples kept from the `since`-th written on, up to the `written`-th (read before:
    one written meanwhile comes with the next poll, not twice)."""
    if since >= written:
        return []
    rows = store.samples(job_id, start=since)
    return rows[: written - since] if since else rows


def verified_checkpoint(store: JobStore, job_id: str, which: str) -> tuple[bytes, int]:
    """The bytes `orchestrator checkpoint` writes, checked the same ways: the stored sha256 against
    the bytes, then a full load. (bytes, iteration); NoSuchJob, NoCheckpoint or BadCheckpoint."""
    if which not in ("latest", "best"):
        raise NoCheckpoint(f"no such checkpoint kind {which!r} (latest or best)")
    raw, meta = store.checkpoint(validate_job_id(job_id), which)
    if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
        raise BadCheckpoint(
            f"job {job_id}'s {which} checkpoint does not match its stored sha256; not served"
        )
    try:
        ck = load_checkpoint(raw, f"the job's {which} checkpoint")
    except CharRNNError as e:
        raise BadCheckpoint(str(e)) from None
    return raw, ck.iteration


def sweep_view(store: JobStore, sweep_id: str) -> dict:
    """A sweep page: the leaderboard as `orchestrator compare --json` prints it (`jobs`,
    `varying`), a scatter per varying hyperparameter, and ASHA's rungs with their decisions."""
    sw = store.get_sweep(validate_job_id(sweep_id))
    found = store.jobs(sw["job_ids"])
    names, rows = leaderboard.board(store, found)
    scatter = {}
    for n in names:
        pts = [
            {"x": r["params"][n], "y": r["best_val_loss"], "job_id": r["job_id"]}
            for r in rows
            if r["best_val_loss"] is not None and math.isfinite(r["best_val_loss"])
        ]
        scatter[n] = pts
    plan = sw["spec"].get("early_stop") or {}
    rungs = []
    fractions = plan.get("fractions")  # a tune's rungs: shares of each trial's own run
    for i, m in enumerate(plan.get("rungs") or []):
        dec = store.rung_decisions(sw["sweep_id"], m)
        rungs.append(
            {
                "iteration": f"{fractions[i]:.3g} of each trial" if fractions else m,
                "decisions": sorted(
                    ({"job_id": j, **d} for j, d in dec.items()),
                    key=lambda d: (d.get("rank") or 0, d["job_id"]),
                ),
            }
        )
    return {
        "sweep_id": sw["sweep_id"],
        "name": sw["name"],
        "created_at": sw["created_at"],
        "tags": sw["tags"],
        "spec": sw["spec"],
        "counts": leaderboard.counts(found),
        "varying": names,
        "jobs": rows,
        "scatter": scatter,
        "rungs": rungs,
        "reduction_factor": plan.get("reduction_factor"),
        "finished": all(jobs.is_terminal(j) for j in found),
    }


def sweep_curves(store: JobStore, sweep_id: str, limit: int = CURVES_MAX) -> dict:
    """The loss curves of a sweep's jobs, best first (at most `limit`), labelled by what varies,
    as `orchestrator plot` draws them. One pipelined read for all the histories."""
    sw = store.get_sweep(validate_job_id(sweep_id))
    found = store.jobs(sw["job_ids"])
    names = leaderboard.varying(found)
    ranked = leaderboard.rank(found)
    shown = ranked[:limit]
    hist = leaderboard.histories(store, shown)
    return {
        "sweep_id": sw["sweep_id"],
        "total": len(found),
        "lines": [
            {
                "job_id": j["job_id"],
                "label": leaderboard.label(j, names),
                "status": j["status"],
                **leaderboard.curves(j, hist[j["job_id"]]),
            }
            for j in shown
        ],
    }


def sweeps_list(store: JobStore, limit: int = 20) -> list[dict]:
    """Sweeps, newest first, with their status counts: what `orchestrator sweeps --json` prints.
    The counts read each job's status field alone, in one pipelined read for all the sweeps: ten
    sweeps of 1,000 jobs decoded whole (`JobStore.jobs`) would take seconds."""
    sweeps = store.list_sweeps(limit)
    statuses = iter(store.statuses([j for sw in sweeps for j in sw["job_ids"]]))
    out = []
    for sw in sweeps:
        mine = [next(statuses) for _ in sw["job_ids"]]
        out.append(
            {
                "sweep_id": sw["sweep_id"],
                "name": sw["name"],
                "created_at": sw["created_at"],
                "jobs": sw["n_jobs"],
                "counts": dict(Counter(s for s in mine if s is not None)),
            }
        )
    return out


def workers_view(store: JobStore) -> dict:
    """Every live worker (the presence registry: idle ones too) with the jobs it runs (the
    `running` index and each job's `worker` field). A job whose worker is not in the registry
    (gone, its lease not yet expired) still shows, under that worker's name."""
    running = store.list(status=Status.RUNNING.value, limit=WORKER_LIMIT)
    by_worker: dict[str, list[dict]] = {}
    for j in running:
        by_worker.setdefault(j["worker"] or "(not recorded)", []).append(job_row(j))
    alive = {w["name"]: w for w in presence.live(store.r)}
    return {
        "workers": [
            {
                **alive.get(n, {"host": ""}),
                "name": n,
                "jobs": by_worker.get(n, []),
                "alive": n in alive,
            }
            for n in sorted(set(alive) | set(by_worker))
        ],
        "counts": store.status_counts(),
    }
