"""The recurrences of the three cells and their backward passes through time, over one window
of B streams; everything else (input projections, output layer, weight gradients) is the
skeleton they share in `Model`. Each cell reads and writes the model's preallocated buffers
through per-step row views made once, so the loops over t do no slicing and no allocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .arrays import FloatArray

if TYPE_CHECKING:
    from .model import Model


def rows(a: np.ndarray, squeeze: bool) -> list[np.ndarray]:
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
        self.hh_rows = rows(self.hh, sq)
        self.rz_rows = [g[..., : 2 * H] for g in rows(self.gates, sq)]
        self.r_rows = [g[..., :H] for g in rows(self.gates, sq)]
        self.z_rows = [g[..., H : 2 * H] for g in rows(self.gates, sq)]
        self.n_rows = [g[..., 2 * H :] for g in rows(self.gates, sq)]
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
        g_rows = rows(self.gates, sq)
        self.g_rows = g_rows
        self.i_rows = [g[..., :H] for g in g_rows]
        self.f_rows = [g[..., H : 2 * H] for g in g_rows]
        self.gg_rows = [g[..., 2 * H : 3 * H] for g in g_rows]
        self.o_rows = [g[..., 3 * H :] for g in g_rows]
        self.tc_rows = rows(self.tc, sq)
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
