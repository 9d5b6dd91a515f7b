"""What a training run will cost before anything is allocated: the memory a trainer holds and
the bytes of its checkpoint, computed from the config, the vocabulary size and the corpus length.

A job system checks these against its limits at submit and again in the worker, so a job too
large for the pool is refused with a reason instead of dying in NumPy's allocator (or under the
kernel's OOM killer) on every worker it reaches. The figures are estimates from the shapes the
model allocates, on the high side; they are not measured.
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
"""Characters per block of an evaluation pass (the trainer's evaluator is a second model)."""


@dataclass(frozen=True)
class Footprint:
    parameters: int
    memory_bytes: int
    checkpoint_bytes: int


def footprint(cfg: Config, vocab_size: int, corpus_chars: int = 0) -> Footprint:
    V, H, L, T = vocab_size, cfg.hidden_size, cfg.num_layers, cfg.seq_length
    B = int(getattr(cfg, "batch_size", 1))
    G = GATES[getattr(cfg, "cell", "rnn")]
    k = OPTIMIZER_STATES[getattr(cfg, "optimizer", "adagrad")]
    item = np.dtype(cfg.dtype).itemsize
    P = sum(G * H * ((V if l == 0 else H) + H + 2) for l in range(L)) + V * (H + 1)
    states = 2 if getattr(cfg, "cell", "rnn") == "lstm" else 1
    # theta, grad, an update temporary, the optimizer's states
    params = (3 + k) * P
    # per layer and step: the gates, the state(s), their gradients, masks; logits and one-hots
    def window(b: int, t: int) -> int:
        return L * b * (t + 1) * H * (2 * G + 2 * states + 4) + 3 * b * t * V
    activations = window(B, T) + window(1, EVAL_CHUNK)
    corpus = 16 * corpus_chars           # the text as a str (up to 4 bytes a char), ids as int64
    memory = (params + activations) * item + corpus
    checkpoint = (1 + k) * P * item + L * states * B * H * item + 64 * 1024 + 16 * V
    return Footprint(P, int(memory), int(checkpoint))
