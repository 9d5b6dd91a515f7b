"""What a training run will cost before anything is allocated: the memory a trainer holds and
the bytes of its checkpoint, computed from the config, the vocabulary size and the corpus length.

A job system checks these against its limits at submit and again in the worker, so a job too
large for the pool is refused with a reason instead of dying in NumPy's allocator (or under the
kernel's OOM killer) on every worker it reaches. The figures follow the arrays model.Model and
trainer.Trainer allocate, shape by shape (tests/test_charrnn_footprint.py holds them to within
2x of what is really allocated); they are not measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Config

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
"""Blocks of H rows in each layer's input and recurrent matrices."""

OPTIMIZER_STATES = {"adagrad": 1, "rmsprop": 1, "adam": 2}
"""Vectors the size of the parameters that each optimizer keeps (and checkpoints)."""

EVAL_CHUNK = 256
"""Characters per block of an evaluation pass (the trainer's evaluators are two more models)."""


@dataclass(frozen=True)
class Footprint:
    parameters: int
    memory_bytes: int
    checkpoint_bytes: int


def parameter_count(V: int, H: int, L: int, cell: str, E: int = 0) -> int:
    G = GATES[cell]
    biases = 1 if cell == "rnn" else 2 * G
    layers = sum(G * H * (((E or V) if l == 0 else H) + H) + biases * H for l in range(L))
    return layers + V * (H + 1) + V * E


def model_bytes(
    V: int, H: int, L: int, T: int, B: int, cell: str, dropout: float, item: int, E: int = 0
) -> int:
    """The buffers of model.Model for one window of B streams (its parameters excluded)."""
    G, TB = GATES[cell], T * B
    P = parameter_count(V, H, L, cell, E)
    floats = P  # the gradient
    floats += L * (T + 1) * B * H * (2 if cell == "lstm" else 1)  # h (and c) of every step
    floats += TB * G * H * (4 if cell == "gru" else 3)  # A, dA, D (and the GRU's dZ)
    floats += 2 * TB * H + 5 * B * H  # dH, S; the step's vectors
    floats += 2 * TB * V + 5 * TB + V  # logits, one-hots; per-row vectors
    floats += V * G * H * (2 if E else 1) + G * H  # layer 0's table (and its gradient), a bias
    if cell == "gru":
        floats += L * 2 * TB * 3 * H  # hh and the gates, per layer
    elif cell == "lstm":
        floats += L * TB * (4 * H + H)  # the gates and tanh(c), per layer
    if B > 1:
        floats += L * H * G * H  # C-contiguous Whh^T
    if dropout > 0:
        floats += (2 * L + 2) * TB * H  # masks, masked inputs, uniforms
    return floats * item + 3 * TB * 8  # and three int64 index vectors


def footprint(cfg: Config, vocab_size: int, corpus_chars: int = 0) -> Footprint:
    V, H, L, T = vocab_size, cfg.hidden_size, cfg.num_layers, cfg.seq_length
    B, cell, E = cfg.batch_size, cfg.cell, cfg.embedding
    k = OPTIMIZER_STATES[cfg.optimizer]
    item = np.dtype(cfg.dtype).itemsize
    P = parameter_count(V, H, L, cell, E)
    states = 2 if cell == "lstm" else 1
    params = (2 + k) * P * item  # theta, the update temporary, states
    window = model_bytes(V, H, L, T, B, cell, cfg.dropout, item, E)
    # the evaluators: a block of EVAL_CHUNK and the last shorter block, one stream each
    evaluators = 2 * model_bytes(V, H, L, EVAL_CHUNK, 1, cell, 0.0, item, E)
    corpus = 16 * corpus_chars  # the text as a str (up to 4 bytes a char), ids as int64
    memory = params + window + evaluators + corpus
    checkpoint = (1 + k) * P * item + L * states * B * H * item + 64 * 1024 + 16 * V
    return Footprint(P, int(memory), int(checkpoint))
