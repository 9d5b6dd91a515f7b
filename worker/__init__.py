"""The charrnn worker: a Celery app whose one task trains a job from the Redis job store.

    celery -A worker worker            # with CHARRNN_REDIS_URL=redis://:password@host:6379/0

Celery finds the app in worker/celery.py. This package imports nothing of it: the job store
(worker.store, worker.keys, ...) is imported by the orchestrator and the dashboard too, and
imports neither Celery nor kombu.

BLAS is limited to one thread here, before anything imports NumPy: a worker runs one process per
core, and a multi-threaded BLAS in each would oversubscribe the machine (and change the float
summation order, so resumed runs would no longer be bit-identical to uninterrupted ones).
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
