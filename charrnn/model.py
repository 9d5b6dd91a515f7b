"""The stacked recurrent network: parameters, and one window's forward and backward pass over B
parallel streams, fast, for three cells (PyTorch's formulations and gate orders):

    rnn:   h = tanh(Wxh x + Whh h_prev + bh)
    gru:   r, z = sigmoid(Wxh_{r,z} x + bxh_{r,z} + Whh_{r,z} h_prev + bhh_{r,z})
           n = tanh(Wxh_n x + bxh_n + r * (Whh_n h_prev + bhh_n))
           h = (1 - z) * n + z * h_prev
    lstm:  i, f, o = sigmoid(.), g = tanh(.)  of  Wxh x + bxh + Whh h_prev + bhh  (rows i, f, g, o)
           c = f * c_prev + i * g,   h = o * tanh(c)

    x[t][0] = onehot(char[t]),  x[t][l] = dropout(h[t][l-1])  for l >= 1
    y[t]    = Why dropout(h[t][L-1]) + by,   loss = (1/B) sum_b sum_t -log softmax(y[t][b])[target]

The loss is summed over a window's T characters (as min-char-rnn, so the vanilla cell with B = 1
is exactly the original trainer) and averaged over the B streams (so the gradient's size, which
the clips are compared against, does not grow with B).

Speed comes from computing layer by layer, not character by character. Per layer, the input
projection of the whole window for all G gates is one product (layer 0: a row gather), only the
recurrence loops over t, one (B, H) @ (H, G*H) product per step, and every weight gradient is
one product over the window. The cells share that skeleton (`Model.forward`, `Model.backward`);
each cell class holds only its recurrence and the recurrence's backward pass. All arrays are
preallocated, and parameters and gradients are each one flat vector.

Shapes: T window length, B streams, H hidden size, G gates (1, 3, 4), V vocabulary, L layers.
Activations are time-major, (T, B, H), so a step's (B, H) block is contiguous.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from .arrays import FloatArray

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
CELLS = tuple(GATES)


def param_shapes(V: int, H: int, L: int, cell: str = "rnn") -> list[tuple[str, tuple[int, ...]]]:
    """Names and math shapes of every parameter, in their order in the flat vector. The vanilla
    cell keeps the original layout (one bias per layer); gated cells have PyTorch's two, since
    the GRU's reset gate multiplies Whh_n h + bhh_n, so the two are not interchangeable."""
    G = GATES[cell]
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for l in range(L):
        In = V if l == 0 else H
        shapes += [(f"Wxh{l}", (G * H, In)), (f"Whh{l}", (G * H, H))]
        shapes += (
            [(f"bh{l}", (H,))] if cell == "rnn" else [(f"bxh{l}", (G * H,)), (f"bhh{l}", (G * H,))]
        )
    return shapes + [("Why", (V, H)), ("by", (V,))]


def param_count(V: int, H: int, L: int, cell: str = "rnn") -> int:
    return sum(int(np.prod(s)) for _, s in param_shapes(V, H, L, cell))


def views(flat: np.ndarray, V: int, H: int, L: int, cell: str = "rnn") -> dict[str, np.ndarray]:
    """Named views of a flat parameter (or gradient, or optimizer state) vector, in math shapes.

    Wxh0 is stored as the C-contiguous (V, G*H) array whose transpose it is, so that the layer-0
    input projection is a contiguous row gather."""
    out, o = {}, 0
    for name, shape in param_shapes(V, H, L, cell):
        n = int(np.prod(shape))
        chunk = flat[o : o + n]
        out[name] = chunk.reshape(shape[1], shape[0]).T if name == "Wxh0" else chunk.reshape(shape)
        o += n
    assert o == flat.size
    return out


