"""Checkpoints: one `.npz` file holding the complete training state, so a resumed run is bit
for bit the run that was never interrupted.

Format version 2. Arrays: `theta` (all parameters, one flat vector in model.param_shapes order),
`opt` (the optimizer's states, (k, P): Adagrad's memories, RMSprop's mean square, or Adam's m
and v), `h` (every layer's hidden state of every stream, (L, B, H)), `c` (the LSTM's cell
states, (L, B, H); (0, B, H) for the other cells), and `meta`, UTF-8 JSON in a uint8 array:
format and version, config, vocabulary, corpus sha256, iteration, the streams' offset in their
segments, smoothed loss (nats/char), the rollback scale of the learning rate, the random
generators' states, and a sha256 over all of it.

Version 1 (vanilla cell, one stream, Adagrad: `theta`, `mem`, `h` (L, H), the smoothed loss per
window and the rate used) still loads, samples and resumes.

Loaded with allow_pickle=False, each member's declared size checked against what its shape
needs before anything is decompressed; anything unexpected is a CheckpointError, never a crash
inside NumPy or a decompression bomb.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from typing import Any, TypedDict

import numpy as np

from .config import FIELDS, RESUMABLE, Config, flag
from .data import Vocab
from .errors import CharRNNError, CheckpointError, CorpusError
from .model import param_count, torch_state_dict, views
from .sampling import sample_from
from .trainer import OPTIMIZER_STATES, Trainer

FORMAT = "charrnn-checkpoint"
VERSION = 2
READS = (1, 2)
ARRAYS = {1: ("theta", "mem", "h"), 2: ("theta", "opt", "h", "c")}
META_MAX_BYTES = 16 << 20
"""The metadata (config, vocabulary, generator states) is a few KB; a vocabulary of every
Unicode code point as JSON is under 10 MB."""
NPY_HEADER_MAX = 4096


def saved_config(meta: dict[str, Any]) -> Config:
    """The config in a checkpoint's metadata. One written before `embedding_size` existed had no
    embedding, whatever today's default for its cell is."""
    saved = meta["config"]
    if isinstance(saved, dict) and "embedding_size" not in saved:
        saved = {**saved, "embedding_size": 0}
    return Config.from_dict(saved)


def _digest(meta: dict[str, Any], *arrays: np.ndarray) -> str:
    d = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for a in arrays:
        d.update(np.ascontiguousarray(a).tobytes())
    return d.hexdigest()


