"""The stacked recurrent network: parameters, and one window's forward and backward pass over B
parallel streams, fast, for three cells (PyTorch's formulations and gate orders):

    rnn:   h = tanh(Wxh x + Whh h_prev + bh)
    gru:   r, z = sigmoid(Wxh_{r,z} x + bxh_{r,z} + Whh_{r,z} h_prev + bhh_{r,z})
           n = tanh(Wxh_n x + bxh_n + r * (Whh_n h_prev + bhh_n))
           h = (1 - z) * n + z * h_prev
    lstm:  i, f, o = sigmoid(.), g = tanh(.)  of  Wxh x + bxh + Whh h_prev + bhh  (rows i, f, g, o)
           c = f * c_prev + i * g,   h = o * tanh(c)

    x[t][0] = onehot(char[t])  (or Emb[char[t]], a learned embedding, when E > 0)
    x[t][l] = dropout(h[t][l-1])  for l >= 1
    y[t]    = Why dropout(h[t][L-1]) + by,   loss = (1/B) sum_b sum_t -log softmax(y[t][b])[target]

The loss is summed over a window's T characters (as min-char-rnn, so the vanilla cell with B = 1
is exactly the original trainer) and averaged over the B streams (so the gradient's size, which
the clips are compared against, does not grow with B).

Speed comes from computing layer by layer, not character by character. Per layer, the input
projection of the whole window for all G gates is one product (layer 0: a row gather from a
(V, G*H) table of each character's row, which with an embedding is Emb Wxh0^T), only the
recurrence loops over t, one (B, H) @ (H, G*H) product per step, and every weight gradient is
one product over the window. The cells share that skeleton (`Model.forward`, `Model.backward`);
each cell class (cells.py) holds only its recurrence and its backward pass. All arrays are
preallocated, and parameters and gradients are each one flat vector.

Shapes: T window length, B streams, H hidden size, G gates (1, 3, 4), V vocabulary, L layers,
E embedding size (0: none).
Activations are time-major, (T, B, H), so a step's (B, H) block is contiguous.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from .cells import CELL_CLASSES, rows
from .params import (
    CELLS,
    GATES,
    init_params,
    param_count,
    param_shapes,
    torch_state_dict,
    views,
)

__all__ = [
    "CELLS",
    "GATES",
    "Model",
    "init_params",
    "param_count",
    "param_shapes",
    "torch_state_dict",
    "views",
]


class Model:
    """Parameters of a stacked recurrent network and the buffers of one window of B streams,
    all preallocated.

    `forward(inputs, targets)` then `backward(inputs, targets)` for one window of (T, B) ids;
    the hidden (and LSTM cell) state of every stream is carried from window to window by
    `carry_state()`, read by `state()`/`cell_state()`, and set by `set_state()`/`reset_state()`."""

    def __init__(
        self,
        V: int,
        H: int,
        L: int,
        T: int,
        dtype: DTypeLike = np.float64,
        dropout: float = 0.0,
        theta: np.ndarray | None = None,
        cell: str = "rnn",
        B: int = 1,
        E: int = 0,
    ):
        assert cell in GATES and B >= 1 and T >= 1 and E >= 0
        self.V, self.H, self.L, self.T, self.B, self.E, self.cell = V, H, L, T, B, E, cell
        self.G = GATES[cell]
        self.dtype = f = np.dtype(dtype)
        self.dropout = float(dropout)
        n = param_count(V, H, L, cell, E)
        # parameters; shared, not copied, when given (an evaluator reading the trainer's weights)
        self.theta = np.zeros(n, f) if theta is None else theta
        assert self.theta.shape == (n,) and self.theta.dtype == f
        self.grad = np.zeros(n, f)
        self.p = views(self.theta, V, H, L, cell, E)
        self.g = views(self.grad, V, H, L, cell, E)
        self._window_buffers()
        self._output_buffers()
        if self.dropout > 0:
            # x[l] for l >= 1 is dropout(h[l-1]); xs[L] is the input of the output layer
            self.masks = [np.ones((T, B, H), f) for _ in range(L + 1)]  # masks[0] unused
            self.xs = [None] + [np.zeros((T, B, H), f) for _ in range(L)]
            self.uniform = np.zeros((T, B, H), np.float64 if f == np.float64 else np.float32)
        self._row_views()
        self.cells = [CELL_CLASSES[cell](self, l) for l in range(L)]
        # With several streams the recurrent product is (B, H) @ (H, GH), which OpenBLAS runs
        # ~1.5x faster on a C-contiguous right operand than on Whh's transposed view: a copy
        # per layer per window (G H^2 elements) buys that on each of the T steps. With one
        # stream it is a matrix-vector product on the view, as it always was (same bits).
        self.WhhT = [np.zeros((H, self.G * H), f) for _ in range(L)] if B > 1 else None

    def _window_buffers(self) -> None:
        """The recurrent layers' arrays for one window: states, projections, their gradients."""
        V, H, L, T, B, G, f = self.V, self.H, self.L, self.T, self.B, self.G, self.dtype
        # hs[l]: row 0 is the state carried in from the previous window, rows 1..T are h[1..T]
        self.hs = [np.zeros((T + 1, B, H), f) for _ in range(L)]
        self.cs = [np.zeros((T + 1, B, H), f) for _ in range(L)] if self.cell == "lstm" else []
        self.A = np.zeros((T, B, G * H), f)  # input projection of one layer, all gates
        self.table = np.zeros((V, G * H), f)  # layer 0's input row of each character, + bias
        self.dtable = np.zeros((V if self.E else 0, G * H), f)  # its gradient (E > 0)
        self.bias = np.zeros(G * H, f)
        self.dA = np.zeros((T, B, G * H), f)  # dloss/dA
        # dloss/d(recurrent product + bhh): the GRU's differs from dA in its n block
        self.dZ = np.zeros((T, B, G * H), f) if self.cell == "gru" else self.dA
        self.dH = np.zeros((T, B, H), f)  # dloss/dh arriving from above
        self.D = np.zeros((T, B, G * H), f)  # the window's local derivatives
        self.S = np.zeros((T, B, H), f)  # scratch of the window
        step = [np.zeros((B, H), f) for _ in range(5)]
        self.dh, self.dhn, self.dc, self.dcn, self.tmp_h = (a[0] if B == 1 else a for a in step)

    def _output_buffers(self) -> None:
        """The output layer's arrays: logits, the softmax's sums, the targets' positions."""
        V, TB, f = self.V, self.T * self.B, self.dtype
        self.y = np.zeros((TB, V), f)  # logits, then probabilities, then dloss/dy
        self.ymax, self.ysum = np.zeros(TB, f), np.zeros(TB, f)
        self.ymax_col, self.ysum_col = self.ymax[:, None], self.ysum[:, None]
        self.ones_V, self.ones_TB = np.ones(V, f), np.ones(TB, f)
        self.onehot = np.zeros((TB, V), f)  # used only for the layer-0 weight gradient
        # flat indices into (TB, V) arrays: row t*B+b, column of its char; with np.take/np.put
        # they read and write one element per row without fancy indexing's temporaries
        self.row_starts = np.arange(TB) * V
        self.target_at = np.zeros(TB, np.int64)  # of the targets, in y
        self.input_at = np.zeros(TB, np.int64)  # of the inputs, in onehot
        self.correct = np.zeros(TB, f)  # the targets' logits, then their dy
        self.logsum = np.zeros(TB, f)
        self.y_flat, self.onehot_flat = self.y.reshape(-1), self.onehot.reshape(-1)

    def _row_views(self) -> None:
        """Per-step views made once, so the sequential loops do no slicing."""
        H, sq = self.H, self.B == 1
        self.h_rows = [rows(hs, sq) for hs in self.hs]
        self.c_rows = [rows(cs, sq) for cs in self.cs]
        self.A_rows, self.dA_rows, self.dZ_rows = (rows(a, sq) for a in (self.A, self.dA, self.dZ))
        self.dH_rows, self.D_rows, self.S_rows = (rows(a, sq) for a in (self.dH, self.D, self.S))

        def blocks(rs: list[np.ndarray], k: int) -> list[np.ndarray]:
            return [r[..., k * H : (k + 1) * H] for r in rs]

        if self.cell == "gru":
            self.a_rz_rows = [a[..., : 2 * H] for a in self.A_rows]
            self.a_n_rows = blocks(self.A_rows, 2)
            self.R_rows, self.Q_rows, self.P_rows = (blocks(self.D_rows, k) for k in range(3))
            self.dZr_rows, self.dZz_rows, self.dZn_rows = (
                blocks(self.dZ_rows, k) for k in range(3)
            )
            self.dAn_rows = blocks(self.dA_rows, 2)
        if self.cell == "lstm":
            self.dAi_rows, self.dAf_rows, self.dAg_rows, self.dAo_rows = (
                blocks(self.dA_rows, k) for k in range(4)
            )
        # the rows' own dot methods, bound once: the loops are call-bound, and np.dot would
        # go through NumPy's Python-level dispatcher on every step
        self.h_dots = [[r.dot for r in layer] for layer in self.h_rows]
        self.dA_dots, self.dZ_dots = [r.dot for r in self.dA_rows], [r.dot for r in self.dZ_rows]

    def nbytes(self) -> int:
        """Bytes of every array this model allocated (the shared theta excluded)."""
        seen, total = set(), 0

        def add(a: object) -> None:
            nonlocal total
            if isinstance(a, np.ndarray) and a.base is None and id(a) not in seen:
                seen.add(id(a))
                total += a.nbytes

        for obj in (self, *self.cells):
            for k, v in vars(obj).items():
                if k == "theta":
                    continue
                for a in v if isinstance(v, list) else [v]:
                    add(a)
        return total

    # --- state carried across windows -------------------------------------------------------
    def reset_state(self, b: int | None = None) -> None:
        """Zero the carried state of stream b (all streams when None)."""
        for s in (*self.hs, *self.cs):
            if b is None:
                s[0] = 0
            else:
                s[0, b] = 0

    def carry_state(self) -> None:
        """The last state of this window becomes the first of the next."""
        for s in (*self.hs, *self.cs):
            s[0] = s[self.T]

    def state(self) -> np.ndarray:
        return np.stack([hs[0] for hs in self.hs])  # (L, B, H)

    def cell_state(self) -> np.ndarray:
        """The LSTM's carried cell state, (L, B, H); (0, B, H) for the other cells."""
        if not self.cs:
            return np.zeros((0, self.B, self.H), self.dtype)
        return np.stack([cs[0] for cs in self.cs])

    def set_state(self, h: np.ndarray, c: np.ndarray | None = None) -> None:
        """h (and c): (L, B, H), or (L, H) with one stream."""
        for l, hs in enumerate(self.hs):
            hs[0] = np.reshape(h[l], (self.B, self.H))
        for l, cs in enumerate(self.cs):
            cs[0] = 0 if c is None else np.reshape(c[l], (self.B, self.H))

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
            x = self.xs[l]
            assert x is not None  # only xs[0] is None, and l >= 1
            np.multiply(h, self.masks[l], out=x)
            return x
        return h

    def _x(self, l: int) -> np.ndarray:
        """x[l] as the last forward computed it, (T*B, H)."""
        x = self.xs[l] if self.dropout > 0 else self.hs[l - 1][1:]
        assert x is not None  # only xs[0] is None, and l >= 1
        return x.reshape(self.T * self.B, self.H)

    def _project_input(self, l: int, inputs: np.ndarray) -> None:
        """A = layer l's input projection of the window, all gates, its bias included."""
        p, TB, H, G = self.p, self.T * self.B, self.H, self.G
        A2 = self.A.reshape(TB, G * H)
        # the bias of the input projection (the LSTM's two add up; the GRU adds bhh inside
        # r * (.)), added to the (V, GH) table before the layer-0 gather, not to its rows
        bias = self.bias
        if self.cell == "lstm":
            np.add(p[f"bxh{l}"], p[f"bhh{l}"], out=bias)
        else:
            bias = p[f"bh{l}"] if self.cell == "rnn" else p[f"bxh{l}"]
        if l == 0:
            if self.E:  # each character's row: its embedding through Wxh0
                np.matmul(p["Emb"], p["Wxh0"].T, out=self.table)  # (V, E) @ (E, GH)
                self.table += bias
            else:
                np.add(p["Wxh0"].T, bias, out=self.table)
            np.take(
                self.table, inputs.reshape(TB), axis=0, out=A2, mode="clip"
            )  # row gather: (TB,) -> (TB, GH)
        else:
            np.matmul(
                self._layer_input(l).reshape(TB, H), p[f"Wxh{l}"].T, out=A2
            )  # (TB, H) @ (H, GH)
            self.A += bias

    def forward(self, inputs: np.ndarray, targets: np.ndarray | None) -> float:
        """Forward over one window of (T, B) ids from the carried state; returns the loss summed
        over the window's characters and averaged over the streams."""
        p, T, B, H = self.p, self.T, self.B, self.H
        TB = T * B
        for l in range(self.L):
            self._project_input(l, inputs)
            WhhT = p[f"Whh{l}"].T
            if self.WhhT is not None:
                WhhT = self.WhhT[l]
                np.copyto(WhhT, p[f"Whh{l}"].T)
            self.cells[l].forward(WhhT, self.A_rows, self.h_rows[l])
        y = self.y
        np.matmul(
            self._layer_input(self.L).reshape(TB, H), p["Why"].T, out=y
        )  # (TB, H) @ (H, V) -> (TB, V)
        y += p["by"]
        np.maximum.reduce(y, axis=1, out=self.ymax)
        y -= self.ymax_col  # max-subtracted softmax
        if targets is None:
            return 0.0
        np.add(self.row_starts, targets.reshape(TB), out=self.target_at)
        np.take(
            self.y_flat, self.target_at, out=self.correct, mode="clip"
        )  # (TB,) logits of the targets
        np.exp(y, out=y)
        np.dot(y, self.ones_V, out=self.ysum)  # row sums as a product: (TB, V) @ (V,)
        np.log(self.ysum, out=self.logsum)
        loss = float(self.logsum.sum() - self.correct.sum())  # -sum log softmax[target]
        y /= self.ysum_col  # probabilities
        return loss if B == 1 else loss / B

    def backward(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """Gradients of the last forward's loss into self.grad (overwritten, not accumulated);
        inputs and targets are that forward's (its target positions are reused)."""
        p, g, T, B, H, G = self.p, self.g, self.T, self.B, self.H, self.G
        TB, ones = T * B, self.ones_TB
        dy = self.y
        np.take(
            self.y_flat, self.target_at, out=self.correct, mode="clip"
        )  # softmax + cross-entropy:
        self.correct -= 1.0  # dy = p - onehot(target)
        np.put(self.y_flat, self.target_at, self.correct)
        if B > 1:
            dy *= 1.0 / B  # the mean over streams
        np.matmul(dy.T, self._x(self.L), out=g["Why"])  # (V, TB) @ (TB, H) -> (V, H)
        np.dot(ones, dy, out=g["by"])  # column sums: (TB,) @ (TB, V)
        dH2 = self.dH.reshape(TB, H)
        np.matmul(dy, p["Why"], out=dH2)  # (TB, V) @ (V, H) -> (TB, H)
        if self.dropout > 0:
            self.dH *= self.masks[self.L]
        dA2, dZ2 = self.dA.reshape(TB, G * H), self.dZ.reshape(TB, G * H)
        for l in reversed(range(self.L)):
            self.cells[l].backward(p[f"Whh{l}"], self.dH, self.dA, self.dZ)
            hprev = self.hs[l][:-1].reshape(TB, H)
            np.matmul(dZ2.T, hprev, out=g[f"Whh{l}"])  # (GH, TB) @ (TB, H) -> (GH, H)
            if self.cell == "rnn":
                np.dot(ones, dA2, out=g[f"bh{l}"])
            else:
                np.dot(ones, dA2, out=g[f"bxh{l}"])
                if self.cell == "lstm":
                    g[f"bhh{l}"][...] = g[f"bxh{l}"]  # the same sum: dZ is dA
                else:
                    np.dot(ones, dZ2, out=g[f"bhh{l}"])
            if l == 0:
                self._layer0_grads(inputs, dA2)
            else:
                np.matmul(dA2.T, self._x(l), out=g[f"Wxh{l}"])  # (GH, TB) @ (TB, H) -> (GH, H)
                np.matmul(dA2, p[f"Wxh{l}"], out=dH2)  # (TB, GH) @ (GH, H) -> (TB, H)
                if self.dropout > 0:
                    self.dH *= self.masks[l]

    def _layer0_grads(self, inputs: np.ndarray, dA2: np.ndarray) -> None:
        """Layer 0's input weights' (and the embedding's) gradients from dA (TB, GH). The
        gather's adjoint is a scatter-add of rows; as a product with the window's (TB, V)
        one-hot matrix it is one BLAS call, 2-3x faster than np.add.at."""
        p, g = self.p, self.g
        np.put(self.onehot_flat, self.input_at, 0.0)  # the last window's ones
        np.add(self.row_starts, inputs.reshape(self.T * self.B), out=self.input_at)
        np.put(self.onehot_flat, self.input_at, 1.0)
        if self.E:  # the table's gradient, then through Emb @ Wxh0^T (V-sized)
            dT = self.dtable
            np.matmul(self.onehot.T, dA2, out=dT)  # (V, TB) @ (TB, GH) -> (V, GH)
            np.matmul(dT.T, p["Emb"], out=g["Wxh0"])  # (GH, V) @ (V, E) -> (GH, E)
            np.matmul(dT, p["Wxh0"], out=g["Emb"])  # (V, GH) @ (GH, E) -> (V, E)
        else:
            np.matmul(self.onehot.T, dA2, out=g["Wxh0"].T)  # (V, TB) @ (TB, GH)