def init_params(
    flat: np.ndarray, V: int, H: int, L: int, rng: np.random.Generator, cell: str = "rnn"
) -> None:
    """Scaled so activations neither vanish nor saturate at the start, unlike the article's
    0.01 * randn, which leaves a stacked net's upper layers almost silent for thousands of steps.
    Matrices that read hidden states are N(0, 1/fan_in) (unit gain); a column of Wxh0 is the
    embedding of one character, read alone, so its entries get a fixed N(0, 0.3^2); biases are 0
    except the LSTM's forget gate, 1, so the cell state is kept by default (Jozefowicz et al.
    2015). The vanilla cell draws exactly what it always drew, so a seed gives the same model."""
    G = GATES[cell]
    p = views(flat, V, H, L, cell)
    flat[:] = 0
    for l in range(L):
        fan_in = V if l == 0 else H
        scale = 0.3 if l == 0 else 1.0 / np.sqrt(fan_in)
        p[f"Wxh{l}"][...] = rng.standard_normal((G * H, fan_in)) * scale
        p[f"Whh{l}"][...] = rng.standard_normal((G * H, H)) / np.sqrt(H)
        if cell == "lstm":
            p[f"bxh{l}"][H : 2 * H] = 1.0
    p["Why"][...] = rng.standard_normal((V, H)) / np.sqrt(H)


def _rows(a: np.ndarray, squeeze: bool) -> list[np.ndarray]:
    """Per-step views of a time-major array, made once so the loops over t do no slicing. With
    one stream a step is a vector, so each product is a matrix-vector one, as it always was."""
    return [a[t, 0] if squeeze else a[t] for t in range(a.shape[0])]


class RNNCell:
    """h = tanh(a + h_prev Whh^T): a is the input projection plus bh."""

    def __init__(self, m: Model, l: int):
        self.m, self.l = m, l

    def forward(self, WhhT: FloatArray, a_rows: list[FloatArray], h_rows: list[FloatArray]) -> None:
        add, tanh = np.add, np.tanh
        h_dots = self.m.h_dots[self.l]
        for t in range(len(a_rows)):  # the only sequential part
            h = h_rows[t + 1]
            h_dots[t](WhhT, h)  # (B, H) @ (H, H) -> (B, H)
            add(h, a_rows[t], h)  # positional out: no kwargs to parse
            tanh(h, h)

    def backward(self, Whh: FloatArray, dH: FloatArray, dA: FloatArray, dZ: FloatArray) -> None:
        """dA: dloss/d(pre-activation), from dH (dloss/dh from above); dZ is dA."""
        m, l = self.m, self.l
        hs, D = m.hs[l][1:], m.D  # tanh' = 1 - h^2, for the window
        np.multiply(hs, hs, out=D)
        np.subtract(1.0, D, out=D)
        add, mul = np.add, np.multiply
        dH_rows, dA_rows, D_rows, dhn, dA_dots = m.dH_rows, m.dA_rows, m.D_rows, m.dhn, m.dA_dots
        T = m.T
        mul(dH_rows[T - 1], D_rows[T - 1], dA_rows[T - 1])  # nothing arrives from t = T
        for t in range(T - 2, -1, -1):  # backward through time
            dA_dots[t + 1](Whh, dhn)  # (B, H) @ (H, H) -> (B, H)
            da = dA_rows[t]
            add(dH_rows[t], dhn, da)
            mul(da, D_rows[t], da)