def to_bytes(trainer: Trainer) -> bytes:
    """The trainer's complete state as the bytes of an .npz file."""
    theta, opt = trainer.model.theta, np.stack(trainer.opt_states)
    if not (np.isfinite(theta).all() and np.isfinite(opt).all()):
        raise CheckpointError("refusing to write a checkpoint with non-finite weights")
    h, c = trainer.model.state(), trainer.model.cell_state()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": trainer.config.to_dict(),
        "vocab": trainer.vocab.chars,
        "corpus_sha256": trainer.corpus_sha256,
        "iteration": trainer.iteration,
        "pointer": trainer.pointer,
        "total_iterations": trainer.total_iterations,
        "smooth_loss": trainer.smooth_loss,
        "rollback_scale": trainer.rollback_scale,
        "learning_rate": trainer.learning_rate,  # informative: derived from the above
        "last_char": trainer.last_char,
        "val_loss": trainer.val_loss,
        "best_val_loss": trainer.best_val_loss,
        "rng": {
            "train": trainer.train_rng.bit_generator.state,
            "sample": trainer.sample_rng.bit_generator.state,
        },
    }
    meta["sha256"] = _digest(meta, theta, opt, h, c)
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        theta=theta,
        opt=opt,
        h=h,
        c=c,
    )
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
    """A loaded, verified checkpoint, in the version-2 layout whatever its file's version."""

    def __init__(
        self, meta: dict[str, Any], theta: np.ndarray, opt: np.ndarray, h: np.ndarray, c: np.ndarray
    ):
        self.meta, self.theta, self.opt, self.state_h, self.state_c = meta, theta, opt, h, c
        self.config = saved_config(meta)
        self.vocab = Vocab(meta["vocab"])

    @property
    def iteration(self) -> int:
        return int(self.meta["iteration"])  # an int: checked by _verify

    @property
    def mem(self) -> np.ndarray:
        """The first optimizer state (Adagrad's memories)."""
        first: np.ndarray = self.opt[0]  # an int index is Any to numpy's stubs
        return first

    @property
    def h(self) -> np.ndarray:
        """Stream 0's hidden state, (L, H): what sampling continues from."""
        return self.state_h[:, 0]

    @property
    def c(self) -> np.ndarray:
        """Stream 0's LSTM cell state, (L, H) ((0, H) for the other cells)."""
        return self.state_c[:, 0]

    @property
    def params(self) -> dict[str, np.ndarray]:
        c = self.config
        return views(self.theta, self.vocab.size, c.hidden_size, c.num_layers, c.cell, c.embedding)

    def torch_state_dict(self) -> dict[str, np.ndarray]:
        """The parameters as a PyTorch state dict of NumPy arrays (model.torch_state_dict)."""
        c = self.config
        return torch_state_dict(
            self.theta, self.vocab.size, c.hidden_size, c.num_layers, c.cell, c.embedding
        )

    def sample(
        self,
        length: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        prime: str | None = None,
        seed: int = 0,
        argmax: bool = False,
    ) -> str:
        return sample_from(
            self.theta,
            self.config,
            self.vocab,
            self.h,
            self.c,
            length,
            temperature,
            np.random.default_rng(seed),
            top_k,
            argmax,
            prime,
        )

    def trainer(self, text: str, config: Config | None = None) -> Trainer:
        """A Trainer in exactly the saved state, for the same corpus, continuing under `config`.

        Fields a resumed run may change (config.RESUMABLE: learning rate, length, clips,
        schedule, evaluation and samples) take the new value from the next step on: a new
        learning rate is the new base rate, still times the stored rollback scale. Any other
        field that differs is refused."""
        from .data import corpus_sha256

        if corpus_sha256(text) != self.meta["corpus_sha256"]:
            raise CorpusError(
                "this corpus is not the one the checkpoint was trained on (its sha256 differs)"
            )
        cfg = config or self.config
        for k in FIELDS:
            if k not in RESUMABLE and getattr(cfg, k) != getattr(self.config, k):
                raise CheckpointError(
                    f"cannot resume with a different {flag(k)}: the checkpoint "
                    f"has {getattr(self.config, k)!r}"
                )
        t = Trainer(cfg, text)
        m = self.meta
        t.model.theta[:] = self.theta
        for s, saved in zip(t.opt_states, self.opt, strict=True):
            s[:] = saved
        t.model.set_state(self.state_h, self.state_c if len(self.state_c) else None)
        t.iteration, t.pointer = m["iteration"], m["pointer"]
        t.smooth_loss, t.rollback_scale = m["smooth_loss"], m["rollback_scale"]
        t.last_char, t.val_loss, t.best_val_loss = m["last_char"], m["val_loss"], m["best_val_loss"]
        t.train_rng.bit_generator.state = m["rng"]["train"]
        t.sample_rng.bit_generator.state = m["rng"]["sample"]
        if t.iteration > t.total_iterations:
            raise CheckpointError(
                f"checkpoint is at iteration {t.iteration}, past the "
                f"{t.total_iterations} iterations asked for"
            )
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
        return _verify(_read_archive(raw, name), name)
    except CheckpointError:
        raise
    except CharRNNError as e:
        raise CheckpointError(f"{name}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CheckpointError(
            f"{name} is not a valid checkpoint ({type(e).__name__}: {e})"
        ) from None


class Archive(TypedDict):
    """An .npz read by _read_archive: its parsed metadata, format version and arrays."""

    meta: dict[str, Any]
    version: int
    arrays: dict[str, np.ndarray]


