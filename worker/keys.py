"""Every Redis key of the job store, one function per entity, all under one prefix.

    charrnn:job:{id}                 hash    the job record (status, spec, metrics, times, token)
    charrnn:job:{id}:history         list    JSON [iteration, smooth_loss, val_loss]
    charrnn:job:{id}:samples         list    JSON {"iteration", "text"}
    charrnn:job:{id}:events          list    JSON {"t", "event", "host", ...}
    charrnn:job:{id}:ckpt:{which}    hash    data (the .npz bytes), sha256, iteration; which is
                                             latest, previous or best
    charrnn:job:{id}:lease           string  "token worker", expires unless renewed
    charrnn:job:{id}:fence           string  fencing token counter (INCR on every takeover)
    charrnn:job:{id}:stepped_aside   string  count of duplicate deliveries that stepped aside
    charrnn:job:{id}:refused         string  count of writes refused to a stale trainer (fenced off)
    charrnn:job:{id}:reaped          string  what a reaper last re-sent the job for: the fencing
                                             token (running), queued:{deliveries} (queued)
    charrnn:jobs                     zset    every job id, scored by submit time
    charrnn:status:{status}          zset    job ids by status, scored by submit time
    charrnn:tag:{tag}                zset    job ids by tag, scored by submit time
    charrnn:corpus:{sha256}          string  corpus text, UTF-8
    charrnn:corpus_jobs:{sha256}     set     the jobs that use a corpus; it goes with the last
    charrnn:sweep:{id}               hash    the sweep record (name, spec, job count, times)
    charrnn:sweep:{id}:jobs          list    its job ids, in the order of its points
    charrnn:sweep:{id}:rung:{iter}   zset    job ids scored by validation loss at that ASHA rung
    charrnn:sweep:{id}:rung:{iter}:decisions  hash  job id -> JSON decision (continue or stop)
    charrnn:sweep:{id}:tune:claims   hash    a tune's ended trial -> the trial it gave, or "end"
    charrnn:sweeps                   zset    every sweep id, scored by creation time
    charrnn:tunes                    zset    tunes not yet over (the reaper advances them)
    charrnn:reaper:turn              string  the reaper whose turn this period is; expires
    charrnn:reaper:sightings:{kind}  hash    job id -> fencing token (running) or deliveries
                                             (queued) when the last scan saw it unattended
    charrnn:workers                  zset    worker names, scored by when each last said it lives
    charrnn:worker:{name}            hash    a worker's host, pid, concurrency, start time;
                                             expires unless renewed (see presence.py)
    charrnn:dead_letters             list    JSON {"at", "queue", "reason", "item"}: items taken
                                             off a queue that were not our task messages, newest
                                             first, at most broker.DEAD_LETTER_CAP

A job of a sweep carries `sweep_id` in its record and the tag `sweep:{id}`.

Celery's Redis transport (kombu) keeps its own keys beside ours, in the same database (the
queue `charrnn`, `unacked`, `_kombu.binding.*`): worker/broker.py is the one module that knows
their layout.
"""

PREFIX = "charrnn:"
CHECKPOINT_KINDS = ("latest", "previous", "best")


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def history(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:history"


def samples(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:samples"


def events(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:events"


def checkpoint(job_id: str, which: str) -> str:
    assert which in CHECKPOINT_KINDS, which
    return f"{PREFIX}job:{job_id}:ckpt:{which}"


def lease(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:lease"


def fence(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:fence"


def stepped_aside(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:stepped_aside"


def refused(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:refused"


REAPER_TURN = f"{PREFIX}reaper:turn"


def reaper_sightings(kind: str) -> str:
    assert kind in ("running", "queued"), kind
    return f"{PREFIX}reaper:sightings:{kind}"


def reaped(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:reaped"


def job_keys(job_id: str) -> list[str]:
    """Everything a job owns, for delete."""
    return [
        job(job_id),
        history(job_id),
        samples(job_id),
        events(job_id),
        lease(job_id),
        fence(job_id),
        stepped_aside(job_id),
        refused(job_id),
        reaped(job_id),
    ] + [checkpoint(job_id, k) for k in CHECKPOINT_KINDS]


def jobs_by_time() -> str:
    return f"{PREFIX}jobs"


def status_index(status: str) -> str:
    return f"{PREFIX}status:{status}"


def tag_index(tag: str) -> str:
    return f"{PREFIX}tag:{tag}"


def sweep(sweep_id: str) -> str:
    return f"{PREFIX}sweep:{sweep_id}"


def sweep_jobs(sweep_id: str) -> str:
    return f"{PREFIX}sweep:{sweep_id}:jobs"


def rung(sweep_id: str, milestone: int) -> str:
    return f"{PREFIX}sweep:{sweep_id}:rung:{int(milestone)}"


def rung_decisions(sweep_id: str, milestone: int) -> str:
    return f"{PREFIX}sweep:{sweep_id}:rung:{int(milestone)}:decisions"


def tune_claims(sweep_id: str) -> str:
    """A tune's advance claims (worker/tune.py): one field per ended trial, set once."""
    return f"{PREFIX}sweep:{sweep_id}:tune:claims"


def tunes() -> str:
    return f"{PREFIX}tunes"


def sweeps_by_time() -> str:
    return f"{PREFIX}sweeps"


def sweep_tag(sweep_id: str) -> str:
    """The tag every job of a sweep carries (so `list --tag sweep:ID` works too)."""
    return f"sweep:{sweep_id}"


def workers() -> str:
    return f"{PREFIX}workers"


def worker(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def corpus_jobs(sha256: str) -> str:
    return f"{PREFIX}corpus_jobs:{sha256}"


def corpus(sha256: str) -> str:
    return f"{PREFIX}corpus:{sha256}"


DEAD_LETTERS = f"{PREFIX}dead_letters"