class GRUCell:
    """r, z, n = the gates; hh = h_prev Whh^T + bhh is kept, since n reads r * hh_n."""

    def __init__(self, m: Model, l: int):
        self.m, self.l = m, l
        H, sq = m.H, m.B == 1
        self.hh = np.zeros((m.T, m.B, 3 * H), m.dtype)  # per layer: the backward reads it
        self.gates = np.zeros((m.T, m.B, 3 * H), m.dtype)  # r, z, n after their nonlinearities
        self.hh_rows = _rows(self.hh, sq)
        self.rz_rows = [g[..., : 2 * H] for g in _rows(self.gates, sq)]
        self.r_rows = [g[..., :H] for g in _rows(self.gates, sq)]
        self.z_rows = [g[..., H : 2 * H] for g in _rows(self.gates, sq)]
        self.n_rows = [g[..., 2 * H :] for g in _rows(self.gates, sq)]
        self.hhrz_rows = [g[..., : 2 * H] for g in self.hh_rows]
        self.hhn_rows = [g[..., 2 * H :] for g in self.hh_rows]

    def forward(self, WhhT: FloatArray, a_rows: list[FloatArray], h_rows: list[FloatArray]) -> None:
        m = self.m
        bhh = m.p[f"bhh{self.l}"]
        arz_rows, an_rows = m.a_rz_rows, m.a_n_rows
        tmp = m.tmp_h
        add, mul, sub, tanh = np.add, np.multiply, np.subtract, np.tanh
        h_dots = m.h_dots[self.l]
        hh_rows, rz_rows, r_rows, z_rows, n_rows = (
            self.hh_rows,
            self.rz_rows,
            self.r_rows,
            self.z_rows,
            self.n_rows,
        )
        hhrz_rows, hhn_rows = self.hhrz_rows, self.hhn_rows
        for t in range(len(a_rows)):
            hh, rz, n, hprev = hh_rows[t], rz_rows[t], n_rows[t], h_rows[t]
            h_dots[t](WhhT, hh)  # (B, H) @ (H, 3H) -> (B, 3H)
            add(hh, bhh, hh)
            add(arz_rows[t], hhrz_rows[t], rz)
            mul(rz, 0.5, rz)  # sigmoid(x) = (1 + tanh(x/2)) / 2:
            tanh(rz, rz)  # one transcendental ufunc, no
            mul(rz, 0.5, rz)  # exp overflow warnings
            add(rz, 0.5, rz)
            mul(r_rows[t], hhn_rows[t], n)
            add(n, an_rows[t], n)
            tanh(n, n)
            sub(hprev, n, tmp)  # h = n + z * (h_prev - n)
            mul(z_rows[t], tmp, tmp)
            add(n, tmp, h_rows[t + 1])

    def backward(self, Whh: FloatArray, dH: FloatArray, dA: FloatArray, dZ: FloatArray) -> None:
        """dZ: dloss/d(hh) (the recurrent product plus bhh); dA: dloss/d(input projection)."""
        m, H = self.m, self.m.H
        g, hh = self.gates, self.hh
        r, z, n = g[..., :H], g[..., H : 2 * H], g[..., 2 * H :]
        D, S = m.D, m.S
        R, Q, P = D[..., :H], D[..., H : 2 * H], D[..., 2 * H :]
        # the factors of the window, outside the loop: P = (1-z)(1-n^2) takes dh to dn_raw,
        # Q = (h_prev - n) z(1-z) takes dh to dz_raw, R = hh_n r(1-r) takes dn_raw to dr_raw
        np.subtract(1.0, z, out=P)
        np.multiply(n, n, out=S)
        np.subtract(1.0, S, out=S)
        P *= S
        np.subtract(1.0, z, out=Q)
        Q *= z
        np.subtract(m.hs[self.l][:-1], n, out=S)
        Q *= S
        np.subtract(1.0, r, out=R)
        R *= r
        R *= hh[..., 2 * H :]
        add, mul = np.add, np.multiply
        dH_rows, P_rows, Q_rows, R_rows = m.dH_rows, m.P_rows, m.Q_rows, m.R_rows
        dZ_dots = m.dZ_dots
        dAn_rows, dZr_rows, dZz_rows, dZn_rows = m.dAn_rows, m.dZr_rows, m.dZz_rows, m.dZn_rows
        r_rows, z_rows = self.r_rows, self.z_rows
        dh, dhn, carry = m.dh, m.dhn, m.dcn
        dhn[...] = 0
        carry[...] = 0
        for t in range(m.T - 1, -1, -1):
            add(dH_rows[t], dhn, dh)
            add(dh, carry, dh)  # + dh[t+1] * z[t+1], the direct path
            dan = dAn_rows[t]
            mul(dh, P_rows[t], dan)  # dloss/d(n pre-activation)
            mul(dh, Q_rows[t], dZz_rows[t])  # dloss/d(z pre-activation)
            mul(dan, R_rows[t], dZr_rows[t])  # dloss/d(r pre-activation)
            mul(dan, r_rows[t], dZn_rows[t])  # dloss/d(hh_n)
            mul(dh, z_rows[t], carry)
            if t:
                dZ_dots[t](Whh, dhn)  # (B, 3H) @ (3H, H) -> (B, H)
        dA[..., : 2 * H] = dZ[..., : 2 * H]  # r and z see x and h alike


