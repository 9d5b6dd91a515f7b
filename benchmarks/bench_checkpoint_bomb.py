"""Peak memory of loading a checkpoint decompression bomb (issue 20, item 2), beside honest
checkpoints, each load in a fresh process (its peak RSS, VmHWM): a tiny one (the interpreter and
NumPy alone) and a large one (its arrays, to see what a load costs beyond them). The bomb and
the loads are built by stacks/checkpoint_bomb.py, which the tests use too.

    python benchmarks/bench_checkpoint_bomb.py [--hidden 8192] [--batch 4096] [--large 2048]
        [--code DIR]

--code runs the loads with the charrnn package found in DIR (say, an older commit's tree from
`git archive COMMIT charrnn | tar -x -C DIR`), for a before/after on the same machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

# stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from checkpoint_bomb import REPO, bomb, honest, peak_load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--large", type=int, default=2048, help="hidden size of the large one")
    ap.add_argument("--code", default=REPO, help="the folder holding the charrnn to measure")
    args = ap.parse_args()
    good = honest()
    rows = (
        ("tiny", good),
        ("bomb", bomb(good, args.hidden, args.batch)),
        ("large", honest(args.large)),
    )
    with tempfile.TemporaryDirectory() as d:
        for label, raw in rows:
            path = os.path.join(d, f"{label}.npz")
            with open(path, "wb") as f:
                f.write(raw)
            peak, outcome = peak_load(path, args.code)
            size, peak_mb = len(raw) / 1e6, peak / 1e6
            print(f"{label:6} file {size:7.2f} MB  peak RSS {peak_mb:7.1f} MB  {outcome[:150]}")


if __name__ == "__main__":
    main()
