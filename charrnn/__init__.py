"""charrnn: a correct, fast, pure-NumPy stacked character-level RNN, GRU or LSTM with exact
resumable training.

    from charrnn import Config, Trainer, checkpoint
    trainer = Trainer(Config(hidden_size=128, num_layers=2), text)
    trainer.run(hooks)                       # B streams (default 1), Adagrad/RMSprop/Adam, clipping
    checkpoint.save(trainer, "model.npz")    # the complete training state
    checkpoint.load("model.npz").sample(length=200, seed=1)

Imports neither Celery nor Redis: the worker drives it through `Hooks`.
"""

import os as _os

# One BLAS thread unless the user says otherwise: the products here are small, so threads only
# add overhead, fight with worker processes for cores, and may change summation order, which
# would break bit-for-bit reproducibility between a laptop and a worker. Effective only when
# numpy is imported after this package (as in both command lines and the worker).
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_v, "1")
from . import checkpoint
from .config import Config
from .data import corpus_sha256, read_corpus
from .errors import (
    CharRNNError,
    CheckpointError,
    ConfigError,
    CorpusError,
    DivergedError,
    PrimeError,
)
from .trainer import Hooks, Trainer

__all__ = [
    "Config",
    "Trainer",
    "Hooks",
    "checkpoint",
    "read_corpus",
    "corpus_sha256",
    "CharRNNError",
    "CheckpointError",
    "ConfigError",
    "CorpusError",
    "DivergedError",
    "PrimeError",
]
