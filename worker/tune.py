"""A tune's advance step: the next trial, proposed by Optuna's TPE from the trials so far.

A tune is a sweep (`search: tpe` in its spec) whose jobs are its trials, added one at a time.
There is no driver process and no sampler state to keep: the trials are the sweep's jobs in the
store, and whenever a proposal is needed an in-memory Optuna study is rebuilt from them (ended
trials COMPLETE with their best held-out loss, those stopped at an ASHA rung PRUNED with their
rung losses, those queued or running RUNNING, which the constant liar counts as bad so that
parallel proposals spread out), and asked once with a sampler seeded from (tune seed, trial
number). The same seed and the same results give the same proposals, in any process.

Whoever sees a trial end (its worker, at the job's end; a follower, `tune --wait` or `watch`)
calls `advance`. The trial's claim (a field of the tune's claims hash, the new trial's id or
"end") is set in the same transaction that stores the new trial's job as queued, so each ended
trial gives exactly one next trial however many ask; the message is sent after, and if it is
lost the reaper re-sends a queued job left without one (reaper.py). A new trial is made only
while the tune's deadline (Redis TIME at its creation plus its minutes) has not passed, or its
trial count is not reached, and its budget is clipped to the time left.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import redis

from charrnn import Config

from . import keys
from .spec import JobSpec, RungPlan
from .store import TERMINAL, JobStore, Status, as_text, event

log = logging.getLogger("charrnn.tune")

SEARCH = "tpe"
MIN_TRIAL_SECONDS = 20.0
"""No trial is started with less time left than this: the probe alone takes a few seconds."""
MIN_SHARE_LEFT = 1 / 3
"""A searched trial starts only with this share of a full trial's length left before the tune's
end: clipped shorter, its rungs come so early that ASHA stops it for being short, not bad, and a
big point's minute or two buys too few steps to pass its warm-up (a 30-minute tune on
tinyshakespeare: its trials clipped to 1.3-1.7 minutes failed so, those of 3 to 77 steps were
stopped). Its slot stays free for the pool meanwhile."""
CANCELLED = "cancel_requested"
"""A field of the tune's sweep record: set by `cancel`, after which no trial is added."""
TRIES = 20
"""Transactions retried when another advance of the same tune stored its trial first."""


class OptunaMissing(ImportError):
    """The `tune` extra is not installed."""


_told_missing = False


def tell_missing_once() -> None:
    """A worker without the extra logs it once, not once per trial and reaper period: the
    tunes are advanced by the workers and followers that have it."""
    global _told_missing
    if not _told_missing:
        _told_missing = True
        log.warning(
            "this worker has no Optuna: it leaves tunes' next trials to workers and followers "
            "that have it (pip install 'charrnn[tune]')"
        )


def optuna():
    try:
        import optuna as o
    except ImportError:
        raise OptunaMissing(
            "orchestrator tune needs Optuna: pip install 'charrnn[tune]' (optuna>=3)"
        ) from None
    import warnings

    o.logging.set_verbosity(o.logging.WARNING)
    warnings.filterwarnings("ignore", category=o.exceptions.ExperimentalWarning)
    return o


# --- the proposal: a pure function of the space, the seed and the trials so far --------------
def distributions(space: dict) -> dict:
    """Optuna's distribution for each parameter of a sweep-style space ({name: {choice: [...]}
    | {uniform: [lo, hi]} | {log_uniform: [lo, hi]}}), integers for integer parameters."""
    o = optuna()
    out = {}
    for name in sorted(space):
        ((kind, args),) = space[name].items()
        if kind == "choice":
            out[name] = o.distributions.CategoricalDistribution(list(args))
            continue
        lo, hi = args
        log_scale = kind == "log_uniform"
        if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool):
            out[name] = o.distributions.IntDistribution(lo, hi, log=log_scale)
        else:
            out[name] = o.distributions.FloatDistribution(float(lo), float(hi), log=log_scale)
    return out