def _read_archive(raw: bytes, name: str) -> Archive:
    """The arrays of an .npz, each member's declared size checked before it is decompressed."""
    if not raw.startswith(b"PK"):
        raise CheckpointError(f"{name} is not a charrnn checkpoint (not an .npz archive)")
    try:
        z = zipfile.ZipFile(io.BytesIO(raw))
        infos = {i.filename: i for i in z.infolist()}
        if "meta.npy" not in infos:
            raise CheckpointError(f"{name} is not a charrnn checkpoint (missing meta)")
        if infos["meta.npy"].file_size > META_MAX_BYTES:
            raise CheckpointError(
                f"{name}: metadata declares {infos['meta.npy'].file_size} bytes; refused"
            )
        meta_arr = _member(z, "meta.npy")
        if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
            raise CheckpointError(f"{name}: metadata is not a byte array")
        meta = json.loads(meta_arr.tobytes().decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{name} is not a charrnn checkpoint")
        version = meta.get("version")
        if isinstance(version, bool) or version not in READS:
            raise CheckpointError(
                f"{name}: format version {version!r}, this charrnn reads "
                f"{' and '.join(map(str, READS))}"
            )
        expected = _expected_shapes(meta, version)
        missing = sorted(set(ARRAYS[version]) - {k[:-4] for k in infos})
        if missing:
            raise CheckpointError(
                f"{name} is not a charrnn checkpoint (missing {', '.join(missing)})"
            )
        arrays = {"meta": meta_arr}
        for key in ARRAYS[version]:
            shape, itemsize = expected[key]
            bound = int(np.prod(shape)) * itemsize + NPY_HEADER_MAX
            if infos[key + ".npy"].file_size > bound:
                raise CheckpointError(
                    f"{name}: {key} declares {infos[key + '.npy'].file_size} "
                    f"bytes where its shape needs at most {bound}; refused"
                )
            arrays[key] = _member(z, key + ".npy")
        return {"meta": meta, "version": version, "arrays": arrays}
    except CheckpointError:
        raise
    except CharRNNError as e:
        raise CheckpointError(f"{name}: {e}") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise CheckpointError(f"{name} holds a pickled object array; refused") from None
        raise CheckpointError(f"{name} is not a readable checkpoint: {e}") from None
    except (
        Exception
    ) as e:  # zipfile.BadZipFile, EOFError, OSError, zlib.error: truncated or foreign
        raise CheckpointError(
            f"{name} is not a readable checkpoint ({type(e).__name__}: {e})"
        ) from None


def _member(z: zipfile.ZipFile, member: str) -> np.ndarray:
    with z.open(member) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _expected_shapes(meta: dict[str, Any], version: int) -> dict[str, tuple[tuple[int, ...], int]]:
    """Each array's shape and item size, from the config and vocabulary in the metadata."""
    config = saved_config(meta)
    vocab = meta["vocab"]
    if not isinstance(vocab, str):
        raise CheckpointError("vocabulary is not a string")
    V, H, L, B = len(vocab), config.hidden_size, config.num_layers, config.batch_size
    n = param_count(V, H, L, config.cell, config.embedding)
    item = np.dtype(config.dtype).itemsize
    if version == 1:
        return {"theta": ((n,), item), "mem": ((n,), item), "h": ((L, H), item)}
    k = len(OPTIMIZER_STATES[config.optimizer])
    Lc = L if config.cell == "lstm" else 0
    return {
        "theta": ((n,), item),
        "opt": ((k, n), item),
        "h": ((L, B, H), item),
        "c": ((Lc, B, H), item),
    }


def _verify(archive: Archive, name: str) -> Checkpoint:
    meta, version, a = archive["meta"], archive["version"], archive["arrays"]
    saved = meta.pop("sha256", None)
    if saved != _digest(meta, *(a[k] for k in ARRAYS[version])):
        raise CheckpointError("checksum mismatch: the file was corrupted or tampered with")
    meta["sha256"] = saved
    config = saved_config(meta)
    vocab = Vocab(meta["vocab"])
    if vocab.size < 2 or "".join(sorted(set(vocab.chars))) != vocab.chars:
        raise CheckpointError("vocabulary is not a sorted set of characters")
    expected = _expected_shapes(meta, version)
    for key in ARRAYS[version]:
        arr, (shape, _) = a[key], expected[key]
        if arr.shape != shape or arr.dtype != np.dtype(config.dtype):
            raise CheckpointError(
                f"{key} has shape {arr.shape} and dtype {arr.dtype}, expected "
                f"{shape} and {config.dtype}"
            )
        if not np.isfinite(arr).all():
            raise CheckpointError(f"{key} holds non-finite values")
    for key in ("iteration", "pointer", "last_char"):
        if isinstance(meta[key], bool) or not isinstance(meta[key], int) or meta[key] < 0:
            raise CheckpointError(f"{key} is not a non-negative integer")
    if (
        isinstance(meta["smooth_loss"], bool)
        or not isinstance(meta["smooth_loss"], (int, float))
        or not math.isfinite(meta["smooth_loss"])
    ):
        raise CheckpointError("smoothed loss out of range")
    for k in ("train", "sample"):  # a garbage generator state fails here, not in trainer()
        np.random.PCG64().state = meta["rng"][k]
    if version == 1:
        return _from_v1(meta, config, a)
    scale = meta["rollback_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise CheckpointError("rollback scale out of range")
    return Checkpoint(meta, a["theta"], a["opt"], a["h"], a["c"])


def _from_v1(meta: dict[str, Any], config: Config, a: dict[str, np.ndarray]) -> Checkpoint:
    """A version-1 checkpoint in the version-2 layout: its smoothed loss was per window, and its
    learning rate the one in use, which the job system may have halved: that is the scale."""
    lr = meta["learning_rate"]
    if (
        isinstance(lr, bool)
        or not isinstance(lr, (int, float))
        or not lr > 0
        or not math.isfinite(lr)
    ):
        raise CheckpointError("learning rate out of range")
    meta = dict(
        meta,
        smooth_loss=meta["smooth_loss"] / config.seq_length,
        rollback_scale=min(1.0, lr / config.learning_rate),
    )
    h = a["h"][:, None, :]
    c = np.zeros((0, 1, config.hidden_size), a["h"].dtype)
    return Checkpoint(meta, a["theta"], a["mem"][None], h, c)
