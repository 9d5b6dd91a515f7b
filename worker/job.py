"""The job record, owned here: a typed `Job` with every field of the `charrnn:job:{id}` hash, how
each field is stored (`FIELDS`, `encode`) and read back (`Job.restore`), and the writes that change
it, as Redis commands (tuples) for a pipeline or for the fenced script of `lease.py`. As python-rq's
`Job.to_dict`/`restore`: no other module names a field of the hash or encodes its value.

Tolerant reading. A record may hold what this version cannot read: a field a newer version added
(kept in `Job.extra`, written back untouched), a spec with a hyperparameter this version does not
know, or a `schema` above RECORD_SCHEMA. Such a record still reads: the fields it can, and
`unreadable` says why the rest cannot be, and which version is needed. No reader of many jobs
fails for one of them (issue 20, item 1).

Schema versions. `schema` in a record is the lowest record version that reads it correctly;
absent, it is 1 (the format of every record written before the field existed). A version that
adds something an older worker would misread (a new hyperparameter) writes the higher number on
the records that use it, and only on those: older workers keep running the rest in a rolling
upgrade. Task messages carry MESSAGE_SCHEMA the same way, in the header SCHEMA_HEADER (a header,
not an argument: an older worker ignores a header it does not know, where an unknown keyword
argument would fail its task).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from charrnn import Config
from charrnn.errors import CharRNNError

from . import keys
from .errors import InvalidJobId
from .spec import JobSpec

RECORD_SCHEMA = 1
"""The newest job-record version this code reads; what it writes on every record it creates."""

MESSAGE_SCHEMA = 1
"""The newest task-message version this code reads; what it sends."""

SCHEMA_HEADER = "charrnn_schema"
"""The task message header that carries its schema version (absent: version 1)."""


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"  # stopped early by its sweep's scheduler (ASHA); keeps its checkpoint


TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.STOPPED)


def validate_job_id(job_id: str) -> str:
    """The canonical form of a job id, or InvalidJobId: ids go into keys only once checked."""
    try:
        return str(uuid.UUID(str(job_id)))
    except ValueError:
        raise InvalidJobId(f"not a job id: {str(job_id)[:80]!r} (job ids are UUIDs)") from None


def new_job_id() -> str:
    return str(uuid.uuid4())


def event(name: str, **fields: Any) -> str:
    """One line of a job's event list (JSON)."""
    return json.dumps({"t": time.time(), "event": name, **fields})


# --- the fields: attribute -> (hash field, kind) ---------------------------------------------
TEXT, OPTIONAL, FLOAT, INT, FLAG, TAGS, SPEC = (
    "text",
    "optional",
    "float",
    "int",
    "flag",
    "tags",
    "spec",
)
FIELDS: dict[str, tuple[str, str]] = {
    "job_id": ("job_id", TEXT),
    "status": ("status", TEXT),
    "spec": ("spec", SPEC),
    "name": ("name", OPTIONAL),
    "tags": ("tags", TAGS),
    "sweep_id": ("sweep_id", OPTIONAL),
    "worker": ("worker", OPTIONAL),
    "error": ("error", OPTIONAL),
    # why a running job is not training now ("store full: ... waiting for space"), or None
    "waiting": ("waiting", OPTIONAL),
    "cancel_requested": ("cancel_requested", FLAG),
    "submitted_at": ("submitted_at", FLOAT),
    "started_at": ("started_at", FLOAT),
    "finished_at": ("finished_at", FLOAT),
    "iteration": ("iteration", INT),
    "iterations": ("iterations", INT),
    # the debiased moving average of the training loss, nats/char (Trainer.train_loss); stored,
    # and shown by status --json, under its first name
    "train_loss": ("smooth_loss", FLOAT),
    "val_loss": ("val_loss", FLOAT),
    "best_val_loss": ("best_val_loss", FLOAT),
    "chars_per_second": ("chars_per_second", FLOAT),
    "learning_rate": ("learning_rate", FLOAT),
    "restarts": ("restarts", INT),
    "rollbacks": ("rollbacks", INT),
    "samples_written": ("samples_written", INT),
    # written inside Redis by lease.ACQUIRE (token, deliveries, attempts) and lease.FENCED
    # (write_id); test_job.py checks that the scripts write no field missing here
    "token": ("token", OPTIONAL),
    "deliveries": ("deliveries", INT),
    "attempts": ("attempts", INT),
    "write_id": ("write_id", OPTIONAL),
    "schema": ("schema", INT),
}
HASH_FIELDS = {f: attr for attr, (f, _) in FIELDS.items()}


