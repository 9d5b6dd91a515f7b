"""The pool's resource limits applied to one job, before anything of it is allocated.

The orchestrator checks at submit (a user learns at once that the job cannot run) and the worker
checks again before building the trainer (a client that bypasses the command line, or a pool
whose limits were lowered since, still cannot take a worker down)."""

from __future__ import annotations

from charrnn import Config, checkpoint
from charrnn.footprint import Footprint, footprint

from . import settings
from .errors import JobTooLarge


def gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def check_fits(cfg: Config, vocab_size: int, corpus_chars: int) -> Footprint:
    """The job's footprint, or JobTooLarge naming the size and the limit it exceeds."""
    f = footprint(cfg, vocab_size, corpus_chars)
    if f.memory_bytes > settings.MAX_JOB_BYTES:
        raise JobTooLarge(
            f"this job needs about {gib(f.memory_bytes)} of memory "
            f"({f.parameters:,} parameters), above the pool's limit of "
            f"{gib(settings.MAX_JOB_BYTES)} (CHARRNN_MAX_JOB_BYTES)"
        )
    if f.checkpoint_bytes > settings.MAX_CHECKPOINT_BYTES:
        raise JobTooLarge(
            f"this job's checkpoint would be about {gib(f.checkpoint_bytes)}, "
            f"above the pool's limit of {gib(settings.MAX_CHECKPOINT_BYTES)} "
            f"(CHARRNN_MAX_CHECKPOINT_BYTES)"
        )
    return f


def load_checkpoint(raw: bytes, name: str) -> checkpoint.Checkpoint:
    """A stored checkpoint, verified, refused before any array is decompressed if the config in
    it needs more than the pool's checkpoint limit: what the worker's restore, `orchestrator
    sample` and `checkpoint` and the dashboard read, so that no record can make them inflate
    more than a job of this pool may write. CheckpointError otherwise."""
    return checkpoint.load(
        raw,
        name,
        max_bytes=settings.MAX_CHECKPOINT_BYTES,
        limit_name="CHARRNN_MAX_CHECKPOINT_BYTES",
    )
