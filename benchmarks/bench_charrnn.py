#!/usr/bin/env python
"""Training speed of charrnn, side by side in one run, on a single BLAS thread:

  * charrnn `Trainer` (layer by layer), float64 and float32;
  * `charrnn.oracle.BaselineTrainer`: the straightforward per-timestep implementation of the
    classic article (the test oracle), float64;
  * PyTorch `nn.RNN` (tanh, `num_layers`, batch size 1, one-hot input, hidden state carried and
    detached between windows, `nn.Linear` output, summed cross-entropy, elementwise
    `clip_grad_value_(5)`, `torch.optim.Adagrad(lr, initial_accumulator_value=0, eps=1e-8)`),
    when torch is importable, in float32 (its default) and float64.

Every trainer sweeps the same corpus in windows of seq_length with one update per window; the
figure is training characters per second (windows * seq_length / seconds), measured for a fixed
wall-clock time after a warm-up.

Differences from charrnn that are PyTorch's and not ours: torch's Adagrad divides by
sqrt(sum g^2) + eps (eps outside the square root) where charrnn divides by sqrt(sum g^2 + eps);
nn.RNN has two bias vectors per layer (b_ih and b_hh). Neither changes the cost measurably.

The cells section (`--cells`) measures the gated cells and parallel streams: charrnn's
`Trainer` (rnn, gru, lstm; B streams; Adam; global-norm clip 5) against PyTorch's `nn.RNN`,
`nn.GRU`, `nn.LSTM` trained the same way (B streams at evenly spaced offsets, hidden state
carried and detached between windows, T steps of truncated BPTT, the loss summed over the
window and averaged over streams, `clip_grad_norm_(5)`, `torch.optim.Adam`), and the vanilla
cell at B = 1 against the code of another checkout (`--old-tree`, e.g. a `git worktree` of
cae5df6), loaded side by side in the same process.

Usage:
    python benchmarks/bench_charrnn.py [CORPUS] [--seconds 1.0] [--no-torch] [--no-scaling]
    python benchmarks/bench_charrnn.py [CORPUS] --cells [--old-tree PATH]
    python benchmarks/bench_charrnn.py [CORPUS] --quality

CORPUS defaults to $CHARRNN_BENCH_CORPUS (tinyshakespeare.txt for the README's figures), else a
generated pseudo-English text. --quality trains one pass over the training
part at 2 layers, hidden 128, seq_length 13 with the library's defaults, and the same with the
article's settings (learning rate 0.1, parameters 0.01 * N(0, 1), biases 0), and prints the
held-out loss over the whole validation split.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

# first: one BLAS thread before numpy is imported (benchmarks/ is sys.path[0] for a script)
from onethread import default_corpus, torch  # isort: skip

import numpy as np  # isort: skip

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from charrnn import (  # noqa: E402
    Config,
    Trainer,
    oracle,  # noqa: E402
    read_corpus,
)
from charrnn.model import views  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# --- corpus --------------------------------------------------------------------------------------
def generated_corpus(n_chars: int = 1_100_000, seed: int = 0) -> str:
    """Pseudo-English from a fixed word list with punctuation, capitals and line breaks."""
    words = (
        "the of and to in is was that for on with as by at from his her they we you it not "
        "but which have had this were are be one all their there been when who will would "
        "king queen lord love night day heart death blood time good sweet fair now come "
        "what more speak hath thee thou thy shall upon may must make know give take yet "
        "well never here where why man men world life eyes hand father mother brother"
    ).split()
    rng = np.random.default_rng(seed)
    out, n = [], 0
    while n < n_chars:
        k = int(rng.integers(3, 14))
        ws = [words[i] for i in rng.integers(0, len(words), k)]
        s = " ".join(ws).capitalize() + ".,;:!?"[int(rng.integers(0, 6))]
        s += "\n" if rng.random() < 0.3 else " "
        if rng.random() < 0.05:
            s = f"{words[int(rng.integers(len(words)))].upper()}:\n" + s
        out.append(s)
        n += len(s)
    return "".join(out)


def load_corpus(path: str | None) -> tuple[str, str]:
    path = path or default_corpus()
    if path:
        return read_corpus(path), path
    return generated_corpus(), "generated pseudo-English (no CORPUS, no CHARRNN_BENCH_CORPUS)"


# --- trainers, each reduced to step() ------------------------------------------------------------
def charrnn_trainer(text, H, L, T, dtype="float64", lr=0.1, seed=0) -> Trainer:
    cfg = Config(
        hidden_size=H,
        num_layers=L,
        seq_length=T,
        learning_rate=lr,
        iterations=10**9,
        eval_every=0,
        sample_every=0,
        dtype=dtype,
        seed=seed,
    )
    return Trainer(cfg, text)


def baseline_trainer(tr: Trainer, lr=0.1) -> oracle.BaselineTrainer:
    params = {k: np.array(v, dtype=np.float64) for k, v in tr.model.p.items()}
    return oracle.BaselineTrainer(
        params, tr.train_ids, tr.config.seq_length, lr, tr.config.grad_clip
    )


class TorchTrainer:
    """nn.RNN at batch size 1, trained exactly like charrnn: same windows, carried state."""

    def __init__(self, tr: Trainer, lr=0.1, dtype=None):
        dtype = dtype or torch.float32
        V, H, L, T = (
            tr.vocab.size,
            tr.config.hidden_size,
            tr.config.num_layers,
            tr.config.seq_length,
        )
        torch.manual_seed(0)
        self.rnn = torch.nn.RNN(V, H, num_layers=L, nonlinearity="tanh").to(dtype)
        self.out = torch.nn.Linear(H, V).to(dtype)
        self.params = list(self.rnn.parameters()) + list(self.out.parameters())
        self.opt = torch.optim.Adagrad(self.params, lr=lr, initial_accumulator_value=0, eps=1e-8)
        self.data = torch.from_numpy(np.asarray(tr.train_ids, dtype=np.int64))
        self.eye = torch.eye(V, dtype=dtype)
        self.h = torch.zeros(L, 1, H, dtype=dtype)
        self.T, self.H, self.V, self.pointer = T, H, V, 0
        self.loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

    def step(self) -> float:
        T = self.T
        if self.pointer + T + 1 > len(self.data):
            self.pointer = 0
            self.h = torch.zeros_like(self.h)
        inputs = self.data[self.pointer : self.pointer + T]
        targets = self.data[self.pointer + 1 : self.pointer + T + 1]
        x = self.eye[inputs].unsqueeze(1)  # (T, 1, V) one-hot
        out, h = self.rnn(x, self.h)
        loss = self.loss_fn(self.out(out.view(T, self.H)), targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(self.params, 5.0)
        self.opt.step()
        self.h = h.detach()
        self.pointer += T
        return loss.item()


class TorchStreams:
    """nn.RNN / nn.GRU / nn.LSTM on B streams, trained as charrnn trains them: stream b reads
    segment b of the text, state carried and detached between windows, reset on wrap; the loss
    summed over the window and averaged over streams; clip_grad_norm_; Adam."""

    def __init__(self, tr: Trainer, dtype=None, lr=2e-3, clip=5.0):
        dtype = dtype or torch.float32
        cfg = tr.config
        V, H, L, T, B = (
            tr.vocab.size,
            cfg.hidden_size,
            cfg.num_layers,
            cfg.seq_length,
            cfg.batch_size,
        )
        torch.manual_seed(0)
        cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cfg.cell]
        self.rnn = cls(V, H, num_layers=L).to(dtype)
        self.out = torch.nn.Linear(H, V).to(dtype)
        self.params = list(self.rnn.parameters()) + list(self.out.parameters())
        self.opt = torch.optim.Adam(self.params, lr=lr, eps=1e-8)
        self.clip = clip
        self.data = torch.from_numpy(np.asarray(tr.train_ids, dtype=np.int64))
        self.eye = torch.eye(V, dtype=dtype)
        zeros = torch.zeros(L, B, H, dtype=dtype)
        self.state = (zeros, zeros.clone()) if cfg.cell == "lstm" else zeros
        self.segment = len(self.data) // B
        self.at = torch.arange(T + 1)[:, None] + self.segment * torch.arange(B)[None, :]
        self.T, self.B, self.V, self.pointer = T, B, V, 0
        self.loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

    def step(self) -> float:
        T, B = self.T, self.B
        if self.pointer + T + 1 > self.segment:
            self.pointer = 0
            self.state = (
                tuple(torch.zeros_like(s) for s in self.state)
                if isinstance(self.state, tuple)
                else torch.zeros_like(self.state)
            )
        window = self.data[self.at + self.pointer]  # (T+1, B)
        x = self.eye[window[:-1]]  # (T, B, V) one-hot
        out, state = self.rnn(x, self.state)
        loss = self.loss_fn(self.out(out).view(T * B, self.V), window[1:].reshape(-1)) / B
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        self.state = (
            tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        )
        self.pointer += T
        return loss.item()


def load_old_charrnn(tree: str):
    """The charrnn package of another checkout, imported as `charrnn_old` beside this one."""
    import importlib.util

    path = os.path.join(os.path.abspath(tree), "charrnn")
    spec = importlib.util.spec_from_file_location(
        "charrnn_old", os.path.join(path, "__init__.py"), submodule_search_locations=[path]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["charrnn_old"] = mod
    spec.loader.exec_module(mod)
    return mod


def cells_trainer(text, cell, H, L, B, T, dtype="float32", lr=2e-3) -> Trainer:
    cfg = Config(
        hidden_size=H,
        num_layers=L,
        seq_length=T,
        batch_size=B,
        cell=cell,
        embedding_size=0,  # one-hot input, as the nn.RNN/GRU/LSTM(V, H) it is timed against
        optimizer="adam",
        learning_rate=lr,
        clip_norm=5.0,
        iterations=10**9,
        eval_every=0,
        sample_every=0,
        dtype=dtype,
    )
    return Trainer(cfg, text)


def check_torch_export(text):
    """charrnn's parameters, exported with model.torch_state_dict and loaded into nn.RNN/GRU/
    LSTM + nn.Linear (behind nn.Embedding with an embedding), give the same loss and the same
    final state as charrnn (float64)."""
    from charrnn.model import torch_state_dict

    for cell in ("rnn", "gru", "lstm"):
        for E in (0, 16):
            check_torch_export_of(text, cell, E, torch_state_dict)


def check_torch_export_of(text, cell, E, torch_state_dict):
    tr = Trainer(
        Config(
            hidden_size=32,
            num_layers=2,
            seq_length=50,
            batch_size=3,
            cell=cell,
            embedding_size=E,
            iterations=10,
            eval_every=0,
            sample_every=0,
        ),
        text,
    )
    for _ in range(3):
        tr.step()  # trained a little: biases no longer zero
    cfg, V = tr.config, tr.vocab.size
    sd = torch_state_dict(tr.model.theta, V, cfg.hidden_size, cfg.num_layers, cell, E)
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    rnn = cls(E or V, cfg.hidden_size, num_layers=cfg.num_layers).double()
    out = torch.nn.Linear(cfg.hidden_size, V).double()
    emb = torch.nn.Embedding(V, E).double() if E else None
    for name, module in (("rnn.", rnn), ("out.", out), ("emb.", emb)):
        if module is not None:
            module.load_state_dict(
                {k[4:]: torch.from_numpy(v) for k, v in sd.items() if k.startswith(name)}
            )
    m = tr.model
    m.reset_state()
    inputs, targets = tr.inputs.copy(), tr.targets.copy()
    loss = m.forward(inputs, targets)
    with torch.no_grad():
        ids = torch.from_numpy(inputs)
        x = emb(ids) if emb is not None else torch.eye(V, dtype=torch.float64)[ids]
        y, state = rnn(x)
        tl = (
            torch.nn.functional.cross_entropy(
                out(y).reshape(-1, V), torch.from_numpy(targets).reshape(-1), reduction="sum"
            ).item()
            / cfg.batch_size
        )
    h = (state[0] if isinstance(state, tuple) else state).numpy()
    dh = np.abs(h - np.stack([hs[cfg.seq_length] for hs in m.hs])).max()
    print(
        f"torch_state_dict, {cell}, embedding {E}: |loss - torch's| = {abs(loss - tl):.1e}, "
        f"|h - torch's| = {dh:.1e}"
    )
    assert abs(loss - tl) < 1e-9 * abs(tl) and dh < 1e-12


def cells_section(text, seconds, with_torch, old_tree=None):
    if with_torch:
        check_torch_export(text)
    configs = [
        ("lstm", 2, 256, 32, 64),
        ("gru", 2, 256, 32, 64),
        ("rnn", 2, 128, 32, 64),
        ("rnn", 2, 128, 1, 64),
        ("lstm", 2, 256, 1, 64),
    ]
    print("\n== cells and streams: float32, Adam, clip-norm 5, chars/second (single thread) ==")
    print(
        f"{'cell':5} {'L':>2} {'H':>4} {'B':>3} {'T':>3} {'charrnn':>9} "
        + (f"{'torch':>9} {'charrnn/torch':>13}" if with_torch else "")
    )
    rows = {}
    for cell, L, H, B, T in configs:
        tr = cells_trainer(text, cell, H, L, B, T)
        steps = {"c": tr.step}
        if with_torch:
            steps["t"] = TorchStreams(tr).step
        # bursts of at least 2 steps; the slow configurations get longer bursts
        r = measure(steps, T * B, seconds * len(steps) * (4 if B > 1 else 1))
        rows[(cell, L, H, B, T)] = r
        print(
            f"{cell:5} {L:>2} {H:>4} {B:>3} {T:>3} {fmt(r['c']):>9} "
            + (f"{fmt(r['t']):>9} {r['c'] / r['t']:>12.2f}x" if with_torch else ""),
            flush=True,
        )
    rnn32, rnn1 = rows[("rnn", 2, 128, 32, 64)]["c"], rows[("rnn", 2, 128, 1, 64)]["c"]
    print(
        f"(vanilla 2x128, T 64, float32: B 32 / B 1 = {rnn32 / rnn1:.1f}x; targets: LSTM "
        "2x256 B 32 >= 1.0x torch, vanilla B 32 >= 4x its B 1)"
    )
    if old_tree:
        old = load_old_charrnn(old_tree)
        print(f"\n== vanilla B = 1, Adagrad: this tree against {old_tree}, chars/second ==")
        print(f"{'configuration':32} {'dtype':>8} {'old':>9} {'new':>9} {'new/old':>8}")
        for name, L, H, T in (
            ("article: 2 layers, H 128, T 13", 2, 128, 13),
            ("1 layer, H 100, T 25", 1, 100, 25),
        ):
            for dt in ("float64", "float32"):
                kw = dict(
                    hidden_size=H,
                    num_layers=L,
                    seq_length=T,
                    learning_rate=0.1,
                    iterations=10**9,
                    eval_every=0,
                    sample_every=0,
                    dtype=dt,
                )
                new = Trainer(Config(**kw), text)
                was = old.Trainer(old.Config(**kw), text)
                r = measure({"old": was.step, "new": new.step}, T, seconds * 4, rounds=8)
                print(
                    f"{name:32} {dt:>8} {fmt(r['old']):>9} {fmt(r['new']):>9} "
                    f"{r['new'] / r['old']:>7.2f}x",
                    flush=True,
                )


# --- measuring -------------------------------------------------------------------------------------
def chars_per_second(step, T: int, seconds: float, min_steps: int = 2) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds and n >= min_steps:
            return n * T / el


def measure(trainers: dict, T: int, seconds: float, rounds: int = 4) -> dict:
    """chars/second of each trainer: a warm-up, then `rounds` bursts of seconds/rounds taken in
    turn (so that anything else running on the machine slows all of them alike), best burst."""
    for step in trainers.values():
        chars_per_second(step, T, 0.05)
    best = dict.fromkeys(trainers, 0.0)
    for _ in range(rounds):
        for name, step in trainers.items():
            best[name] = max(best[name], chars_per_second(step, T, seconds / rounds))
    return best


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}"


def speed_section(text, V, seconds, with_torch):
    lr = 0.1
    rows = []
    configs = [("article: 2 layers, H 128, T 13", 2, 128, 13), ("1 layer, H 100, T 25", 1, 100, 25)]
    print("\n== training speed, chars/second (single thread) ==")
    head = (
        f"{'configuration':32} {'charrnn f64':>12} {'charrnn f32':>12} {'baseline':>10} "
        + (f"{'torch f32':>10} {'torch f64':>10} " if with_torch else "")
        + f"{'f64/base':>9} {'f32/f64':>8}"
        + (f" {'f64/torch32':>11} {'f32/torch32':>11} {'f64/torch64':>11}" if with_torch else "")
    )
    print(head)
    for name, L, H, T in configs:
        tr64 = charrnn_trainer(text, H, L, T, "float64", lr)
        base = baseline_trainer(tr64, lr)
        tr32 = charrnn_trainer(text, H, L, T, "float32", lr)
        steps = {"c64": tr64.step, "c32": tr32.step, "base": base.step}
        if with_torch:
            steps["t32"] = TorchTrainer(tr64, lr, torch.float32).step
            steps["t64"] = TorchTrainer(tr64, lr, torch.float64).step
        r = {"name": name, **measure(steps, T, seconds * len(steps))}
        line = (
            f"{name:32} {fmt(r['c64']):>12} {fmt(r['c32']):>12} {fmt(r['base']):>10} "
            + (f"{fmt(r['t32']):>10} {fmt(r['t64']):>10} " if with_torch else "")
            + f"{r['c64'] / r['base']:>8.1f}x {r['c32'] / r['c64']:>7.2f}x"
            + (
                f" {r['c64'] / r['t32']:>10.1f}x {r['c32'] / r['t32']:>10.1f}x "
                f"{r['c64'] / r['t64']:>10.1f}x"
                if with_torch
                else ""
            )
        )
        print(line, flush=True)
        rows.append(r)
    print(
        f"(V = {V}; targets: f64/base >= 5x at the article's configuration and >= 3x at 1x100x25; "
        "charrnn >= 5x torch)"
    )
    return rows


def scaling_section(text, seconds):
    Hs, Ts = (64, 128, 256, 512), (13, 25, 50, 100)
    print("\n== scaling: 2 layers, charrnn float64 vs baseline, chars/second (ratio) ==")
    print(f"{'H / T':>6} " + " ".join(f"{T:>24}" for T in Ts))
    for H in Hs:
        cells = []
        for T in Ts:
            tr = charrnn_trainer(text, H, 2, T, "float64")
            base = baseline_trainer(tr)
            r = measure({"c": tr.step, "b": base.step}, T, 2 * seconds, rounds=2)
            c, b = r["c"], r["b"]
            cells.append(f"{fmt(c):>8} /{fmt(b):>7} ({c / b:4.1f}x)")
        print(f"{H:>6} " + " ".join(f"{s:>24}" for s in cells), flush=True)


# --- quality ---------------------------------------------------------------------------------------
def one_pass(text, article: bool):
    cfg = Config(
        hidden_size=128,
        num_layers=2,
        seq_length=13,
        eval_every=0,
        sample_every=0,
        val_max_chars=10**9,
        **({"learning_rate": 0.1} if article else {}),
    )
    tr = Trainer(cfg, text)
    if article:  # min-char-rnn: randn * 0.01, biases zero
        rng = np.random.default_rng(cfg.seed)
        tr.model.theta[:] = rng.standard_normal(tr.model.theta.size) * 0.01
        p = views(tr.model.theta, tr.vocab.size, cfg.hidden_size, cfg.num_layers)
        for k, v in p.items():
            if k.startswith("b"):
                v[...] = 0
    t0 = time.perf_counter()
    for _ in range(tr.total_iterations):
        tr.step()
    train_s = time.perf_counter() - t0
    val = tr.evaluate()
    return cfg, tr, train_s, val


def quality_section(text):
    print("\n== quality: one pass over the training part, 2 layers, H 128, T 13 ==")
    print(
        f"{'settings':50} {'lr':>5} {'iters':>7} {'train s':>8} {'chars/s':>8} "
        f"{'val nats/char':>13} {'val bits/char':>13}"
    )
    for article, name in (
        (False, "charrnn defaults"),
        (True, "article: lr 0.1, init 0.01*randn (correct stack)"),
    ):
        cfg, tr, s, val = one_pass(text, article)
        chars = tr.iteration * cfg.seq_length
        print(
            f"{name:50} {cfg.learning_rate:>5g} {tr.iteration:>7} {s:>8.1f} {chars / s:>8,.0f} "
            f"{val:>13.4f} {val / math.log(2):>13.4f}",
            flush=True,
        )
    print(
        f"(held-out: the last {Config().val_fraction:g} of the corpus, {len(tr.val_ids):,} chars, "
        "all read; target <= 1.95 nats/char with the defaults)"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", help="UTF-8 text (default: $CHARRNN_BENCH_CORPUS)")
    ap.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="measuring time per trainer and configuration (split into bursts)",
    )
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--quality", action="store_true", help="only the one-pass quality report")
    ap.add_argument(
        "--cells",
        action="store_true",
        help="only the cells and streams section (against torch when installed)",
    )
    ap.add_argument(
        "--old-tree",
        default=None,
        help="with --cells: a checkout whose charrnn to compare the vanilla B = 1 speed with",
    )
    a = ap.parse_args(argv)
    text, source = load_corpus(a.corpus)
    V = len(set(text))
    print(f"charrnn benchmark  corpus: {source} ({len(text):,} chars, V={V})")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}"
        + (f", torch {torch.__version__}" if torch else ", torch not installed")
        + f", {platform.machine()}, BLAS threads 1"
    )
    if a.quality:
        quality_section(text)
        return
    with_torch = torch is not None and not a.no_torch
    if a.cells:
        cells_section(text, a.seconds, with_torch, a.old_tree)
        return
    speed_section(text, V, a.seconds, with_torch)
    if with_torch:
        print(
            "(torch: Adagrad divides by sqrt(sum g^2) + eps, eps outside the root; charrnn by "
            "sqrt(sum g^2 + eps). nn.RNN has b_ih and b_hh per layer.)"
        )
    if not a.no_scaling:
        scaling_section(text, a.seconds)


if __name__ == "__main__":
    main()
