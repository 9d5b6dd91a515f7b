"""A worker for the fault suite: the real app, with hooks that inject one divergence.

No real hyperparameter diverges at one learning rate and reliably not at half of it, so the
test of "roll back, halve the rate, then succeed" needs a divergence on demand. Production code
has no branch for it: this module installs a subclass of the worker's hooks through
`worker.training.HOOKS`, and the test starts its worker with `celery -A fault_worker worker`.

CHARRNN_TEST_DIVERGE_AT="N": the first checkpoint at or past iteration N in each delivery
raises DivergedError, once ("N:always": at every checkpoint past N).

CHARRNN_TEST_SLOW_START="S": each pool process sleeps S seconds in worker_process_init before it
tells the worker it is up, as a child forked on a loaded host can.
"""

import os
import time

from celery.signals import worker_process_init

from charrnn.errors import DivergedError
from worker import training
from worker.celery import app  # noqa: F401 - `app` is what `celery -A fault_worker` runs

_at, _, _mode = os.environ.get("CHARRNN_TEST_DIVERGE_AT", "").partition(":")


class DivergingHooks(training.JobHooks):
    fired = False

    def on_checkpoint(self, t):
        if _at and t.iteration >= int(_at) and (_mode == "always" or not self.fired):
            self.fired = True
            raise DivergedError(f"diverged: injected fault at iteration {t.iteration}")
        super().on_checkpoint(t)


training.HOOKS = DivergingHooks

_slow_start = float(os.environ.get("CHARRNN_TEST_SLOW_START") or 0)


@worker_process_init.connect
def _start_slowly(**_):
    time.sleep(_slow_start)