def field_name(attr: str) -> str:
    """The hash field an attribute is stored in, for a read of one field (HGET)."""
    return FIELDS[attr][0]


def message_headers() -> dict[str, int]:
    """The headers every task message carries (see SCHEMA_HEADER)."""
    return {SCHEMA_HEADER: MESSAGE_SCHEMA}


def encode(attr: str, value: Any) -> str | int:
    """The stored form of one field's value (KeyError for a field not in FIELDS: a new field is
    declared there first)."""
    kind = FIELDS[attr][1]
    if value is None:
        return ""
    if kind == FLOAT:
        return repr(float(value))
    if kind == FLAG:
        return "1" if value else "0"
    if kind == TAGS:
        return json.dumps(list(value))
    if kind == SPEC:
        return value.to_json()
    return value if kind == INT else str(value)


def _decode(kind: str, v: str) -> Any:
    """One stored value; a malformed number reads as None (as it always has), never raises."""
    if kind in (FLOAT, INT):
        try:
            return None if v == "" else (float(v) if kind == FLOAT else int(v))
        except ValueError:
            return None
    if kind == FLAG:
        return v == "1"
    if kind == TAGS:
        try:
            tags = json.loads(v or "[]")
        except ValueError:
            return []
        return [str(t) for t in tags] if isinstance(tags, list) else []
    return v if kind == TEXT else (v or None)


@dataclass(frozen=True)
class StoredSpec:
    """A stored spec this version cannot build a JobSpec from, for readers: its JSON as stored,
    and a Config of the hyperparameters it knows (None when even those do not validate)."""

    raw: dict

    @property
    def corpus_sha256(self) -> str:
        return str(self.raw.get("corpus_sha256") or "")

    @property
    def corpus(self) -> str:
        return str(self.raw.get("corpus") or "")

    @property
    def total_iterations(self) -> int | None:
        v = self.raw.get("total_iterations")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def rungs(self) -> None:
        return None  # a reader draws no rungs of a spec it cannot read

    @property
    def minutes(self) -> float | None:
        """A budget in minutes (`submit --minutes`), shown while no worker has settled it."""
        v = self.raw.get("minutes")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def config(self) -> Config | None:
        hyper = self.raw.get("hyper")
        if not isinstance(hyper, dict):
            return None
        known = {f.name for f in fields(Config)}
        try:
            return Config.from_dict({k: v for k, v in hyper.items() if k in known})
        except (CharRNNError, TypeError):
            return None

    def to_dict(self) -> dict:
        return self.raw


def _text(v: object) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


