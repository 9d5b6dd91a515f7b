"""The dashboard's page-load time (issue 14): a sweep of 1,000 jobs (target: its page under 200 ms)
and the jobs table at 10,000 jobs, against a real redis-server, through HTTP as a browser asks.

Starts its own redis-server, records the sweeps with `orchestrator sweep` (no workers: the jobs
stay queued), then gives each job of the first sweep what a finished one has in the store, written
as the trainer writes it: a validation loss, 500 loss-history rows and a sample. Serves the
dashboard with `orchestrator dashboard` and times each page (median of 20 after 2 warm-ups), with
the Redis commands one load costs (INFO commandstats).

    python benchmarks/bench_dashboard.py [--jobs 10000]
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

import sys

from worker import keys  # noqa: E402

# the stack's processes: stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from stack import (  # noqa: E402
    DASHBOARD_AUTH,
    RedisServer,
    free_port,
    make_corpus,
    run_cli,
    start_dashboard,
)

SWEEP = 1000
HISTORY = 500


def commands(r) -> int:
    return sum(v["calls"] for k, v in r.info("commandstats").items() if k.startswith("cmdstat_"))


def make_sweep(url: str, corpus: str, n: int, name: str) -> dict:
    return json.loads(
        run_cli(
            "sweep",
            "--json",
            "--corpus",
            corpus,
            "--name",
            name,
            "--grid",
            "seed=" + ",".join(map(str, range(n))),
            "--grid",
            "learning_rate=0.01",
            "--iterations",
            "2000",
            "--hidden-size",
            "8",
            "--num-layers",
            "1",
            url=url,
            check=True,
            timeout=600,
        ).stdout
    )


def as_finished(r, job_ids: list[str]) -> None:
    """What a finished job holds: metrics, a loss history and a sample (as the trainer writes)."""
    rng = random.Random(0)
    with r.pipeline(transaction=False) as p:
        for j in job_ids:
            best = 1.5 + rng.random()
            p.hset(
                keys.job(j),
                mapping={
                    "iteration": 2000,
                    "val_loss": repr(best + 0.01),
                    "best_val_loss": repr(best),
                    "smooth_loss": "40.0",
                    "chars_per_second": "25000.0",
                    "samples_written": 1,
                },
            )
            p.rpush(
                keys.history(j),
                *[
                    json.dumps([4 * (i + 1), 80.0 - i * 0.05, best if i % 50 == 49 else None])
                    for i in range(HISTORY)
                ],
            )
            p.rpush(keys.samples(j), json.dumps({"iteration": 2000, "text": "the worker job\n"}))
        p.execute()


def authed(url: str) -> urllib.request.Request:
    """A request with the dashboard's token (stack.DASHBOARD_AUTH)."""
    return urllib.request.Request(url, headers=DASHBOARD_AUTH)


def timed(url: str, r, n: int = 20) -> tuple[float, float, int, int]:
    """(median ms, fastest ms, bytes, Redis commands per load)."""
    for _ in range(2):
        urllib.request.urlopen(authed(url), timeout=30).read()
    before = commands(r)
    body = urllib.request.urlopen(authed(url), timeout=30).read()
    cost = commands(r) - before - 1  # INFO itself counts once
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        urllib.request.urlopen(authed(url), timeout=30).read()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times), len(body), cost


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--jobs",
        type=int,
        default=10000,
        help="jobs in the store for the jobs table (in sweeps of 1,000)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(os.path.join(tmp, "redis"), appendfsync="everysec").start()
        r, url = server.client(), server.url()
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write(make_corpus(0, 20000))
        dash = None
        try:
            t0 = time.perf_counter()
            sweep = make_sweep(url, corpus, SWEEP, "bench")
            as_finished(r, sweep["job_ids"])
            for i in range(max(0, args.jobs - SWEEP) // SWEEP):
                make_sweep(url, corpus, SWEEP, f"filler-{i}")
            total = r.zcard(keys.jobs_by_time())
            print(
                f"store: {total} jobs ({time.perf_counter() - t0:.0f} s to record); the sweep "
                f"of {SWEEP}: {HISTORY} history rows and a sample per job"
            )
            port = free_port()
            dash = start_dashboard(url, port, stderr=subprocess.DEVNULL)
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    urllib.request.urlopen(authed(base + "/sweeps.json"), timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            sid = sweep["sweep_id"]
            pages = [
                ("sweep page, 1,000 jobs (HTML)", f"/sweep/{sid}"),
                ("sweep page, its JSON twin", f"/sweep/{sid}.json"),
                (f"sweep curves, best 50 x {HISTORY} rows", f"/sweep/{sid}/curves.json"),
                (f"jobs table, first page of {total}", "/jobs"),
                (f"jobs table, page at offset {total - 60}", f"/jobs?offset={total - 60}"),
                ("jobs table, status=queued", "/jobs?status=queued"),
                ("a job page", f"/job/{sweep['job_ids'][0]}"),
                ("sweeps list", "/sweeps"),
                ("workers", "/workers"),
            ]
            print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            print(f"{'page':44}{'median':>10}{'fastest':>11}{'bytes':>10}{'Redis commands':>16}")
            for label, path in pages:
                ms, fastest, size, cost = timed(base + path, r)
                print(f"{label:44}{ms:7.1f} ms{fastest:8.1f} ms{size:10d}{cost:16d}")
        finally:
            if dash:
                dash.terminate()
                dash.wait(10)
            server.stop()


if __name__ == "__main__":
    main()
