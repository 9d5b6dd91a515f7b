"""The job store: job records, their results and the corpora, in Redis.

Read `keys.py` for the data model on one screen. Status, metrics and times change together: in
MULTI/EXEC here (client-side transitions), or inside the fenced Lua script of `lease.py` (a
trainer's writes). Results never expire; `delete` and `prune` remove them.
"""

from __future__ import annotations

import builtins
import json
import time
import uuid
from enum import Enum
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from charrnn.data import corpus_sha256

from . import keys, settings
from .errors import CorpusTooLarge, InvalidJobId, NoCheckpoint, NoSuchCorpus, NoSuchJob, Unreachable
from .spec import JobSpec

# KEYS: the corpus's job set, the corpus. Deletes the corpus when no job refers to it.
COLLECT_CORPUS = """
if redis.call('SCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) return 1 end
return 0
"""

# KEYS: keys to delete, then sorted sets and then sets to remove ARGV[1] from. ARGV: the member
# (a job or sweep id), how many keys to delete, how many sorted sets.
# A script, not MULTI/EXEC: Redis at its maxmemory refuses every command queued in a MULTI,
# deletes included, while a script may delete (DEL, ZREM, SREM never need memory). Deleting is
# how a full store is given room again, so it must work when the store is full.
REMOVE = """
local n_del, n_zsets = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n_del do redis.call('DEL', KEYS[i]) end
for i = n_del + 1, n_del + n_zsets do redis.call('ZREM', KEYS[i], ARGV[1]) end
for i = n_del + n_zsets + 1, #KEYS do redis.call('SREM', KEYS[i], ARGV[1]) end
return 1
"""


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"  # stopped early by its sweep's scheduler (ASHA); keeps its checkpoint


TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.STOPPED)
FLOAT_FIELDS = (
    "smooth_loss",
    "val_loss",
    "best_val_loss",
    "chars_per_second",
    "learning_rate",
    "submitted_at",
    "started_at",
    "finished_at",
)
INT_FIELDS = (
    "iteration",
    "iterations",
    "restarts",
    "rollbacks",
    "deliveries",
    "attempts",
    "samples_written",
)


def redact(url: str) -> str:
    """The URL with its secrets masked: everything between '//' and the last '@' (user and
    password; right even for passwords holding '/', '#', '?' or '@', which a URL parser splits
    elsewhere), and the value of every query parameter whose name, decoded as redis-py decodes
    it, holds "pass" (`?password=`, `&Pass%77ord=`). The one rule for every message and log line
    that names a Redis URL."""
    from urllib.parse import unquote_plus

    head, sep, rest = url.partition("//")
    at = rest.rfind("@")
    if sep and at >= 0:
        rest = "***@" + rest[at + 1 :]
    path, q, query = rest.partition("?")
    if q:
        query = "&".join(
            f"{k}=***" if "pass" in unquote_plus(k).lower() and eq else k + eq + v
            for k, eq, v in (p.partition("=") for p in query.split("&"))
        )
    return head + sep + path + q + query


def connect(url: str) -> redis.Redis:
    """A client that fails fast (connect timeout, one retry), for the orchestrator and workers."""
    if url.startswith("redis+socket://"):  # Celery's spelling of a unix socket (worker.app)
        parts = urlsplit(url)
        db = parse_qs(parts.query).get("virtual_host", ["0"])[0]
        url = urlunsplit(("unix", parts.netloc, parts.path, f"db={db}", ""))
    try:
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=settings.CONNECT_TIMEOUT,
            socket_timeout=settings.SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
    except ValueError as e:
        raise Unreachable(f"bad Redis URL {redact(url)}: {e}") from None


def validate_job_id(job_id: str) -> str:
    """The canonical form of a job id, or InvalidJobId: ids go into keys only once checked."""
    try:
        return str(uuid.UUID(str(job_id)))
    except ValueError:
        raise InvalidJobId(f"not a job id: {str(job_id)[:80]!r} (job ids are UUIDs)") from None


