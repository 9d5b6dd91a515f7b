"""`orchestrator tune`: the best model for a corpus in a time budget (or a trial count), found
by the pool. A tune is a sweep (`search: tpe`) created with its first trials, one per parallel
slot; each trial that ends asks for the next (worker/tune.py), so the tune runs with no
process of ours alive. Following it (`--wait`) advances any trial nobody advanced.
"""

from __future__ import annotations

import json
import secrets
import time

import redis

from charrnn import Config, recipes
from charrnn.data import corpus_sha256, prepare
from charrnn.errors import CharRNNError
from worker import acl, keys
from worker import tune as advance
from worker.app import client_app
from worker.errors import JobTooLarge, NoCheckpoint
from worker.lease import retrying
from worker.limits import check_fits
from worker.spec import SpecError
from worker.store import JobStore, new_job_id

from . import jobs, render, sweeps, tables, tunespace
from .errors import BadInput
from .sweepfile import check_schema, localize_corpus, parse

TUNE_FILE_KEYS = ("search", "budget", "space", "parallel", "seed")


def is_tune_file(path: str) -> bool:
    """A sweep file that says `search: tpe` (False for anything unreadable: the sweep's own
    reader says what is wrong with it)."""
    try:
        return parse(path).get("search") == advance.SEARCH
    except BadInput:
        return False


def read_tune_file(path: str, corpus_given: bool) -> dict:
    """A sweep file with `search: tpe`: its budget, space, parallel and seed taken out, the
    rest (corpus, fixed, name, tags, checkpoint_every) checked as a sweep file's."""
    raw = parse(path)
    if raw.get("search") != advance.SEARCH:
        raise BadInput(f"sweep file {path}: a tune's file says `search: {advance.SEARCH}`")
    tune_part = {k: raw.pop(k) for k in TUNE_FILE_KEYS if k in raw}
    check_schema(raw, f"sweep file {path}")
    return {**localize_corpus(raw, path, corpus_given), **tune_part}


DEFAULT_PARALLEL = 2
"""Trials in flight when neither the command nor the file says, and no worker is seen yet."""


def pool_slots(store: JobStore) -> int | None:
    """The live workers' slots (their concurrency, summed): a tune's default parallelism, so a
    pool of eight runs eight trials at once (None: no worker seen, or its presence unreadable)."""
    from worker import presence

    try:
        n = sum(w["concurrency"] or 1 for w in presence.live(store.r))
    except redis.RedisError:
        return None
    return n or None


def plan(
    corpus: str,
    minutes: float | None,
    trials: int | None,
    trial_minutes: float | None,
    parallel: int | None,
    seed: int | None,
    file: dict | None,
    name: str | None,
    tags: tuple[str, ...],
    sampler: str = "tpe",
    recipe_trial: bool = True,
) -> tuple[str, dict]:
    """The tune's text and spec, every point it may propose checked against the corpus and the
    pool's limits (BadInput: one line, nothing stored)."""
    try:
        advance.optuna()  # the extra first: without it nothing else matters
    except advance.OptunaMissing as e:
        raise BadInput(str(e)) from None
    file = dict(file or {})
    budget = file.get("budget") or {}
    minutes = minutes if minutes is not None else budget.get("minutes")
    trials = trials if trials is not None else budget.get("trials")
    if (minutes is None) == (trials is None):
        raise BadInput("give the tune a budget: --minutes M or --trials N (one of them)")
    corpus = corpus or _one_corpus(file.get("corpus"))
    text, fixed = _read(corpus, file.get("fixed") or {})
    vocab, train, _ = prepare(text, fixed.get("val_fraction", 0.1), 1)
    n_train = len(train)
    if fixed.get("val_fraction", 0.1) <= 0 or n_train < 2:
        raise BadInput(f"corpus {corpus} is too small to split into training and held-out text")
    parallel = parallel or _parallel(file.get("parallel"))
    trial = _trial_minutes(minutes, trial_minutes, parallel)
    space = file.get("space") or tunespace.default_space(n_train, trial)
    if not space:
        raise BadInput(
            f"corpus {corpus} is too small to tune on ({n_train:,} training characters; "
            f"give a space of smaller batch_size and seq_length)"
        )
    space = {sweeps.param_name(k): sweeps._distribution(sweeps.param_name(k), d)
             for k, d in space.items()}  # fmt: skip
    _check_corners(corpus, fixed, space)
    # the recipe trial: with a time budget, the default space and a slot to spare
    with_recipe = recipe_trial and parallel > 1 and not file.get("space")
    spec = {
        "search": advance.SEARCH,
        "name": name or file.get("name"),
        "tags": list(tags) or file.get("tags") or [],
        "corpus": [corpus],
        "fixed": fixed,
        "space": space,
        "early_stop": {
            "scheduler": "asha",
            "reduction_factor": tunespace.REDUCTION_FACTOR,
            "fractions": list(tunespace.RUNG_FRACTIONS),
            "rungs": [advance_label(x) for x in tunespace.RUNG_FRACTIONS],
        },
        "checkpoint_every": file.get("checkpoint_every") or 500,
        "tune": {
            "seed": int(seed if seed is not None else file.get("seed", secrets.randbits(32))),
            "minutes": minutes,
            "trials": trials,
            "trial_minutes": trial,
            "parallel": parallel,
            "sampler": sampler,
            "corpus_sha256": corpus_sha256(text),
            "recipe_trial": (
                _recipe_trial(file, minutes, vocab.size, len(text))
                if with_recipe and minutes
                else None
            ),
        },
    }
    sweeps.check_tags(spec["tags"])
    return text, spec


