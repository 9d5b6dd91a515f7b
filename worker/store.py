"""The job store: job records, their results and the corpora, in Redis.

Read `keys.py` for the data model on one screen. Status, metrics and times change together: in
MULTI/EXEC here (client-side transitions), or inside the fenced Lua script of `lease.py` (a
trainer's writes). Results never expire; `delete` and `prune` remove them.
"""

from __future__ import annotations

import builtins
import time
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from charrnn.data import corpus_sha256

from . import job as record
from . import keys, scripts, settings
from .errors import CorpusTooLarge, NoSuchCorpus, NoSuchJob, Unreachable
from .job import TERMINAL, Job, Status, event, new_job_id, status_moves, validate_job_id
from .outputs import JobOutputs, as_bytes, as_text
from .spec import JobSpec
from .sweep_records import SweepRecords

__all__ = [  # the store's, and the job record's re-exported for the modules importing them here
    "JobStore", "connect", "redact", "as_text", "as_bytes",
    "TERMINAL", "Status", "event", "new_job_id", "status_moves", "validate_job_id",
]  # fmt: skip

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


def _num(v: str | None, kind):
    """A number from a stored field, None when empty or malformed (presence.py reads with it)."""
    if v in ("", None):
        return None
    try:
        return kind(v)
    except ValueError:
        return None


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


class JobStore(SweepRecords, JobOutputs):
    """The job store: corpora and job records here; sweeps and a job's outputs in the mixins."""

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
        p.hset(keys.job(job_id), mapping=Job.new(job_id, spec, now).to_mapping())
        p.zadd(keys.jobs_by_time(), {job_id: now})
        p.zadd(keys.status_index(Status.QUEUED.value), {job_id: now})
        for tag in spec.tags:
            p.zadd(keys.tag_index(tag), {job_id: now})
        p.sadd(keys.corpus_jobs(spec.corpus_sha256), job_id)
        p.rpush(keys.events(job_id), event("submitted"))

    def jobs(self, job_ids: list[str]) -> list[dict]:
        """Many job records in one round trip, in the order given; deleted jobs are left out."""
        with self.r.pipeline(transaction=False) as p:
            for j in job_ids:
                p.hgetall(keys.job(j))
            rows = p.execute()
        return [Job.restore(raw).view() for raw in rows if raw]

    def kind(self, some_id: str) -> str | None:
        """ "sweep", "job", or None: sweeps and jobs share the id space (UUIDs)."""
        some_id = validate_job_id(some_id)
        with self.r.pipeline(transaction=False) as p:
            p.exists(keys.sweep(some_id))
            p.exists(keys.job(some_id))
            is_sweep, is_job = p.execute()
        return "sweep" if is_sweep else "job" if is_job else None

    def _remove(
        self, member: str, delete: list[str], zsets: list[str], sets: tuple[str, ...] = ()
    ) -> None:
        """Delete keys and remove `member` from indexes, atomically (REMOVE: works when full)."""
        scripts.Script(self.r, REMOVE)([*delete, *zsets, *sets], [member, len(delete), len(zsets)])

    def get(self, job_id: str) -> dict:
        """A job's record as the readers take it (Job.view)."""
        return self.job(job_id).view()

    def job(self, job_id: str) -> Job:
        """A job's record, typed; what this version cannot read of it is said in `unreadable`."""
        job_id = validate_job_id(job_id)
        raw = self.r.hgetall(keys.job(job_id))
        if not raw:
            raise NoSuchJob(f"no job with id {job_id}")
        job = Job.restore(raw)
        job.job_id = job.job_id or job_id  # the key says whose it is, should the field be lost
        return job

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
                p.hget(keys.job(j), record.field_name("status"))
            return [None if s is None else as_text(s) for s in p.execute()]

    def cancel(self, job_id: str) -> str:
        """A queued job becomes cancelled at once (it will never start); a running one is asked to
        stop at its next check. Returns the status after the call."""
        job_id = validate_job_id(job_id)
        key = keys.job(job_id)
        with self.r.pipeline(transaction=True) as p:
            while True:
                try:
                    p.watch(key)
                    raw = p.hgetall(key)
                    if not raw:
                        raise NoSuchJob(f"no job with id {job_id}")
                    job = Job.restore(raw)
                    status = job.status
                    p.multi()
                    if status == Status.QUEUED.value:
                        for op in record.cancel_queued(job_id, time.time(), job.submitted_at):
                            p.execute_command(*op)
                        p.rpush(keys.events(job_id), event("cancelled", while_status="queued"))
                        status = Status.CANCELLED.value
                    elif status == Status.RUNNING.value:
                        p.execute_command(*record.hset(job_id, cancel_requested=True))
                        p.rpush(keys.events(job_id), event("cancel_requested"))
                    p.execute()
                    return status
                except redis.WatchError:
                    continue

    def delete(self, job_id: str) -> None:
        """Remove a job and everything it produced (a running trainer's next write is refused,
        since its fencing token is gone, and it stops)."""
        job_id = validate_job_id(job_id)
        job = self.job(job_id)
        sha = job.spec.corpus_sha256  # "" when a record's spec is unreadable to the last byte
        self._remove(
            job_id,
            keys.job_keys(job_id),
            zsets=[
                keys.jobs_by_time(),
                *[keys.status_index(s.value) for s in Status],
                *[keys.tag_index(tag) for tag in job.tags],
            ],
            sets=(keys.corpus_jobs(sha),) if sha else (),
        )
        if sha:
            self.collect(sha)

    def collect(self, sha: str) -> None:
        """Remove a corpus no job refers to any more (a corpus is up to CHARRNN_MAX_CORPUS_BYTES
        and would otherwise stay forever). Atomic against a concurrent submit of the same text,
        which watches the corpus key (`_transaction`)."""
        scripts.Script(self.r, COLLECT_CORPUS)([keys.corpus_jobs(sha), keys.corpus(sha)])

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
