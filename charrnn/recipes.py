"""Named recipes: the hyperparameters measured best for a time budget, so a user gets them
without knowing them (`--recipe NAME` on `charrnn train`, `orchestrator submit` and `sweep`).

A recipe is a set of Config values and a budget in minutes. It is expanded where the config is
built: the recipe's values first, then every option given explicitly, which wins. What is
stored (a checkpoint's config, a job's spec) is the expanded config, never the name alone, so a
recipe changed in a later version cannot change a run already made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    name: str
    minutes: float | None
    """The budget it was measured for; None: one epoch, as Config's defaults."""
    gave: str
    """What it reached, and where it was measured."""
    values: dict[str, Any] = field(default_factory=dict)


# The gated recipes share one shape (issue 10's search, README "The trainer"): Adam with a
# cosine decay over the whole budget, a short warm-up, 32 streams of 64 characters, a global
# clip of 320 (= PyTorch's clip_grad_norm_(5) on its mean loss), float32 (1.7x faster, agrees to
# ~1e-7). The GRU learned faster per character than the LSTM at every size measured.
_GATED = dict(
    cell="gru",
    num_layers=2,
    batch_size=32,
    seq_length=64,
    optimizer="adam",
    lr_schedule="cosine",
    warmup=100,
    clip_norm=320.0,
    dtype="float32",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "article",
            None,
            "the classic article's trainer (vanilla RNN 2x128, one stream, Adagrad): "
            "1.86 nats/char after one epoch of tinyshakespeare",
        ),
        Recipe(
            "2min",
            2,
            "GRU 2x192, Adam 4e-3: 1.50 nats/char on tinyshakespeare in 2 minutes on one core",
            {**_GATED, "hidden_size": 192, "learning_rate": 4e-3},
        ),
        Recipe(
            "10min",
            10,
            "GRU 2x256, Adam 4e-3: 1.46 nats/char on tinyshakespeare in 10 minutes on one core",
            {**_GATED, "hidden_size": 256, "learning_rate": 4e-3},
        ),
        Recipe(
            "60min",
            60,
            "GRU 2x384, Adam 3e-3, dropout 0.25: 1.46 nats/char on tinyshakespeare at 30 "
            "minutes, 1.48 at 60 (keep the best checkpoint)",
            # as measured: one-hot input (the gated cells' embedding came later, and an hour of
            # it with dropout has not been measured yet)
            {
                **_GATED,
                "hidden_size": 384,
                "learning_rate": 3e-3,
                "dropout": 0.25,
                "embedding_size": 0,
            },
        ),
    )
}

DEFAULT = "article"


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"no recipe {name!r}: choose one of {', '.join(RECIPES)}") from None


def expand(name: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The recipe's values with the explicit options over them. A length given explicitly
    (iterations or epochs) replaces the recipe's budget, which the caller reads from
    `minutes_for`."""
    base = recipe(name).values if name else {}
    return {**base, **given}


def minutes_for(name: str | None, given: dict[str, Any], minutes: float | None) -> float | None:
    """The budget a run takes: --minutes if given; else the recipe's, unless the run's length
    was given as iterations or epochs."""
    if minutes is not None:
        return minutes
    if name is None or given.get("iterations") is not None or given.get("epochs") is not None:
        return None
    return recipe(name).minutes


def for_budget(minutes: float) -> Recipe:
    """The recipe measured for the budget nearest `minutes` on a log scale (2min up to 4.5
    minutes, 10min up to 24.5, 60min beyond): what a tune trains as its recipe trial. Nearest,
    not the longest that fits: at 30 minutes on tinyshakespeare the 60min recipe (dropout 0.25)
    ended at 1.456 nats/char on the whole held-out text and the 10min recipe at 1.500, which
    overfits by then (benchmarks/bench_tune.py, 2026-12-05)."""
    timed = [r for r in RECIPES.values() if r.minutes]
    return min(timed, key=lambda r: abs(math.log(minutes / (r.minutes or 1))))


def help_text() -> str:
    """For --help: each recipe, its budget and what it gave."""
    return "; ".join(
        f"{r.name}" + (f" ({r.minutes:g} min)" if r.minutes else "") + f": {r.gave}"
        for r in RECIPES.values()
    )
