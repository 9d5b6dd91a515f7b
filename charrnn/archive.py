"""Reading an .npz without trusting it: the file opened only if it is a regular file, and each
member streamed into an array of exactly the shape and dtype the caller expects, read at most
one byte past it.

The zip directory's sizes and a member's .npy header are the file's own claims: a few hundred
KB of deflated zeros can declare (and expand to) half a gigabyte. So the caller's shape, known
before anything is decompressed, is the cap: the header must name that shape and dtype, the
array is allocated once, and the bytes are copied into it as they come out of the
decompressor, in chunks. Peak memory is the arrays themselves. Errors are ArchiveError, whose
message names the member; the caller adds the file's name.
"""

from __future__ import annotations

import os
import stat
import zipfile
from typing import IO

import numpy as np

CHUNK = 1 << 20
"""Bytes copied from the decompressor at a time: the only temporary besides the arrays."""
NPY_HEADER_MAX = 4096
"""An .npy header is 128 bytes for any shape this library writes."""


class ArchiveError(Exception):
    """A member that is not what the caller expects; the message says how."""


def open_regular(path: str) -> tuple[IO[bytes], int]:
    """(binary file, size) of a regular file, checked on the opened file before a byte is read:
    a FIFO would block forever and /dev/zero never end. OSError for a missing or unreadable
    file, ArchiveError for a directory, FIFO, device or socket."""
    # non-blocking, so that opening a FIFO with no writer returns at once and is refused below
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ArchiveError("is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError("is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb"), st.st_size


def read_member(
    z: zipfile.ZipFile, member: str, shape: tuple[int, ...] | None, dtype: np.dtype, max_items: int
) -> np.ndarray:
    """The array in `member`, of `dtype` and `shape` (None: any 1-D of at most `max_items`).

    The header is read first and its shape and dtype compared with the expected ones before the
    array is allocated; then exactly its bytes are decompressed into it, and one more byte must
    not exist."""
    name = member.removesuffix(".npy")
    with z.open(member) as f:
        got_shape, fortran, got_dtype = _header(f, name)
        if got_dtype.hasobject:
            raise ArchiveError(f"{name} holds a pickled object array; refused")
        if shape is None:
            ok = len(got_shape) == 1 and got_shape[0] <= max_items
        else:
            ok = got_shape == shape
        if not ok or got_dtype != dtype:
            want = f"{shape}" if shape is not None else f"one dimension of at most {max_items}"
            raise ArchiveError(
                f"{name} has shape {got_shape} and dtype {got_dtype}, expected {want} and "
                f"{dtype}; refused before reading it"
            )
        # a Fortran-ordered array is its transpose's bytes in C order
        out = np.empty(got_shape[::-1] if fortran else got_shape, dtype)
        _fill(f, out, name)
        return out.T if fortran else out


def _header(f: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = np.lib.format.read_magic(f)
    if major == 1:
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, NPY_HEADER_MAX)
    elif major == 2:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, NPY_HEADER_MAX)
    else:
        raise ArchiveError(f"{name}: .npy format version {major} is not supported")
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _fill(f: IO[bytes], out: np.ndarray, name: str) -> None:
    """Decompress exactly out.nbytes into out, CHUNK at a time; refuse a byte more or less."""
    view, done = out.reshape(-1).view(np.uint8).data, 0
    while done < len(view):
        chunk = f.read(min(CHUNK, len(view) - done))
        if not chunk:
            raise ArchiveError(f"{name} is truncated: {done} of {len(view)} bytes")
        view[done : done + len(chunk)] = chunk
        done += len(chunk)
    if f.read(1):
        raise ArchiveError(f"{name} holds more bytes than its shape; refused")
