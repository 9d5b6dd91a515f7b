"""Training on B parallel streams: the training text is cut into B equal segments, stream b
sweeps segment b left to right in windows of T characters, the hidden (and LSTM cell) state of
every layer of every stream is carried from window to window (reset at the start and when the
stream wraps to its segment's start), and each step makes one update from the B windows'
gradient (averaged over streams: see model.py), clipped elementwise then by global norm, with
Adagrad, RMSprop or Adam at the scheduled rate. With B = 1 this is exactly min-char-rnn's
sequential online training.

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
from .errors import ConfigError, CorpusError, DivergedError
from .model import Model, init_params
from .sampling import sample_from

ADAGRAD_EPS = 1e-8  # inside the square root, as min-char-rnn (so the vanilla trainer is unchanged)
ADAM_EPS = 1e-8  # outside it, as torch.optim.Adam and RMSprop
CLIP_NORM_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_
EVAL_CHUNK = 256  # characters per layer-by-layer block of an evaluation pass
OPTIMIZER_STATES = {"adagrad": ("mem",), "rmsprop": ("mean_square",), "adam": ("m", "v")}
"""The vectors, each the size of the parameters, that each optimizer keeps and checkpoints."""


class Hooks:
    """What a trainer tells its caller, outside the hot loop. Override what you need.

    progress_seconds throttles on_progress in wall-clock time (progress_every, when set, calls it
    every so many iterations as well, so a fast run still reports a curve); the other hooks fire at the
    iteration counts of the config (eval_every, sample_every) and of run(checkpoint_every)."""

    progress_seconds: float = 1.0
    progress_every: int = 0  # and at least every this many iterations (0: by time alone)

    def on_progress(self, trainer: Trainer) -> None: ...
    def on_eval(self, trainer: Trainer, val_loss: float | None) -> None: ...
    def on_sample(self, trainer: Trainer, text: str) -> None: ...
    def on_checkpoint(self, trainer: Trainer) -> None: ...
    def should_stop(self, trainer: Trainer) -> bool:
        return False


class Trainer:
    """A model, its optimizer and its position in the corpus: the complete training state.

    `Trainer(config, text)` starts fresh; `checkpoint.load(...).trainer(text)` resumes one."""

    def __init__(self, config: Config, text: str):
        self.config = cfg = config
        self.vocab, self.train_ids, self.val_ids = corpus.prepare(
            text, cfg.val_fraction, cfg.seq_length
        )
        self.corpus_sha256 = corpus.corpus_sha256(text)
        V, H, L, T, B = (
            self.vocab.size,
            cfg.hidden_size,
            cfg.num_layers,
            cfg.seq_length,
            cfg.batch_size,
        )
        n = len(self.train_ids)
        if B * (T + 1) > n:
            raise CorpusError(
                f"batch-size {B} x (seq-length {T} + 1) = {B * (T + 1)} characters "
                f"do not fit in the {n} training characters"
            )
        self.total_iterations = self.iterations_for(cfg, n)
        if cfg.warmup >= self.total_iterations:
            raise ConfigError(
                f"warmup ({cfg.warmup} iterations) must be shorter than the run "
                f"({self.total_iterations} iterations)"
            )
        E = cfg.embedding
        self.model = Model(V, H, L, T, np.dtype(cfg.dtype), cfg.dropout, cell=cfg.cell, B=B, E=E)
        theta = self.model.theta
        # optimizer states, one flat vector each, in the parameters' layout
        self.opt_states = [np.zeros_like(theta) for _ in OPTIMIZER_STATES[cfg.optimizer]]
        self._tmp = np.zeros_like(theta)
        # independent streams: init, dropout masks, samples; turning samples on or off (or
        # drawing them more often) leaves the trained weights untouched
        init_seq, train_seq, sample_seq = np.random.SeedSequence(cfg.seed).spawn(3)
        init_params(theta, V, H, L, np.random.default_rng(init_seq), cfg.cell, E)
        self.train_rng = np.random.default_rng(train_seq)
        self.sample_rng = np.random.default_rng(sample_seq)
        self.rollback_scale = 1.0  # halved by the job system after each divergence rollback
        self.iteration = 0
        # every stream sits at the same offset of its own segment, so they wrap together
        self.segment = n // B
        self.pointer = 0  # the offset of every stream in its segment
        self.window_at = np.arange(T + 1)[:, None] + self.segment * np.arange(B)[None, :]
        self._at = np.zeros((T + 1, B), np.int64)
        self.window = np.zeros((T + 1, B), np.int64)
        self.inputs, self.targets = self.window[:-1], self.window[1:]
        self.smooth_loss = math.log(V)  # nats/char, starting at uniform guessing
        self._uniform_loss = math.log(V)
        self.last_loss = float("nan")  # of the last window, summed over its T characters
        self.val_loss: float | None = None
        self.best_val_loss: float | None = None
        self.last_char = 0  # id of the last character stream 0 read into its state
        self.chars_per_second = 0.0
        self._evaluators: dict[int, Model] = {}

    @staticmethod
    def iterations_for(config: Config, n_train: int) -> int:
        per_epoch = max(1, (n_train // config.batch_size - 1) // config.seq_length)
        if config.iterations is not None:
            return config.iterations
        return max(1, math.ceil((config.epochs or 1.0) * per_epoch))

    @property
    def streams(self) -> int:
        return self.config.batch_size

    @property
    def pointers(self) -> np.ndarray:
        """Where each stream's next window starts in the training text."""
        return self.segment * np.arange(self.streams) + self.pointer

    @property
    def mem(self) -> np.ndarray:
        """The first optimizer state (Adagrad's memories, RMSprop's mean square, Adam's m)."""
        return self.opt_states[0]

    # --- the learning rate -------------------------------------------------------------------
    def schedule(self, iteration: int) -> float:
        """The factor of the base rate at a (0-based) iteration: linear warm-up over `warmup`
        iterations, then constant, or cosine down to a tenth at the end of the run (nanoGPT)."""
        cfg = self.config
        w = cfg.warmup
        if iteration < w:
            return (iteration + 1) / (w + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        ratio = min(1.0, (iteration - w) / max(1, self.total_iterations - w))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * ratio))

    @property
    def learning_rate(self) -> float:
        """The rate the next step uses: base rate x schedule x rollback scale. Read-only: the
        base rate is the config's, and `halve_learning_rate()` is the one way to lower it."""
        return self.config.learning_rate * self.schedule(self.iteration) * self.rollback_scale

    def halve_learning_rate(self) -> float:
        """Halve every future rate (the job system's answer to a divergence); returns the new
        rate. The scale is checkpointed, so a resumed run keeps it."""
        self.rollback_scale *= 0.5
        return self.learning_rate

    # --- the hot loop ------------------------------------------------------------------------
    def step(self) -> float:
        """One step: forward and backward over B windows, clip, update. Returns the window loss
        (summed over T characters, averaged over the streams). Raises DivergedError before
        updating anything if the loss is not finite."""
        m, cfg = self.model, self.config
        T = cfg.seq_length
        if self.pointer + T + 1 > self.segment:
            self.pointer = 0
            m.reset_state()
        np.add(self.window_at, self.pointer, out=self._at)
        np.take(self.train_ids, self._at, out=self.window, mode="clip")  # (T+1, B) ids
        inputs, targets = self.inputs, self.targets
        if m.dropout > 0:
            m.draw_masks(self.train_rng)
        loss = m.forward(inputs, targets)
        if not math.isfinite(loss):
            raise DivergedError(f"diverged: loss is {loss} at iteration {self.iteration + 1}")
        m.backward(inputs, targets)
        g = m.grad
        c = cfg.grad_clip
        np.clip(g, -c, c, out=g)
        if cfg.clip_norm > 0:
            norm = math.sqrt(float(np.dot(g, g)))
            coef = cfg.clip_norm / (norm + CLIP_NORM_EPS)
            if coef < 1.0:
                g *= coef
        self._update(g, self.learning_rate)
        m.carry_state()
        self.last_char = int(inputs[-1, 0])
        self.pointer += T
        self.iteration += 1
        self.last_loss = loss
        self.smooth_loss = 0.999 * self.smooth_loss + 0.001 * (loss / T)
        return loss

    def _update(self, g: np.ndarray, lr: float) -> None:
        """The optimizer's step, in place on the flat vectors through one temporary."""
        cfg, theta, tmp = self.config, self.model.theta, self._tmp
        if cfg.optimizer == "adagrad":
            (mem,) = self.opt_states
            np.multiply(g, g, out=tmp)
            mem += tmp  # mem += g*g
            np.add(mem, ADAGRAD_EPS, out=tmp)
            np.sqrt(tmp, out=tmp)
            np.divide(g, tmp, out=tmp)
            tmp *= lr
            theta -= tmp  # p -= lr * g / sqrt(mem + eps)
        elif cfg.optimizer == "rmsprop":
            (ms,) = self.opt_states
            a = cfg.rmsprop_decay
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - a
            ms *= a
            ms += tmp  # ms = a ms + (1-a) g*g
            np.sqrt(ms, out=tmp)
            tmp += ADAM_EPS
            np.divide(g, tmp, out=tmp)
            tmp *= lr
            theta -= tmp  # p -= lr * g / (sqrt(ms) + eps)
        else:
            m, v = self.opt_states
            b1, b2 = cfg.beta1, cfg.beta2
            t = self.iteration + 1
            np.subtract(g, m, out=tmp)
            tmp *= 1.0 - b1
            m += tmp  # m = b1 m + (1-b1) g
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - b2
            v *= b2
            v += tmp  # v = b2 v + (1-b2) g*g
            np.sqrt(v, out=tmp)
            tmp /= math.sqrt(1.0 - b2**t)
            tmp += ADAM_EPS
            np.divide(m, tmp, out=tmp)
            tmp *= lr / (1.0 - b1**t)
            theta -= tmp  # p -= lr m^ / (sqrt(v^) + eps)

    def run(
        self,
        hooks: Hooks | None = None,
        checkpoint_every: int = 0,
        until: int | None = None,
        eval_at_end: bool = False,
    ) -> str:
        """Train until `until` (default: the configured total). Returns "finished", or
        "stopped" when hooks.should_stop said so at a check point. eval_at_end evaluates at
        `until` too (an early-stopping rung), before the checkpoint there, which then holds it."""
        hooks = hooks or Hooks()
        cfg = self.config
        until = self.total_iterations if until is None else min(until, self.total_iterations)
        start_it, t0 = self.iteration, time.perf_counter()
        next_progress = t0 + hooks.progress_seconds
        eval_every, sample_every = cfg.eval_interval(self.total_iterations), cfg.sample_every
        chars_per_step = cfg.seq_length * cfg.batch_size
        progress_every = hooks.progress_every
        while self.iteration < until:
            self.step()
            it = self.iteration
            done = it == until
            # the clock every step (~0.1 us against a step's tens of microseconds at least): a
            # large model's step can take seconds, and the job system's lease is renewed here
            now = time.perf_counter()
            if now >= next_progress or done or (progress_every and it % progress_every == 0):
                self.chars_per_second = (it - start_it) * chars_per_step / max(now - t0, 1e-9)
                next_progress = now + hooks.progress_seconds
                hooks.on_progress(self)
                if hooks.should_stop(self):
                    return "stopped"
            if (
                (eval_every and it % eval_every == 0)
                or it == self.total_iterations
                or (done and eval_at_end)
            ):
                hooks.on_eval(self, self.evaluate())
            if sample_every and it % sample_every == 0:
                hooks.on_sample(self, self.sample_during_training())
            if (checkpoint_every and it % checkpoint_every == 0) or done:
                hooks.on_checkpoint(self)
                if hooks.should_stop(self):
                    return "stopped" if not done else "finished"
        return "finished"

    # --- outside the hot loop ----------------------------------------------------------------
    def _evaluator(self, T: int) -> Model:
        if T not in self._evaluators:
            cfg = self.config
            self._evaluators[T] = Model(
                self.vocab.size,
                cfg.hidden_size,
                cfg.num_layers,
                T,
                self.model.dtype,
                theta=self.model.theta,
                cell=cfg.cell,
                E=cfg.embedding,
            )
        return self._evaluators[T]

    def evaluate(self) -> float | None:
        """Held-out loss in nats/char over every held-out character up to val_max_chars (0: all
        of them): one stream from a zero state carried through the held-out text, no dropout,
        in blocks of EVAL_CHUNK characters and a last shorter block. None without a split."""
        cap = self.config.val_max_chars
        ids = self.val_ids if cap == 0 else self.val_ids[: cap + 1]
        n = len(ids) - 1
        if n < 1:
            return None
        total = 0.0
        state = None
        for s in range(0, n, EVAL_CHUNK):
            k = min(EVAL_CHUNK, n - s)
            ev = self._evaluator(k)
            if state is None:
                ev.reset_state()
            else:
                ev.set_state(*state)
            total += ev.forward(ids[s : s + k, None], ids[s + 1 : s + k + 1, None])
            ev.carry_state()
            state = (ev.state(), ev.cell_state())
        loss = total / n
        if not math.isfinite(loss):
            raise DivergedError(
                f"diverged: validation loss is {loss} at iteration {self.iteration}"
            )
        self.val_loss = loss
        if self.best_val_loss is None or loss < self.best_val_loss:
            self.best_val_loss = loss
        return loss

    def sample_during_training(self) -> str:
        cfg = self.config
        return sample_from(
            self.model.theta,
            cfg,
            self.vocab,
            self.model.state()[:, 0],
            self.model.cell_state()[:, 0],
            length=cfg.sample_length,
            temperature=cfg.temperature,
            rng=self.sample_rng,
        )

    @property
    def train_loss(self) -> float:
        """The smoothed training loss as shown (nats/char): the article's moving average, with
        the weight it still gives its starting value (0.999 ** iteration on ln V) taken out, as
        Adam corrects its moments. Without this a short or batched run shows a loss near ln V
        for hundreds of steps (4.05 at step 110 beside a validation loss of 2.33, measured);
        with it, step 1 shows the first window's loss. The average itself is unchanged: it is
        what checkpoints keep and the divergence check reads."""
        w = 0.999**self.iteration
        if w > 1.0 - 1e-9:  # no step yet
            return self.smooth_loss
        return (self.smooth_loss - w * self._uniform_loss) / (1.0 - w)

    def stats(self) -> dict[str, float | None]:
        cfg = self.config
        return {
            "iteration": self.iteration,
            "iterations": self.total_iterations,
            "chars": self.iteration * cfg.seq_length * cfg.batch_size,
            "smooth_loss": self.train_loss,  # the debiased one: train_loss, its first name
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_bits_per_char": None if self.val_loss is None else self.val_loss / math.log(2),
            "best_val_loss": self.best_val_loss,
            "chars_per_second": self.chars_per_second,
            "learning_rate": self.learning_rate,
        }