def sampler_seed(seed: int, number: int) -> int:
    """The seed of trial `number`'s sampler: independent streams for every (tune, trial)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


SAMPLERS = ("tpe", "random")
"""tpe, or random: the baseline a tune is measured against (random search with the same
space, budget and ASHA rungs; benchmarks/bench_tune.py)."""


def propose(
    space: dict, seed: int, number: int, trials: list[dict], sampler_name: str = "tpe"
) -> dict[str, Any]:
    """Trial `number`'s parameters. `trials` are the tune's trials so far, each
    {"params", "state": complete | pruned | running | fail, "value", "rungs": {step: loss}}."""
    o = optuna()
    dists = distributions(space)
    startup = max(4, min(10, len(dists) + 1))
    sampler = (
        o.samplers.RandomSampler(seed=sampler_seed(seed, number))
        if sampler_name == "random"
        else o.samplers.TPESampler(
            seed=sampler_seed(seed, number),
            constant_liar=True,
            n_startup_trials=startup,
            multivariate=True,
        )
    )
    study = o.create_study(direction="minimize", sampler=sampler)
    states = {
        "complete": o.trial.TrialState.COMPLETE,
        "pruned": o.trial.TrialState.PRUNED,
        "running": o.trial.TrialState.RUNNING,
        "fail": o.trial.TrialState.FAIL,
    }
    for t in trials:
        params = {k: v for k, v in t["params"].items() if k in dists}
        if set(params) != set(dists):
            continue  # a trial of another space: not evidence for this one
        try:
            study.add_trial(
                o.trial.create_trial(
                    params=params,
                    distributions=dists,
                    value=t["value"] if t["state"] == "complete" else None,
                    state=states[t["state"]],
                    intermediate_values={int(k): float(v) for k, v in t["rungs"].items()},
                )
            )
        except ValueError:
            continue  # a value outside the space (a trial edited by hand)
    trial = study.ask(dists)
    return dict(trial.params)


# --- from the store's jobs to trials, and back ------------------------------------------------
def trial_of(job: dict, space: dict, rung_losses: dict[str, dict[int, float]]) -> dict:
    """A job of the tune as a trial for `propose`."""
    values = job["spec"].config.to_dict()
    params = {k: values.get(k) for k in space}
    status = job["status"]
    if status == Status.SUCCEEDED.value and job["best_val_loss"] is not None:
        state, value = "complete", job["best_val_loss"]
    elif status == Status.STOPPED.value:
        state, value = "pruned", None
    elif status in (Status.QUEUED.value, Status.RUNNING.value):
        state, value = "running", None
    else:
        state, value = "fail", None
    return {
        "params": params,
        "state": state,
        "value": value,
        "rungs": rung_losses.get(job["job_id"], {}),
    }


def rung_losses(store: JobStore, sweep_id: str, labels: list[int]) -> dict[str, dict[int, float]]:
    """Each trial's held-out loss at each rung it reached: job id -> {rung label: loss}."""
    with store.r.pipeline(transaction=False) as p:
        for label in labels:
            p.zrange(keys.rung(sweep_id, label), 0, -1, withscores=True)
        rows = p.execute()
    out: dict[str, dict[int, float]] = {}
    for label, row in zip(labels, rows, strict=True):
        for job_id, loss in row:
            out.setdefault(as_text(job_id), {})[label] = float(loss)
    return out


def is_tune(sweep: dict) -> bool:
    return sweep["spec"].get("search") == SEARCH


def trial_spec(sweep: dict, sha: str, number: int, params: dict, now: float) -> JobSpec | None:
    """Trial `number`'s job spec, its budget clipped to the time left (None when too little is
    left for a trial, or the trial count is reached)."""
    spec, t = sweep["spec"], sweep["spec"]["tune"]
    minutes = float(t["trial_minutes"])
    if t.get("deadline") is not None:
        left = (t["deadline"] - now) / 60.0
        if left * 60 < max(MIN_TRIAL_SECONDS, 60 * minutes * MIN_SHARE_LEFT):
            return None
        minutes = min(minutes, left)
    elif number >= int(t["trials"]):
        return None
    es = spec.get("early_stop")
    rungs = (
        RungPlan(sweep["sweep_id"], (), float(es["reduction_factor"]), tuple(es["fractions"]))
        if es
        else None
    )
    return _trial(sweep, sha, f"#{number}", {**spec["fixed"], **params}, rungs, minutes)


