"""The hyperparameters of a charrnn model and its training, with defaults, bounds and reasons.

A `Config` is saved inside every checkpoint and every job spec, so `Config.from_dict(saved)`
rebuilds exactly the model that was trained.

Each field is declared with `hp(...)`: its default, a one-line help, its bounds, and whether a
resumed run may change it. That metadata is the one source the command lines build their options
from, and the one place values are checked (`Config.validate`), so a new hyperparameter is one
new line here.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def hp(
    default: T,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[str, ...] | None = None,
    resume: bool = False,
    aliases: tuple[str, ...] = (),
) -> T:
    """A hyperparameter: default, help, inclusive bounds [low, high] (low excluded when
    low_open), the allowed strings (choices), and whether `--resume` may change it."""
    return field(
        default=default,
        metadata={
            "help": help,
            "low": low,
            "high": high,
            "low_open": low_open,
            "choices": choices,
            "resume": resume,
            "aliases": aliases,
        },
    )


DEFAULT_EVAL_EVERY_MAX = 5000
"""The default evaluation interval's ceiling (eval_every unset): ~5% of training time at the
default val_max_chars."""


@dataclass(frozen=True)
class Config:
    hidden_size: int = hp(
        128,
        "H, units per layer; enough for ~1.9 nats/char on tinyshakespeare in one pass",
        low=1,
        high=8192,
    )
    num_layers: int = hp(2, "stacked layers, each reading the one below", low=1, high=16)
    seq_length: int = hp(
        25, "T, characters per window; gradients are truncated at window edges", low=1, high=4096
    )
    learning_rate: float = hp(
        0.02,
        "step size (Adagrad: 0.02 measured best on tinyshakespeare; the article's 0.1 is too hot)",
        low=0,
        low_open=True,
        resume=True,
        aliases=("--lr",),
    )
    iterations: int | None = hp(
        None, "windows to train [default: one epoch]", low=1, high=10**10, resume=True
    )
    epochs: float | None = hp(
        None,
        "passes over the training text (instead of --iterations)",
        low=0,
        low_open=True,
        high=1e6,
        resume=True,
    )
    dropout: float = hp(
        0.0, "inverted dropout between layers and into the output, in [0, 1)", low=0, high=0.99
    )
    grad_clip: float = hp(
        5.0,
        "elementwise clip of every gradient, as in min-char-rnn",
        low=0,
        low_open=True,
        resume=True,
    )
    seed: int = hp(
        0, "one seed for init, dropout masks and samples (separate streams)", low=0, high=2**63 - 1
    )
    val_fraction: float = hp(
        0.1, "the held-out tail of the corpus, never trained on", low=0, high=0.9
    )
    val_max_chars: int = hp(
        30_000,
        "held-out characters per evaluation (~5% of training time at eval-every; 0: all of them)",
        low=0,
        high=10**10,
        resume=True,
    )
    eval_every: int | None = hp(
        None,
        "iterations between validation passes (0: only at the "
        "end) [default: a tenth of the run, at most 5000]",
        low=0,
        high=10**10,
        resume=True,
    )
    sample_every: int = hp(
        2000,
        "iterations between samples during training (0: none)",
        low=0,
        high=10**10,
        resume=True,
    )
    sample_length: int = hp(
        200, "characters per sample during training", low=1, high=100_000, resume=True
    )
    temperature: float = hp(
        1.0,
        "softmax temperature of samples during training",
        low=0,
        low_open=True,
        high=100,
        resume=True,
    )
    cell: str = hp(
        "rnn",
        "the recurrent cell: rnn (tanh), gru or lstm (PyTorch's equations)",
        choices=("rnn", "gru", "lstm"),
    )
    embedding_size: int | None = hp(
        None,
        "E, a learned embedding of each character in front of layer 0, as nn.Embedding "
        "(0: none, characters enter as one-hot rows of layer 0's input weights) "
        "[default: hidden-size for gru and lstm, 0 for rnn]",
        low=0,
        high=8192,
    )
    batch_size: int = hp(
        1,
        "B, parallel streams at evenly spaced offsets of the text, one "
        "update from all B windows (gradient averaged over streams)",
        low=1,
        high=4096,
    )
    optimizer: str = hp(
        "adagrad",
        "adagrad (eps inside the root, as min-char-rnn), rmsprop or "
        "adam (bias-corrected, as torch.optim)",
        choices=("adagrad", "rmsprop", "adam"),
    )
    beta1: float = hp(0.9, "Adam's first-moment decay", low=0, high=0.9999)
    beta2: float = hp(0.999, "Adam's second-moment decay", low=0, high=0.999999)
    rmsprop_decay: float = hp(
        0.99, "RMSprop's alpha, decay of the mean square", low=0, high=0.999999
    )
    lr_schedule: str = hp(
        "constant",
        "constant, or cosine: decays to a tenth of the rate over the run, as nanoGPT",
        choices=("constant", "cosine"),
        resume=True,
    )
    warmup: int = hp(
        0, "iterations of linear warm-up from ~0 to the rate", low=0, high=10**10, resume=True
    )
    clip_norm: float = hp(
        0.0, "global-norm clip of the whole gradient after grad-clip (0: off)", low=0, resume=True
    )
    dtype: str = hp(
        "float64",
        "float32 is faster and agrees to ~1e-7; float64 agrees with the "
        "per-timestep oracle to ~1e-14",
        choices=("float64", "float32"),
    )

    def __post_init__(self) -> None:
        if self.embedding_size is None:
            # with an embedding the gated cells are 0.25 (LSTM) and 0.08 (GRU) nats/char lower
            # after 300 steps of 2 x 256 (issue 23); the vanilla cell keeps min-char-rnn's
            # one-hot input. Resolved here, so a saved config holds the number, whatever later
            # defaults say
            E = 0 if self.cell == "rnn" else self.hidden_size
            object.__setattr__(self, "embedding_size", E)
        self.validate()

    @property
    def embedding(self) -> int:
        """E, the embedding size (0: none); never None once constructed."""
        return self.embedding_size or 0

    def validate(self) -> None:
        """Every field against its type and bounds; then the rules between fields."""
        hints = _hints()
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), hints[f.name], f.metadata)
        if self.iterations is not None and self.epochs is not None:
            raise ConfigError("give iterations or epochs, not both")
        if self.iterations is not None and self.warmup >= self.iterations:
            raise ConfigError(
                f"warmup ({self.warmup} iterations) must be shorter than the run "
                f"({self.iterations} iterations)"
            )

    def eval_interval(self, total_iterations: int) -> int:
        """Iterations between validation passes: eval_every, or by default a tenth of the run
        (so a short run draws a curve, not one point at its end), at most 5000 (so a long one
        spends ~5% of its time evaluating, not more)."""
        if self.eval_every is not None:
            return self.eval_every
        return min(DEFAULT_EVAL_EVERY_MAX, max(1, total_iterations // 10))

    def to_dict(self) -> dict[str, int | float | str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def flag(name: str) -> str:
    return name.replace("_", "-")


def check_value(name: str, v: object, kind: type, meta: typing.Mapping[str, Any]) -> None:
    """ConfigError unless v is of the field's type and within its bounds."""
    optional = type(None) in typing.get_args(kind)
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if v is None:
        if optional:
            return
        raise ConfigError(f"{flag(name)} must be given")
    if base is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(f"{flag(name)} must be an integer, got {v!r}")
    if base is float and (
        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
    ):
        raise ConfigError(f"{flag(name)} must be a finite number, got {v!r}")
    if base is str:
        if not isinstance(v, str) or (meta["choices"] and v not in meta["choices"]):
            raise ConfigError(
                f"{flag(name)} must be one of {', '.join(meta['choices'])}, got {v!r}"
            )
        return
    low, high = meta["low"], meta["high"]
    if low is not None and (v <= low if meta["low_open"] else v < low):
        bound = (
            "positive"
            if meta["low_open"] and low == 0
            else f"> {low:g}"
            if meta["low_open"]
            else f">= {low:g}"
        )
        raise ConfigError(f"{flag(name)} must be {bound}, got {v!r}")
    if high is not None and v > high:
        raise ConfigError(f"{flag(name)} must be <= {high:g}, got {v!r}")


def _hints() -> dict[str, type]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(Config)
    return _HINTS


_HINTS: dict[str, type] | None = None
FIELDS = tuple(f.name for f in dataclasses.fields(Config))
RESUMABLE = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["resume"])
"""What a resumed run may change; every other field must equal the checkpoint's."""
