"""What the chaos soak (chaos.py) reports, read from the store's own records after the soak, and
the table it prints.

Per job (`job_facts`): its status; its fencing token (how many trainers ever took it over:
worker/lease.py increments it on every acquisition); the writes the fence refused to a stale
trainer (the job's `refused` counter, incremented inside the fenced Lua script); the `finished`
events in its event list (one per trainer that wrote the job's end); and, a second witness from
the workers' logs, how many deliveries of it returned `succeeded`. A job is

- lost when acknowledged and not ended (queued or running after the drain) or gone;
- a duplicate when trained to completion by two trainers: two `finished` events, or two
  deliveries that each returned `succeeded`;
- a mismatch when it succeeded and its final checkpoint's parameters or Adagrad memories differ
  (np.array_equal) from an uninterrupted in-process run of its spec.
"""

import json
import os
import re
import sys
from collections import Counter

from charrnn import checkpoint
from worker import keys
from worker.store import TERMINAL, Status

# the stack's processes: stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from stack import reference_state

KINDS = (
    "kill_child",
    "kill_worker",
    "term_worker",
    "stop_child",
    "partition",
    "restart_redis",
    "kill_redis",
)
LABELS = {
    "kill_child": "SIGKILL a pool child",
    "kill_worker": "SIGKILL a whole worker",
    "term_worker": "SIGTERM a worker (warm shutdown)",
    "stop_child": "SIGSTOP a pool child past its lease, then SIGCONT",
    "partition": "cut a worker host off the bridge, then heal",
    "restart_redis": "restart Redis (SIGTERM, start again)",
    "kill_redis": "SIGKILL Redis (appendfsync everysec), start again",
}
ENDED = {s.value for s in TERMINAL}

# Celery's line for a task that returned: the job id and run_job's Outcome
_RETURNED = re.compile(r"Task charrnn\.train\[([0-9a-f-]{36})\] succeeded in [0-9.]+s: '(\w+)'")
_ERROR = re.compile(r": (ERROR|CRITICAL)/\w+\] (.*)")
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NUMBER = re.compile(r"(?<![A-Za-z])\d+")  # pids, addresses, counters


def log_outcomes(logs: list[str]) -> tuple[dict[str, Counter], Counter]:
    """From the workers' logs: job id -> how its deliveries ended, and the ERROR lines (job ids
    and numbers replaced, so equal messages count together)."""
    outcomes: dict[str, Counter] = {}
    errors: Counter = Counter()
    for path in logs:
        with open(path, errors="replace") as f:
            for line in f:
                m = _RETURNED.search(line)
                if m:
                    outcomes.setdefault(m.group(1), Counter())[m.group(2)] += 1
                e = _ERROR.search(line)
                if e:
                    errors[_NUMBER.sub("N", _ID.sub("ID", e.group(2)))[:160]] += 1
    return outcomes, errors


def identical(raw: bytes | None, ref) -> bool:
    """The stored final checkpoint equals the reference run, bit for bit."""
    import numpy as np

    if raw is None:
        return False
    ck = checkpoint.load(raw)
    theta, mem = ref
    return (
        ck.iteration == ck.meta["total_iterations"]
        and np.array_equal(ck.theta, theta)
        and np.array_equal(ck.mem, mem)
    )


def job_facts(r, job_ids: list[str], text: str, logs: list[str]) -> dict:
    """Job id -> what the store (and the logs) say of it; references cached per spec."""
    outcomes, errors = log_outcomes(logs)
    refs: dict[str, tuple] = {}
    facts: dict[str, dict] = {}
    for j in job_ids:
        rec = {k.decode(): v.decode() for k, v in r.hgetall(keys.job(j)).items()}
        events = [json.loads(x)["event"] for x in r.lrange(keys.events(j), 0, -1)]
        f = {
            "status": rec.get("status"),
            "error": rec.get("error") or None,
            "trainers": int(r.get(keys.fence(j)) or 0),
            "refused": int(r.get(keys.refused(j)) or 0),
            "stepped_aside": int(r.get(keys.stepped_aside(j)) or 0),
            "finished": events.count("finished"),
            "resumed": events.count("resumed"),
            "reaper_resends": events.count("requeued_by_reaper"),
            "returned": dict(outcomes.get(j, {})),
            "identical": None,
        }
        if f["status"] == Status.SUCCEEDED.value:
            hyper = json.loads(rec["spec"])["hyper"]
            key = json.dumps(hyper, sort_keys=True)
            if key not in refs:
                refs[key] = reference_state(text, hyper)
            f["identical"] = identical(r.hget(keys.checkpoint(j, "latest"), "data"), refs[key])
        facts[j] = f
    facts["_log_errors"] = dict(errors.most_common(10))
    return facts