def new_job_id() -> str:
    return str(uuid.uuid4())


def status_moves(job_id: str, new: Status, score: float) -> list[tuple[str, ...]]:
    """Commands that move a job into one status index and out of the others."""
    ops: list[tuple[str, ...]] = [
        ("ZREM", keys.status_index(s.value), job_id) for s in Status if s != new
    ]
    ops.append(("ZADD", keys.status_index(new.value), repr(score), job_id))
    return ops


def event(name: str, **fields) -> str:
    return json.dumps({"t": time.time(), "event": name, **fields})


def as_text(v: object) -> str:
    """A Redis string reply as text. redis-py types replies as bytes or str (it depends on
    decode_responses, off for this store: bytes); anything else is a bug, said at once."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, str):
        return v
    raise TypeError(f"expected a Redis string reply, got {type(v).__name__}")


def as_bytes(v: object) -> bytes:
    """A Redis string reply as the bytes stored (checkpoints): see as_text."""
    if isinstance(v, bytes):
        return v
    raise TypeError(f"expected a Redis bytes reply, got {type(v).__name__}")


def _num(v: str | None, kind):
    if v in ("", None):
        return None
    try:
        return kind(v)
    except ValueError:
        return None


def decode_job(raw: dict) -> dict:
    d = {k.decode(): v.decode() for k, v in raw.items()}
    job = {
        "job_id": d.get("job_id"),
        "name": d.get("name") or None,
        "tags": json.loads(d.get("tags") or "[]"),
        "status": d.get("status"),
        "spec": JobSpec.from_json(d["spec"]),
        "worker": d.get("worker") or None,
        "error": d.get("error") or None,
        # why a running job is not training now ("store full: ... waiting for space"), or None
        "waiting": d.get("waiting") or None,
        "sweep_id": d.get("sweep_id") or None,
        "cancel_requested": d.get("cancel_requested") == "1",
    }
    for f in FLOAT_FIELDS:
        job[f] = _num(d.get(f), float)
    for f in INT_FIELDS:
        job[f] = _num(d.get(f), int)
    job["restarts"] = job["restarts"] or 0
    job["rollbacks"] = job["rollbacks"] or 0
    return job


class JobStore:
    def __init__(self, r: redis.Redis):
        self.r = r

    # --- corpora ------------------------------------------------------------------------------
    def put_corpus(self, text: str) -> tuple[str, bool]:
        """Store a corpus by sha256 once. Returns (sha256, uploaded): a second submit of the same
        text checks its hash and uploads nothing."""
        raw = text.encode("utf-8")
        if len(raw) > settings.MAX_CORPUS_BYTES:
            raise CorpusTooLarge(
                f"corpus is {len(raw):,} bytes, above the limit of "
                f"{settings.MAX_CORPUS_BYTES:,} (CHARRNN_MAX_CORPUS_BYTES)"
            )
        sha = corpus_sha256(text)  # the id the trainer checks checkpoints against
        if self.r.exists(keys.corpus(sha)):
            return sha, False
        return sha, bool(self.r.set(keys.corpus(sha), raw, nx=True))

    def get_corpus(self, sha: str) -> str:
        raw = self.r.get(keys.corpus(sha))
        if raw is None:
            raise NoSuchCorpus(
                f"corpus {sha[:12]} is not in the store (deleted with the last job that used it?)"
            )
        return as_text(raw)

    # --- jobs ---------------------------------------------------------------------------------
    def create(self, job_id: str, spec: JobSpec) -> None:
        self._transaction(
            [spec.corpus_sha256], lambda p: self._create(p, job_id, spec, time.time())
        )

    def _transaction(self, shas: list[str], queue) -> None:
        """Run queue(pipeline) in MULTI/EXEC, provided every corpus named still exists: a
        corpus is collected when its last job is deleted, and must not vanish under a new one."""
        corpus_keys = [keys.corpus(sha) for sha in sorted(set(shas))]
        with self.r.pipeline(transaction=True) as p:
            try:
                p.watch(*corpus_keys)
                missing = [k for k in corpus_keys if not p.exists(k)]
                if missing:
                    raise NoSuchCorpus(
                        "a corpus was removed from the store while submitting "
                        "(its last job was deleted); submit again"
                    )
                p.multi()
                queue(p)
                p.execute()
            except redis.WatchError:
                raise NoSuchCorpus(
                    "a corpus was removed from the store while submitting "
                    "(its last job was deleted); submit again"
                ) from None

    @staticmethod
    def _create(p, job_id: str, spec: JobSpec, now: float) -> None:
        record = {
            "job_id": job_id,
            "name": spec.name or "",
            "tags": json.dumps(list(spec.tags)),
            "spec": spec.to_json(),
            "status": Status.QUEUED.value,
            "submitted_at": repr(now),
            "iteration": 0,
            "restarts": 0,
            "rollbacks": 0,
            "cancel_requested": "0",
            "sweep_id": spec.sweep_id or "",
            "iterations": spec.total_iterations or "",  # a budget in minutes: set at start
        }
        p.hset(keys.job(job_id), mapping=record)
        p.zadd(keys.jobs_by_time(), {job_id: now})
        p.zadd(keys.status_index(Status.QUEUED.value), {job_id: now})
        for tag in spec.tags:
            p.zadd(keys.tag_index(tag), {job_id: now})
        p.sadd(keys.corpus_jobs(spec.corpus_sha256), job_id)
        p.rpush(keys.events(job_id), event("submitted"))

    # --- sweeps -------------------------------------------------------------------------------
    def create_sweep(
        self,
        sweep_id: str,
        name: str | None,
        spec: dict,
        jobs: list[tuple[str, JobSpec]],
        tags: tuple[str, ...] = (),
    ) -> None:
        """The sweep record and every job of it (job id, job spec, each tagged `sweep:{id}`
        already), in one transaction: a sweep is stored whole or not at all."""
        now = time.time()

        def queue(p):
            p.hset(
                keys.sweep(sweep_id),
                mapping={
                    "sweep_id": sweep_id,
                    "name": name or "",
                    "spec": json.dumps(spec, sort_keys=True),
                    "n_jobs": len(jobs),
                    "created_at": repr(now),
                    "tags": json.dumps(list(tags)),
                },
            )
            p.zadd(keys.sweeps_by_time(), {sweep_id: now})
            for job_id, job_spec in jobs:
                self._create(p, job_id, job_spec, now)
            if jobs:
                p.rpush(keys.sweep_jobs(sweep_id), *[j for j, _ in jobs])

        self._transaction([s.corpus_sha256 for _, s in jobs], queue)

    def get_sweep(self, sweep_id: str) -> dict:
        sweep_id = validate_job_id(sweep_id)
        raw = self.r.hgetall(keys.sweep(sweep_id))
        if not raw:
            raise NoSuchJob(f"no sweep with id {sweep_id}")
        d = {as_text(k): as_text(v) for k, v in raw.items()}
        return {
            "sweep_id": d["sweep_id"],
            "name": d.get("name") or None,
            "spec": json.loads(d.get("spec") or "{}"),
            "n_jobs": int(d.get("n_jobs") or 0),
            "created_at": float(d["created_at"]),
            "tags": json.loads(d.get("tags") or "[]"),
            "job_ids": [as_text(j) for j in self.r.lrange(keys.sweep_jobs(sweep_id), 0, -1)],
        }

    def jobs(self, job_ids: list[str]) -> list[dict]:
        """Many job records in one round trip, in the order given; deleted jobs are left out."""
        with self.r.pipeline(transaction=False) as p:
            for j in job_ids:
                p.hgetall(keys.job(j))
            rows = p.execute()
        return [decode_job(raw) for raw in rows if raw]

    def kind(self, some_id: str) -> str | None:
        """ "sweep", "job", or None: sweeps and jobs share the id space (UUIDs)."""
        some_id = validate_job_id(some_id)
        with self.r.pipeline(transaction=False) as p:
            p.exists(keys.sweep(some_id))
            p.exists(keys.job(some_id))
            is_sweep, is_job = p.execute()
        return "sweep" if is_sweep else "job" if is_job else None

    def list_sweeps(self, limit: int = 20) -> list[dict]:
        ids = [as_text(i) for i in self.r.zrevrange(keys.sweeps_by_time(), 0, limit - 1)]
        out = []
        for i in ids:
            try:
                out.append(self.get_sweep(i))
            except NoSuchJob:
                continue
        return out

    def rung_decisions(self, sweep_id: str, milestone: int) -> dict[str, dict]:
        raw = self.r.hgetall(keys.rung_decisions(sweep_id, milestone))
        return {as_text(k): json.loads(v) for k, v in raw.items()}

    def delete_sweep(self, sweep_id: str) -> list[str]:
        """Remove a sweep, its rung records and every job of it. Returns the job ids deleted."""
        sw = self.get_sweep(sweep_id)
        gone = []
        for job_id in sw["job_ids"]:
            try:
                self.delete(job_id)
                gone.append(job_id)
            except NoSuchJob:
                continue
        rungs = (sw["spec"].get("early_stop") or {}).get("rungs") or []
        self._remove(
            sweep_id,
            [
                keys.sweep(sweep_id),
                keys.sweep_jobs(sweep_id),
                keys.tune_claims(sweep_id),
                *[keys.rung(sweep_id, m) for m in rungs],
                *[keys.rung_decisions(sweep_id, m) for m in rungs],
            ],
            zsets=[keys.sweeps_by_time(), keys.tunes()],
        )
        return gone

    def _remove(
        self, member: str, delete: list[str], zsets: list[str], sets: tuple[str, ...] = ()
    ) -> None:
        """Delete keys and remove `member` from indexes, atomically (REMOVE: works when full)."""
        self.r.eval(REMOVE, len(delete) + len(zsets) + len(sets), *delete, *zsets, *sets,
                    member, len(delete), len(zsets))  # fmt: skip

    def get(self, job_id: str) -> dict:
        job_id = validate_job_id(job_id)
        raw = self.r.hgetall(keys.job(job_id))
        if not raw:
            raise NoSuchJob(f"no job with id {job_id}")
        return decode_job(raw)

    def history(self, job_id: str) -> list[list]:
        return [json.loads(x) for x in self.r.lrange(keys.history(job_id), 0, -1)]

    def samples(self, job_id: str, last: bool = False, start: int = 0) -> list[dict]:
        """The samples kept (the newest MAX_SAMPLES), only the last, or those from the
        `start`-th ever written on (`sample_count` is the number written so far)."""
        if last or not start:
            rows = self.r.lrange(keys.samples(job_id), -1 if last else 0, -1)
        else:
            with self.r.pipeline(transaction=True) as p:
                p.hget(keys.job(job_id), "samples_written")
                p.lrange(keys.samples(job_id), 0, -1)
                written, rows = p.execute()
            dropped = int(written or len(rows)) - len(rows)  # trimmed from the front
            rows = rows[max(0, start - dropped) :]
        return [json.loads(x) for x in rows]

    def sample_count(self, job_id: str) -> int:
        """Samples written so far, including those trimmed away."""
        with self.r.pipeline(transaction=False) as p:
            p.hget(keys.job(job_id), "samples_written")
            p.llen(keys.samples(job_id))
            written, n = p.execute()
        return int(written or n)

    def events(self, job_id: str) -> list[dict]:
        return [json.loads(x) for x in self.r.lrange(keys.events(job_id), 0, -1)]

    def note_stepped_aside(self, job_id: str) -> None:
        """A duplicate delivery found a live trainer and left (counted for the fault report)."""
        self.r.incr(keys.stepped_aside(job_id))

    def checkpoint_record(self, job_id: str, which: str) -> tuple[bytes, str] | None:
        """(bytes, stored sha256) of a checkpoint, unverified, or None: for the worker, which
        verifies it and falls back."""
        raw = self.r.hmget(keys.checkpoint(job_id, which), "data", "sha256")
        return None if raw[0] is None or raw[1] is None else (as_bytes(raw[0]), as_text(raw[1]))

    def checkpoint_iteration(self, job_id: str) -> int | None:
        raw = self.r.hget(keys.checkpoint(job_id, "latest"), "iteration")
        return None if raw is None else int(raw)

    def checkpoint(self, job_id: str, which: str = "latest") -> tuple[bytes, dict]:
        """(bytes of the .npz, {"sha256", "iteration"}) or NoCheckpoint."""
        self.get(job_id)
        raw = self.r.hgetall(keys.checkpoint(job_id, which))
        if not raw:
            raise NoCheckpoint(f"job {job_id} has no {which} checkpoint yet")
        return as_bytes(raw[b"data"]), {
            "sha256": as_text(raw[b"sha256"]),
            "iteration": int(raw[b"iteration"]),
        }

    def list(
        self, status: str | None = None, tag: str | None = None, limit: int = 20
    ) -> list[dict]:
        """Newest first, read by ZREVRANGE pages (never KEYS), filtered by status and tag."""
        index = (
            keys.tag_index(tag)
            if tag
            else keys.status_index(status)
            if status
            else keys.jobs_by_time()
        )
        out: list[dict] = []
        start, page = 0, limit
        while len(out) < limit:
            ids = self.r.zrevrange(index, start, start + page - 1)
            if not ids:
                break
            start += page
            for job in self.jobs([as_text(i) for i in ids]):
                if status and job["status"] != status:
                    continue
                out.append(job)
                if len(out) == limit:
                    break
        return out

    def page(
        self, status: str | None = None, tag: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[builtins.list[dict], int | None, int]:
        """A page of jobs, newest first, from position `offset` of the index (the tag's, the
        status's, or all jobs'): one ZREVRANGE and one pipelined read a page; with a tag and a
        status both, the tag's index is read on and filtered. Returns (jobs, offset of the next
        page or None, jobs in the index)."""
        index = (
            keys.tag_index(tag)
            if tag
            else keys.status_index(status)
            if status
            else keys.jobs_by_time()
        )
        with self.r.pipeline(transaction=False) as p:
            p.zcard(index)
            p.zrevrange(index, offset, offset + limit - 1)
            total, raw = p.execute()
        rows: builtins.list[dict] = []
        pos, nxt = offset, None
        while raw:
            ids = [as_text(i) for i in raw]
            found = {j["job_id"]: j for j in self.jobs(ids)}  # deleted meanwhile: left out
            for n, job_id in enumerate(ids):
                job = found.get(job_id)
                if job is None or (status and job["status"] != status):
                    continue
                rows.append(job)
                if len(rows) == limit:
                    nxt = pos + n + 1
                    break
            if nxt is not None or not (tag and status):
                nxt = pos + len(ids) if nxt is None else nxt
                break
            pos += len(ids)  # tag and status: read on
            raw = self.r.zrevrange(index, pos, pos + limit - 1)
        return rows, (None if nxt is None or nxt >= total else nxt), int(total)

    def status_counts(self) -> dict[str, int]:
        """Jobs in each status, from the status indexes (one round trip)."""
        with self.r.pipeline(transaction=False) as p:
            for s in Status:
                p.zcard(keys.status_index(s.value))
            return dict(zip([s.value for s in Status], p.execute(), strict=True))

    def statuses(self, job_ids: builtins.list[str]) -> builtins.list[str | None]:
        """Each job's status field alone (one pipelined read): counting a thousand jobs' statuses
        without decoding their records."""
        with self.r.pipeline(transaction=False) as p:
            for j in job_ids:
                p.hget(keys.job(j), "status")
            return [None if s is None else as_text(s) for s in p.execute()]

    def last_samples(self, job_ids: builtins.list[str]) -> builtins.list[dict | None]:
        """Each job's newest sample (or None), one round trip."""
        with self.r.pipeline(transaction=False) as p:
            for j in job_ids:
                p.lindex(keys.samples(j), -1)
            return [json.loads(r) if r else None for r in p.execute()]

    def histories(self, job_ids: builtins.list[str]) -> builtins.list[builtins.list[builtins.list]]:
        """Each job's loss history, one round trip."""
        with self.r.pipeline(transaction=False) as p:
            for j in job_ids:
                p.lrange(keys.history(j), 0, -1)
            return [[json.loads(x) for x in rows] for rows in p.execute()]

    def cancel(self, job_id: str) -> str:
        """A queued job becomes cancelled at once (it will never start); a running one is asked to
        stop at its next check. Returns the status after the call."""
        job_id = validate_job_id(job_id)
        key = keys.job(job_id)
        with self.r.pipeline(transaction=True) as p:
            while True:
                try:
                    p.watch(key)
                    status, submitted = p.hmget(key, "status", "submitted_at")
                    if status is None:
                        raise NoSuchJob(f"no job with id {job_id}")
                    status = as_text(status)
                    p.multi()
                    if status == Status.QUEUED.value:
                        now = time.time()
                        p.hset(
                            key,
                            mapping={
                                "status": Status.CANCELLED.value,
                                "finished_at": repr(now),
                                "cancel_requested": "1",
                            },
                        )
                        for op in status_moves(job_id, Status.CANCELLED, float(as_text(submitted))):
                            p.execute_command(*op)
                        p.rpush(keys.events(job_id), event("cancelled", while_status="queued"))
                        status = Status.CANCELLED.value
                    elif status == Status.RUNNING.value:
                        p.hset(key, "cancel_requested", "1")
                        p.rpush(keys.events(job_id), event("cancel_requested"))
                    p.execute()
                    return status
                except redis.WatchError:
                    continue

    def delete(self, job_id: str) -> None:
        """Remove a job and everything it produced (a running trainer's next write is refused,
        since its fencing token is gone, and it stops)."""
        job = self.get(job_id)
        sha = job["spec"].corpus_sha256
        self._remove(
            job["job_id"],
            keys.job_keys(job["job_id"]),
            zsets=[
                keys.jobs_by_time(),
                *[keys.status_index(s.value) for s in Status],
                *[keys.tag_index(tag) for tag in job["tags"]],
            ],
            sets=(keys.corpus_jobs(sha),),
        )
        self.collect(sha)

    def collect(self, sha: str) -> None:
        """Remove a corpus no job refers to any more (a corpus is up to CHARRNN_MAX_CORPUS_BYTES
        and would otherwise stay forever). Atomic against a concurrent submit of the same text,
        which watches the corpus key (`_transaction`)."""
        self.r.eval(COLLECT_CORPUS, 2, keys.corpus_jobs(sha), keys.corpus(sha))

    def prune(self, older_than_seconds: float, dry_run: bool = False) -> builtins.list[str]:
        """Delete finished jobs (succeeded, failed, cancelled, stopped) that finished before now
        minus the given age, and the sweeps left with no job (dry_run: only say which jobs).
        Returns the job ids deleted (or that would be)."""
        cutoff = time.time() - older_than_seconds
        gone = []
        for s in TERMINAL:
            ids = [
                as_text(i) for i in self.r.zrangebyscore(keys.status_index(s.value), "-inf", cutoff)
            ]
            for job in self.jobs(ids):
                if (
                    job["status"] in [t.value for t in TERMINAL]
                    and (job["finished_at"] or 0) < cutoff
                ):
                    if not dry_run:
                        self.delete(job["job_id"])
                    gone.append(job["job_id"])
        if dry_run:
            return gone
        for raw_id in self.r.zrangebyscore(keys.sweeps_by_time(), "-inf", cutoff):
            sweep_id = as_text(raw_id)
            ids = [as_text(j) for j in self.r.lrange(keys.sweep_jobs(sweep_id), 0, -1)]
            if not self.jobs(ids):
                self.delete_sweep(sweep_id)
        return gone
