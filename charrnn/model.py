"""The stacked vanilla RNN: parameters, and one window's forward and backward pass, fast.

    h[t][l] = tanh(Wxh[l] x[t][l] + Whh[l] h[t-1][l] + bh[l])
    x[t][0] = onehot(char[t]),  x[t][l] = dropout(h[t][l-1])  for l >= 1
    y[t]    = Why dropout(h[t][L-1]) + by,   p[t] = softmax(y[t]),   loss = -sum_t log p[t][target[t]]

Unlike the classic NumPy article this grows from (which feeds the one-hot input to every layer and
connects only the last one to the output, so its lower layers never affect the loss), each layer
here reads the layer below, and dropout masks are kept for the backward pass.

Speed comes from computing layer by layer, not character by character: only the recurrence
h[t] = tanh(a[t] + Whh h[t-1]) and its backward pass loop over t. The input projection of layer 0
is a row gather, the other projections, the output layer, softmax and loss are one matrix product
each over the window, and every weight gradient is one product. All arrays are preallocated, and
parameters, gradients and Adagrad memories are each one flat vector, so clipping and the update
are a handful of in-place operations whatever the depth.

Shapes: T window length, H hidden size, V vocabulary size, L layers. Activations are stored
row-wise, (T, H), so each h[t] is a contiguous row.
"""
from __future__ import annotations

import numpy as np


