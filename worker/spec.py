"""The job spec: everything a worker needs to train one job, built and validated in one place.

The orchestrator builds a `JobSpec` (from the command line or a sweep), the store keeps its JSON
in the job's record, the worker reads it back with `JobSpec.from_json`, and nothing else reads a
spec by dictionary key. The charrnn `Config` inside it is the one typed form of the
hyperparameters; its JSON is the one serialised form.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from charrnn import Config
from charrnn.errors import CharRNNError

DEFAULT_CHECKPOINT_EVERY = 1000
"""Iterations between checkpoints when a spec does not say: the most work a crash can cost."""

MAX_RUNGS = 20
"""Most early-stopping rungs per job: each is an evaluation and a decision, and the list is
stored in every job of the sweep (a reduction factor of 1.00001 once gave 169,315 of them)."""

REDUCTION_FACTOR_RANGE = (1.5, 100.0)
"""ASHA's eta: below 1.5 a rung keeps almost everyone and the rungs crowd together; above 100
the first rung stops nearly every job."""

MAX_TAGS, MAX_TAG_CHARS, MAX_NAME_CHARS = 20, 100, 200
"""User labels are indexed and shown in every listing: bounded like everything stored."""

SWEEP_TAG_PREFIX = "sweep:"
"""Reserved: the tag every job of a sweep carries (keys.sweep_tag)."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


class SpecError(CharRNNError):
    """A job spec that is malformed or out of bounds (bad input: exit 2 at the command line)."""


def stored_config(hyper: dict) -> Config:
    """The config of a stored spec. One written before `embedding_size` existed trained without
    an embedding, whatever today's default for its cell is (as `checkpoint.saved_config` reads
    a checkpoint of that time): a job queued before an upgrade resumes its own checkpoint."""
    if isinstance(hyper, dict) and "embedding_size" not in hyper:
        hyper = {**hyper, "embedding_size": 0}
    return Config.from_dict(hyper)


@dataclass(frozen=True)
class RungPlan:
    """ASHA's part of a sweep's job: the sweep whose rungs it reports to, the milestones, eta.

    A job with a time budget (a tune's trial) does not know its iterations until a worker
    settles them: its rungs are `fractions` of its own run, turned into milestones then
    (`settled`). Its rungs are named in the sweep by those fractions (`label`), so trials of
    different lengths meet at the same rung: the same share of the same time."""

    sweep_id: str
    milestones: tuple[int, ...]
    reduction_factor: float
    fractions: tuple[float, ...] | None = None

    def __post_init__(self):
        f = self.fractions
        if f is not None:
            if not f or len(f) > MAX_RUNGS or list(f) != sorted(set(f)):
                raise SpecError(f"rung fractions must be 1 to {MAX_RUNGS} increasing, got {f}")
            if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1
                   for x in f):  # fmt: skip
                raise SpecError(f"rung fractions must be in (0, 1), got {list(f)}")
        m = self.milestones
        if f is None or m:
            if not m or len(m) != (len(f) if f is not None else len(m)) or len(m) > MAX_RUNGS:
                raise SpecError(f"early stopping needs 1 to {MAX_RUNGS} rungs, got {len(m)}")
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in m) or list(
            m
        ) != sorted(set(m)):
            raise SpecError(f"rungs must be increasing positive iterations, got {list(m)}")
        low, high = REDUCTION_FACTOR_RANGE
        eta = self.reduction_factor
        if not isinstance(eta, (int, float)) or not math.isfinite(eta) or not low <= eta <= high:
            raise SpecError(f"reduction factor must be in [{low:g}, {high:g}], got {eta!r}")

    def settled(self, total: int) -> RungPlan | None:
        """The plan of a run of `total` iterations: each fraction's milestone (None when the
        run is too short for any rung; fractions that fall on the same iteration keep the first)."""
        if self.fractions is None:
            return self
        pairs: dict[int, float] = {}
        for x in self.fractions:
            m = max(1, round(x * total))
            if m < total:
                pairs.setdefault(m, x)
        if not pairs:
            return None
        return RungPlan(self.sweep_id, tuple(pairs), self.reduction_factor, tuple(pairs.values()))

    def label(self, milestone: int) -> int:
        """The rung's name in the sweep: its iteration, or its fraction in millionths."""
        if self.fractions is None:
            return milestone
        return fraction_label(self.fractions[self.milestones.index(milestone)])

    def ahead(self, iteration: int, total: int) -> list[int]:
        """The rungs still to decide for a job at `iteration` (a rung at the job's very end is
        no decision: the job ends there anyway)."""
        return [m for m in self.milestones if iteration <= m < total]

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "scheduler": "asha",
            "sweep_id": self.sweep_id,
            "rungs": list(self.milestones),
            "reduction_factor": self.reduction_factor,
        }
        if self.fractions is not None:
            d["fractions"] = list(self.fractions)
        return d


def fraction_label(x: float) -> int:
    return round(x * 1_000_000)