def _parallel(given) -> int:
    if given is None:
        return DEFAULT_PARALLEL
    if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= 1000:
        raise BadInput(f"a tune file's parallel is a whole number from 1 to 1000, not {given!r}")
    return given


def _trial_minutes(minutes: float | None, given: float | None, parallel: int) -> float:
    """A full trial's length: as given, or from the budget (BadInput: too short for one)."""
    if minutes is not None:
        trial = given or tunespace.trial_minutes(minutes, parallel)
        if minutes < tunespace.MIN_TRIAL_MINUTES or trial > minutes:
            raise BadInput(
                f"{minutes:g} minutes are too short for one trial (at least "
                f"{max(tunespace.MIN_TRIAL_MINUTES, given or 0):g})"
            )
    else:
        trial = given or 1.0
    if trial < tunespace.MIN_TRIAL_MINUTES:
        raise BadInput(f"a trial needs at least {tunespace.MIN_TRIAL_MINUTES:g} minutes")
    return trial


def _recipe_trial(file: dict, minutes: float, vocab_size: int, chars: int) -> dict | None:
    """The recipe for the budget, the user's fixed values over it; None when it does not fit
    the pool's limits (the tune then searches with every slot)."""
    r = recipes.for_budget(minutes)
    given = {sweeps.param_name(k): sweeps._typed(sweeps.param_name(k), v)
             for k, v in (file.get("fixed") or {}).items()}  # fmt: skip
    values = {**tunespace.FIXED, **r.values, **given}
    try:
        check_fits(Config.from_dict(values), vocab_size, chars)  # the corpus read once, above
    except (CharRNNError, JobTooLarge):
        return None
    return {"recipe": r.name, "values": values}


def advance_label(x: float) -> int:
    from worker.spec import fraction_label

    return fraction_label(x)


def _one_corpus(c) -> str:
    if not c:
        raise BadInput("a tune needs a corpus (--corpus PATH, or `corpus:` in the file)")
    if isinstance(c, list):
        if len(c) != 1:
            raise BadInput("a tune runs on one corpus")
        return c[0]
    return c


def _read(corpus: str, fixed: dict) -> tuple[str, dict]:
    fixed = {**tunespace.FIXED, **{sweeps.param_name(k): v for k, v in fixed.items()}}
    fixed = {k: sweeps._typed(k, v) for k, v in fixed.items()}
    for k in ("iterations", "epochs"):
        if fixed.get(k) is not None:
            raise BadInput(f"a tune's trials run for its budget: {k} may not be fixed")
    text, _ = jobs.validate(corpus, [{**fixed, "iterations": 10**6}])
    return text, fixed


def _check_corners(corpus: str, fixed: dict, space: dict) -> None:
    """The space's largest points must fit the pool's limits and the corpus."""
    points = []
    for corner in tunespace.corners(space):
        hyper = {**fixed, **corner, "iterations": 10**6}
        try:
            Config.from_dict(hyper)
        except CharRNNError as e:
            raise BadInput(f"the tune's space has a point that cannot run: {e}") from None
        points.append(hyper)
    try:
        jobs.validate(corpus, points)
    except (CharRNNError, JobTooLarge) as e:
        raise BadInput(
            f"the tune's space reaches outside the limits: its largest point: {e}"
        ) from None