class LSTMCell:
    """i, f, g, o = the gates; c the cell state, carried like h."""

    def __init__(self, m: Model, l: int):
        self.m, self.l = m, l
        H, sq = m.H, m.B == 1
        self.gates = np.zeros((m.T, m.B, 4 * H), m.dtype)  # i, f, g, o after nonlinearities
        self.tc = np.zeros((m.T, m.B, H), m.dtype)  # tanh(c)
        g_rows = _rows(self.gates, sq)
        self.g_rows = g_rows
        self.i_rows = [g[..., :H] for g in g_rows]
        self.f_rows = [g[..., H : 2 * H] for g in g_rows]
        self.gg_rows = [g[..., 2 * H : 3 * H] for g in g_rows]
        self.o_rows = [g[..., 3 * H :] for g in g_rows]
        self.tc_rows = _rows(self.tc, sq)
        # sigmoid(x) = 0.5 tanh(x/2) + 0.5 on i, f, o; tanh(x) on g: scale, tanh, scale, shift
        self.scale = np.full(4 * H, 0.5, m.dtype)
        self.scale[2 * H : 3 * H] = 1.0
        self.shift = np.full(4 * H, 0.5, m.dtype)
        self.shift[2 * H : 3 * H] = 0.0

    def forward(self, WhhT: FloatArray, a_rows: list[FloatArray], h_rows: list[FloatArray]) -> None:
        m = self.m
        c_rows, tmp = m.c_rows[self.l], m.tmp_h
        s, off = self.scale, self.shift
        add, mul, tanh = np.add, np.multiply, np.tanh
        h_dots = m.h_dots[self.l]
        g_rows, i_rows, f_rows, gg_rows, o_rows, tc_rows = (
            self.g_rows,
            self.i_rows,
            self.f_rows,
            self.gg_rows,
            self.o_rows,
            self.tc_rows,
        )
        for t in range(len(a_rows)):
            z = g_rows[t]
            h_dots[t](WhhT, z)  # (B, H) @ (H, 4H) -> (B, 4H)
            add(z, a_rows[t], z)
            mul(z, s, z)
            tanh(z, z)
            mul(z, s, z)
            add(z, off, z)
            c = c_rows[t + 1]
            mul(f_rows[t], c_rows[t], c)  # c = f * c_prev + i * g
            mul(i_rows[t], gg_rows[t], tmp)
            add(c, tmp, c)
            tanh(c, tc_rows[t])
            mul(o_rows[t], tc_rows[t], h_rows[t + 1])  # h = o * tanh(c)

    def backward(self, Whh: FloatArray, dH: FloatArray, dA: FloatArray, dZ: FloatArray) -> None:
        m, H = self.m, self.m.H
        G = self.gates
        D, S = m.D, m.S
        # the gates' derivatives for the window at once: s(1-s) for i, f, o, 1-g^2 for g
        np.subtract(1.0, G, out=D)
        D *= G
        Dg, gg = D[..., 2 * H : 3 * H], G[..., 2 * H : 3 * H]
        np.multiply(gg, gg, out=Dg)
        np.subtract(1.0, Dg, out=Dg)
        np.multiply(self.tc, self.tc, out=S)  # S = o (1 - tanh(c)^2): dh -> dc
        np.subtract(1.0, S, out=S)
        S *= G[..., 3 * H :]
        add, mul = np.add, np.multiply
        dH_rows, dA_rows, D_rows, S_rows = m.dH_rows, m.dA_rows, m.D_rows, m.S_rows
        dA_dots = m.dA_dots
        dAi, dAf, dAg, dAo = m.dAi_rows, m.dAf_rows, m.dAg_rows, m.dAo_rows
        c_rows, tc_rows = m.c_rows[self.l], self.tc_rows
        i_rows, f_rows, gg_rows = self.i_rows, self.f_rows, self.gg_rows
        dh, dhn, dc, dcn = m.dh, m.dhn, m.dc, m.dcn
        dhn[...] = 0
        dcn[...] = 0
        for t in range(m.T - 1, -1, -1):
            add(dH_rows[t], dhn, dh)
            mul(dh, tc_rows[t], dAo[t])  # do
            mul(dh, S_rows[t], dc)
            add(dc, dcn, dc)  # dc, from h and from c[t+1]
            mul(dc, gg_rows[t], dAi[t])  # di
            mul(dc, c_rows[t], dAf[t])  # df
            mul(dc, i_rows[t], dAg[t])  # dg
            mul(dc, f_rows[t], dcn)
            mul(dA_rows[t], D_rows[t], dA_rows[t])  # through the nonlinearities
            if t:
                dA_dots[t](Whh, dhn)  # (B, 4H) @ (4H, H) -> (B, H)