@dataclass(frozen=True)
class JobSpec:
    corpus_sha256: str
    config: Config
    total_iterations: int | None  # the windows the job trains in all; None: a budget unsettled
    corpus: str = ""  # where the text came from, for people: a path or name
    name: str | None = None
    tags: tuple[str, ...] = ()
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    sweep_id: str | None = None
    rungs: RungPlan | None = field(default=None)
    minutes: float | None = None
    """A time budget (`submit --minutes`): the worker that first starts the job turns it into
    iterations with its own measured speed and records them here (budgets.settle)."""
    budget: dict | None = None
    """What that worker measured (charrnn.budget.Budget.to_dict): set once the budget is
    settled, when config and total_iterations hold the iterations it bought."""
    deadline: float | None = None
    """Unix seconds (Redis TIME) the budget may not run past (a tune's end): the minutes are
    clipped to what is left of it when the budget is settled."""

    @property
    def unsettled(self) -> bool:
        """A budget in minutes not yet turned into iterations."""
        return self.minutes is not None and self.budget is None

    def __post_init__(self):
        self._check_budget()
        if not isinstance(self.corpus_sha256, str) or not _SHA256.fullmatch(self.corpus_sha256):
            raise SpecError(f"not a corpus sha256: {str(self.corpus_sha256)[:80]!r}")
        if not isinstance(self.config, Config):
            raise SpecError("a job spec needs a charrnn Config")
        lengths: list[tuple[str, object]] = [("checkpoint-every", self.checkpoint_every)]
        if not self.unsettled:
            lengths.append(("total iterations", self.total_iterations))
        for name, v in lengths:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(f"{name} must be a positive integer, got {v!r}")
        if self.name is not None and len(self.name) > MAX_NAME_CHARS:
            raise SpecError(f"name is {len(self.name)} characters, above {MAX_NAME_CHARS}")
        if len(self.tags) > MAX_TAGS:
            raise SpecError(f"{len(self.tags)} tags, above the limit of {MAX_TAGS}")
        for tag in self.tags:
            if not tag or len(tag) > MAX_TAG_CHARS:
                raise SpecError(f"a tag must have 1 to {MAX_TAG_CHARS} characters: {tag[:80]!r}")
        if self.rungs is not None and self.rungs.sweep_id != self.sweep_id:
            raise SpecError("early-stopping rungs belong to the job's own sweep")

    def _check_budget(self) -> None:
        for name, v in (("minutes", self.minutes), ("deadline", self.deadline)):
            if v is not None and (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v <= 0
            ):
                raise SpecError(f"{name} must be a positive number, got {v!r}")
        if self.budget is not None and self.minutes is None:
            raise SpecError("a settled budget needs the minutes it was for")
        if self.budget is not None and not isinstance(self.budget, dict):
            raise SpecError("a settled budget is an object")
        if self.unsettled and self.total_iterations is not None:
            raise SpecError("a job given minutes gets its iterations when it starts, not before")

    @staticmethod
    def check_user_tags(tags) -> tuple[str, ...]:
        """Tags a user gave: the sweep prefix is reserved (a job could join another sweep's
        `list --tag` view)."""
        for tag in tags:
            if tag.startswith(SWEEP_TAG_PREFIX):
                raise SpecError(
                    f"tags starting with {SWEEP_TAG_PREFIX!r} are reserved for sweeps: {tag[:80]!r}"
                )
        return tuple(tags)

    # --- the one serialised form ---------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "corpus_sha256": self.corpus_sha256,
            "corpus": self.corpus,
            "hyper": self.config.to_dict(),
            "total_iterations": self.total_iterations,
            "checkpoint_every": self.checkpoint_every,
            "name": self.name,
            "tags": list(self.tags),
            "sweep_id": self.sweep_id,
        }
        if self.rungs is not None:
            d["early_stop"] = self.rungs.to_dict()
        for k in ("minutes", "budget", "deadline"):  # absent when unused: older specs unchanged
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> JobSpec:
        try:
            es = d.get("early_stop")
            rungs = (
                RungPlan(
                    es["sweep_id"],
                    tuple(es["rungs"]),
                    float(es["reduction_factor"]),
                    tuple(es["fractions"]) if es.get("fractions") is not None else None,
                )
                if es
                else None
            )
            # before 2026-11: iterations_total; the value is checked in __post_init__
            total: Any = d.get("total_iterations", d.get("iterations_total"))
            return cls(
                corpus_sha256=d["corpus_sha256"],
                config=stored_config(d["hyper"]),
                total_iterations=total,
                corpus=d.get("corpus") or "",
                name=d.get("name"),
                tags=tuple(d.get("tags") or ()),
                checkpoint_every=d.get("checkpoint_every") or DEFAULT_CHECKPOINT_EVERY,
                sweep_id=d.get("sweep_id"),
                rungs=rungs,
                minutes=d.get("minutes"),
                budget=d.get("budget"),
                deadline=d.get("deadline"),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise SpecError(f"malformed job spec ({type(e).__name__}: {e})") from None

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobSpec:
        try:
            d = json.loads(raw)
        except ValueError as e:
            raise SpecError(f"job spec is not JSON: {e}") from None
        if not isinstance(d, dict):
            raise SpecError("job spec is not a JSON object")
        return cls.from_dict(d)
