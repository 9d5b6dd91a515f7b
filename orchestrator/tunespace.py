"""A tune's default search space and trial length, from the corpus and the budget (issue 19,
item 3). docs/pending/tune.md explains the choices; the figures behind them are the recipes'
(charrnn/recipes.py): Adam with a cosine over the run, a short warm-up, a global clip, float32.

Pure functions: the corpus's length and the budget in, a sweep-style space out.
"""

from __future__ import annotations

import math

from charrnn.recipes import RECIPES

MIN_TRIAL_MINUTES = 0.5
"""The shortest trial: its probe, warm-up and a few evaluations must fit."""
TRIALS_WANTED = 20
"""Roughly how many trials a budget should see: TPE's start-up draws and a dozen guided ones."""
ASHA_COST = 0.26
"""A trial's expected share of its full length under ASHA with eta 3 and rungs at 1/9 and 1/3
(2/3 stop at 1/9, 2/9 at 1/3, 1/9 run to the end)."""
REDUCTION_FACTOR = 3.0
RUNG_FRACTIONS = (1 / 9, 1 / 3)
WINDOWS_PER_EPOCH = 20
"""The fewest windows of B streams x T characters an epoch of the training text must hold:
a space whose largest B x T reads the whole text in a handful of steps learns little per step."""

FIXED = {
    **{
        k: v for k, v in RECIPES["10min"].values.items() if k in ("optimizer", "clip_norm", "dtype")
    },
    "warmup": 20,
    "sample_every": 1000,
    "sample_length": 200,
}
"""What every trial shares: the recipes' optimizer, clip and precision; a warm-up short enough
for the shortest trial of the slowest point."""


def trial_minutes(minutes: float, parallel: int) -> float:
    """A full trial's length: the budget's worker-minutes over the trials wanted at ASHA's
    average cost, and at most half the budget so that the best trials, which run to the end,
    start early enough to finish."""
    t = min(minutes / 2, minutes * parallel / (TRIALS_WANTED * ASHA_COST))
    return round(max(MIN_TRIAL_MINUTES, t), 3)


def _sizes(trial: float) -> list[int]:
    """Hidden sizes a trial of this length can train: a 384-unit GRU needs tens of minutes."""
    if trial < 2:
        return [64, 128, 192]
    if trial < 10:
        return [128, 192, 256]
    return [192, 256, 384, 512]


def _streams_and_windows(train_chars: int) -> tuple[list[int], list[int]]:
    """B and T choices whose largest window still leaves WINDOWS_PER_EPOCH windows an epoch."""
    streams, lengths = [8, 16, 32, 64], [32, 64, 128]
    while streams[-1] * lengths[-1] * WINDOWS_PER_EPOCH > train_chars:
        if len(streams) > 1 and streams[-1] >= lengths[-1] / 2:
            streams.pop()
        elif len(lengths) > 1:
            lengths.pop()
        elif len(streams) > 1:
            streams.pop()
        else:
            return [], []
    return streams, lengths


def default_space(train_chars: int, trial: float) -> dict:
    """The space a tune searches when the user gives none ({} when the corpus is too small)."""
    streams, lengths = _streams_and_windows(train_chars)
    if not streams:
        return {}
    return {
        "cell": {"choice": ["rnn", "gru", "lstm"]},
        "hidden_size": {"choice": _sizes(trial)},
        "num_layers": {"uniform": [1, 3]},
        "batch_size": {"choice": streams},
        "seq_length": {"choice": lengths},
        "learning_rate": {"log_uniform": [5e-4, 1e-2]},
        "dropout": {"uniform": [0.0, 0.4]},
        "lr_schedule": {"choice": ["constant", "cosine"]},
    }


def corners(space: dict) -> list[dict]:
    """The largest points of a space, one per combination of its choices (each numeric
    parameter at its upper bound): what the footprint limits are checked on."""
    import itertools

    numeric = {k: d[next(iter(d))][1] for k, d in space.items() if "choice" not in d}
    choices = [[(k, v) for v in d["choice"]] for k, d in space.items() if "choice" in d]
    combos = list(itertools.product(*choices))
    if len(combos) > 256:  # too many to check each: the largest value of each choice instead
        combos = [tuple((k, max(d["choice"], key=_size_key)) for k, d in _choices(space))]
    return [{**numeric, **dict(c)} for c in combos]


def _choices(space: dict):
    return [(k, d) for k, d in space.items() if "choice" in d]


def _size_key(v):
    order = {"rnn": 0, "gru": 1, "lstm": 2}
    return order.get(v, v) if isinstance(v, str) else (v if isinstance(v, (int, float)) else 0)


def rounded(minutes: float) -> float:
    return float(f"{minutes:.4g}") if math.isfinite(minutes) else minutes
