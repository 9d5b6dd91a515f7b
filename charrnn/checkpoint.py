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

Loaded with no pickle, from regular files only, and refused before any array is decompressed
when the config in its metadata needs more bytes than the caller's limit or far more than the
file itself holds; each array is then streamed into one of exactly the shape that config gives
(charrnn.archive). Anything unexpected is a CheckpointError, never a crash inside NumPy, a hang
on a FIFO or a decompression bomb.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from typing import IO, Any, TypedDict

import numpy as np

from . import archive
from .config import FIELDS, RESUMABLE, Config, flag
from .data import Vocab
from .errors import CharRNNError, CheckpointError, CorpusError
from .footprint import footprint
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
EXPANSION = 16
"""How many times its file's size a checkpoint's config may claim. np.savez stores members, so
the arrays of a file the library wrote are at most its size; float weights deflated by other
tools shrink a little, zeros (a fresh optimizer state) a lot. Deflated zeros shrink a
thousandfold: a claim far beyond the file is a decompression bomb."""
EXPANSION_SLACK = 1 << 20
"""Plus this, for the footprint's own slack (footprint.checkpoint_bytes) on tiny models."""


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
        d.update(np.ascontiguousarray(a).data)  # the bytes as tobytes() gives them, without a copy
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
    """Atomically, as save. A path that is there and not a regular file (a FIFO, a device, a
    directory) is refused: the rename would replace it (even /dev/null, as root)."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise CheckpointError(f"cannot write checkpoint {path}: it is not a regular file")
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


def load(
    source: str | bytes,
    name: str | None = None,
    max_bytes: int | None = None,
    limit_name: str = "",
) -> Checkpoint:
    """Read and verify a checkpoint from a path (a regular file) or from the bytes of one.

    Nothing past the metadata is decompressed unless the footprint of the config it claims
    (footprint.footprint(...).checkpoint_bytes, so any array a config adds counts) is within
    `max_bytes` when given (`limit_name` names that setting in the message), and within EXPANSION
    times the file's own size: arrays the library wrote are stored, not deflated, so a claim far
    beyond the file is a decompression bomb. Each array is then streamed into one of exactly the
    shape the config gives (archive.read_member): peak memory is the arrays, plus the bytes
    when given bytes."""
    name = name or (source if isinstance(source, str) else "checkpoint")
    f, size = _open(source) if isinstance(source, str) else (io.BytesIO(source), len(source))
    try:
        with f:
            bound = EXPANSION * size + EXPANSION_SLACK
            if max_bytes is not None and max_bytes < bound:
                bound, why = (
                    max_bytes,
                    f"the limit of {_size(max_bytes)}" + (f" ({limit_name})" if limit_name else ""),
                )
            else:
                why = f"{_size(bound)} ({EXPANSION} times the file's size)"
            return _verify(_read_archive(f, name, bound, why), name)
    except CheckpointError:
        raise
    except CharRNNError as e:
        raise CheckpointError(f"{name}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CheckpointError(
            f"{name} is not a valid checkpoint ({type(e).__name__}: {e})"
        ) from None


def _open(path: str) -> tuple[IO[bytes], int]:
    try:
        return archive.open_regular(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file not found: {path}") from None
    except archive.ArchiveError as e:
        raise CheckpointError(f"checkpoint {path} {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None


def _size(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


class Archive(TypedDict):
    """An .npz read by _read_archive: its parsed metadata, format version and arrays."""

    meta: dict[str, Any]
    version: int
    arrays: dict[str, np.ndarray]


def _read_archive(f: IO[bytes], name: str, bound: int, why: str) -> Archive:
    """The arrays of an .npz, refused before any is decompressed if the config in its metadata
    needs more than `bound` bytes (`why` says what the bound is)."""
    if f.read(2) != b"PK":
        raise CheckpointError(f"{name} is not a charrnn checkpoint (not an .npz archive)")
    f.seek(0)
    try:
        z = zipfile.ZipFile(f)
        members = {i.filename for i in z.infolist()}
        if "meta.npy" not in members:
            raise CheckpointError(f"{name} is not a charrnn checkpoint (missing meta)")
        meta_arr = archive.read_member(z, "meta.npy", None, np.dtype(np.uint8), META_MAX_BYTES)
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
        missing = sorted(set(ARRAYS[version]) - {k[:-4] for k in members})
        if missing:
            raise CheckpointError(
                f"{name} is not a charrnn checkpoint (missing {', '.join(missing)})"
            )
        need = _needs(meta, expected)
        if need > bound:
            raise CheckpointError(
                f"{name}: its config (hidden {meta['config'].get('hidden_size')}, batch "
                f"{meta['config'].get('batch_size')}) needs about {_size(need)}, above {why}; "
                f"refused before decompressing"
            )
        arrays = {"meta": meta_arr}
        dtype = np.dtype(Config.from_dict(meta["config"]).dtype)
        for key in ARRAYS[version]:
            arrays[key] = archive.read_member(z, key + ".npy", expected[key][0], dtype, 0)
        return {"meta": meta, "version": version, "arrays": arrays}
    except CheckpointError:
        raise
    except CharRNNError as e:
        raise CheckpointError(f"{name}: {e}") from None
    except archive.ArchiveError as e:
        raise CheckpointError(f"{name}: {e}") from None
    except (
        Exception
    ) as e:  # zipfile.BadZipFile, EOFError, OSError, zlib.error: truncated or foreign
        raise CheckpointError(
            f"{name} is not a readable checkpoint ({type(e).__name__}: {e})"
        ) from None


def _needs(meta: dict[str, Any], expected: dict[str, tuple[tuple[int, ...], int]]) -> int:
    """Bytes the metadata's config claims: its footprint, or the arrays' sum if more."""
    config = Config.from_dict(meta["config"])
    arrays = sum(math.prod(shape) * item for shape, item in expected.values())
    return max(footprint(config, len(meta["vocab"])).checkpoint_bytes, arrays)


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
        if not _finite(arr):
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


def _finite(a: np.ndarray) -> bool:
    """np.isfinite(a).all() a block at a time: its boolean array alone would be 1/8 of a."""
    flat = a.reshape(-1)
    return all(
        np.isfinite(flat[i : i + archive.CHUNK]).all() for i in range(0, flat.size, archive.CHUNK)
    )


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
