"""Checkpoint decompression bombs and honest checkpoints, built in code, and the peak memory of
loading one in a fresh process (its VmHWM): shared by tests/test_checkpoint_inputs.py and
benchmarks/bench_checkpoint_bomb.py (issue 20, item 2).

The bomb is a real checkpoint whose metadata claims hidden 8192 and batch 4096 and whose `theta`
member is that many zeros, deflated: about 0.5 MB of file for 540 MB of array. It is refused
either way (its sha256 cannot match); what matters is what it cost before that.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from charrnn import Config, Trainer, checkpoint  # noqa: E402
from charrnn.model import param_count  # noqa: E402

CONFIG = Config(hidden_size=8, num_layers=1, seq_length=10, iterations=20, eval_every=0)
TEXT = "the quick brown fox jumps over the lazy dog. " * 40


def honest(hidden: int | None = None) -> bytes:
    """A real checkpoint: a small one trained 5 steps, or a fresh 2-layer one of `hidden`."""
    if hidden:
        return checkpoint.to_bytes(Trainer(CONFIG.replace(hidden_size=hidden, num_layers=2), TEXT))
    t = Trainer(CONFIG, TEXT)
    t.run(until=5)
    return checkpoint.to_bytes(t)


def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        b, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    )
    return b.getvalue()


def bomb(good: bytes, hidden: int = 8192, batch: int = 4096) -> bytes:
    """`good` with its config claiming `hidden` and `batch`, its theta that many zeros deflated
    (its other arrays and its sha256 left as they were)."""
    with np.load(io.BytesIO(good), allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    meta["config"] = dict(meta["config"], hidden_size=hidden, batch_size=batch)
    cfg = Config.from_dict(meta["config"])
    n = param_count(len(meta["vocab"]), hidden, cfg.num_layers, cfg.cell)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta.npy", checkpoint_npy(np.frombuffer(json.dumps(meta).encode(), np.uint8)))
        with z.open("theta.npy", "w", force_zip64=True) as f:
            f.write(npy_header((n,), cfg.dtype))
            zeros, left = bytes(1 << 20), n * np.dtype(cfg.dtype).itemsize
            while left:
                f.write(zeros[: min(left, len(zeros))])
                left -= min(left, len(zeros))
        for k in ("opt", "h", "c"):
            z.writestr(f"{k}.npy", checkpoint_npy(arrays[k]))
    return buf.getvalue()


def checkpoint_npy(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


PEAK = """
def peak_rss():  # this program's own peak: ru_maxrss would count the parent's RSS at the fork
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
"""
LOAD = (
    PEAK
    + """
import sys
from charrnn import CharRNNError, checkpoint
try:
    checkpoint.load(sys.argv[1])
    outcome = "loaded"
except CharRNNError as e:
    outcome = str(e)
print(peak_rss(), outcome)
"""
)


def peak_load(path: str, code: str = REPO) -> tuple[int, str]:
    """(peak RSS in bytes, outcome) of `checkpoint.load(path)` in a fresh process, with the
    charrnn package in `code`."""
    p = subprocess.run(
        [sys.executable, "-c", LOAD, path], capture_output=True, text=True, cwd=code, check=True
    )
    peak, outcome = p.stdout.split(" ", 1)
    return int(peak), outcome.strip()
