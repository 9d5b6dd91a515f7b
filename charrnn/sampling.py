"""Drawing text from a model, one character at a time (inherently sequential).

Deterministic: the same parameters, state, options and seed give the same text. Without prime
text the model continues from the hidden state and last character it holds; with prime text it
starts from a zero state and reads the prime first.
"""
from __future__ import annotations

import numpy as np

from .data import Vocab
from .errors import ConfigError, PrimeError


def check_options(length: int, temperature: float, top_k: int | None) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ConfigError(f"length must be a non-negative integer, got {length!r}")
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


def sample_from(p: dict, L: int, vocab: Vocab, h0: np.ndarray, length: int,
                temperature: float = 1.0, rng: np.random.Generator | None = None,
                top_k: int | None = None, argmax: bool = False, prime: str | None = None) -> str:
    """Text from parameters `p` (math-shaped views, model.views) and state h0 (L, H), the state
    after reading the last character: the first new character is drawn from it directly."""
    check_options(length, temperature, top_k)
    rng = rng if rng is not None else np.random.default_rng(0)
    V = vocab.size
    h = np.array(h0, dtype=np.float64, copy=True)
    P = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    emb = np.ascontiguousarray(P["Wxh0"].T)        # (V, H): column c of Wxh0 is x=onehot(c)'s input

    def read(c: int) -> None:
        x = emb[c]
        for l in range(L):
            pre = (x if l == 0 else P[f"Wxh{l}"] @ x) + P[f"Whh{l}"] @ h[l] + P[f"bh{l}"]
            h[l] = np.tanh(pre)
            x = h[l]

    out = []
    if prime:
        ids = encode_prime(vocab, prime)
        h[:] = 0
        for c in ids:
            read(c)
        out.append(prime)
    chars = []
    for _ in range(length):
        y = P["Why"] @ h[L - 1] + P["by"]                   # (V, H) @ (H,) -> (V,)
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
        read(c)
    out.append(vocab.decode(chars))
    return "".join(out)
