"""Errors of the job store, each with a message a user can act on."""


class StoreError(Exception):
    """Base class for job-store errors."""


class NoSuchJob(StoreError):
    """No job has this id (never submitted, or deleted)."""


class NoSuchCorpus(StoreError):
    """A job's corpus is not in the store (collected with the last job that used it)."""


class InvalidJobId(StoreError):
    """A job id that is not a UUID; refused before it goes near a key."""


class CorpusTooLarge(StoreError):
    """A corpus above the store's size limit (CHARRNN_MAX_CORPUS_BYTES)."""


class NoCheckpoint(StoreError):
    """The job has not written a checkpoint (or a sample) yet."""


class Unreachable(StoreError):
    """Redis did not answer, or refused our password."""


class LostLease(StoreError):
    """Another trainer holds this job now (our fencing token is stale): stop without writing."""


class JobTooLarge(StoreError):
    """A job whose memory or checkpoint would exceed the pool's limits (CHARRNN_MAX_JOB_BYTES,
    CHARRNN_MAX_CHECKPOINT_BYTES)."""


class StoreFull(StoreError):
    """Redis is at its maxmemory and refused a write (noeviction). `cancelled`: a trainer that
    waited for space was asked to stop by `cancel` (True) or by its worker's shutdown (False)."""

    def __init__(self, message: str, cancelled: bool = False):
        super().__init__(message)
        self.cancelled = cancelled
