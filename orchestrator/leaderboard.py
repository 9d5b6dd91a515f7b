"""What `compare`, `plot` and a sweep's status show: the jobs behind some sweep and job ids, what
varies among them, and their ranking by best validation loss. Reads Redis in a few pipelined
round trips, whatever the number of jobs.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter

from charrnn.config import FIELDS
from worker.errors import NoSuchJob
from worker.store import JobStore


def resolve(store: JobStore, some_id: str) -> tuple[str, dict]:
    """("sweep", the sweep) or ("job", the job) for an id, as the store tells (JobStore.kind);
    NoSuchJob when it names neither. Every command taking either kind of id asks here."""
    kind = store.kind(some_id)
    if kind is None:
        raise NoSuchJob(f"no sweep or job with id {some_id}")
    return kind, (store.get_sweep(some_id) if kind == "sweep" else store.get(some_id))


def collect(store: JobStore, ids: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """The jobs of the given sweep and job ids, each once, in the order given (a sweep's jobs in
    the order of its points). Returns (jobs, sweeps). NoSuchJob for an id that is neither."""
    jobs, sweeps, seen = [], [], set()
    for some_id in ids:
        kind, obj = resolve(store, some_id)
        if kind == "sweep":
            sweeps.append(obj)
            rows = store.jobs(obj["job_ids"])
        else:
            rows = [obj]
        for j in rows:
            if j["job_id"] not in seen:
                seen.add(j["job_id"])
                jobs.append(j)
    return jobs, sweeps


def counts(jobs: list[dict]) -> dict[str, int]:
    """How many jobs are in each status."""
    return dict(Counter(j["status"] for j in jobs))


def varying(jobs: list[dict]) -> list[str]:
    """The hyperparameters (and corpus) whose values differ among the jobs, in charrnn's order."""

    def values(name):
        if name == "corpus":
            return {j["spec"].corpus for j in jobs}
        return {json.dumps(getattr(j["spec"].config, name, None)) for j in jobs}

    return [n for n in ("corpus",) + FIELDS if len(values(n)) > 1]


def params(job: dict, names: list[str]) -> dict:
    return {
        n: (
            corpus_label(job["spec"].corpus)
            if n == "corpus"
            else getattr(job["spec"].config, n, None)
        )
        for n in names
    }


def label(job: dict, names: list[str]) -> str:
    """How a job is named in a legend: what varies, or its name or short id when nothing does."""
    if names:
        return " ".join(f"{short(n)}={fmt_value(v)}" for n, v in params(job, names).items())
    return job["name"] or job["job_id"][:8]


SHORT = {
    "learning_rate": "lr",
    "hidden_size": "hidden",
    "num_layers": "layers",
    "seq_length": "seq",
}


def short(name: str) -> str:
    return SHORT.get(name, name)


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def last_samples(store: JobStore, jobs: list[dict]) -> dict[str, str | None]:
    """The first line of each job's latest sample, one round trip."""
    rows = store.last_samples([j["job_id"] for j in jobs])
    return {
        j["job_id"]: None if s is None else (s["text"].strip().splitlines() or [""])[0]
        for j, s in zip(jobs, rows, strict=True)
    }


def histories(store: JobStore, jobs: list[dict]) -> dict[str, list[list]]:
    rows = store.histories([j["job_id"] for j in jobs])
    return {j["job_id"]: h for j, h in zip(jobs, rows, strict=True)}


def rank(jobs: list[dict]) -> list[dict]:
    """Best validation loss first; then non-finite ones; jobs without one yet last; ties in the
    order given."""
    order = {j["job_id"]: i for i, j in enumerate(jobs)}

    def key(j):
        b = j["best_val_loss"]
        group = 2 if b is None else 0 if math.isfinite(b) else 1
        return (group, b if group == 0 else 0.0, order[j["job_id"]])

    return sorted(jobs, key=key)


def board(store: JobStore, jobs: list[dict]) -> tuple[list[str], list[dict]]:
    """(varying names, leaderboard rows best first): what `compare` prints."""
    names = varying(jobs)
    samples = last_samples(store, jobs)
    rows = []
    for i, j in enumerate(rank(jobs), 1):
        rows.append(
            {
                "rank": i,
                "job_id": j["job_id"],
                "status": j["status"],
                "best_val_loss": j["best_val_loss"],
                "val_loss": j["val_loss"],
                "loss": j["smooth_loss"],
                "params": params(j, names),
                "iteration": j["iteration"] or 0,
                "iterations": j["iterations"],
                "chars_per_second": j["chars_per_second"],
                "sample": samples[j["job_id"]],
                "sweep_id": j["sweep_id"],
                "name": j["name"],
            }
        )
    return names, rows


def eval_points(job: dict) -> set[int]:
    """The iterations at which a job measured its validation loss: every eval_every, the end,
    and its early-stopping rungs. (History rows written between evaluations repeat the last
    value; a plot draws only these.)"""
    spec = job["spec"]
    total = job["iterations"] or spec.total_iterations
    every = spec.config.eval_interval(spec.total_iterations)
    pts = set(range(every, total + 1, every)) if every else set()
    pts.add(total)
    pts.update(spec.rungs.milestones if spec.rungs else ())
    return pts


def curves(job: dict, history: list[list]) -> dict:
    """Training loss (smoothed, per char) and validation loss against characters seen."""
    T = job["spec"].config.seq_length
    evals = eval_points(job)
    train_x, train_y, val = [], [], {}
    for it, smooth, v in history:
        if smooth is not None and math.isfinite(smooth):
            train_x.append(it * T)
            train_y.append(smooth)
        if v is not None and it in evals:
            val[it] = v  # the last row at an iteration is the evaluation's
    val_x = sorted(val)
    return {
        "train_chars": train_x,
        "train_loss": train_y,
        "val_chars": [it * T for it in val_x],
        "val_loss": [val[it] for it in val_x],
    }


def corpus_label(path: str) -> str:
    return path if path.startswith("builtin:") else os.path.basename(path) or path
