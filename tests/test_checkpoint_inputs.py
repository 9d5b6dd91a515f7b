"""Issue 20, item 2 and the checkpoint part of item 9: no checkpoint file or stored checkpoint can
make a command, the dashboard or a worker inflate more than a real one's arrays, or hang.

Reproduced first. The decompression bomb (stacks/checkpoint_bomb.py builds it in code:
metadata claiming hidden 8192 and batch 4096, theta as deflated zeros, 0.53 MB for 540 MB) made
`charrnn.checkpoint.load` peak at 1.1 GB of RSS before its sha256 could refuse it, in every
process that loaded it: `charrnn sample`, `orchestrator sample` and `checkpoint`, the dashboard's
checkpoint route, a worker restoring the job. `charrnn sample --checkpoint` on a FIFO hung, and on
/dev/zero read until a MemoryError traceback; `charrnn train --checkpoint` and `orchestrator
checkpoint -o` replaced a FIFO (or any device: /dev/null as root) with a regular file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from base64 import b64encode

import numpy as np
import pytest

from charrnn import CheckpointError, checkpoint
from worker import keys

from checkpoint_bomb import PEAK, bomb, checkpoint_npy, honest, peak_load
from conftest import (
    REPO,
    TINY_JOB,
    events,
    free_port,
    run_cli,
    submit,
    wait_for,
    wait_status,
)

MB = 1 << 20
POOL_LIMIT = {"CHARRNN_MAX_CHECKPOINT_BYTES": str(2 * MB)}
"""A pool limit below what the issue's bomb may claim by its size alone (9.1 MiB), above a tiny
job's checkpoint: the bomb is then refused by the pool's limit, which the message names."""
AS_LIMIT = 3 << 30
"""Address space for the commands run on devices: /dev/zero read whole stops at a MemoryError
here (as the issue saw it), not after taking the machine's memory."""


@pytest.fixture(scope="module")
def good() -> bytes:
    return honest()


@pytest.fixture(scope="module")
def issue_bomb(good) -> bytes:
    """The issue's bomb: 0.53 MB claiming 1.26 GiB, above the pool's default limit (256 MiB)."""
    return bomb(good, hidden=8192, batch=4096)


def stored(r, job_id: str, raw: bytes, which: str = "latest") -> None:
    """`raw` as the job's checkpoint, with its correct sha256: a record as the store keeps it."""
    r.hset(
        keys.checkpoint(job_id, which),
        mapping={"data": raw, "sha256": hashlib.sha256(raw).hexdigest(), "iteration": 5},
    )


MEASURED = (
    PEAK
    + """
import atexit, runpy, sys
out = sys.argv.pop(1)
def report():
    with open(out, "w") as f:
        f.write(str(peak_rss()))
atexit.register(report)
runpy.run_module("orchestrator.cli", run_name="__main__", alter_sys=True)
"""
)


