"""Sweeps, side by side in one run (issue 6):

1. the same grid with and without `--early-stop asha`, on two real workers: wall time, windows
   trained, and the best validation loss each finds (ASHA should find the same best job in a
   fraction of the compute);
2. what ASHA costs a job that goes through every rung: its chars/second against the same job in
   the sweep without early stopping (the rungs' extra evaluations and decisions);
3. `status`, `compare` and `sweeps` on a sweep of 1,000 jobs: Redis round trips per command
   (counted with INFO commandstats, so independent of the machine) and wall time.

Starts its own redis-server and two workers. Corpus: tinyshakespeare when given (the standard
corpus of the field), else builtin:python-docs.
    python benchmarks/bench_sweep.py [--corpus path/to/tinyshakespeare.txt]
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ.update({"CHARRNN_LEASE_SECONDS": "30", "CHARRNN_VISIBILITY_TIMEOUT": "3600"})

import argparse
import json
import sys
import tempfile
import time

from worker import keys

# the stack's processes: stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from stack import RedisServer, Worker, run_cli, wait_status

GRID = ["--grid", "learning_rate=0.05,0.02,0.005,0.001,0.0002", "--grid", "hidden_size=64,128"]


def run_sweep(url, r, corpus, extra, iterations):
    args = [
        "sweep",
        "--json",
        "--corpus",
        corpus,
        *GRID,
        "--num-layers",
        "1",
        "--iterations",
        str(iterations),
        "--eval-every",
        str(iterations // 4),
        "--sample-every",
        "0",
        *extra,
    ]
    out = json.loads(run_cli(*args, url=url, check=True, timeout=120).stdout)
    for j in out["job_ids"]:
        wait_status(r, j, ("succeeded", "failed", "cancelled", "stopped"), timeout=3600, poll=0.5)
    rows = json.loads(run_cli("compare", out["sweep_id"], "--json", url=url, check=True).stdout)[
        "jobs"
    ]
    jobs = [
        {k.decode(): v.decode() for k, v in r.hgetall(keys.job(j)).items()} for j in out["job_ids"]
    ]
    start = min(float(j["started_at"]) for j in jobs)
    end = max(float(j["finished_at"]) for j in jobs)
    return {
        "sweep_id": out["sweep_id"],
        "wall": end - start,
        "rows": rows,
        "windows": sum(int(j["iteration"]) for j in jobs),
        "stopped": sum(j["status"] == "stopped" for j in jobs),
        "cps": {
            tuple(sorted(x["params"].items())): x["chars_per_second"]
            for x in rows
            if x["status"] == "succeeded"
        },
    }


def commands(r) -> int:
    info = r.info("commandstats")
    return sum(v["calls"] for k, v in info.items() if k.startswith("cmdstat_"))


def big_sweep_costs(url, r, corpus):
    """A 1,000-point sweep, recorded and enqueued but never run (no workers consume it here,
    since the workers are stopped first): what reading it costs."""
    out = json.loads(
        run_cli(
            "sweep",
            "--json",
            "--corpus",
            corpus,
            "--grid",
            "seed=" + ",".join(map(str, range(1000))),
            "--iterations",
            "10",
            "--hidden-size",
            "8",
            "--num-layers",
            "1",
            url=url,
            check=True,
            timeout=300,
        ).stdout
    )
    sid = out["sweep_id"]
    res = {}
    for cmd in (["status", sid, "--json"], ["compare", sid, "--json"], ["sweeps", "--json"]):
        before = commands(r)
        t0 = time.perf_counter()
        run_cli(*cmd, url=url, check=True, timeout=120)
        res[cmd[0]] = (time.perf_counter() - t0, commands(r) - before)
    t0 = time.perf_counter()
    run_cli("--help", url=url, check=True)
    res["(CLI start-up)"] = (time.perf_counter() - t0, 0)
    run_cli("cancel", sid, url=url, check=True, timeout=300)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--corpus",
        default="builtin:python-docs",
        help="a text file (tinyshakespeare, the field's standard corpus, if you have "
        "it) or a builtin: corpus of the CLI",
    )
    ap.add_argument("--iterations", type=int, default=8000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(os.path.join(tmp, "redis"), appendfsync="everysec").start()
        ws = [
            Worker(
                server.url(),
                f"b{i}",
                tmp,
                CHARRNN_LEASE_SECONDS="30",
                CHARRNN_VISIBILITY_TIMEOUT="3600",
            ).start(wait=False)
            for i in (1, 2)
        ]
        try:
            for w in ws:
                w.wait_ready()
            r, url = server.client(), server.url()
            print(
                f"corpus {args.corpus}; grid {' '.join(GRID[1::2])}; 1 layer, "
                f"{args.iterations} iterations; 2 workers"
            )
            full = run_sweep(url, r, args.corpus, [], args.iterations)
            asha = run_sweep(url, r, args.corpus, ["--early-stop", "asha"], args.iterations)
            spec = json.loads(
                run_cli("status", asha["sweep_id"], "--json", url=url, check=True).stdout
            )["spec"]["early_stop"]
            print(
                f"\n1. the grid ({len(full['rows'])} jobs), without and with ASHA "
                f"(rungs {spec['rungs']}, eta {spec['reduction_factor']:g})"
            )
            print(f"{'':22}{'no early stop':>15}{'ASHA':>12}{'ratio':>9}")
            print(
                f"{'wall time (s)':22}{full['wall']:15.1f}{asha['wall']:12.1f}"
                f"{full['wall'] / asha['wall']:8.2f}x"
            )
            print(
                f"{'windows trained':22}{full['windows']:15d}{asha['windows']:12d}"
                f"{full['windows'] / asha['windows']:8.2f}x"
            )
            print(f"{'jobs stopped early':22}{full['stopped']:15d}{asha['stopped']:12d}")
            fb, ab = full["rows"][0], asha["rows"][0]
            print(f"{'best val loss':22}{fb['best_val_loss']:15.4f}{ab['best_val_loss']:12.4f}")
            print(f"   best point without early stopping: {fb['params']}")
            print(f"   best point with ASHA:              {ab['params']}")
            at = [x for x in full["rows"] if x["params"] == ab["params"]][0]
            print(
                f"   ASHA's best is #{at['rank']} of {len(full['rows'])} in the full grid "
                f"(final val loss {at['val_loss']:.4f} against the best's {fb['val_loss']:.4f})"
            )
            same = sorted(set(full["cps"]) & set(asha["cps"]))
            if same:
                ratio = [asha["cps"][p] / full["cps"][p] for p in same]
                print(
                    f"\n2. a job through every rung, chars/s with ASHA / without: "
                    f"{min(ratio):.3f}-{max(ratio):.3f} over {len(same)} job(s)"
                )
            for w in ws:
                w.stop()
            print("\n3. reading a sweep of 1,000 jobs")
            for cmd, (secs, n) in big_sweep_costs(url, r, args.corpus).items():
                print(f"   {cmd:16} {secs * 1000:7.0f} ms  {n:5d} Redis commands")
        finally:
            for w in ws:
                w.stop()
            server.stop()


if __name__ == "__main__":
    main()