CELL_CLASSES: dict[str, type[RNNCell | GRUCell | LSTMCell]] = {
    "rnn": RNNCell,
    "gru": GRUCell,
    "lstm": LSTMCell,
}


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
    ):
        assert cell in GATES and B >= 1 and T >= 1
        self.V, self.H, self.L, self.T, self.B, self.cell = V, H, L, T, B, cell
        G = self.G = GATES[cell]
        self.dtype = f = np.dtype(dtype)
        self.dropout = float(dropout)
        n = param_count(V, H, L, cell)
        # parameters; shared, not copied, when given (an evaluator reading the trainer's weights)
        self.theta = np.zeros(n, f) if theta is None else theta
        assert self.theta.shape == (n,) and self.theta.dtype == f
        self.grad = np.zeros(n, f)
        self.p = views(self.theta, V, H, L, cell)
        self.g = views(self.grad, V, H, L, cell)
        TB, sq = T * B, B == 1
        # hs[l]: row 0 is the state carried in from the previous window, rows 1..T are h[1..T]
        self.hs = [np.zeros((T + 1, B, H), f) for _ in range(L)]
        self.cs = [np.zeros((T + 1, B, H), f) for _ in range(L)] if cell == "lstm" else []
        self.A = np.zeros((T, B, G * H), f)  # input projection of one layer, all gates
        self.table = np.zeros((V, G * H), f)  # Wxh0^T plus the bias: layer 0's rows
        self.bias = np.zeros(G * H, f)
        self.dA = np.zeros((T, B, G * H), f)  # dloss/dA
        # dloss/d(recurrent product + bhh): the GRU's differs from dA in its n block
        self.dZ = np.zeros((T, B, G * H), f) if cell == "gru" else self.dA
        self.dH = np.zeros((T, B, H), f)  # dloss/dh arriving from above
        self.D = np.zeros((T, B, G * H), f)  # the window's local derivatives
        self.S = np.zeros((T, B, H), f)  # scratch of the window
        self.dh, self.dhn, self.dc, self.dcn, self.tmp_h = (np.zeros((B, H), f) for _ in range(5))
        if sq:
            self.dh, self.dhn, self.dc, self.dcn, self.tmp_h = (
                a[0] for a in (self.dh, self.dhn, self.dc, self.dcn, self.tmp_h)
            )
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
        # dropout: x[l] for l >= 1 is dropout(h[l-1]); xs[L] is the input of the output layer
        if self.dropout > 0:
            self.masks = [np.ones((T, B, H), f) for _ in range(L + 1)]  # masks[0] unused
            self.xs = [None] + [np.zeros((T, B, H), f) for _ in range(L)]
            self.uniform = np.zeros((T, B, H), np.float64 if f == np.float64 else np.float32)
        # row views made once, so the sequential loops do no slicing
        self.h_rows = [_rows(hs, sq) for hs in self.hs]
        self.c_rows = [_rows(cs, sq) for cs in self.cs]
        self.A_rows, self.dA_rows, self.dZ_rows = (
            _rows(self.A, sq),
            _rows(self.dA, sq),
            _rows(self.dZ, sq),
        )
        self.dH_rows, self.D_rows, self.S_rows = (
            _rows(self.dH, sq),
            _rows(self.D, sq),
            _rows(self.S, sq),
        )
        if cell == "gru":
            self.a_rz_rows = [a[..., : 2 * H] for a in self.A_rows]
            self.a_n_rows = [a[..., 2 * H :] for a in self.A_rows]
            self.R_rows, self.Q_rows, self.P_rows = (
                [d[..., k * H : (k + 1) * H] for d in self.D_rows] for k in range(3)
            )
            self.dZr_rows, self.dZz_rows, self.dZn_rows = (
                [d[..., k * H : (k + 1) * H] for d in self.dZ_rows] for k in range(3)
            )
            self.dAn_rows = [d[..., 2 * H :] for d in self.dA_rows]
        if cell == "lstm":
            self.dAi_rows, self.dAf_rows, self.dAg_rows, self.dAo_rows = (
                [d[..., k * H : (k + 1) * H] for d in self.dA_rows] for k in range(4)
            )
        # the rows' own dot methods, bound once: the loops are call-bound, and np.dot would
        # go through NumPy's Python-level dispatcher on every step
        self.h_dots = [[r.dot for r in rows] for rows in self.h_rows]
        self.dA_dots, self.dZ_dots = [r.dot for r in self.dA_rows], [r.dot for r in self.dZ_rows]
        self.cells = [CELL_CLASSES[cell](self, l) for l in range(L)]
        # With several streams the recurrent product is (B, H) @ (H, GH), which OpenBLAS runs
        # ~1.5x faster on a C-contiguous right operand than on Whh's transposed view: a copy
        # per layer per window (G H^2 elements) buys that on each of the T steps. With one
        # stream it is a matrix-vector product on the view, as it always was (same bits).
        self.WhhT = [np.zeros((H, G * H), f) for _ in range(L)] if B > 1 else None

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

    def forward(self, inputs: np.ndarray, targets: np.ndarray | None) -> float:
        """Forward over one window of (T, B) ids from the carried state; returns the loss summed
        over the window's characters and averaged over the streams."""
        p, T, B, H, G = self.p, self.T, self.B, self.H, self.G
        TB = T * B
        A, A2 = self.A, self.A.reshape(TB, G * H)
        for l in range(self.L):
            # the bias of the input projection (the LSTM's two add up; the GRU adds bhh inside
            # r * (.)), added to the (V, GH) table before the layer-0 gather, not to its rows
            bias = self.bias
            if self.cell == "lstm":
                np.add(p[f"bxh{l}"], p[f"bhh{l}"], out=bias)
            else:
                bias = p[f"bh{l}"] if self.cell == "rnn" else p[f"bxh{l}"]
            if l == 0:
                np.add(p["Wxh0"].T, bias, out=self.table)
                np.take(
                    self.table, inputs.reshape(TB), axis=0, out=A2, mode="clip"
                )  # row gather: (TB,) -> (TB, GH)
            else:
                np.matmul(
                    self._layer_input(l).reshape(TB, H), p[f"Wxh{l}"].T, out=A2
                )  # (TB, H) @ (H, GH)
                A += bias
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
                # The gather's adjoint is a scatter-add of rows; as a product with the window's
                # (TB, V) one-hot matrix it is one BLAS call, 2-3x faster than np.add.at.
                np.put(self.onehot_flat, self.input_at, 0.0)  # the last window's ones
                np.add(self.row_starts, inputs.reshape(TB), out=self.input_at)
                np.put(self.onehot_flat, self.input_at, 1.0)
                np.matmul(self.onehot.T, dA2, out=g["Wxh0"].T)  # (V, TB) @ (TB, GH) -> (V, GH)
            else:
                np.matmul(dA2.T, self._x(l), out=g[f"Wxh{l}"])  # (GH, TB) @ (TB, H) -> (GH, H)
                np.matmul(dA2, p[f"Wxh{l}"], out=dH2)  # (TB, GH) @ (GH, H) -> (TB, H)
                if self.dropout > 0:
                    self.dH *= self.masks[l]