def create(store: JobStore, url: str, text: str, spec: dict) -> tuple[str, list[str]]:
    """Store the tune (a sweep) with its first trials in one transaction, its deadline from
    Redis's clock, then send them. Returns (tune id, first trial ids)."""
    sweep_id = new_job_id()
    store.put_corpus(text)
    now = advance.redis_now(store.r)
    t = spec["tune"]
    if t["minutes"] is not None:
        t["deadline"] = now + 60.0 * t["minutes"]
    sweep = {"sweep_id": sweep_id, "spec": spec, "job_ids": []}
    job_specs = []
    if t.get("recipe_trial"):  # trial 0, in the first slot
        s = advance.recipe_trial_spec(sweep, t["corpus_sha256"], now)
        if s is None:
            raise BadInput("the budget is too short for one trial")
        t["recipe_job"] = new_job_id()
        job_specs.append((t["recipe_job"], s))
    slots = t["parallel"] - len(job_specs)
    trials: list[dict] = []
    for number in range(len(job_specs), len(job_specs) + min(slots, t["trials"] or slots)):
        # each proposed with the ones before it running
        params = advance.propose(spec["space"], t["seed"], number, [
            {"params": p, "state": "running", "value": None, "rungs": {}} for p in trials
        ], t["sampler"])  # fmt: skip
        trials.append(params)
        s = advance.trial_spec(sweep, t["corpus_sha256"], number, params, now)
        if s is None:
            raise BadInput("the budget is too short for one trial")
        job_specs.append((new_job_id(), s))
    try:
        store.create_sweep(sweep_id, spec.get("name"), spec, job_specs, tuple(spec["tags"]))
        store.r.zadd(keys.tunes(), {sweep_id: now})  # live: the reaper advances it too
        app = client_app(url)
        for job_id, _ in job_specs:
            jobs._enqueue(app, job_id)
    except SpecError:
        raise
    except Exception:
        jobs._undo(store, [j for j, _ in job_specs], {t["corpus_sha256"]}, sweep_id)
        raise
    return sweep_id, [j for j, _ in job_specs]


def as_job(store: JobStore, some_id: str, best: bool) -> tuple[str, bool]:
    """(job id, best) for a command that reads one job: a tune's id stands for its result, the
    best trial's best checkpoint; any other id is left as it is."""
    if store.kind(some_id) != "sweep":
        return some_id, best
    sw = store.get_sweep(some_id)
    if not advance.is_tune(sw):
        return some_id, best
    b = advance.best(store, sw)
    if b is None:
        raise NoCheckpoint(f"tune {some_id} has no trial with a best checkpoint yet")
    return b["job_id"], True


def is_tune(sw: dict) -> bool:
    return advance.is_tune(sw)


def cancel(store: JobStore, sweep_id: str) -> None:
    advance.cancel(store, sweep_id)


def follow(
    store: JobStore, url: str, sweep_id: str, quiet: bool, stderr: bool = True, poll: float = 1.0
) -> dict:
    """Follow a tune to its end, advancing any ended trial nobody advanced (its worker died
    between the trial's end and the advance), its trials' table live; returns its result
    {"tune_id", "trials", "best"}."""
    from rich.live import Live

    app = client_app(url)

    def send(job_id: str) -> None:
        jobs._enqueue(app, job_id)

    may_advance = [True]

    def step() -> tuple[dict, list[dict], bool]:
        if may_advance[0]:
            try:
                retrying(advance.advance_all, store, sweep_id, send)
            except redis.ResponseError as e:
                if not acl.is_denied(e):
                    raise
                may_advance[0] = False  # the viewer's user: follow, and leave it to the workers
        sw = retrying(store.get_sweep, sweep_id)
        return sw, retrying(store.jobs, sw["job_ids"]), retrying(advance.finished, store, sw)

    console = render.console(stderr=stderr, quiet=quiet)
    sw, rows, done = step()
    if not console.is_terminal:
        while not done:
            time.sleep(poll)
            sw, rows, done = step()
        console.print(tables.sweep_table(sw, rows, console.width))
        return result(store, sw)
    with Live(console=console, refresh_per_second=2) as live:
        while True:
            live.update(tables.sweep_table(sw, rows, console.width), refresh=True)
            if done:
                break
            time.sleep(poll)
            sw, rows, done = step()
    return result(store, sw)


def result(store: JobStore, sw: dict) -> dict:
    return {
        "tune_id": sw["sweep_id"],
        "trials": len(sw["job_ids"]),
        "best": advance.best(store, sw),
    }


def summary(spec: dict) -> str:
    t = spec["tune"]
    budget = f"{t['minutes']:g} minutes" if t["minutes"] is not None else f"{t['trials']} trials"
    rt = t.get("recipe_trial")
    recipe = f"the {rt['recipe']} recipe for the whole budget and " if rt else ""
    return (
        f"tune: {budget}, {recipe}trials of {t['trial_minutes']:g} min, {t['parallel']} at a "
        f"time, {t['sampler'].upper()} seed {t['seed']}, ASHA at 1/9 and 1/3 of each trial; "
        "space " + json.dumps(spec["space"], separators=(",", ":"))
    )