@dataclass
class Job:
    """One job record, every field typed. `spec` is a JobSpec, or a StoredSpec when this version
    cannot read it (then `unreadable` says why). `extra` keeps the fields this version does not
    know, as stored."""

    job_id: str
    status: str
    spec: JobSpec | StoredSpec
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    sweep_id: str | None = None
    worker: str | None = None
    error: str | None = None
    waiting: str | None = None
    cancel_requested: bool = False
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    iteration: int | None = None
    iterations: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    chars_per_second: float | None = None
    learning_rate: float | None = None
    restarts: int = 0
    rollbacks: int = 0
    samples_written: int | None = None
    token: str | None = None
    deliveries: int | None = None
    attempts: int | None = None
    write_id: str | None = None
    schema: int = 1
    unreadable: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls, job_id: str, spec: JobSpec, now: float) -> Job:
        return cls(
            job_id=job_id,
            status=Status.QUEUED.value,
            spec=spec,
            name=spec.name,
            tags=list(spec.tags),
            sweep_id=spec.sweep_id,
            submitted_at=now,
            iteration=0,
            iterations=spec.total_iterations,
            schema=RECORD_SCHEMA,
        )

    def to_mapping(self) -> dict[str, str | int]:
        """The hash a new record is stored as (the fields a new job has; the others are written
        by the job's later transitions)."""
        created = ("job_id", "name", "tags", "spec", "status", "submitted_at", "iteration",
                   "restarts", "rollbacks", "cancel_requested", "sweep_id", "iterations", "schema")  # fmt: skip
        out = {FIELDS[a][0]: encode(a, getattr(self, a)) for a in created}
        return {**self.extra, **out}

    @classmethod
    def restore(cls, raw: Mapping) -> Job:
        """A record as HGETALL returns it (bytes or text). Never raises for what the record
        holds: what cannot be read is said in `unreadable`."""
        d = {_text(k): _text(v) for k, v in raw.items()}
        values: dict[str, Any] = {}
        extra: dict[str, str] = {}
        for f, v in d.items():
            attr = HASH_FIELDS.get(f)
            if attr is None:
                extra[f] = v
            elif attr != "spec":
                values[attr] = _decode(FIELDS[attr][1], v)
        schema = values.pop("schema", None) or 1
        spec, why = read_spec(d.get("spec", ""))
        if schema > RECORD_SCHEMA:
            why = (
                f"written with record schema {schema}; this version reads up to "
                f"{RECORD_SCHEMA}: it needs a newer charrnn"
            )
        values["restarts"] = values.get("restarts") or 0
        values["rollbacks"] = values.get("rollbacks") or 0
        values.setdefault("job_id", "")
        values.setdefault("status", "")
        return cls(**values, spec=spec, schema=schema, unreadable=why, extra=extra)

    def view(self) -> dict:
        """The record as the orchestrator's readers take it (one dict, JSON-ready but for
        `spec`). `smooth_loss` is `train_loss` under its first name, kept for readers of it."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["smooth_loss"] = self.train_loss
        out["unknown_fields"] = dict(self.extra)
        return out


def read_spec(raw: str) -> tuple[JobSpec | StoredSpec, str | None]:
    """(the spec, None) or (what could be read of it, why the rest could not)."""
    try:
        return JobSpec.from_json(raw), None
    except Exception as e:  # noqa: BLE001 - whatever a stored spec holds harms its own job only
        try:
            d = json.loads(raw)
        except ValueError:
            d = None
        return StoredSpec(d if isinstance(d, dict) else {}), f"its spec cannot be read: {e}"


# --- the writes, as commands ------------------------------------------------------------------
def hset(job_id: str, **values: Any) -> tuple:
    """One HSET of record fields, each by its attribute name and encoded as FIELDS says."""
    flat: list = []
    for attr, v in values.items():
        flat += [FIELDS[attr][0], encode(attr, v)]
    return ("HSET", keys.job(job_id), *flat)


def hincrby(job_id: str, attr: str, by: int = 1) -> tuple:
    assert FIELDS[attr][1] == INT, attr
    return ("HINCRBY", keys.job(job_id), FIELDS[attr][0], by)


def status_moves(job_id: str, new: Status, score: float | None) -> list[tuple[str, ...]]:
    """Commands that move a job into one status index and out of the others."""
    ops: list[tuple[str, ...]] = [
        ("ZREM", keys.status_index(s.value), job_id) for s in Status if s != new
    ]
    ops.append(("ZADD", keys.status_index(new.value), repr(score or 0.0), job_id))
    return ops


def metrics(job_id: str, s: Mapping[str, Any]) -> tuple:
    """The metric fields from a trainer's stats()."""
    return hset(
        job_id,
        iteration=s["iteration"],
        iterations=s["iterations"],
        train_loss=s["train_loss"],
        val_loss=s["val_loss"],
        best_val_loss=s["best_val_loss"],
        chars_per_second=s["chars_per_second"],
        learning_rate=s["learning_rate"],
    )


def start(job: Job, host: str, now: float, iteration: int, iterations: int) -> list[tuple]:
    """Running on this host (started_at kept from the first start)."""
    return [
        hset(
            job.job_id,
            status=Status.RUNNING.value,
            worker=host,
            started_at=job.started_at or now,
            iterations=iterations,
            iteration=iteration,
            waiting=None,
        )
    ] + status_moves(job.job_id, Status.RUNNING, job.submitted_at)


def end(job: Job, status: Status, now: float, error: str | None, **more: Any) -> list[tuple]:
    """A terminal status, its time and error (and `more` fields)."""
    return [
        hset(job.job_id, status=status.value, finished_at=now, error=error, waiting=None, **more)
    ] + status_moves(job.job_id, status, job.submitted_at)


def requeue(job: Job) -> list[tuple]:
    """Back to queued, with no worker."""
    return [hset(job.job_id, status=Status.QUEUED.value, worker=None, waiting=None)] + status_moves(
        job.job_id, Status.QUEUED, job.submitted_at
    )


def cancel_queued(job_id: str, now: float, submitted_at: float | None) -> list[tuple]:
    return [
        hset(job_id, status=Status.CANCELLED.value, finished_at=now, cancel_requested=True)
    ] + status_moves(job_id, Status.CANCELLED, submitted_at)