def duplicate(f: dict) -> bool:
    return f["finished"] > 1 or f["returned"].get(Status.SUCCEEDED.value, 0) > 1


def row(facts: dict, jobs: set[str], injected: int) -> dict:
    fs = [facts[j] for j in jobs if j in facts]
    return {
        "injected": injected,
        "affected": len(jobs),
        "lost": sum(j not in facts for j in jobs) + sum(f["status"] not in ENDED for f in fs),
        "failed": sum(f["status"] == Status.FAILED.value for f in fs),
        "duplicates": sum(duplicate(f) for f in fs),
        "refused": sum(f["refused"] for f in fs),
        "resumed": sum(f["resumed"] for f in fs),
        "reaper_resends": sum(f["reaper_resends"] for f in fs),
        "stepped_aside": sum(f["stepped_aside"] for f in fs),
        "completed": sum(f["status"] == Status.SUCCEEDED.value for f in fs),
        "identical": sum(f["identical"] is True for f in fs),
        "mismatches": sum(f["identical"] is False for f in fs),
    }


def summarise(facts: dict, faults: list, acked: set[str], counts: dict, **run) -> dict:
    log_errors = facts.pop("_log_errors")
    kinds = {}
    hit: set[str] = set()
    for kind in KINDS:
        mine = [f for f in faults if f.kind == kind]
        jobs = {j for f in mine for j in f.affected}
        hit |= jobs
        kinds[kind] = row(facts, jobs, len(mine))
    everyone = set(facts) | acked
    total = row(facts, everyone, len(faults))
    total["affected"] = len(hit)
    total["jobs"] = len(everyone)
    bad = {
        j: {k: facts.get(j, {}).get(k) for k in ("status", "error", "finished", "returned")}
        for j in sorted(everyone)
        if j not in facts
        or facts[j]["status"] != Status.SUCCEEDED.value
        or duplicate(facts[j])
        or facts[j]["identical"] is False
    }
    return {
        **run,
        "kinds": kinds,
        "total": total,
        "acknowledged": len(acked),
        "stored_not_acknowledged": len(set(facts) - acked),
        "counts": counts,
        "log_errors": log_errors,
        "bad_jobs": dict(list(bad.items())[:20]),
        "faults": [vars(f) for f in faults],
    }


def render(fig: dict) -> str:
    head = (
        "| fault | injected | jobs affected | jobs lost | completed by two trainers | "
        "stale writes refused | resumed | bit-identical to an uninterrupted run |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )

    def line(label: str, x: dict) -> str:
        return (
            f"| {label} | {x['injected']} | {x['affected']} | {x['lost']} | "
            f"{x['duplicates']} | {x['refused']} | {x['resumed']} | "
            f"{x['identical']}/{x['completed']} |\n"
        )

    t = fig["total"]
    body = "".join(line(LABELS[k], fig["kinds"][k]) for k in KINDS)
    body += line(f"all {t['jobs']} jobs (each once)", t)
    c = fig["counts"]
    notes = [
        f"seed {fig['seed']}, {fig['seconds'] / 60:.1f} minutes of faults: "
        f"{t['jobs']} jobs ({fig['acknowledged']} acknowledged by submit, "
        f"{fig['stored_not_acknowledged']} stored by a submit that then failed), "
        f"{t['completed']} succeeded, {t['failed']} failed, {t['lost']} lost, "
        f"{t['duplicates']} completed twice, {t['mismatches']} not bit-identical",
        "supervisor: " + (", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "nothing"),
    ]
    if fig["log_errors"]:
        notes.append("ERROR lines in the workers' logs (count: message):")
        notes += [f"  {n}: {m}" for m, n in fig["log_errors"].items()]
    if fig["bad_jobs"]:
        notes.append("jobs that did not succeed once, bit-identical:")
        notes += [f"  {j}: {json.dumps(v)}" for j, v in fig["bad_jobs"].items()]
    return head + body + "\n" + "\n".join(notes)
