#!/usr/bin/env python
"""Draw held-out loss against training minutes from the output of bench_quality.py runs.

    python benchmarks/bench_quality.py CORPUS --minutes 60 --no-torch   > charrnn.txt
    python benchmarks/bench_quality.py CORPUS --minutes 60 --only-torch > torch.txt
    python benchmarks/plot_quality.py charrnn.txt torch.txt -o docs/quality.png

Each log may hold one or both trainers (a run without --no-torch/--only-torch prints both); the
curves are labelled by the line that announces each trainer. Needs matplotlib (the `plot` extra).
"""

from __future__ import annotations

import argparse
import re
import sys

ROW = re.compile(r"^\s+([\d.]+) min\s+iteration\s+(\d+)\s+([\d,]+) chars\s+val ([\d.]+) nats/char")


def curves(path: str) -> dict[str, list[tuple[float, float, int]]]:
    """{label: [(minutes, val loss, chars)]} from one bench_quality log."""
    out: dict[str, list[tuple[float, float, int]]] = {}
    label = None
    for line in open(path, encoding="utf-8"):
        if line.startswith("charrnn train "):
            opts = dict(re.findall(r"--([\w-]+) (\S+)", line))
            label = (
                f"charrnn {opts.get('cell', 'rnn').upper()} {opts.get('num-layers')}x"
                f"{opts.get('hidden-size')}, B {opts.get('batch-size')}, T {opts.get('seq-length')}, "
                f"{opts.get('optimizer')} {float(opts.get('learning-rate', 0)):g} "
                f"{opts.get('lr-schedule')}"
                + (f", dropout {float(d):g}" if float(d := opts.get("dropout", "0")) else "")
            )
        elif line.startswith("torch: "):
            label = "PyTorch " + line[len("torch: ") :].split(" (")[0].strip()
        elif (m := ROW.match(line)) and label:
            out.setdefault(label, []).append((float(m[1]), float(m[4]), int(m[3].replace(",", ""))))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", help="bench_quality.py outputs")
    ap.add_argument("-o", "--output", default="quality.png")
    ap.add_argument("--title", default="Held-out loss against training time (one core each)")
    a = ap.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_quality: needs matplotlib: pip install '.[plot]'", file=sys.stderr)
        return 2
    series: dict[str, list[tuple[float, float, int]]] = {}
    for path in a.logs:
        try:
            series.update(curves(path))
        except (OSError, UnicodeDecodeError) as e:
            print(f"plot_quality: cannot read {path}: {e}", file=sys.stderr)
            return 2
    if not series:
        print("plot_quality: no bench_quality rows found in " + ", ".join(a.logs), file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for label, rows in series.items():
        ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", ms=3, label=label)
    ax.set_xscale("log")
    ticks = sorted({r[0] for rows in series.values() for r in rows})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("training minutes (the clock stops while evaluating)")
    ax.set_ylabel("held-out loss, nats/char (all held-out chars)")
    ax.set_title(a.title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.output)
    print(f"wrote {a.output}: " + "; ".join(f"{k}: {len(v)} points" for k, v in series.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
