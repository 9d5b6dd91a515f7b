#!/usr/bin/env python
"""Held-out loss against wall-clock training time: charrnn and the classic PyTorch char-rnn
recipe, side by side on the same corpus, each on one thread, one after the other.

  * charrnn `Trainer` with the recipe given on the command line (default: the best one measured,
    see the README), its cosine schedule sized to the time budget from a short calibration;
  * PyTorch (when torch imports): 2-layer `nn.LSTM`, hidden 256, one-hot input, 32 streams (the
    training text cut into 32 segments, state carried and detached between windows), windows of
    64 characters, `CrossEntropyLoss` (mean), `clip_grad_norm_(5)`, `Adam(lr=2e-3)`.

Both read the same vocabulary and the same split (the last `val_fraction` of the corpus is held
out), and both are evaluated the same way at each checkpoint time: the loss in nats/char over
every held-out character, one stream from a zero state carried through the held-out text. The
clock stops while evaluating.

Usage:
    python benchmarks/bench_quality.py CORPUS [--minutes 10] [--at 1,2,5,10] [--no-torch]
        [--cell lstm --hidden-size 256 --num-layers 2 --batch-size 32 --seq-length 64
         --learning-rate 2e-3 --lr-schedule cosine --warmup 100 --clip-norm 5 ...]

CORPUS may also come from $CHARRNN_BENCH_CORPUS.
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
from charrnn import Config, Trainer, read_corpus  # noqa: E402

RECIPE = dict(
    cell="gru",
    hidden_size=256,
    num_layers=2,
    batch_size=32,
    seq_length=64,
    optimizer="adam",
    learning_rate=4e-3,
    lr_schedule="cosine",
    warmup=100,
    clip_norm=5.0 * 64,
    dropout=0.0,
    dtype="float32",
)
"""The default charrnn recipe (overridden by the options), the best of those measured for 5 and
10 minutes (the README has the search). clip_norm is per window: charrnn's gradient is summed over the window's T characters,
PyTorch's mean is per character, so clip-norm 5 there is 5 T here."""


def run_charrnn(text: str, recipe: dict, minutes: float, at: list[float]) -> list:
    """(minutes, iteration, chars, val loss) at each checkpoint time. The cosine schedule needs
    the run's length in iterations: a calibration of a few seconds guesses it, and at every
    checkpoint time the run is resumed (through a checkpoint, as `--resume --iterations N`
    would) with the length the speed measured so far predicts for the budget."""
    from charrnn import checkpoint

    budget = minutes * 60
    probe = Trainer(
        Config(**{**recipe, "iterations": 10**9, "warmup": 0, "eval_every": 0, "sample_every": 0}),
        text,
    )
    probe.step()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 3.0:
        probe.step()
        n += 1
    per_step = (time.perf_counter() - t0) / n
    del probe
    cfg = Config(
        **{
            **recipe,
            "eval_every": 0,
            "sample_every": 0,
            "val_max_chars": 0,
            "iterations": max(recipe.get("warmup", 0) + 10, int(budget / per_step)),
        }
    )
    print(
        f"charrnn: {per_step * 1e3:.0f} ms/step calibrated, cosine over {cfg.iterations} "
        f"iterations",
        flush=True,
    )
    box = {"t": Trainer(cfg, text)}

    def rescale(train_s):
        t = box["t"]
        left = budget - train_s
        if left <= 0 or t.iteration == 0:
            return
        total = t.iteration + int(left * t.iteration / train_s)
        if abs(total - t.total_iterations) > 0.01 * t.total_iterations:
            box["t"] = checkpoint.load(checkpoint.to_bytes(t)).trainer(
                text, t.config.replace(iterations=max(total, t.iteration + 1, cfg.warmup + 1))
            )
            print(f"    (length re-estimated: {box['t'].total_iterations} iterations)", flush=True)

    return _timed(
        lambda: box["t"].step(),
        lambda: box["t"].evaluate(),
        lambda: box["t"].iteration * cfg.seq_length * cfg.batch_size,
        lambda: box["t"].iteration,
        budget,
        at,
        lambda: box["t"].total_iterations,
        rescale,
    )


def _timed(step, evaluate, chars, iteration, budget, at, max_steps=None, on_mark=None) -> list:
    rows, train_s, marks = [], 0.0, sorted(m * 60 for m in at if m * 60 <= budget + 1e-9)
    while marks:
        t0 = time.perf_counter()
        while train_s + (time.perf_counter() - t0) < marks[0] and (
            max_steps is None or iteration() < max_steps()
        ):
            step()
        train_s += time.perf_counter() - t0
        val = evaluate()
        rows.append((marks.pop(0) / 60, iteration(), chars(), val))
        print(
            f"  {rows[-1][0]:5.1f} min  iteration {rows[-1][1]:>7}  {rows[-1][2]:>11,} chars  "
            f"val {val:.4f} nats/char",
            flush=True,
        )
        if on_mark and marks:
            on_mark(train_s)
    return rows