def torch_state_dict(
    theta: np.ndarray, V: int, H: int, L: int, cell: str = "rnn"
) -> dict[str, np.ndarray]:
    """The parameters under PyTorch's names, as NumPy arrays: `rnn.*` for an `nn.RNN(V, H, L)`
    (tanh), `nn.GRU(V, H, L)` or `nn.LSTM(V, H, L)` reading one-hot inputs, `out.*` for the
    `nn.Linear(H, V)` on the top layer. Same gate order (i, f, g, o; r, z, n) and same shapes,
    so each is a copy; the vanilla cell's single bias goes to bias_ih, with bias_hh zero."""
    p = views(theta, V, H, L, cell)
    sd = {}
    for l in range(L):
        sd[f"rnn.weight_ih_l{l}"] = np.array(p[f"Wxh{l}"])
        sd[f"rnn.weight_hh_l{l}"] = np.array(p[f"Whh{l}"])
        if cell == "rnn":
            sd[f"rnn.bias_ih_l{l}"] = np.array(p[f"bh{l}"])
            sd[f"rnn.bias_hh_l{l}"] = np.zeros_like(p[f"bh{l}"])
        else:
            sd[f"rnn.bias_ih_l{l}"] = np.array(p[f"bxh{l}"])
            sd[f"rnn.bias_hh_l{l}"] = np.array(p[f"bhh{l}"])
    sd["out.weight"], sd["out.bias"] = np.array(p["Why"]), np.array(p["by"])
    return sd
