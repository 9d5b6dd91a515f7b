"""One BLAS thread for every benchmark, set before NumPy (or torch) is imported, and torch on one
thread when it is installed: speeds are compared core for core.

    from onethread import torch    # first import of a benchmark script; torch is None without it
"""

import os

for _v in (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_v] = "1"

try:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
except ImportError:
    torch = None

CORPUS_ENV = "CHARRNN_BENCH_CORPUS"
"""Where a benchmark finds its corpus when none is given on its command line (tinyshakespeare.txt,
for the figures in the README); without either it generates its own text."""


def default_corpus() -> str | None:
    return os.environ.get(CORPUS_ENV) or None
