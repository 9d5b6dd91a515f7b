"""Asynchronous successive halving (ASHA, Li et al. 2020, "A System for Massively Parallel
Hyperparameter Tuning"), in the stop-or-continue form Ray Tune's AsyncHyperBandScheduler uses.

A sweep has rungs at iteration milestones and a reduction factor eta. A job that reaches a rung
evaluates its validation loss there and records it; among the n jobs of its sweep that have
reached that rung so far (itself included) it continues only if its rank is within the top
ceil(n / eta), and otherwise stops (status `stopped`, its checkpoint at the rung kept). The first
job to reach a rung always continues: nobody has set the bar yet. No job waits for another, so a
sweep runs on any number of workers at once.

The record and the decision are one Lua script, so two workers reaching a rung at the same moment
are ordered by Redis, and the script is fenced like every other write of a trainer. A decision is
stored with the job: a job that reaches the same rung again (resumed after a crash, rolled back
after divergence) gets the decision it got the first time.
"""

from __future__ import annotations

import json
import math

from . import keys, scripts
from .errors import LostLease
from .lease import Lease, retrying
from .spec import RungPlan

# KEYS: rung zset, decisions hash, fence. ARGV: job id, val loss, eta, token, iteration.
# Returns the decision JSON. Ties count for the job (it continues when it equals the cutoff).
DECIDE = """
if redis.call('GET', KEYS[3]) ~= ARGV[4] then return false end
local seen = redis.call('HGET', KEYS[2], ARGV[1])
if seen then return seen end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[2]) + 1
local keep = math.ceil(n / tonumber(ARGV[3]))
local d = cjson.encode({continue = rank <= keep, rank = rank, reached = n, keep = keep,
                        val_loss = tonumber(ARGV[2]), iteration = tonumber(ARGV[5])})
redis.call('HSET', KEYS[2], ARGV[1], d)
return d
"""


def default_rungs(
    max_iterations: int, reduction_factor: float, grace_period: int | None, count: int = 3
) -> list[int]:
    """Milestones r, r*eta, r*eta^2, ... below the longest job. Without a grace period r, the
    first rung sits `count` factors of eta below the end, so a sweep gets `count` rungs."""
    # rounded up: rounded down, r * eta^count lands just below the end and adds a fourth rung
    r = grace_period or max(1, math.ceil(max_iterations / reduction_factor**count))
    out: list[int] = []
    m = float(r)
    while round(m) < max_iterations:
        if not out or round(m) > out[-1]:
            out.append(int(round(m)))
        m *= reduction_factor
    return out


def decide(lease: Lease, rungs: RungPlan, milestone: int, job_id: str, val_loss: float) -> dict:
    """Record the job's loss at a rung and return the decision {"continue", "rank", "reached",
    "keep", "val_loss", "iteration"}. LostLease when another trainer holds the job."""
    script = scripts.Script(lease.r, DECIDE)
    raw = retrying(
        script,
        [
            keys.rung(rungs.sweep_id, rungs.label(milestone)),
            keys.rung_decisions(rungs.sweep_id, rungs.label(milestone)),
            keys.fence(job_id),
        ],
        [job_id, repr(float(val_loss)), repr(rungs.reduction_factor), lease.token, milestone],
    )
    if raw is None:
        raise LostLease(f"job {job_id}: another trainer holds it now")
    return json.loads(raw)
