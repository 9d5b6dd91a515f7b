"""Checkpoints: one `.npz` file holding the complete training state, so a resumed run is bit for
bit the run that was never interrupted.

Arrays: `theta` (all parameters, one flat vector in model.param_shapes order), `mem` (Adagrad
memories, same layout), `h` (every layer's hidden state, (L, H)), and `meta`, UTF-8 JSON in a
uint8 array: format and version, config, vocabulary, corpus sha256, iteration, data pointer,
smoothed loss, learning rate, the random generators' states, and a sha256 over all of it.
Loaded with allow_pickle=False; anything unexpected is a CheckpointError, never a crash inside
NumPy.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile

import numpy as np

from .config import Config
from .data import Vocab
from .errors import CharRNNError, CheckpointError, CorpusError
from .model import param_count, views
from .sampling import sample_from
from .trainer import Trainer

FORMAT = "charrnn-checkpoint"
VERSION = 1


def _digest(meta: dict, theta: np.ndarray, mem: np.ndarray, h: np.ndarray) -> str:
    d = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for a in (theta, mem, h):
        d.update(np.ascontiguousarray(a).tobytes())
    return d.hexdigest()


def to_bytes(trainer: Trainer) -> bytes:
    """The trainer's complete state as the bytes of an .npz file."""
    theta, mem = trainer.model.theta, trainer.mem
    if not (np.isfinite(theta).all() and np.isfinite(mem).all()):
        raise CheckpointError("refusing to write a checkpoint with non-finite weights")
    h = trainer.model.state()
    meta = {
        "format": FORMAT, "version": VERSION,
        "config": trainer.config.to_dict(),
        "vocab": trainer.vocab.chars,
        "corpus_sha256": trainer.corpus_sha256,
        "iteration": trainer.iteration, "pointer": trainer.pointer,
        "total_iterations": trainer.total_iterations,
        "smooth_loss": trainer.smooth_loss, "learning_rate": trainer.learning_rate,
        "last_char": trainer.last_char,
        "val_loss": trainer.val_loss, "best_val_loss": trainer.best_val_loss,
        "rng": {"train": trainer.train_rng.bit_generator.state,
                "sample": trainer.sample_rng.bit_generator.state},
    }
    meta["sha256"] = _digest(meta, theta, mem, h)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
             theta=theta, mem=mem, h=h)
    return buf.getvalue()


def save(trainer: Trainer, path: str) -> None:
    """Write atomically: a temporary file in the same folder, then rename over the target."""
    write_bytes(to_bytes(trainer), path)


def write_bytes(raw: bytes, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror}") from None


class Checkpoint:
    """A loaded, verified checkpoint."""

    def __init__(self, meta: dict, theta: np.ndarray, mem: np.ndarray, h: np.ndarray):
        self.meta, self.theta, self.mem, self.h = meta, theta, mem, h
        self.config = Config.from_dict(meta["config"])
        self.vocab = Vocab(meta["vocab"])

    @property
    def iteration(self) -> int:
        return self.meta["iteration"]

    @property
    def params(self) -> dict:
        c = self.config
        return views(self.theta, self.vocab.size, c.hidden_size, c.num_layers)

    def sample(self, length: int = 200, temperature: float = 1.0, top_k: int | None = None,
               prime: str | None = None, seed: int = 0, argmax: bool = False) -> str:
        return sample_from(self.params, self.config.num_layers, self.vocab, self.h, length,
                           temperature, np.random.default_rng(seed), top_k, argmax, prime)

    def trainer(self, text: str, config: Config | None = None) -> Trainer:
        """A Trainer in exactly the saved state, for the same corpus. `config` may change only
        what does not change the model's shapes or the data (for example iterations)."""
        from .data import corpus_sha256
        if corpus_sha256(text) != self.meta["corpus_sha256"]:
            raise CorpusError("this corpus is not the one the checkpoint was trained on "
                              "(its sha256 differs)")
        cfg = config or self.config
        for k in ("hidden_size", "num_layers", "seq_length", "dtype", "val_fraction", "dropout"):
            if getattr(cfg, k) != getattr(self.config, k):
                raise CheckpointError(f"cannot resume with a different {k.replace('_', '-')}: "
                                      f"checkpoint has {getattr(self.config, k)!r}")
        t = Trainer(cfg, text)
        m = self.meta
        t.model.theta[:] = self.theta
        t.mem[:] = self.mem
        t.model.set_state(self.h)
        t.iteration, t.pointer = m["iteration"], m["pointer"]
        t.smooth_loss, t.learning_rate = m["smooth_loss"], m["learning_rate"]
        t.last_char, t.val_loss, t.best_val_loss = m["last_char"], m["val_loss"], m["best_val_loss"]
        t.train_rng.bit_generator.state = m["rng"]["train"]
        t.sample_rng.bit_generator.state = m["rng"]["sample"]
        if t.iteration > t.total_iterations:
            raise CheckpointError(f"checkpoint is at iteration {t.iteration}, past the "
                                  f"{t.total_iterations} iterations asked for")
        return t


