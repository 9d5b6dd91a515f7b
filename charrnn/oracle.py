"""The straightforward per-timestep implementation: the test oracle and the speed baseline.

Written the way the classic NumPy char-RNN articles write it: column vectors, a one-hot vector
(or a row of a learned embedding `Emb`) multiplied by Wxh, dicts of per-timestep activations, a Python loop over every character (and
every stream) in both passes and an outer product per character per weight matrix. It computes
the *correct* stack (layer l reads layer l-1, the output reads the top layer, dropout masks reused
in the backward pass) for each cell with PyTorch's equations, so the fast path in model.py must
agree with it to rounding error. Streams are independent: each is run alone and the losses and
gradients are averaged over them, which is the definition model.py implements.

Parameters are passed as a dict of math-shaped arrays (the names of model.param_shapes).
"""

from __future__ import annotations

import numpy as np

from .arrays import Array, Float64Array

Arrays = dict[str, Float64Array]
"""Arrays by name: parameters or gradients (math-shaped), or what one step keeps."""


def sigmoid(x: Float64Array) -> Float64Array:
    return 1.0 / (1.0 + np.exp(-x))


def cell_of(p: Arrays) -> str:
    if "bh0" in p:
        return "rnn"
    return "lstm" if p["Whh0"].shape[0] == 4 * p["Whh0"].shape[1] else "gru"


def step(
    cell: str, p: Arrays, l: int, x: Float64Array, h: Float64Array, c: Float64Array
) -> tuple[Float64Array, Float64Array, Arrays]:
    """One cell step on column vectors; returns h, c and what the backward pass needs."""
    H = h.shape[0]
    if cell == "rnn":
        hn = np.tanh(p[f"Wxh{l}"] @ x + p[f"Whh{l}"] @ h + p[f"bh{l}"].reshape(-1, 1))
        return hn, c, {"h": hn}
    gx = p[f"Wxh{l}"] @ x + p[f"bxh{l}"].reshape(-1, 1)
    gh = p[f"Whh{l}"] @ h + p[f"bhh{l}"].reshape(-1, 1)
    if cell == "gru":
        r = sigmoid(gx[:H] + gh[:H])
        z = sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
        n = np.tanh(gx[2 * H :] + r * gh[2 * H :])
        hn = (1 - z) * n + z * h
        return hn, c, {"r": r, "z": z, "n": n, "ghn": gh[2 * H :]}
    s = gx + gh
    i, f, g, o = (
        sigmoid(s[:H]),
        sigmoid(s[H : 2 * H]),
        np.tanh(s[2 * H : 3 * H]),
        sigmoid(s[3 * H :]),
    )
    cn = f * c + i * g
    hn = o * np.tanh(cn)
    return hn, cn, {"i": i, "f": f, "g": g, "o": o, "c": cn}


