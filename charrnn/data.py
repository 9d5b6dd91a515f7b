"""Corpora: reading them safely, the vocabulary, encoding, the train/validation split.

The vocabulary is `sorted(set(text))`, never `list(set(text))`: Python randomises string hashing
per process, so an unsorted set numbers characters differently in every worker and a checkpoint
would decode to garbage anywhere but where it was trained.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .errors import CorpusError

BUILTIN_PREFIX = "builtin:"


def corpus_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decode_corpus(raw: bytes, name: str = "corpus") -> str:
    """UTF-8 text from bytes, or a CorpusError saying where the first bad byte is."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CorpusError(
            f"{name} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} (line {line})"
        ) from None
    if not text:
        raise CorpusError(f"{name} is empty")
    return text


def read_corpus(path: str, max_bytes: int | None = None) -> str:
    """The text of a corpus file, or `builtin:NAME` for a corpus assembled at run time. Regular
    files only (a device such as /dev/zero or a FIFO would never end), and, with max_bytes, no
    larger than that: both checked on the opened file before a byte is read."""
    if path.startswith(BUILTIN_PREFIX):
        return builtin_corpus(path[len(BUILTIN_PREFIX) :])
    try:
        # non-blocking, so that opening a FIFO returns at once and is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CorpusError(f"corpus file not found: {path}") from None
    except IsADirectoryError:
        raise CorpusError(f"corpus is a directory, not a file: {path}") from None
    except OSError as e:
        raise CorpusError(f"cannot read corpus {path}: {e.strerror}") from None
    try:
        _check_file(os.fstat(fd), path, max_bytes)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    with open(fd, "rb") as f:
        try:
            raw = f.read() if max_bytes is None else f.read(max_bytes + 1)
        except OSError as e:
            raise CorpusError(f"cannot read corpus {path}: {e.strerror}") from None
    if max_bytes is not None and len(raw) > max_bytes:  # it grew while we read
        raise CorpusError(f"corpus {path} is above the limit of {max_bytes:,} bytes")
    return decode_corpus(raw, f"corpus {path}")


def _check_file(st: os.stat_result, path: str, max_bytes: int | None) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise CorpusError(f"corpus is a directory, not a file: {path}")
    if not stat.S_ISREG(st.st_mode):
        raise CorpusError(f"corpus {path} is not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise CorpusError(
            f"corpus {path} is {st.st_size:,} bytes, above the limit of {max_bytes:,}"
        )


BUILTINS = {
    "python-docs": "the docstrings of the installed Python's standard library (~800 KB of English)"
}


def builtin_corpus(name: str) -> str:
    if name != "python-docs":
        raise CorpusError(
            f"unknown builtin corpus {name!r}; known: "
            + ", ".join(BUILTIN_PREFIX + k for k in BUILTINS)
        )
    return python_docs_corpus()


def python_docs_corpus() -> str:
    """Docstrings of the standard library's pure-Python modules, read with `ast` (nothing is
    imported or executed), in sorted file order so every machine with the same Python builds the
    same text. It is on every machine, so the quickstart needs no download and ships no text."""
    import ast
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"]
    skip = {
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "turtledemo",
        "ensurepip",
        "pydoc_data",
        "encodings",
        "__pycache__",
    }
    parts = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        for fn in sorted(files):
            if not fn.endswith(".py"):
                continue
            try:
                with open(os.path.join(root, fn), "rb") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if isinstance(
                    node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
                ):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 40 and doc.isascii():
                        parts.append(doc.strip())
    if not parts:
        raise CorpusError(f"no docstrings found under {stdlib}")
    return "\n\n".join(parts) + "\n"


@dataclass(frozen=True)
class Vocab:
    chars: str  # sorted, unique

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            raise KeyError("".join(unknown))
        # via a lookup table over code points: one pass in NumPy, not a Python loop per char
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.full(max(map(ord, self.chars)) + 1, -1, dtype=np.int64)
        table[[ord(c) for c in self.chars]] = np.arange(self.size)
        return table[codes]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)


def split(data: np.ndarray, val_fraction: float, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The first part trains, the last `val_fraction` validates; both checked for length."""
    n_val = int(len(data) * val_fraction)
    train, val = data[: len(data) - n_val], data[len(data) - n_val :]
    if len(train) < seq_length + 1:
        raise CorpusError(
            f"corpus too short: {len(data)} characters leave {len(train)} for training, "
            f"need at least seq-length + 1 = {seq_length + 1}"
            + (f" after the {val_fraction:g} validation split" if n_val else "")
        )
    if val_fraction > 0 and len(val) < 2:
        raise CorpusError(
            f"corpus too short: the {val_fraction:g} validation split holds "
            f"{len(val)} characters, need at least 2"
        )
    return train, val


def prepare(
    text: str, val_fraction: float, seq_length: int
) -> tuple[Vocab, np.ndarray, np.ndarray]:
    """(vocab, train ids, val ids) for a corpus text, with every check the trainer needs."""
    if not text:
        raise CorpusError("corpus is empty")
    vocab = Vocab.from_text(text)
    if vocab.size < 2:
        raise CorpusError(
            f"corpus has a vocabulary of one symbol ({vocab.chars!r}); nothing to learn"
        )
    train, val = split(vocab.encode(text), val_fraction, seq_length)
    return vocab, train, val