class TorchRecipe:
    """The classic PyTorch char-rnn recipe on charrnn's vocabulary and split."""

    def __init__(self, tr: Trainer, H=256, L=2, B=32, T=64, lr=2e-3, clip=5.0):
        torch.manual_seed(0)
        V = tr.vocab.size
        self.rnn, self.out = torch.nn.LSTM(V, H, num_layers=L), torch.nn.Linear(H, V)
        self.params = list(self.rnn.parameters()) + list(self.out.parameters())
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.clip, self.V, self.T, self.B, self.L, self.H = clip, V, T, B, L, H
        self.eye = torch.eye(V)
        self.train = torch.from_numpy(np.asarray(tr.train_ids, dtype=np.int64))
        self.val = torch.from_numpy(np.asarray(tr.val_ids, dtype=np.int64))
        self.segment = len(self.train) // B
        self.at = torch.arange(T + 1)[:, None] + self.segment * torch.arange(B)[None, :]
        self.pointer, self.iteration = 0, 0
        self.state = None

    def step(self):
        T = self.T
        if self.pointer + T + 1 > self.segment:
            self.pointer, self.state = 0, None
        w = self.train[self.at + self.pointer]
        out, state = self.rnn(self.eye[w[:-1]], self.state)
        loss = torch.nn.functional.cross_entropy(self.out(out).view(-1, self.V), w[1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        self.state = tuple(s.detach() for s in state)
        self.pointer += T
        self.iteration += 1

    def evaluate(self) -> float:
        # no_grad as a context, not a decorator: the class must be definable without torch
        # (--no-torch on a machine that has none)
        total, state = 0.0, None
        with torch.no_grad():
            for s in range(0, len(self.val) - 1, 4096):
                x = self.val[s : s + 4097]
                out, state = self.rnn(self.eye[x[:-1]][:, None, :], state)
                total += torch.nn.functional.cross_entropy(
                    self.out(out[:, 0]), x[1:], reduction="sum"
                ).item()
        return total / (len(self.val) - 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "corpus",
        nargs="?",
        default=default_corpus(),
        help="UTF-8 text (or set CHARRNN_BENCH_CORPUS)",
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of each")
    ap.add_argument(
        "--at", default=None, help="minutes at which to evaluate [1,2,5,10 up to --minutes]"
    )
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--only-torch", action="store_true")
    for k, v in RECIPE.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    ap.add_argument(
        "--embedding-size", type=int, default=None, help="[default: the config's, H for gated]"
    )
    a = ap.parse_args(argv)
    if not a.corpus:
        ap.error("give a corpus (or set CHARRNN_BENCH_CORPUS)")
    text = read_corpus(a.corpus)
    at = (
        [float(x) for x in a.at.split(",")]
        if a.at
        else [m for m in (1, 2, 5, 10, 20, 30, 60) if m < a.minutes] + [a.minutes]
    )
    recipe = {k: getattr(a, k) for k in RECIPE}
    if a.embedding_size is not None:
        recipe["embedding_size"] = a.embedding_size
    print(
        f"bench_quality  corpus: {a.corpus} ({len(text):,} chars, V={len(set(text))}), "
        f"{a.minutes:g} min each, evaluated at {at} min"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}"
        + (f", torch {torch.__version__}" if torch else ", torch not installed")
        + f", BLAS threads 1, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = {}
    if not a.only_torch:
        print(
            "charrnn train " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in recipe.items()),
            flush=True,
        )
        results["charrnn"] = run_charrnn(text, recipe, a.minutes, at)
    if torch is not None and not a.no_torch:
        print(
            "torch: nn.LSTM 2x256, B 32, T 64, Adam 2e-3, clip_grad_norm 5 (mean loss)", flush=True
        )
        tr = Trainer(Config(iterations=1, eval_every=0, sample_every=0), text)
        tt = TorchRecipe(tr)
        results["torch"] = _timed(
            tt.step,
            tt.evaluate,
            lambda: tt.iteration * tt.T * tt.B,
            lambda: tt.iteration,
            a.minutes * 60,
            at,
        )
    print(
        f"\n== held-out loss, nats/char (all held-out characters) against training minutes; "
        f"load average {os.getloadavg()[0]:.2f} at the end =="
    )
    names = list(results)
    print(f"{'minutes':>7} " + " ".join(f"{n + ' val':>12} {n + ' chars':>14}" for n in names))
    for i, m in enumerate(at):
        cells = []
        for n in names:
            r = results[n][i] if i < len(results[n]) else None
            cells.append(f"{r[3]:>12.4f} {r[2]:>14,}" if r else f"{'-':>12} {'-':>14}")
        print(f"{m:>7g} " + " ".join(cells))
    if "charrnn" in results and results["charrnn"]:
        best = results["charrnn"][-1][3]
        print(
            f"(charrnn at {at[-1]:g} min: {best:.4f} nats/char, {best / math.log(2):.4f} "
            "bits/char; goal <= 1.52 at 10 min)"
        )


if __name__ == "__main__":
    main()
