"""Drawing text from a model, one character at a time (inherently sequential).

Deterministic: the same parameters, state, options and seed give the same text. Without prime
text the first character is drawn from the state given (a checkpoint's: stream 0's state after
the last character it read, whose prediction it holds; the character itself is not read again);
with prime text the model starts from a zero state and reads the prime first. Every cell reads
through the same `Model` the trainer uses (one stream, one character per window, float64).
"""

from __future__ import annotations

import numpy as np

from .config import Config
from .data import Vocab
from .errors import ConfigError, PrimeError

MAX_LENGTH = 100_000
"""Characters one call draws at most: one step per character, so a few seconds of a small
model's time; a mistyped length (1e8) would print nothing for hours."""


def check_options(length: int, temperature: float, top_k: int | None) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ConfigError(f"length must be a non-negative integer, got {length!r}")
    if length > MAX_LENGTH:
        raise ConfigError(f"length must be at most {MAX_LENGTH:,} characters, got {length:,}")
    if not (isinstance(temperature, (int, float)) and temperature > 0 and np.isfinite(temperature)):
        raise ConfigError(f"temperature must be positive, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top-k must be a positive integer, got {top_k!r}")


def encode_prime(vocab: Vocab, prime: str) -> list[int]:
    unknown = sorted({c for c in prime if c not in vocab.chars})
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise PrimeError(f"prime text has characters the model has never seen: {shown}")
    index = {c: i for i, c in enumerate(vocab.chars)}
    return [index[c] for c in prime]


def sample_from(
    theta: np.ndarray,
    config: Config,
    vocab: Vocab,
    h0: np.ndarray,
    c0: np.ndarray | None,
    length: int,
    temperature: float = 1.0,
    rng: np.random.Generator | None = None,
    top_k: int | None = None,
    argmax: bool = False,
    prime: str | None = None,
) -> str:
    """Text from the flat parameters `theta` of a model of `config` (cell, sizes), from the
    state h0 (L, H) (and the LSTM's c0, (L, H)) after reading the last character: the first new
    character is drawn from it directly."""
    from .model import Model

    check_options(length, temperature, top_k)
    rng = rng if rng is not None else np.random.default_rng(0)
    V, L, H = vocab.size, config.num_layers, config.hidden_size
    m = Model(
        V,
        H,
        L,
        1,
        np.float64,
        theta=np.array(theta, dtype=np.float64),
        cell=config.cell,
        E=config.embedding,
    )
    m.set_state(
        np.asarray(h0, np.float64),
        None if c0 is None or len(c0) == 0 else np.asarray(c0, np.float64),
    )
    Why, by = m.p["Why"], m.p["by"]
    window = np.zeros((1, 1), np.int64)

    def read(c: int) -> np.ndarray:
        """Read one character; the logits of the next (max-subtracted)."""
        window[0, 0] = c
        m.forward(window, None)
        m.carry_state()
        logits: np.ndarray = m.y[0]  # an int index is Any to numpy's stubs
        return logits

    out = []
    if prime:
        ids = encode_prime(vocab, prime)
        m.reset_state()
        for c in ids:
            read(c)
        out.append(prime)
    y = Why @ m.hs[L - 1][0, 0] + by  # (V, H) @ (H,) -> (V,)
    chars = []
    for _ in range(length):
        if argmax:
            c = int(np.argmax(y))
        else:
            y = y / temperature
            if top_k is not None and top_k < V:
                cut = np.partition(y, V - top_k)[V - top_k]
                y = np.where(y >= cut, y, -np.inf)
            e = np.exp(y - y.max())
            cdf = np.cumsum(e)
            c = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
            c = min(c, V - 1)
        chars.append(c)
        y = read(c)
    out.append(vocab.decode(chars))
    return "".join(out)
