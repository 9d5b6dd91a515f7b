"""The straightforward per-timestep implementation: the test oracle and the speed baseline.

Written the way the classic NumPy char-RNN articles write it: column vectors, a one-hot vector
multiplied by Wxh, dicts of per-timestep activations, a Python loop over every character in both
passes and an outer product per character per weight matrix. It computes the *correct* stack
(layer l reads layer l-1, the output reads the top layer, dropout masks reused in the backward
pass), so the fast path in model.py must agree with it to rounding error.

Parameters are passed as a dict of math-shaped arrays (the names of model.param_shapes).
"""
from __future__ import annotations

import numpy as np


def loss_and_grads(p: dict, inputs, targets, hprev: list, masks: list | None = None):
    """Loss, gradients (dict like p) and last hidden states for one window.

    hprev: L arrays of shape (H,). masks: None, or L+1 arrays (T, H) where masks[l] (l >= 1)
    multiplies the input of layer l and masks[L] the input of the output layer."""
    L = sum(1 for k in p if k.startswith("Whh"))
    V = p["Why"].shape[0]
    xs, hs, ys, ps, xin = {}, {}, {}, {}, {}
    for l in range(L):
        hs[(-1, l)] = np.copy(hprev[l]).reshape(-1, 1)
    loss = 0.0
    for t in range(len(inputs)):
        xs[t] = np.zeros((V, 1))
        xs[t][inputs[t]] = 1
        below = xs[t]
        for l in range(L):
            if l > 0 and masks is not None:
                below = below * masks[l][t].reshape(-1, 1)
            xin[(t, l)] = below
            hs[(t, l)] = np.tanh(np.dot(p[f"Wxh{l}"], below) + np.dot(p[f"Whh{l}"], hs[(t - 1, l)])
                                 + p[f"bh{l}"].reshape(-1, 1))
            below = hs[(t, l)]
        if masks is not None:
            below = below * masks[L][t].reshape(-1, 1)
        xin[(t, L)] = below
        ys[t] = np.dot(p["Why"], below) + p["by"].reshape(-1, 1)
        e = np.exp(ys[t] - np.max(ys[t]))
        ps[t] = e / np.sum(e)
        loss += -np.log(ps[t][targets[t], 0])
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dhnext = [np.zeros((p[f"Whh{l}"].shape[0], 1)) for l in range(L)]
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        g["Why"] += np.dot(dy, xin[(t, L)].T)
        g["by"] += dy[:, 0]
        dbelow = np.dot(p["Why"].T, dy)
        if masks is not None:
            dbelow = dbelow * masks[L][t].reshape(-1, 1)
        for l in reversed(range(L)):
            dh = dbelow + dhnext[l]
            dhraw = (1 - hs[(t, l)] * hs[(t, l)]) * dh
            g[f"bh{l}"] += dhraw[:, 0]
            g[f"Wxh{l}"] += np.dot(dhraw, xin[(t, l)].T)
            g[f"Whh{l}"] += np.dot(dhraw, hs[(t - 1, l)].T)
            dhnext[l] = np.dot(p[f"Whh{l}"].T, dhraw)
            dbelow = np.dot(p[f"Wxh{l}"].T, dhraw)
            if l > 0 and masks is not None:
                dbelow = dbelow * masks[l][t].reshape(-1, 1)
    last = [hs[(len(inputs) - 1, l)][:, 0].copy() for l in range(L)]
    return loss, g, last


class BaselineTrainer:
    """Article-style sequential online training (per-timestep loops, Adagrad per matrix), used by
    the benchmark as the baseline. Same windows, state carrying, clipping and update rule as
    charrnn.trainer, so the two train the same model."""

    def __init__(self, params: dict, data: np.ndarray, seq_length: int, learning_rate: float,
                 grad_clip: float = 5.0):
        self.p = {k: v.copy() for k, v in params.items()}
        self.mem = {k: np.zeros_like(v) for k, v in params.items()}
        self.data, self.T, self.lr, self.clip = data, seq_length, learning_rate, grad_clip
        L = sum(1 for k in params if k.startswith("Whh"))
        H = params["Whh0"].shape[0]
        self.h = [np.zeros(H) for _ in range(L)]
        self.pointer = 0

    def step(self) -> float:
        T = self.T
        if self.pointer + T + 1 > len(self.data):
            self.pointer = 0
            self.h = [np.zeros_like(h) for h in self.h]
        inputs = self.data[self.pointer:self.pointer + T]
        targets = self.data[self.pointer + 1:self.pointer + T + 1]
        loss, g, self.h = loss_and_grads(self.p, inputs, targets, self.h)
        for k in self.p:
            np.clip(g[k], -self.clip, self.clip, out=g[k])
            self.mem[k] += g[k] * g[k]
            self.p[k] += -self.lr * g[k] / np.sqrt(self.mem[k] + 1e-8)
        self.pointer += T
        return loss
