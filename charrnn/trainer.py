"""Sequential online training: windows sweep the training text left to right, the hidden state
of every layer is carried from window to window (reset at the start and when the text wraps),
and each window makes one clipped Adagrad update.

The loop in `Trainer.run` is the hot loop. It makes no I/O and no allocation of note; everything
that leaves it (progress, evaluation, samples, checkpoints, cancellation) goes through `Hooks`,
called at iteration counts or throttled in time, so a Redis-backed caller cannot slow it down.
"""
from __future__ import annotations

import math
import time

import numpy as np

from . import data as corpus
from .config import Config
from .errors import DivergedError
from .model import Model, init_params
from .sampling import sample_from

ADAGRAD_EPS = 1e-8
EVAL_CHUNK = 256  # characters per layer-by-layer block of an evaluation pass


class Hooks:
    """What a trainer tells its caller, outside the hot loop. Override what you need.

    progress_seconds throttles on_progress in wall-clock time; the other hooks fire at the
    iteration counts of the config (eval_every, sample_every) and of run(checkpoint_every)."""

    progress_seconds: float = 1.0

    def on_progress(self, trainer: "Trainer") -> None: ...
    def on_eval(self, trainer: "Trainer", val_loss: float) -> None: ...
    def on_sample(self, trainer: "Trainer", text: str) -> None: ...
    def on_checkpoint(self, trainer: "Trainer") -> None: ...
    def should_stop(self, trainer: "Trainer") -> bool:
        return False


