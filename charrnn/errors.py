"""Every error the library raises on purpose, each with a message a user can act on.

The command lines turn these into one line on stderr and a non-zero exit code; anything else
escaping is a bug.
"""


class CharRNNError(Exception):
    """Base class: a problem with the user's input or data, not with the program."""


class ConfigError(CharRNNError):
    """A hyperparameter is out of range or unknown."""


class CorpusError(CharRNNError):
    """A corpus is missing, not UTF-8, empty or too short."""


class CheckpointError(CharRNNError):
    """A checkpoint file is unreadable, of another format, tampered with, or for another corpus."""


class PrimeError(CharRNNError):
    """Prime text holds characters the model's vocabulary does not have."""


class DivergedError(CharRNNError):
    """The training loss became non-finite; no weights were updated with it."""