def step_back(
    cell: str,
    p: Arrays,
    l: int,
    cache: Arrays,
    x: Float64Array,
    h: Float64Array,
    c: Float64Array,
    dh: Float64Array,
    dc: Float64Array,
    g: Arrays,
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Accumulate one step's weight gradients into g; return dx, dh_prev, dc_prev."""
    if cell == "rnn":
        draw = (1 - cache["h"] ** 2) * dh
        g[f"bh{l}"] += draw[:, 0]
        g[f"Wxh{l}"] += draw @ x.T
        g[f"Whh{l}"] += draw @ h.T
        return p[f"Wxh{l}"].T @ draw, p[f"Whh{l}"].T @ draw, dc
    if cell == "gru":
        r, z, n, ghn = cache["r"], cache["z"], cache["n"], cache["ghn"]
        dn = dh * (1 - z) * (1 - n**2)
        dz = dh * (h - n) * z * (1 - z)
        dr = dn * ghn * r * (1 - r)
        dgx = np.vstack([dr, dz, dn])
        dgh = np.vstack([dr, dz, dn * r])
        dh_prev = dh * z + p[f"Whh{l}"].T @ dgh
    else:
        i, f, gg, o, cn = cache["i"], cache["f"], cache["g"], cache["o"], cache["c"]
        tc = np.tanh(cn)
        dc = dc + dh * o * (1 - tc**2)
        ds = np.vstack(
            [
                dc * gg * i * (1 - i),
                dc * c * f * (1 - f),
                dc * i * (1 - gg**2),
                dh * tc * o * (1 - o),
            ]
        )
        dgx = dgh = ds
        dh_prev = p[f"Whh{l}"].T @ ds
        dc = dc * f
    g[f"bxh{l}"] += dgx[:, 0]
    g[f"bhh{l}"] += dgh[:, 0]
    g[f"Wxh{l}"] += dgx @ x.T
    g[f"Whh{l}"] += dgh @ h.T
    return p[f"Wxh{l}"].T @ dgx, dh_prev, dc


def _mask(masks: list[Float64Array | None], l: int, t: int) -> Float64Array:
    """masks[l] at step t as a column; l >= 1 (masks[0], unused, may be None)."""
    m = masks[l]
    assert m is not None
    row: Float64Array = m[t]  # an int index is Any to numpy's stubs
    return row.reshape(-1, 1)


def loss_and_grads_one(
    p: Arrays,
    inputs: Array,
    targets: Array,
    hprev: list[Float64Array],
    masks: list[Float64Array | None] | None = None,
    cprev: list[Float64Array] | None = None,
) -> tuple[float, Arrays, list[Float64Array], list[Float64Array]]:
    """Loss, gradients (dict like p) and last states for one window of one stream.

    hprev (cprev): L arrays of shape (H,). masks: None, or L+1 arrays (T, H) where masks[l]
    (l >= 1) multiplies the input of layer l and masks[L] the input of the output layer."""
    cell = cell_of(p)
    L = sum(1 for k in p if k.startswith("Whh"))
    V, H = p["Why"].shape
    hs, cs, caches, ps, xin = {}, {}, {}, {}, {}
    for l in range(L):
        hs[(-1, l)] = np.copy(hprev[l]).reshape(-1, 1)
        cs[(-1, l)] = np.zeros((H, 1)) if cprev is None else np.copy(cprev[l]).reshape(-1, 1)
    loss = 0.0
    for t in range(len(inputs)):
        if "Emb" in p:  # a learned embedding: the character's row, as a column
            below = p["Emb"][inputs[t]].reshape(-1, 1).copy()
        else:
            below = np.zeros((V, 1))
            below[inputs[t]] = 1
        for l in range(L):
            if l > 0 and masks is not None:
                below = below * _mask(masks, l, t)
            xin[(t, l)] = below
            hs[(t, l)], cs[(t, l)], caches[(t, l)] = step(
                cell, p, l, below, hs[(t - 1, l)], cs[(t - 1, l)]
            )
            below = hs[(t, l)]
        if masks is not None:
            below = below * _mask(masks, L, t)
        xin[(t, L)] = below
        y = p["Why"] @ below + p["by"].reshape(-1, 1)
        e = np.exp(y - np.max(y))
        ps[t] = e / np.sum(e)
        loss += -np.log(ps[t][targets[t], 0])
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dhnext = [np.zeros((H, 1)) for _ in range(L)]
    dcnext = [np.zeros((H, 1)) for _ in range(L)]
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        g["Why"] += dy @ xin[(t, L)].T
        g["by"] += dy[:, 0]
        dbelow = p["Why"].T @ dy
        if masks is not None:
            dbelow = dbelow * _mask(masks, L, t)
        for l in reversed(range(L)):
            dh = dbelow + dhnext[l]
            dbelow, dhnext[l], dcnext[l] = step_back(
                cell,
                p,
                l,
                caches[(t, l)],
                xin[(t, l)],
                hs[(t - 1, l)],
                cs[(t - 1, l)],
                dh,
                dcnext[l],
                g,
            )
            if l > 0 and masks is not None:
                dbelow = dbelow * _mask(masks, l, t)
        if "Emb" in p:
            g["Emb"][inputs[t]] += dbelow[:, 0]
    last = [hs[(len(inputs) - 1, l)][:, 0].copy() for l in range(L)]
    last_c = [cs[(len(inputs) - 1, l)][:, 0].copy() for l in range(L)]
    return loss, g, last, last_c


def loss_and_grads(
    p: Arrays,
    inputs: Array,
    targets: Array,
    hprev: list[Float64Array],
    masks: list[Float64Array | None] | None = None,
    cprev: list[Float64Array] | None = None,
) -> (
    tuple[float, Arrays, list[Float64Array]]
    | tuple[float, Arrays, list[Float64Array], list[Float64Array]]
):
    """One window of B streams: inputs, targets (T, B) (or (T,) for one stream), hprev (cprev)
    L arrays (B, H) (or (H,)), masks L+1 arrays (T, B, H) (or (T, H)). Returns the loss and the
    gradients averaged over the streams, and the last states ((L, B, H) lists, squeezed for one
    stream as given). For the vanilla cell: loss, grads, last h (the original signature)."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    one = inputs.ndim == 1
    if one:
        inputs, targets = inputs[:, None], targets[:, None]
        hprev = [np.asarray(h)[None] for h in hprev]
        cprev = None if cprev is None else [np.asarray(c)[None] for c in cprev]
        masks = (
            None
            if masks is None
            else [None if m is None else np.asarray(m)[:, None] for m in masks]
        )
    B = inputs.shape[1]
    grads: Arrays | None
    lasts: list[list[Float64Array]]
    lasts_c: list[list[Float64Array]]
    loss, grads, lasts, lasts_c = 0.0, None, [], []
    for b in range(B):
        mb = None if masks is None else [None if m is None else m[:, b] for m in masks]
        cb = None if cprev is None else [c[b] for c in cprev]
        lb, gb, hb, cb = loss_and_grads_one(
            p, inputs[:, b], targets[:, b], [h[b] for h in hprev], mb, cb
        )
        loss += lb
        grads = gb if grads is None else {k: grads[k] + gb[k] for k in grads}
        lasts.append(hb)
        lasts_c.append(cb)
    assert grads is not None  # B >= 1 streams
    if B > 1:
        loss /= B
        grads = {k: v / B for k, v in grads.items()}
    L = len(hprev)
    last = [np.stack([lasts[b][l] for b in range(B)]) for l in range(L)]
    last_c = [np.stack([lasts_c[b][l] for b in range(B)]) for l in range(L)]
    if one:
        last, last_c = [h[0] for h in last], [c[0] for c in last_c]
    if cell_of(p) == "rnn" and cprev is None:
        return loss, grads, last
    return loss, grads, last, last_c


class BaselineTrainer:
    """Article-style sequential online training (per-timestep loops, Adagrad per matrix), used by
    the benchmark as the baseline. Same windows, state carrying, clipping and update rule as
    charrnn.trainer (vanilla cell, one stream), so the two train the same model."""

    def __init__(
        self,
        params: Arrays,
        data: np.ndarray,
        seq_length: int,
        learning_rate: float,
        grad_clip: float = 5.0,
    ):
        self.p = {k: v.copy() for k, v in params.items()}
        self.mem = {k: np.zeros_like(v) for k, v in params.items()}
        self.data, self.T, self.lr, self.clip = data, seq_length, learning_rate, grad_clip
        L = sum(1 for k in params if k.startswith("Whh"))
        H = params["Whh0"].shape[1]
        self.h: list[Float64Array] = [np.zeros(H) for _ in range(L)]
        self.pointer = 0

    def step(self) -> float:
        T = self.T
        if self.pointer + T + 1 > len(self.data):
            self.pointer = 0
            self.h = [np.zeros_like(h) for h in self.h]
        inputs = self.data[self.pointer : self.pointer + T]
        targets = self.data[self.pointer + 1 : self.pointer + T + 1]
        loss, g, self.h = loss_and_grads(self.p, inputs, targets, self.h)[:3]  # vanilla: 3 items
        for k in self.p:
            np.clip(g[k], -self.clip, self.clip, out=g[k])
            self.mem[k] += g[k] * g[k]
            self.p[k] += -self.lr * g[k] / np.sqrt(self.mem[k] + 1e-8)
        self.pointer += T
        return loss