class Trainer:
    """A model, its optimizer and its position in the corpus: the complete training state.

    `Trainer(config, text)` starts fresh; `checkpoint.load(...).trainer(text)` resumes one."""

    def __init__(self, config: Config, text: str):
        self.config = config
        self.vocab, self.train_ids, self.val_ids = corpus.prepare(text, config.val_fraction,
                                                                  config.seq_length)
        self.corpus_sha256 = corpus.corpus_sha256(text)
        V, H, L, T = self.vocab.size, config.hidden_size, config.num_layers, config.seq_length
        self.model = Model(V, H, L, T, np.dtype(config.dtype), config.dropout)
        self.mem = np.zeros_like(self.model.theta)       # Adagrad memories, one flat vector
        self._tmp = np.zeros_like(self.model.theta)
        # independent streams: init, dropout masks, samples; turning samples on or off (or
        # drawing them more often) leaves the trained weights untouched
        init_seq, train_seq, sample_seq = np.random.SeedSequence(config.seed).spawn(3)
        init_params(self.model.theta, V, H, L, np.random.default_rng(init_seq))
        self.train_rng = np.random.default_rng(train_seq)
        self.sample_rng = np.random.default_rng(sample_seq)
        self.learning_rate = float(config.learning_rate)  # a caller may lower it (divergence guard)
        self.iteration = 0
        self.pointer = 0
        self.smooth_loss = -math.log(1.0 / V) * T
        self.last_loss = float("nan")
        self.val_loss: float | None = None
        self.best_val_loss: float | None = None
        self.last_char = 0       # id of the last character read into the hidden state
        self.chars_per_second = 0.0
        self.total_iterations = self.iterations_for(config, len(self.train_ids))

    @staticmethod
    def iterations_for(config: Config, n_train: int) -> int:
        per_epoch = (n_train - 1) // config.seq_length
        if config.iterations is not None:
            return config.iterations
        return max(1, math.ceil((config.epochs or 1.0) * per_epoch))

    # --- the hot loop ------------------------------------------------------------------------
    def step(self) -> float:
        """One window: forward, backward, clip, Adagrad. Raises DivergedError before updating
        anything if the loss is not finite."""
        m, T = self.model, self.config.seq_length
        if self.pointer + T + 1 > len(self.train_ids):
            self.pointer = 0
            m.reset_state()
        inputs = self.train_ids[self.pointer:self.pointer + T]
        targets = self.train_ids[self.pointer + 1:self.pointer + T + 1]
        if m.dropout > 0:
            m.draw_masks(self.train_rng)
        loss = m.forward(inputs, targets)
        if not math.isfinite(loss):
            raise DivergedError(f"diverged: loss is {loss} at iteration {self.iteration + 1}")
        m.backward(inputs, targets)
        g, mem, tmp = m.grad, self.mem, self._tmp
        c = self.config.grad_clip
        np.clip(g, -c, c, out=g)
        np.multiply(g, g, out=tmp)
        mem += tmp                                   # mem += g*g
        np.add(mem, ADAGRAD_EPS, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(g, tmp, out=tmp)
        tmp *= self.learning_rate
        m.theta -= tmp                               # p -= lr * g / sqrt(mem + eps)
        m.carry_state()
        self.last_char = int(inputs[-1])
        self.pointer += T
        self.iteration += 1
        self.last_loss = loss
        self.smooth_loss = 0.999 * self.smooth_loss + 0.001 * loss
        return loss

    def run(self, hooks: Hooks | None = None, checkpoint_every: int = 0,
            until: int | None = None, eval_at_end: bool = False) -> str:
        """Train until `until` (default: the configured total). Returns "finished", or
        "stopped" when hooks.should_stop said so at a check point. eval_at_end evaluates at
        `until` too (an early-stopping rung), before the checkpoint there, which then holds it."""
        hooks = hooks or Hooks()
        cfg = self.config
        until = self.total_iterations if until is None else min(until, self.total_iterations)
        start_it, t0 = self.iteration, time.perf_counter()
        next_progress = t0 + hooks.progress_seconds
        eval_every, sample_every = cfg.eval_every, cfg.sample_every
        while self.iteration < until:
            self.step()
            it = self.iteration
            done = it == until
            if it & 15 == 0 or done:                 # the clock is read every 16 windows only
                now = time.perf_counter()
                self.chars_per_second = (it - start_it) * cfg.seq_length / max(now - t0, 1e-9)
                if now >= next_progress or done:
                    next_progress = now + hooks.progress_seconds
                    hooks.on_progress(self)
                    if hooks.should_stop(self):
                        return "stopped"
            if (eval_every and it % eval_every == 0) or it == self.total_iterations \
                    or (done and eval_at_end):
                hooks.on_eval(self, self.evaluate())
            if sample_every and it % sample_every == 0:
                hooks.on_sample(self, self.sample_during_training())
            if (checkpoint_every and it % checkpoint_every == 0) or done:
                hooks.on_checkpoint(self)
                if hooks.should_stop(self):
                    return "stopped" if not done else "finished"
        return "finished"

    # --- outside the hot loop ----------------------------------------------------------------
    def evaluate(self) -> float | None:
        """Held-out loss in nats/char: a forward pass over (at most val_max_chars of) the
        validation text, state carried from zero, no dropout. None without a validation split."""
        ids = self.val_ids[: self.config.val_max_chars + 1]
        n = len(ids) - 1
        if n < 1:
            return None
        cfg = self.config
        chunk = min(EVAL_CHUNK, n)
        ev = Model(self.vocab.size, cfg.hidden_size, cfg.num_layers, chunk, self.model.dtype,
                   theta=self.model.theta)
        total, count = 0.0, 0
        for s in range(0, n - chunk + 1, chunk):
            total += ev.forward(ids[s:s + chunk], ids[s + 1:s + chunk + 1])
            count += chunk
            ev.carry_state()
        loss = total / count
        if not math.isfinite(loss):
            raise DivergedError(f"diverged: validation loss is {loss} at iteration {self.iteration}")
        self.val_loss = loss
        if self.best_val_loss is None or loss < self.best_val_loss:
            self.best_val_loss = loss
        return loss

    def sample_during_training(self) -> str:
        cfg = self.config
        return sample_from(self.model.p, cfg.num_layers, self.vocab, self.model.state(),
                           length=cfg.sample_length,
                           temperature=cfg.temperature, rng=self.sample_rng)

    def stats(self) -> dict:
        cfg = self.config
        return {
            "iteration": self.iteration,
            "iterations": self.total_iterations,
            "chars": self.iteration * cfg.seq_length,
            "smooth_loss": self.smooth_loss,
            "val_loss": self.val_loss,
            "val_bits_per_char": None if self.val_loss is None else self.val_loss / math.log(2),
            "best_val_loss": self.best_val_loss,
            "chars_per_second": self.chars_per_second,
            "learning_rate": self.learning_rate,
        }

