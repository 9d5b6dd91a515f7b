#!/usr/bin/env python
"""How much charrnn learns per step and per second against the usual PyTorch model (issue 23).

Per cell (lstm, gru), side by side, each in its own process on one thread:

  * charrnn's `Trainer` with the library's defaults for the recipe below (plus `--set`);
  * PyTorch: `nn.Embedding(V, 256)` -> `nn.LSTM`/`nn.GRU(256, 256, 2)` -> `nn.Linear(256, V)`,
    default init (seeded), the same data order.

The recipe: 2 layers x 256, 32 streams at evenly spaced offsets, T 64, Adam 2e-3 constant,
float32; charrnn's loss is summed over the window and averaged over streams, PyTorch's is the
mean over all characters, so charrnn's clip-norm 320 (= 64 x 5) is `clip_grad_norm_(5)`
(Adam does not see the factor T). Held-out loss: the first 30,000 held-out characters (nats/char,
one stream from a zero state), at every `--every` steps and at the --at steps. The seconds are
each process's CPU time in training (evaluations excluded): with one thread each that is the
wall-clock time of a quiet machine, and it stays fair when the machine is shared. "Equal seconds"
compares both at the training time of the one that finished first, interpolating the other's
curve. Each side's wall-clock seconds are in its JSON lines too.

Usage:
    python benchmarks/bench_init.py [CORPUS] [--cells lstm,gru] [--steps 1000] [--set key=value]
    python benchmarks/bench_init.py [CORPUS] --only charrnn --steps 300 --set embedding_size=0

`--set` takes charrnn config fields (embedding_size=0: the one-hot input of before issue 23) and
candidate starting weights for screening (init.char_scale=0.6, init.uniform=true,
init.forget_bias=0, init.emb_scale=0.5: see `reinit`).

CORPUS defaults to $CHARRNN_BENCH_CORPUS (tinyshakespeare.txt for the figures in the docs), else a
generated pseudo-English text. Without torch installed only charrnn runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

# first: one BLAS thread before numpy is imported (benchmarks/ is sys.path[0] for a script);
# numpy imported above it would start OpenBLAS with a thread per core, which on a shared machine
# made each charrnn step 20x slower (3 s of CPU instead of 0.16, measured)
from onethread import torch  # isort: skip

import numpy as np  # isort: skip

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_charrnn import load_corpus  # noqa: E402

from charrnn import Config, Trainer  # noqa: E402
from charrnn.params import CHAR_SCALE, views  # noqa: E402

HERE = os.path.abspath(__file__)
H, L, B, T, LR, VAL_CHARS = 256, 2, 32, 64, 2e-3, 30_000


def recipe(cell: str, steps: int, overrides: dict) -> Config:
    return Config(
        hidden_size=H,
        num_layers=L,
        seq_length=T,
        batch_size=B,
        cell=cell,
        optimizer="adam",
        learning_rate=LR,
        clip_norm=5.0 * T,
        iterations=steps,
        eval_every=0,
        sample_every=0,
        val_max_chars=VAL_CHARS,
        dtype="float32",
        **overrides,
    )


class TorchModel:
    """The PyTorch side: the same windows of the same streams as charrnn's Trainer (segment b of
    the training text for stream b, state carried and detached between windows, reset on wrap)."""

    def __init__(self, tr: Trainer, seed: int = 0):
        cfg, V = tr.config, tr.vocab.size
        torch.manual_seed(seed)
        cls = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[cfg.cell]
        self.emb = torch.nn.Embedding(V, H)
        self.rnn = cls(H, H, num_layers=L)
        self.out = torch.nn.Linear(H, V)
        self.params = [
            *self.emb.parameters(),
            *self.rnn.parameters(),
            *self.out.parameters(),
        ]
        self.opt = torch.optim.Adam(self.params, lr=LR, eps=1e-8)
        self.data = torch.from_numpy(np.asarray(tr.train_ids, dtype=np.int64))
        self.val = torch.from_numpy(np.asarray(tr.val_ids[: VAL_CHARS + 1], dtype=np.int64))
        self.segment = len(self.data) // B
        self.at = torch.arange(T + 1)[:, None] + self.segment * torch.arange(B)[None, :]
        self.lstm, self.V, self.pointer = cfg.cell == "lstm", V, 0
        self.state = self.zero_state(B)

    def zero_state(self, b: int):
        z = torch.zeros(L, b, H)
        return (z, z.clone()) if self.lstm else z

    def logits(self, ids, state):
        y, state = self.rnn(self.emb(ids), state)
        return self.out(y), state

    def step(self) -> None:
        if self.pointer + T + 1 > self.segment:
            self.pointer, self.state = 0, self.zero_state(B)
        window = self.data[self.at + self.pointer]  # (T+1, B)
        y, state = self.logits(window[:-1], self.state)
        loss = torch.nn.functional.cross_entropy(y.reshape(-1, self.V), window[1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        self.state = tuple(s.detach() for s in state) if self.lstm else state.detach()
        self.pointer += T

    def evaluate(self) -> float:
        with torch.no_grad():
            y, _ = self.logits(self.val[:-1, None], self.zero_state(1))
            return torch.nn.functional.cross_entropy(y.reshape(-1, self.V), self.val[1:]).item()


def reinit(tr: Trainer, variants: dict) -> None:
    """Candidate starting weights, for screening before one goes into init_params: char_scale
    (the one-hot rows' std), uniform (PyTorch's U(+-1/sqrt(H)) for every weight and bias that
    is not a one-hot row or the embedding), forget_bias (the LSTM's), emb_scale (Emb's std)."""
    cfg, V = tr.config, tr.vocab.size
    E = cfg.embedding_size
    p = views(tr.model.theta, V, H, L, cfg.cell, E)
    rng = np.random.default_rng(12345)
    if "char_scale" in variants and not E:
        p["Wxh0"][...] *= variants["char_scale"] / CHAR_SCALE
    if variants.get("uniform"):
        k = 1.0 / np.sqrt(H)
        for name, a in p.items():
            if name not in ("Emb", "Wxh0") or (name == "Wxh0" and E):
                a[...] = rng.uniform(-k, k, a.shape)
    if "forget_bias" in variants and cfg.cell == "lstm":
        for layer in range(L):
            p[f"bxh{layer}"][H : 2 * H] = variants["forget_bias"]
            p[f"bhh{layer}"][H : 2 * H] = 0
    if "emb_scale" in variants and E:
        p["Emb"][...] *= variants["emb_scale"]


def run_one(side: str, cell: str, steps: int, every: int, at: list[int], overrides: dict, text):
    """Train one side; print one JSON line per evaluation: step, training seconds, loss."""
    variants = {k[5:]: overrides.pop(k) for k in list(overrides) if k.startswith("init.")}
    tr = Trainer(recipe(cell, steps, overrides), text)
    reinit(tr, variants)
    if side == "torch":
        tm = TorchModel(tr)
        step, evaluate = tm.step, tm.evaluate
    else:
        step, evaluate = tr.step, tr.evaluate
    points = sorted({s for s in at if s <= steps} | set(range(every, steps + 1, every)) | {steps})
    seconds = cpu = 0.0
    done = 0
    for p in points:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(p - done):
            step()
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        done = p
        loss = evaluate()
        print(json.dumps({"step": p, "seconds": seconds, "cpu": cpu, "loss": loss}), flush=True)


def loss_at_time(curve: list[dict], t: float, clock: str = "cpu") -> float:
    """The loss at training time t, linear between evaluations (the last one beyond it)."""
    prev = {clock: 0.0, "loss": curve[0]["loss"]}
    for c in curve:
        if c[clock] >= t:
            w = (t - prev[clock]) / max(c[clock] - prev[clock], 1e-9)
            return prev["loss"] + w * (c["loss"] - prev["loss"])
        prev = c
    return curve[-1]["loss"]


def cpu_line() -> str:
    """The CPU's model and the vector flags that decide BLAS's kernels (figures differ by CPU)."""
    model, flags = platform.machine(), "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        info = {}
    info = {k.strip(): v.strip() for k, v in info.items()}
    model = info.get("model name", model)
    have = set(info.get("flags", "").split())
    keys = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
    flags = " ".join(k for k in keys if k in have) or flags
    return f"{model}, {os.cpu_count()} CPUs, flags: {flags}"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def side_by_side(a, cell: str, corpus: str) -> dict[str, list[dict]]:
    """Both sides of one cell as two processes at once; their curves."""
    sides = [s for s in ("charrnn", "torch") if a.only in (None, s)]
    if torch is None:
        sides = [s for s in sides if s != "torch"]
    base = [sys.executable, HERE, corpus, "--cell-run", cell, "--steps", str(a.steps)]
    base += ["--every", str(a.every), "--at", a.at] + sum((["--set", s] for s in a.set), [])
    procs = {
        s: subprocess.Popen([*base, "--side", s], stdout=subprocess.PIPE, text=True) for s in sides
    }
    curves = {}
    for s, p in procs.items():
        out, _ = p.communicate()
        if p.returncode:
            sys.exit(f"{s} {cell} failed (exit {p.returncode})")
        curves[s] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return curves


def report(cell: str, curves: dict[str, list[dict]], at: list[int], load: str) -> None:
    def at_step(c, s):
        return next((x for x in c if x["step"] == s), None)

    names = list(curves)
    print(f"\n{cell}: held-out nats/char (CPU seconds of training)   load before/after: {load}")
    print(f"{'steps':>7} " + " ".join(f"{n:>18}" for n in names))
    for s in at:
        row = [at_step(curves[n], s) for n in names]
        if all(r is None for r in row):
            continue
        cells = [f"{r['loss']:.3f} ({r['cpu']:5.0f} s)" if r else "-" for r in row]
        print(f"{s:>7} " + " ".join(f"{c:>18}" for c in cells))
    if len(names) == 2:
        t = min(curves[n][-1]["cpu"] for n in names)
        cells = [f"{loss_at_time(curves[n], t):.3f}" for n in names]
        print(f"{'at ' + format(t, '.0f') + ' s':>7} " + " ".join(f"{c:>18}" for c in cells))


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for kv in pairs:
        k, _, v = kv.partition("=")
        out[k] = json.loads(v) if v[:1] in "-0123456789.tfn[{" else v
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", help="UTF-8 text (default: $CHARRNN_BENCH_CORPUS)")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=50, help="steps between evaluations")
    ap.add_argument("--at", default="100,300,1000", help="steps reported in the table")
    ap.add_argument("--set", action="append", default=[], help="charrnn config key=value")
    ap.add_argument("--only", choices=("charrnn", "torch"), default=None)
    ap.add_argument("--cell-run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    text, source = load_corpus(a.corpus)
    at = [int(s) for s in a.at.split(",")]
    if a.cell_run:  # one side of one cell, in its own process
        overrides = parse_overrides(a.set) if a.side == "charrnn" else {}
        run_one(a.side, a.cell_run, a.steps, a.every, at, overrides, text)
        return
    print(f"bench_init  corpus: {source} ({len(text):,} chars)  {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"cpu: {cpu_line()}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        + (f"torch {torch.__version__}" if torch else "torch not installed")
        + ", one thread per side"
    )
    print(f"charrnn overrides: {parse_overrides(a.set) or 'none (the defaults)'}")
    corpus = source if os.path.exists(source) else ""
    for cell in a.cells.split(","):
        before = loadavg()
        curves = side_by_side(a, cell, corpus)
        report(cell, curves, at, f"{before} / {loadavg()}")


if __name__ == "__main__":
    main()
