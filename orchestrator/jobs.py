"""The orchestrator's logic, as plain functions the Click commands call."""

from __future__ import annotations

import logging
import time

from charrnn import Config, read_corpus
from charrnn.data import corpus_sha256, prepare
from charrnn.trainer import Trainer
from worker import broker, keys, settings
from worker.app import QUEUE, TASK_NAME, client_app
from worker.job import message_headers
from worker.lease import retrying
from worker.limits import check_fits
from worker.spec import DEFAULT_CHECKPOINT_EVERY, JobSpec, RungPlan
from worker.store import TERMINAL, JobStore, Status, new_job_id

log = logging.getLogger("charrnn.orchestrator")

STATUS_FIELDS = (
    "job_id",
    "status",
    "iteration",
    "iterations",
    "smooth_loss",  # train_loss under its first name, kept for its readers
    "train_loss",
    "val_loss",
    "chars_per_second",
    "worker",
    "submitted_at",
    "started_at",
    "finished_at",
    "error",
    "waiting",
    "unreadable",
)


def validate(corpus: str, hyper_sets: list[dict]) -> tuple[str, list[tuple[Config, int]]]:
    """Read the corpus and check every hyperparameter set against it, as a trainer would.
    Returns (text, [(config, total iterations)]); CharRNNError subclasses on bad input."""
    text = read_corpus(corpus, max_bytes=settings.MAX_CORPUS_BYTES)
    out, n_train = [], {}
    for hyper in hyper_sets:
        cfg = Config.from_dict(hyper)
        split = (cfg.val_fraction, cfg.seq_length)
        if split not in n_train:  # a sweep encodes the corpus once per distinct split
            vocab, train, _ = prepare(text, *split)
            n_train[split] = (vocab.size, len(train))
        vocab_size, n = n_train[split]
        check_fits(cfg, vocab_size, len(text))
        out.append((cfg, Trainer.iterations_for(cfg, n)))
    return text, out


def submit_sweep(
    store: JobStore,
    url: str,
    spec: dict,
    texts: dict[str, str],
    points: list[tuple[str, Config, int]],
) -> tuple[str, list[str]]:
    """Upload each corpus once, store the sweep and all its jobs in one transaction, then enqueue
    the jobs in the order of their points. Returns (sweep id, job ids)."""
    sweep_id = new_job_id()
    shas = {corpus: corpus_sha256(text) for corpus, text in texts.items()}  # put_corpus's ids
    es = spec.get("early_stop")
    rungs = RungPlan(sweep_id, tuple(es["rungs"]), es["reduction_factor"]) if es else None
    tags = JobSpec.check_user_tags(spec.get("tags") or ())
    job_specs = [
        (
            new_job_id(),
            JobSpec(
                corpus_sha256=shas[corpus],
                config=cfg,
                total_iterations=total,
                corpus=corpus,
                name=spec.get("name"),
                tags=tags + (keys.sweep_tag(sweep_id),),
                checkpoint_every=spec.get("checkpoint_every") or DEFAULT_CHECKPOINT_EVERY,
                sweep_id=sweep_id,
                rungs=rungs,
            ),
        )
        for corpus, cfg, total in points
    ]
    sending, uploaded = False, set()
    try:
        for text in texts.values():
            sha, new = store.put_corpus(text)
            if new:
                uploaded.add(sha)
        store.create_sweep(sweep_id, spec.get("name"), spec, job_specs, tags)
        app = client_app(url)
        sending = True
        for job_id, _ in job_specs:
            _enqueue(app, job_id)
    except Exception:
        # a store that filled up part way (or went away): the sweep is stored whole or not at all
        _undo(store, [j for j, _ in job_specs], uploaded, sweep_id, sending)
        raise
    return sweep_id, [j for j, _ in job_specs]


