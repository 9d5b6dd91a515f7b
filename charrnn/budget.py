"""A time budget as a number of iterations: `charrnn train --minutes M`, `submit --minutes M`.

A run given minutes must still be exact: the same spec and seed give the same bits, and a resume
continues the same run. So the budget is not enforced by a clock inside the loop (where a run's
length, and with it a cosine schedule, would depend on the machine's load from step to step);
it is converted once, before training starts, into an iteration count that the spec records.
The conversion times a short probe: a throwaway trainer of the same config steps for a few
seconds, then one evaluation and one sample are timed, and the count is the largest whose steps,
evaluations and samples fit in what is left of the budget. The run that follows is exactly the
run `--iterations N` would be, and its schedule ends with the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import Config
from .errors import ConfigError
from .trainer import Trainer

PROBE_FRACTION = 0.03
"""The share of the budget spent timing steps: enough steps to average out the first ones'
allocations, small enough to cost little."""
PROBE_SECONDS = (1.0, 15.0)
"""The probe's floor and ceiling in seconds, whatever the budget."""
PROBE_MIN_STEPS = 3
MARGIN = 0.95
"""The share of what is left that the count may fill: a probe of a few seconds misjudges the
rate of a run of minutes on a machine whose load changes (measured: 15% over a 20 s budget with
the load average at 6), and a run that ends early wastes less than one that ends late."""


@dataclass(frozen=True)
class Budget:
    """What a budget of `minutes` bought: `iterations` windows, from the measured costs."""

    minutes: float
    iterations: int
    seconds_per_step: float
    seconds_per_eval: float
    seconds_per_sample: float
    probe_seconds: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "minutes": self.minutes,
            "iterations": self.iterations,
            "seconds_per_step": self.seconds_per_step,
            "seconds_per_eval": self.seconds_per_eval,
            "seconds_per_sample": self.seconds_per_sample,
            "probe_seconds": self.probe_seconds,
        }


def run_seconds(config: Config, n: int, step: float, ev: float, sample: float) -> float:
    """What a run of n iterations costs: its steps, its evaluations (every eval_interval and at
    the end) and its samples during training."""
    every = config.eval_interval(n)
    evals = (n // every if every else 0) + 1
    samples = n // config.sample_every if config.sample_every else 0
    return n * step + evals * ev + samples * sample


def iterations_for_minutes(
    config: Config,
    text: str,
    minutes: float,
    clock: Callable[[], float] = time.perf_counter,
) -> Budget:
    """The largest iteration count whose run fits in `minutes` on this machine, as measured by
    a probe (whose own time counts against the budget). ConfigError when the budget does not
    buy the warm-up and one step past it."""
    if not (minutes > 0 and math.isfinite(minutes)):
        raise ConfigError(f"minutes must be a positive number, got {minutes!r}")
    start = clock()
    budget = minutes * 60.0
    probe_for = min(max(PROBE_FRACTION * budget, PROBE_SECONDS[0]), PROBE_SECONDS[1])
    # iterations only bound the probe's schedule; its weights are thrown away
    probe = Trainer(config.replace(iterations=10**9, epochs=None), text)
    t0, steps = clock(), 0
    while steps < PROBE_MIN_STEPS or clock() - t0 < probe_for:
        probe.step()
        steps += 1
    step = (clock() - t0) / steps
    t1 = clock()
    probe.evaluate()
    ev = clock() - t1
    t2 = clock()
    if config.sample_every:
        probe.sample_during_training()
    sample = clock() - t2
    left = MARGIN * (budget - (clock() - start))
    n = _largest_fitting(config, left, step, ev, sample)
    if n <= config.warmup:
        raise ConfigError(
            f"{minutes:g} minutes buy {n} iterations here ({step:.3g} s a step), not more than "
            f"the warm-up's {config.warmup}: give more minutes"
        )
    return Budget(minutes, n, step, ev, sample, clock() - start)


def _largest_fitting(config: Config, seconds: float, step: float, ev: float, sample: float) -> int:
    """Binary search: run_seconds grows with n (evaluations come at most every tenth of the
    run, so their count is bounded and the cost is monotone in steps)."""
    if run_seconds(config, 1, step, ev, sample) > seconds:
        return 0
    lo, hi = 1, max(2, int(seconds / max(step, 1e-9)) + 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if run_seconds(config, mid, step, ev, sample) <= seconds:
            lo = mid
        else:
            hi = mid - 1
    while lo > 0 and run_seconds(config, lo, step, ev, sample) > seconds:
        lo -= 1  # the few tiny n where evaluating every step breaks monotonicity
    return lo