def _trial(sweep: dict, sha: str, label: str, values: dict, rungs, minutes: float) -> JobSpec:
    spec = sweep["spec"]
    return JobSpec(
        corpus_sha256=sha,
        config=Config.from_dict(values),
        total_iterations=None,
        corpus=spec["corpus"][0],
        name=f"{spec.get('name') or 'tune'} {label}",
        tags=tuple(spec.get("tags") or ()) + (keys.sweep_tag(sweep["sweep_id"]),),
        checkpoint_every=spec.get("checkpoint_every") or 1000,
        sweep_id=sweep["sweep_id"],
        rungs=rungs,
        minutes=minutes,
        deadline=spec["tune"].get("deadline"),
    )


def recipe_trial_spec(sweep: dict, sha: str, now: float) -> JobSpec | None:
    """Trial 0 of a tune with a recipe trial: the recipe for the budget (charrnn/recipes.py)
    trained for the whole budget, outside ASHA and outside the study. Hyperband's last bracket
    does the same, one configuration at full resource with no early stop: the tune is then
    never worse than the recipe alone, and the other slots search for better (None: no time)."""
    t = sweep["spec"]["tune"]
    rt = t.get("recipe_trial")
    if not rt or t.get("deadline") is None:
        return None
    left = (t["deadline"] - now) / 60.0
    if left * 60 < MIN_TRIAL_SECONDS:
        return None
    label = f"#0 ({rt['recipe']} recipe)"
    return _trial(sweep, sha, label, rt["values"], None, min(float(t["minutes"]), left))


def redis_now(r: redis.Redis) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


def next_spec(store: JobStore, sweep: dict, now: float) -> JobSpec | None:
    """The next trial's spec from the tune's trials as they stand (None: the tune adds none)."""
    spec = sweep["spec"]
    jobs = store.jobs(sweep["job_ids"])
    es = spec.get("early_stop") or {}
    losses = rung_losses(store, sweep["sweep_id"], list(es.get("rungs") or []))
    # the recipe trial is not evidence for the study: its length is the budget's, not a trial's
    recipe_job = spec["tune"].get("recipe_job")
    trials = [trial_of(j, spec["space"], losses) for j in jobs if j["job_id"] != recipe_job]
    number = len(sweep["job_ids"])
    sha = jobs[0]["spec"].corpus_sha256 if jobs else spec["tune"]["corpus_sha256"]
    if trial_spec(sweep, sha, number, {}, now) is None and spec["space"]:
        return None  # asked before proposing: a proposal costs a study
    t = spec["tune"]
    params = propose(spec["space"], int(t["seed"]), number, trials, t.get("sampler", "tpe"))
    return trial_spec(sweep, sha, number, params, now)


# --- the advance step: exactly one next trial per ended trial ---------------------------------
def advance(
    store: JobStore, sweep_id: str, ended: str, send: Callable[[str], None], by: str = "follower"
) -> str | None:
    """The next trial for the ended trial `ended`, stored and sent, if nobody did it before and
    the tune has time or trials left (the ended trial's events say which, and `by` whom).
    Returns the new trial's id (None: none made now)."""
    from .store import new_job_id

    r, claims = store.r, keys.tune_claims(sweep_id)
    for _ in range(TRIES):
        with r.pipeline(transaction=True) as p:
            try:
                # the sweep's record too: a cancel (its flag) aborts a proposal in flight
                p.watch(claims, keys.sweep_jobs(sweep_id), keys.sweep(sweep_id))
                if p.hget(claims, ended) is not None:  # (HGET: the roles' read rights)
                    return None
                sweep = store.get_sweep(sweep_id)
                status = p.hget(keys.job(ended), "status")
                if status is None or as_text(status) not in {s.value for s in TERMINAL}:
                    return None
                now = redis_now(r)
                cancelled = p.hget(keys.sweep(sweep_id), CANCELLED) == b"1"
                spec = None if cancelled else next_spec(store, sweep, now)
                new_id = new_job_id() if spec is not None else None
                p.multi()
                p.hset(claims, ended, new_id or "end")
                p.rpush(keys.events(ended), event("tune_next", trial=new_id, by=by))
                if spec is not None and new_id is not None:
                    JobStore._create(p, new_id, spec, now)
                    p.rpush(keys.sweep_jobs(sweep_id), new_id)
                    p.hset(keys.sweep(sweep_id), "n_jobs", len(sweep["job_ids"]) + 1)
                p.execute()
            except redis.WatchError:
                continue
        if new_id is not None:
            try:
                send(new_id)
            except Exception:  # noqa: BLE001 - stored queued: the reaper re-sends it
                log.exception("tune %s: trial %s stored, its message not sent", sweep_id, new_id)
            log.info("tune %s: trial %s ended; next trial %s", sweep_id, ended, new_id)
        return new_id
    return None