def orchestrator_measured(args: list[str], env: dict) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of `orchestrator ARGS`, the peak its own."""
    with tempfile.NamedTemporaryFile("r") as peak:
        p = subprocess.run(
            [sys.executable, "-c", MEASURED, peak.name, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
        )
        return p.returncode, p.stderr, int(peak.read())


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a running process, bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr
    return lines[0]


def charrnn(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """`charrnn ARGS` under AS_LIMIT, killed after `timeout` (a hang fails the test)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    return subprocess.run(
        [sys.executable, "-m", "charrnn.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        preexec_fn=limit,
    )


# --- the bomb, in one process -------------------------------------------------------------------
def test_a_bomb_is_refused_before_decompressing_and_costs_nothing(tmp_path, good):
    """A smaller bomb (hidden 2048: 39 KB for 34 MB) so the fast tier shows it: its load peaks
    where an honest checkpoint's does (it peaked 70 MB above before)."""
    raw = bomb(good, hidden=2048, batch=1)
    assert len(raw) < MB
    paths = {}
    for label, data in (("honest", good), ("bomb", raw)):
        paths[label] = tmp_path / f"{label}.npz"
        paths[label].write_bytes(data)
    base, outcome = peak_load(str(paths["honest"]))
    assert outcome == "loaded"
    peak, outcome = peak_load(str(paths["bomb"]))
    assert "refused before decompressing" in outcome and "16 times the file's size" in outcome
    assert peak < base + 16 * MB, f"the bomb's load peaked at {peak / MB:.0f} MiB"
    with pytest.raises(CheckpointError, match="refused before decompressing"):
        checkpoint.load(raw)


def test_a_limit_refuses_a_config_above_it_before_decompressing(good):
    need = len(good)  # the footprint is at least the arrays the file holds
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(good, "ck", max_bytes=need // 2, limit_name="SOME_SETTING")
    msg = str(e.value)
    assert "above the limit of" in msg and "(SOME_SETTING)" in msg
    assert "refused before decompressing" in msg and msg.startswith("ck: ")
    assert checkpoint.load(good, max_bytes=1 << 30).iteration == 5


def test_a_member_holding_more_than_its_shape_is_refused(good):
    """The running cap: a member is read to its shape's size and not a byte more, whatever the
    zip directory declares (here, the true size of the longer member)."""
    with np.load(io.BytesIO(good), allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, a in arrays.items():
            z.writestr(f"{k}.npy", checkpoint_npy(a) + (bytes(4000) if k == "theta" else b""))
    with pytest.raises(CheckpointError, match="more bytes than its shape"):
        checkpoint.load(buf.getvalue())


def test_a_member_header_naming_another_shape_is_refused_before_reading(good):
    with np.load(io.BytesIO(good), allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, a in arrays.items():
            z.writestr(f"{k}.npy", checkpoint_npy(np.zeros(0, np.uint8) if k == "h" else a))
    with pytest.raises(CheckpointError, match=r"h has shape \(0,\) and dtype uint8, expected"):
        checkpoint.load(buf.getvalue())


# --- files that are not regular files -----------------------------------------------------------
@pytest.fixture
def specials(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    return {"fifo": str(fifo), "device": "/dev/zero", "directory": str(tmp_path)}


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_charrnn_refuses_a_checkpoint_that_is_not_a_regular_file(tmp_path, specials, kind):
    path = specials[kind]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    for args in (
        ["sample", "--checkpoint", path],
        ["train", "--corpus", corpus, "--resume", path, "--iterations", 1],
    ):
        p = charrnn(*args)
        assert p.returncode == 2, (args, p.stderr)
        line = one_error_line(p.stderr)
        assert path in line
        assert ("directory" if kind == "directory" else "not a regular file") in line


def test_charrnn_train_refuses_to_write_a_checkpoint_over_a_fifo(tmp_path, specials):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    fifo = specials["fifo"]
    p = charrnn("train", "--corpus", corpus, "--checkpoint", fifo, "--iterations", 1)
    assert p.returncode == 2 and "not a regular file" in one_error_line(p.stderr)
    assert os.path.exists(fifo) and not os.path.isfile(fifo), "the FIFO was replaced"


# --- the pool: commands, dashboard and worker on a stored bomb ----------------------------------
@pytest.mark.slow
def test_commands_and_dashboard_refuse_a_stored_bomb_in_bounded_memory(
    wr, workerless_server, corpus_file, issue_bomb, specials, tmp_path
):
    r, redis_server = wr, workerless_server  # no worker may run the job and replace the bomb
    url = redis_server.url()
    job = submit(url, corpus_file, **TINY_JOB)  # no worker here: it stays queued
    stored(r, job, issue_bomb)
    env = dict(os.environ, CHARRNN_REDIS_URL=url)
    cli = [sys.executable, "-m", "orchestrator.cli"]
    out = tmp_path / "out.npz"
    for args, limit in (
        (["sample", job], {}),  # the default limit: the bomb claims far more than its size
        (["sample", job], POOL_LIMIT),
        (["checkpoint", job, "-o", str(out)], POOL_LIMIT),
    ):
        code, err, peak = orchestrator_measured(args, dict(env, **limit))
        assert code == 2, err
        line = one_error_line(err)
        assert "needs about 1.26 GiB" in line and "refused before decompressing" in line
        assert ("limit of 2.0 MiB (CHARRNN_MAX_CHECKPOINT_BYTES)" in line) == bool(limit), line
        assert peak < 400 * MB, f"orchestrator {args[0]} peaked at {peak / MB:.0f} MiB"
    assert not out.exists()
    # a FIFO as the output: refused, not replaced (with a checkpoint that loads)
    stored(r, job, honest())
    p = run_cli("checkpoint", job, "-o", specials["fifo"], url=url, timeout=30)
    assert p.returncode == 2 and "not a regular file" in one_error_line(p.stderr)
    assert not os.path.isfile(specials["fifo"])
    stored(r, job, issue_bomb)

    secret = "dashboard secret"  # a password: the route is the same with or without one
    port = free_port()
    d = subprocess.Popen(
        [*cli, "dashboard", "--port", str(port)],
        env=dict(env, CHARRNN_DASHBOARD_PASSWORD=secret, **POOL_LIMIT),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        auth = "Basic " + b64encode(f"x:{secret}".encode()).decode()

        def get(path: str) -> tuple[int, bytes]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            req.add_header("Authorization", auth)
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        def answers() -> bool:
            try:
                return get("/jobs.json")[0] == 200
            except OSError:
                return False

        wait_for(answers, 30, what="the dashboard to answer")
        before = vm_hwm(d.pid)
        status, body = get(f"/job/{job}/checkpoint/latest")
        assert 400 <= status < 500, (status, body[:300])
        assert b"CHARRNN_MAX_CHECKPOINT_BYTES" in body
        grew = vm_hwm(d.pid) - before
        assert grew < 32 * MB, f"the dashboard grew {grew / MB:.0f} MiB for one request"
    finally:
        d.terminate()
        d.wait(10)


@pytest.mark.slow
def test_a_worker_restoring_a_bomb_refuses_it_and_runs_the_job(stack, corpus_file, issue_bomb):
    """The worker's restore goes the same way: the bomb is refused under the pool's limit
    (recorded, as any checkpoint that does not verify: the job starts again from its previous
    checkpoint, here none), in the memory of a small job; the worker runs on."""
    server, worker = stack
    r = server.client()
    job = submit(server.url(), corpus_file, "--checkpoint-every", "100", **TINY_JOB)
    stored(r, job, issue_bomb)
    w = worker("a", **POOL_LIMIT).start()
    assert wait_status(r, job) == "succeeded"
    refused = [e for e in events(r, job) if e["event"] == "checkpoint_corrupt"]
    assert refused and refused[0]["which"] == "latest"
    assert "(CHARRNN_MAX_CHECKPOINT_BYTES); refused before decompressing" in refused[0]["error"]
    peaks = {pid: vm_hwm(pid) for pid in w.children()}
    assert peaks and max(peaks.values()) < 400 * MB, f"pool processes peaked at {peaks}"
    assert w.proc.poll() is None
    second = submit(server.url(), corpus_file, **TINY_JOB)
    assert wait_status(r, second) == "succeeded"
    assert json.loads(r.lindex(keys.events(second), 0))  # the next job ran on the same worker
