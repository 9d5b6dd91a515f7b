"""The hyperparameters of a charrnn model and its training, with defaults and their reasons.

A `Config` is saved inside every checkpoint and every job spec, so `Config.from_dict(saved)`
rebuilds exactly the model that was trained.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Config:
    hidden_size: int = 128        # H; enough for ~1.9 nats/char on tinyshakespeare in one pass
    num_layers: int = 2           # a real stack: each layer reads the one below (see model.py)
    seq_length: int = 25          # T; characters per window; gradients are truncated at window edges
    learning_rate: float = 0.02   # Adagrad; measured best of 0.02/0.05 on tinyshakespeare; the article's 0.1 is too hot
    iterations: int | None = None # windows to train; None with epochs None means one epoch
    epochs: float | None = None   # passes over the training part; exclusive with iterations
    dropout: float = 0.0          # inverted dropout between layers and into the output; off for small models
    grad_clip: float = 5.0        # elementwise clip of every gradient, as in min-char-rnn
    seed: int = 0                 # one seed for init, dropout masks and samples (separate streams)
    val_fraction: float = 0.1     # the last part of the corpus, never trained on
    val_max_chars: int = 30_000   # cap on held-out characters per evaluation: ~5% of training time at eval_every
    eval_every: int = 5000        # iterations between validation passes (0: only at the end)
    sample_every: int = 2000      # iterations between samples during training (0: none)
    sample_length: int = 200      # characters per sample during training
    temperature: float = 1.0      # softmax temperature of samples during training
    dtype: str = "float64"        # float32 is faster and ~1e-7 accurate; float64 is bit-exact to the oracle

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def positive(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {v!r}")

        for name in ("hidden_size", "num_layers", "seq_length", "learning_rate", "grad_clip",
                     "val_max_chars", "sample_length", "temperature"):
            positive(name)
        for name in ("hidden_size", "num_layers", "seq_length", "val_max_chars", "sample_length",
                     "eval_every", "sample_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{name.replace('_', '-')} must be an integer, got {v!r}")
        for name in ("eval_every", "sample_every", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.iterations is not None and self.epochs is not None:
            raise ConfigError("give iterations or epochs, not both")
        if self.iterations is not None:
            positive("iterations")
            if not isinstance(self.iterations, int) or isinstance(self.iterations, bool):
                raise ConfigError(f"iterations must be an integer, got {self.iterations!r}")
        if self.epochs is not None:
            positive("epochs")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0.0 <= self.val_fraction < 1.0):
            raise ConfigError(f"val-fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        try:
            return cls(**d)
        except TypeError as e:  # a wrong type that comparison could not handle
            raise ConfigError(f"bad hyperparameter: {e}") from None

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(Config))