def _undo(
    store: JobStore,
    job_ids: list[str],
    shas: set[str],
    sweep_id: str | None = None,
    sending: bool = True,
):
    """Take back a submit that could not finish (Redis refused a write, full, or went away):
    messages still in the queue (if it had begun `sending` them), then the records, then the
    corpora it uploaded (`shas`) if no job uses them. Deleting frees
    memory, so a full store accepts all of it. A message a worker already took finds no record
    and is dropped with a log line. If this fails too (Redis gone), the first error is still the
    one raised, and this one is said on stderr: a record left without its message is re-sent by
    the reaper, or removed with `delete`."""
    try:
        if sending:
            broker.withdraw(store.r, job_ids, QUEUE)
        if sweep_id is not None and store.kind(sweep_id) == "sweep":
            store.delete_sweep(sweep_id)
        for job_id in job_ids:
            if store.kind(job_id) == "job":
                store.delete(job_id)
        for sha in shas:
            store.collect(sha)
    except Exception as e:  # noqa: BLE001 - the submit's own error is the one raised
        log.warning(
            "warning: could not take back the submit (%s: %s); %s may stay in the store: "
            "the reaper re-sends a queued job without a message, `delete` removes it",
            type(e).__name__,
            e,
            ", ".join(job_ids) if len(job_ids) <= 3 else f"{len(job_ids)} jobs",
        )


def _enqueue(app, job_id: str) -> None:
    app.send_task(
        TASK_NAME,
        args=[job_id],
        task_id=job_id,
        queue=QUEUE,
        headers=message_headers(),
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )


def submit(
    store: JobStore,
    url: str,
    corpus: str,
    text: str,
    cfg: Config,
    total: int | None,
    checkpoint_every: int | None,
    name: str | None,
    tags: tuple[str, ...],
    minutes: float | None = None,
) -> tuple[str, bool]:
    """Upload the corpus (once per sha256), record the job, enqueue its id.
    Returns (job id, whether the corpus was uploaded)."""
    sha, uploaded = store.put_corpus(text)
    job_id = new_job_id()
    spec = JobSpec(
        corpus_sha256=sha,
        config=cfg,
        total_iterations=total,
        corpus=corpus,
        name=name,
        tags=JobSpec.check_user_tags(tags),
        checkpoint_every=checkpoint_every or DEFAULT_CHECKPOINT_EVERY,
        minutes=minutes,
    )
    sending = False
    try:
        store.create(job_id, spec)
        sending = True
        _enqueue(client_app(url), job_id)
    except Exception:
        # never a record without its message (a full store refused the message, say)
        _undo(store, [job_id], {sha} if uploaded else set(), sending=sending)
        raise
    return job_id, uploaded


def status_view(job: dict) -> dict:
    """The status fields, and a job's budget in minutes when it was given one (its iterations
    are null until a worker settles the budget)."""
    out = {k: job.get(k) for k in STATUS_FIELDS}
    spec = job.get("spec")
    if spec is not None and spec.minutes is not None:
        out["minutes"] = spec.minutes
    return out


def is_terminal(job: dict) -> bool:
    return job["status"] in {s.value for s in TERMINAL}


def wait(store: JobStore, job_id: str, on_update, poll: float = 0.5) -> dict:
    """Poll a job until it ends, calling on_update(job, new_samples) on each change. Rides out a
    Redis restart (up to STORE_RETRY_SECONDS) instead of abandoning a job it is watching."""
    seen = retrying(store.sample_count, job_id)  # show only samples that arrive from now on
    while True:
        job = retrying(store.get, job_id)
        new = retrying(store.samples, job_id, False, seen)
        seen += len(new)
        on_update(job, new)
        if is_terminal(job):
            return job
        time.sleep(poll)


def wait_all(store: JobStore, job_ids: list[str], on_update, poll: float = 1.0) -> list[dict]:
    """Poll many jobs (one round trip each time) until every one has ended."""
    while True:
        rows = retrying(store.jobs, job_ids)
        on_update(rows)
        if all(is_terminal(j) for j in rows):
            return rows
        time.sleep(poll)


def stopped_with_error(job: dict) -> bool:
    return job["status"] in (Status.FAILED.value, Status.CANCELLED.value)
