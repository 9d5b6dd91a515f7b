"""The parameters of a stacked recurrent network: their names, shapes and order in the one flat
vector, their starting values, and their export under PyTorch's names.

Characters enter layer 0 either as one-hot rows of Wxh0 (E = 0, the original layout: a column of
Wxh0 is one character's input) or through a learned embedding `Emb` (V, E) that Wxh0 (G*H, E)
reads, as `nn.Embedding(V, E)` in front of `nn.LSTM(E, H, L)`. The two compute the same kind of
function; what differs is how Adam moves it: a product of two learned matrices moves each
character's input faster than one matrix at the same rate (issue 23's measurements).
"""

from __future__ import annotations

import numpy as np

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
CELLS = tuple(GATES)
CHAR_SCALE = 0.3
"""The standard deviation of a one-hot layer-0 row (E = 0), each read alone."""


def param_shapes(
    V: int, H: int, L: int, cell: str = "rnn", E: int = 0
) -> list[tuple[str, tuple[int, ...]]]:
    """Names and math shapes of every parameter, in their order in the flat vector. The vanilla
    cell keeps the original layout (one bias per layer); gated cells have PyTorch's two, since
    the GRU's reset gate multiplies Whh_n h + bhh_n, so the two are not interchangeable. With an
    embedding (E > 0) `Emb` comes first and layer 0 reads E inputs, not V."""
    G = GATES[cell]
    shapes: list[tuple[str, tuple[int, ...]]] = [("Emb", (V, E))] if E else []
    for l in range(L):
        In = (E or V) if l == 0 else H
        shapes += [(f"Wxh{l}", (G * H, In)), (f"Whh{l}", (G * H, H))]
        shapes += (
            [(f"bh{l}", (H,))] if cell == "rnn" else [(f"bxh{l}", (G * H,)), (f"bhh{l}", (G * H,))]
        )
    return shapes + [("Why", (V, H)), ("by", (V,))]


def param_count(V: int, H: int, L: int, cell: str = "rnn", E: int = 0) -> int:
    return sum(int(np.prod(s)) for _, s in param_shapes(V, H, L, cell, E))


def views(
    flat: np.ndarray, V: int, H: int, L: int, cell: str = "rnn", E: int = 0
) -> dict[str, np.ndarray]:
    """Named views of a flat parameter (or gradient, or optimizer state) vector, in math shapes.

    Without an embedding, Wxh0 is stored as the C-contiguous (V, G*H) array whose transpose it
    is, so that the layer-0 input projection is a contiguous row gather."""
    out, o = {}, 0
    for name, shape in param_shapes(V, H, L, cell, E):
        n = int(np.prod(shape))
        chunk = flat[o : o + n]
        onehot_rows = name == "Wxh0" and not E
        out[name] = chunk.reshape(shape[1], shape[0]).T if onehot_rows else chunk.reshape(shape)
        o += n
    assert o == flat.size
    return out


def init_params(
    flat: np.ndarray,
    V: int,
    H: int,
    L: int,
    rng: np.random.Generator,
    cell: str = "rnn",
    E: int = 0,
) -> None:
    """Scaled so activations neither vanish nor saturate at the start, unlike the article's
    0.01 * randn, which leaves a stacked net's upper layers almost silent for thousands of steps.
    Matrices that read hidden states are N(0, 1/fan_in) (unit gain); a column of a one-hot Wxh0
    is the embedding of one character, read alone, so its entries get a fixed N(0, 0.3^2); an
    embedding `Emb` is N(0, 1), as nn.Embedding's, and the Wxh0 reading it N(0, 1/E); biases
    are 0 except, with one-hot input, the LSTM's forget gate, 1, so the cell state is kept by
    default (Jozefowicz et al. 2015). With an embedding a forget bias of 0 learns faster
    (issue 23: 1.727 against 1.763 nats/char after 300 steps of 2 x 256, PyTorch 1.789). The
    vanilla cell draws exactly what it always drew, so a seed gives the same model."""
    G = GATES[cell]
    p = views(flat, V, H, L, cell, E)
    flat[:] = 0
    for l in range(L):
        fan_in = (E or V) if l == 0 else H
        scale = CHAR_SCALE if l == 0 and not E else 1.0 / np.sqrt(fan_in)
        p[f"Wxh{l}"][...] = rng.standard_normal((G * H, fan_in)) * scale
        p[f"Whh{l}"][...] = rng.standard_normal((G * H, H)) / np.sqrt(H)
        if cell == "lstm" and not E:
            p[f"bxh{l}"][H : 2 * H] = 1.0
    p["Why"][...] = rng.standard_normal((V, H)) / np.sqrt(H)
    if E:
        p["Emb"][...] = rng.standard_normal((V, E))


def torch_state_dict(
    theta: np.ndarray, V: int, H: int, L: int, cell: str = "rnn", E: int = 0
) -> dict[str, np.ndarray]:
    """The parameters under PyTorch's names, as NumPy arrays: `rnn.*` for an `nn.RNN(In, H, L)`
    (tanh), `nn.GRU(In, H, L)` or `nn.LSTM(In, H, L)`, `out.*` for the `nn.Linear(H, V)` on the
    top layer, and with an embedding `emb.weight` for the `nn.Embedding(V, E)` in front (In = E);
    without one the cells read one-hot inputs (In = V). Same gate order (i, f, g, o; r, z, n) and
    same shapes, so each is a copy; the vanilla cell's single bias goes to bias_ih, with bias_hh
    zero."""
    p = views(theta, V, H, L, cell, E)
    sd = {"emb.weight": np.array(p["Emb"])} if E else {}
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
