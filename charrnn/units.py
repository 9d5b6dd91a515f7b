"""The one conversion of a training loss to nats per character, for everything people read.

The trainer's smoothed loss is summed over a window of seq_length characters (as in
min-char-rnn), while validation losses are per character; every display divides here, once.
When the trainer reports it per character itself, this becomes `return smooth_loss`.
"""
from __future__ import annotations


def loss_per_char(smooth_loss: float | None, seq_length: int) -> float | None:
    if smooth_loss is None:
        return None
    return smooth_loss / seq_length