def param_shapes(V: int, H: int, L: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and math shapes of every parameter, in their order in the flat vector."""
    shapes = []
    for l in range(L):
        shapes += [(f"Wxh{l}", (H, V if l == 0 else H)), (f"Whh{l}", (H, H)), (f"bh{l}", (H,))]
    return shapes + [("Why", (V, H)), ("by", (V,))]


def param_count(V: int, H: int, L: int) -> int:
    return sum(int(np.prod(s)) for _, s in param_shapes(V, H, L))


def views(flat: np.ndarray, V: int, H: int, L: int) -> dict[str, np.ndarray]:
    """Named views of a flat parameter (or gradient, or memory) vector, in math shapes.

    Wxh0 is stored as the C-contiguous (V, H) array whose transpose it is, so that the layer-0
    input projection is a contiguous row gather."""
    out, o = {}, 0
    for name, shape in param_shapes(V, H, L):
        n = int(np.prod(shape))
        chunk = flat[o:o + n]
        if name == "Wxh0":
            out[name] = chunk.reshape(shape[1], shape[0]).T
        else:
            out[name] = chunk.reshape(shape)
        o += n
    assert o == flat.size
    return out


def init_params(flat: np.ndarray, V: int, H: int, L: int, rng: np.random.Generator) -> None:
    """Scaled so activations neither vanish nor saturate at the start, unlike the article's
    0.01 * randn, which leaves a stacked net's upper layers almost silent for thousands of steps.
    Matrices that read hidden states are N(0, 1/fan_in) (unit gain); a column of Wxh0 is the
    embedding of one character, read alone, so its entries get a fixed N(0, 0.3^2); biases are 0."""
    p = views(flat, V, H, L)
    flat[:] = 0
    for l in range(L):
        fan_in = V if l == 0 else H
        scale = 0.3 if l == 0 else 1.0 / np.sqrt(fan_in)
        p[f"Wxh{l}"][...] = rng.standard_normal((H, fan_in)) * scale
        p[f"Whh{l}"][...] = rng.standard_normal((H, H)) / np.sqrt(H)
    p["Why"][...] = rng.standard_normal((V, H)) / np.sqrt(H)


class Model:
    """Parameters of a stacked RNN and the buffers of one window, all preallocated.

    `loss_and_grads(inputs, targets, h0)` runs forward and backward for one window; the hidden
    state is carried by the caller through `self.h_last(l)` and `set_h0`."""

    def __init__(self, V: int, H: int, L: int, T: int, dtype=np.float64, dropout: float = 0.0,
                 theta: np.ndarray | None = None):
        self.V, self.H, self.L, self.T = V, H, L, T
        self.dtype = np.dtype(dtype)
        self.dropout = float(dropout)
        n = param_count(V, H, L)
        # parameters; shared, not copied, when given (an evaluator reading the trainer's weights)
        self.theta = np.zeros(n, self.dtype) if theta is None else theta
        assert self.theta.shape == (n,) and self.theta.dtype == self.dtype
        self.grad = np.zeros(n, self.dtype)
        self.p = views(self.theta, V, H, L)
        self.g = views(self.grad, V, H, L)
        f = self.dtype
        # hs[l]: row 0 is the state carried in from the previous window, rows 1..T are h[1..T]
        self.hs = [np.zeros((T + 1, H), f) for _ in range(L)]
        self.a = np.zeros((T, H), f)              # pre-activations of one layer
        self.gate = np.zeros((T, H), f)           # 1 - h^2, the tanh derivative
        self.dh = np.zeros((T, H), f)             # dloss/dh[t] arriving from above (the output or layer l+1)
        self.draw = np.zeros((T, H), f)           # dloss/d(pre-activation)
        self.dhnext = np.zeros(H, f)              # dloss/dh[t] through the recurrence
        self.y = np.zeros((T, V), f)              # logits, then probabilities, then dloss/dy
        self.ymax = np.zeros(T, f)
        self.ysum = np.zeros(T, f)
        self.ymax_col, self.ysum_col = self.ymax[:, None], self.ysum[:, None]
        self.ones_V, self.ones_T = np.ones(V, f), np.ones(T, f)
        self.onehot = np.zeros((T, V), f)          # used only for the layer-0 weight gradient
        # flat indices into (T, V) arrays: row t, column of char t; with np.take/np.put they
        # read and write one element per row without fancy indexing's temporaries
        self.row_starts = np.arange(T) * V
        self.target_at = np.zeros(T, np.int64)     # of the targets, in y
        self.input_at = np.zeros(T, np.int64)      # of the inputs, in onehot
        self.correct = np.zeros(T, f)              # the targets' logits, then their dy
        self.logsum = np.zeros(T, f)
        self.y_flat, self.onehot_flat = self.y.reshape(-1), self.onehot.reshape(-1)
        # dropout: x[l] for l >= 1 is dropout(h[l-1]); xs[L] is the input of the output layer
        if self.dropout > 0:
            self.masks = [np.ones((T, H), f) for _ in range(L + 1)]   # masks[0] unused (one-hot input)
            self.xs = [None] + [np.zeros((T, H), f) for _ in range(L)]
            self.uniform = np.zeros((T, H), np.float64 if f == np.float64 else np.float32)
        # row views made once, so the sequential loops do no slicing
        self.hs_rows = [[hs[t] for t in range(T + 1)] for hs in self.hs]
        self.a_rows = [self.a[t] for t in range(T)]
        self.gate_rows = [self.gate[t] for t in range(T)]
        self.dh_rows = [self.dh[t] for t in range(T)]
        self.draw_rows = [self.draw[t] for t in range(T)]

    # --- state carried across windows -------------------------------------------------------
    def reset_state(self) -> None:
        for hs in self.hs:
            hs[0] = 0

    def carry_state(self) -> None:
        """The last hidden state of this window becomes the first of the next."""
        for hs in self.hs:
            hs[0] = hs[self.T]

    def state(self) -> np.ndarray:
        return np.stack([hs[0] for hs in self.hs])  # (L, H)

    def set_state(self, h: np.ndarray) -> None:
        for l, hs in enumerate(self.hs):
            hs[0] = h[l]

    # --- one window --------------------------------------------------------------------------
    def draw_masks(self, rng: np.random.Generator) -> None:
        keep = 1.0 - self.dropout
        for l in range(1, self.L + 1):
            rng.random(out=self.uniform, dtype=self.uniform.dtype)  # float32 buffers need dtype
            m = self.masks[l]
            np.greater_equal(self.uniform, self.dropout, out=m, casting="unsafe")
            m *= 1.0 / keep

    def _layer_input(self, l: int) -> np.ndarray:
        """x[l] for l >= 1 (l == L: the output layer's input), masked when training with dropout."""
        h = self.hs[l - 1][1:]
        if self.dropout > 0:
            np.multiply(h, self.masks[l], out=self.xs[l])
            return self.xs[l]
        return h

    def _x(self, l: int) -> np.ndarray:
        """x[l] as the last forward computed it."""
        return self.xs[l] if self.dropout > 0 else self.hs[l - 1][1:]

    def forward(self, inputs: np.ndarray, targets: np.ndarray | None) -> float:
        """Forward over one window from the carried state; returns the summed cross-entropy."""
        p, T = self.p, self.T
        a, a_rows = self.a, self.a_rows
        for l in range(self.L):
            if l == 0:
                np.take(p["Wxh0"].T, inputs, axis=0, out=a)          # row gather: (T,) -> (T, H)
            else:
                np.matmul(self._layer_input(l), p[f"Wxh{l}"].T, out=a)  # (T, H) @ (H, H) -> (T, H)
            a += p[f"bh{l}"]
            Whh_dot = p[f"Whh{l}"].dot                               # bound once: the loop is call-bound
            rows, add, tanh = self.hs_rows[l], np.add, np.tanh
            for t in range(T):                                       # the only sequential part
                h = rows[t + 1]
                Whh_dot(rows[t], h)                                  # (H, H) @ (H,) -> (H,)
                add(h, a_rows[t], h)                                 # positional out: no kwargs to parse
                tanh(h, h)
        y = self.y
        np.matmul(self._layer_input(self.L), p["Why"].T, out=y)     # (T, H) @ (H, V) -> (T, V)
        y += p["by"]
        np.maximum.reduce(y, axis=1, out=self.ymax)
        y -= self.ymax_col                                           # max-subtracted softmax
        if targets is None:
            return 0.0
        np.add(self.row_starts, targets, out=self.target_at)
        np.take(self.y_flat, self.target_at, out=self.correct)      # (T,) logits of the targets
        np.exp(y, out=y)
        np.dot(y, self.ones_V, out=self.ysum)                        # row sums as a product: (T, V) @ (V,)
        np.log(self.ysum, out=self.logsum)
        loss = float(self.logsum.sum() - self.correct.sum())        # -sum log softmax[target]
        y /= self.ysum_col                                           # probabilities
        return loss

    def backward(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """Gradients of the last forward's loss into self.grad (overwritten, not accumulated);
        inputs and targets are that forward's (its target positions are reused)."""
        p, g, T = self.p, self.g, self.T
        ones_T = self.ones_T
        dy = self.y
        np.take(self.y_flat, self.target_at, out=self.correct)     # softmax + cross-entropy:
        self.correct -= 1.0                                          # dy = p - onehot(target)
        np.put(self.y_flat, self.target_at, self.correct)
        np.matmul(dy.T, self._x(self.L), out=g["Why"])               # (V, T) @ (T, H) -> (V, H)
        np.dot(ones_T, dy, out=g["by"])                              # column sums: (T,) @ (T, V)
        dh = self.dh
        np.matmul(dy, p["Why"], out=dh)                              # (T, V) @ (V, H) -> (T, H)
        if self.dropout > 0:
            dh *= self.masks[self.L]
        draw, gate, dhnext = self.draw, self.gate, self.dhnext
        dh_rows, draw_rows, gate_rows = self.dh_rows, self.draw_rows, self.gate_rows
        for l in reversed(range(self.L)):
            hs = self.hs[l]
            np.multiply(hs[1:], hs[1:], out=gate)
            np.subtract(1.0, gate, out=gate)                         # tanh' = 1 - h^2
            WhhT_dot, add, mul = p[f"Whh{l}"].T.dot, np.add, np.multiply
            mul(dh_rows[T - 1], gate_rows[T - 1], draw_rows[T - 1])
            for t in range(T - 2, -1, -1):                           # backward through time
                WhhT_dot(draw_rows[t + 1], dhnext)                   # (H, H) @ (H,) -> (H,)
                dr = draw_rows[t]
                add(dh_rows[t], dhnext, dr)
                mul(dr, gate_rows[t], dr)
            np.matmul(draw.T, hs[:-1], out=g[f"Whh{l}"])             # (H, T) @ (T, H) -> (H, H)
            np.dot(ones_T, draw, out=g[f"bh{l}"])
            if l == 0:
                # The gather's adjoint is a scatter-add of rows; as a product with the window's
                # (T, V) one-hot matrix it is one BLAS call, 2-3x faster than np.add.at at T << V.
                np.put(self.onehot_flat, self.input_at, 0.0)         # the last window's ones
                np.add(self.row_starts, inputs, out=self.input_at)
                np.put(self.onehot_flat, self.input_at, 1.0)
                np.matmul(self.onehot.T, draw, out=g["Wxh0"].T)      # (V, T) @ (T, H) -> (V, H)
            else:
                np.matmul(draw.T, self._x(l), out=g[f"Wxh{l}"])      # (H, T) @ (T, H) -> (H, H)
                np.matmul(draw, p[f"Wxh{l}"], out=dh)                # (T, H) @ (H, H) -> (T, H)
                if self.dropout > 0:
                    dh *= self.masks[l]

    def top_state(self) -> np.ndarray:
        return self.hs[self.L - 1][self.T]