def load(source: str | bytes, name: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint from a path or from the bytes of one."""
    name = name or (source if isinstance(source, str) else "checkpoint")
    if isinstance(source, str):
        try:
            with open(source, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint file not found: {source}") from None
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint {source}: {e.strerror}") from None
    else:
        raw = source
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            missing = {"meta", "theta", "mem", "h"} - set(z.files)
            if missing:
                raise CheckpointError(f"{name} is not a charrnn checkpoint (missing {', '.join(sorted(missing))})")
            arrays = {k: z[k] for k in ("meta", "theta", "mem", "h")}
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise CheckpointError(f"{name} holds a pickled object array; refused") from None
        raise CheckpointError(f"{name} is not a readable checkpoint: {e}") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError...: a truncated or foreign file
        raise CheckpointError(f"{name} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    try:
        return _verify(arrays, name)
    except CharRNNError as e:
        raise CheckpointError(f"{name}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{name} is not a valid checkpoint ({type(e).__name__}: {e})") from None


def _verify(a: dict, name: str) -> Checkpoint:
    if a["meta"].dtype != np.uint8 or a["meta"].ndim != 1:
        raise CheckpointError("metadata is not a byte array")
    meta = json.loads(a["meta"].tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError("not a charrnn checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"format version {meta.get('version')!r}, this charrnn reads {VERSION}")
    saved = meta.pop("sha256", None)
    theta, mem, h = a["theta"], a["mem"], a["h"]
    if saved != _digest(meta, theta, mem, h):
        raise CheckpointError("checksum mismatch: the file was corrupted or tampered with")
    meta["sha256"] = saved
    config = Config.from_dict(meta["config"])
    vocab = Vocab(meta["vocab"])
    if vocab.size < 2 or "".join(sorted(set(vocab.chars))) != vocab.chars:
        raise CheckpointError("vocabulary is not a sorted set of characters")
    V, H, L = vocab.size, config.hidden_size, config.num_layers
    n = param_count(V, H, L)
    for key, arr, shape in (("theta", theta, (n,)), ("mem", mem, (n,)), ("h", h, (L, H))):
        if arr.shape != shape or arr.dtype != np.dtype(config.dtype):
            raise CheckpointError(f"{key} has shape {arr.shape} and dtype {arr.dtype}, expected "
                                  f"{shape} and {config.dtype}")
        if not np.isfinite(arr).all():
            raise CheckpointError(f"{key} holds non-finite values")
    for key in ("iteration", "pointer", "last_char"):
        if not isinstance(meta[key], int) or meta[key] < 0:
            raise CheckpointError(f"{key} is not a non-negative integer")
    if not math.isfinite(meta["smooth_loss"]) or not meta["learning_rate"] > 0:
        raise CheckpointError("smoothed loss or learning rate out of range")
    for k in ("train", "sample"):  # a garbage generator state fails here, not in trainer()
        np.random.PCG64().state = meta["rng"][k]
    return Checkpoint(meta, theta, mem, h)