def advance_all(
    store: JobStore, sweep_id: str, send: Callable[[str], None], by: str = "follower"
) -> list[str]:
    """What a follower does each poll: advance every ended trial nobody advanced (its worker
    died between the trial's end and its advance, or had no Optuna). Returns new trial ids."""
    sweep = store.get_sweep(sweep_id)
    done = {as_text(k) for k in store.r.hgetall(keys.tune_claims(sweep_id))}
    ended = [
        j for j, st in zip(sweep["job_ids"], store.statuses(sweep["job_ids"]), strict=True)
        if j not in done and st in {s.value for s in TERMINAL}
    ]  # fmt: skip
    return [n for n in (advance(store, sweep_id, j, send, by) for j in ended) if n]


def after_job(store: JobStore, job_id: str, send: Callable[[str], None], by: str) -> str | None:
    """The worker's hook at a job's end: advance its tune if it is a tune's trial."""
    raw = store.r.hget(keys.job(job_id), "sweep_id")
    if not raw:
        return None
    sweep_id = as_text(raw)
    spec = store.r.hget(keys.sweep(sweep_id), "spec")
    if spec is None or json.loads(spec).get("search") != SEARCH:
        return None
    return advance(store, sweep_id, job_id, send, by)


def reap(store: JobStore, send: Callable[[str], None], by: str) -> list[str]:
    """The reaper's turn: advance every live tune's ended trials that nobody advanced (their
    worker died after the trial's end, and no follower runs), and forget tunes that are over.
    So a tune needs no process of ours, not even a follower. Returns new trial ids."""
    from .errors import NoSuchJob

    made: list[str] = []
    for raw in store.r.zrange(keys.tunes(), 0, -1):
        sweep_id = as_text(raw)
        try:
            made += advance_all(store, sweep_id, send, by)
            if finished(store, store.get_sweep(sweep_id)):
                store.r.zrem(keys.tunes(), sweep_id)
        except NoSuchJob:  # deleted
            store.r.zrem(keys.tunes(), sweep_id)
    return made


def cancel(store: JobStore, sweep_id: str) -> None:
    """No new trial from now on (set before the trials are cancelled: their ends then claim
    "end")."""
    store.r.hset(keys.sweep(sweep_id), CANCELLED, "1")


def finished(store: JobStore, sweep: dict) -> bool:
    """Every trial ended and every one advanced (to a next trial or to the tune's end)."""
    statuses = store.statuses(sweep["job_ids"])
    if any(st not in {s.value for s in TERMINAL} for st in statuses):
        return False
    claims = store.r.hgetall(keys.tune_claims(sweep["sweep_id"]))
    return all(j.encode() in claims for j in sweep["job_ids"])


def best(store: JobStore, sweep: dict) -> dict | None:
    """The tune's result: the trial whose best checkpoint has the lowest held-out loss."""
    rows = [
        j for j in store.jobs(sweep["job_ids"])
        if j["best_val_loss"] is not None and math.isfinite(j["best_val_loss"])
        and store.r.exists(keys.checkpoint(j["job_id"], "best"))
    ]  # fmt: skip
    if not rows:
        return None
    j = min(rows, key=lambda j: j["best_val_loss"])
    space = sweep["spec"].get("space") or {}
    values = j["spec"].config.to_dict()
    return {
        "job_id": j["job_id"],
        "best_val_loss": j["best_val_loss"],
        "params": {k: values.get(k) for k in space},
        "iterations": j["iterations"],
        "status": j["status"],
    }
