"""The sweep records of the job store: a sweep, its job list and its ASHA rung decisions
(`keys.py` has the layout). A mixin of `JobStore`, which stores a sweep's jobs with it."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from . import keys
from .errors import NoSuchJob
from .job import validate_job_id
from .outputs import as_text
from .spec import JobSpec

if TYPE_CHECKING:
    import redis


class SweepRecords:
    r: redis.Redis

    if TYPE_CHECKING:

        def _transaction(self, shas: list[str], queue) -> None: ...
        def _create(self, p, job_id: str, spec: JobSpec, now: float) -> None: ...
        def _remove(self, member: str, delete: list[str], zsets: list[str]) -> None: ...
        def delete(self, job_id: str) -> None: ...

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
