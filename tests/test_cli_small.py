"""Issue 21, item 6: the smaller things a new user met, each as the user met it (the commands in
a subprocess; a real redis-server, and real workers where a job is involved)."""

import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from charrnn import Config, Trainer, checkpoint

from conftest import REPO, TINY_JOB, free_port, make_corpus, run_cli, wait_for, wait_status
from stack import DASHBOARD_AUTH, DASHBOARD_TOKEN


def charrnn_cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "charrnn.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def one_error_line(p, code=2):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.npz"
    t = Trainer(Config.from_dict(dict(hidden_size=8, num_layers=1, iterations=5)), make_corpus())
    t.run()
    checkpoint.save(t, str(path))
    return str(path)


def test_bare_commands_print_their_usage():
    for p in (run_cli(), charrnn_cli()):
        assert p.returncode == 2
        text = p.stdout + p.stderr
        assert text.lstrip().startswith("Usage: ") and "\nCommands:\n" in text, text
        assert "error:" not in text


def test_orchestrator_version():
    p = run_cli("--version", check=True)
    assert p.stdout.startswith("orchestrator, version "), p.stdout


def test_a_negative_seed_and_an_unbounded_length_are_one_line(model):
    assert "--seed" in one_error_line(charrnn_cli("sample", "--checkpoint", model, "--seed", "-1"))
    line = one_error_line(charrnn_cli("sample", "--checkpoint", model, "--length", "100000000"))
    assert "--length" in line and "100000" in line
    ok = charrnn_cli("sample", "--checkpoint", model, "--length", "30", "--seed", "0")
    assert ok.returncode == 0 and len(ok.stdout) == 31
    job = "12345678-1234-4234-8234-123456789abc"  # checked before any connection
    assert "--seed" in one_error_line(run_cli("sample", job, "--seed", "-1"))
    assert "--length" in one_error_line(run_cli("sample", job, "--length", "100000000"))


@pytest.mark.integration
@pytest.mark.slow
def test_wait_prints_the_id_on_stdout_and_the_checkpoint_goes_to_stdout(
    pool, r, redis_server, corpus_file, tmp_path
):
    url = redis_server.url()
    hyper = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_JOB.items()]
    p = run_cli("submit", "--corpus", str(corpus_file), *hyper, "--wait", url=url, timeout=180)
    assert p.returncode == 0, p.stderr
    job = p.stdout.splitlines()[0]
    assert wait_status(r, job) == "succeeded"
    out = tmp_path / "piped.npz"
    with open(out, "wb") as f:
        q = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "checkpoint", job, "-o", "-"],
            stdout=f,
            stderr=subprocess.PIPE,
            text=False,
            env=dict(os.environ, CHARRNN_REDIS_URL=url),
            cwd=REPO,
            timeout=60,
        )
    assert q.returncode == 0, q.stderr
    assert not os.path.exists(os.path.join(REPO, "-"))
    assert checkpoint.load(str(out)).iteration == TINY_JOB["iterations"]
    # a negative seed on a real job: one line, not a traceback
    one_error_line(run_cli("sample", job[:8], "--seed", "-1", url=url))


def test_open_without_a_browser_says_so(redis_server):
    port = free_port()
    env = dict(os.environ, BROWSER="false")  # a browser command that fails, as on a server
    cmd = [sys.executable, "-m", "orchestrator.cli", "--redis-url", redis_server.url(),
           "dashboard", "--port", str(port), "--open"]  # fmt: skip
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline and not any("no browser" in x for x in lines):
            if select.select([p.stderr], [], [], 1.0)[0]:
                lines.append(p.stderr.readline())
        said = [x for x in lines if "no browser" in x]
        assert said and f"http://127.0.0.1:{port}/" in said[0], lines
    finally:
        p.terminate()
        p.wait(30)


def test_after_down_the_dashboard_says_to_run_up(tmp_path):
    home = tmp_path / "home"
    env = {"CHARRNN_HOME": str(home)}
    run_cli("up", "--workers", "0", env=env, check=True, timeout=120)
    port = free_port()
    e = dict(os.environ, CHARRNN_HOME=str(home), CHARRNN_DASHBOARD_TOKEN=DASHBOARD_TOKEN)
    e.pop("CHARRNN_REDIS_URL", None)
    cmd = [sys.executable, "-m", "orchestrator.cli", "dashboard", "--port", str(port)]
    dash = subprocess.Popen(cmd, cwd=REPO, env=e, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(base + "/jobs.json")[0] == 200, 60, 0.2, what="the dashboard")
        run_cli("down", env=env, check=True, timeout=120)
        code, body = _get(base + "/jobs.json")
        assert code == 503, body
        message = json.loads(body)["error"]
        assert "`orchestrator up`" in message and ".." not in message, message
    finally:
        dash.terminate()
        dash.wait(30)
        run_cli("down", env=env, timeout=120)


def _get(url):
    try:
        ask = urllib.request.Request(url, headers=DASHBOARD_AUTH)  # the loopback token
        with urllib.request.urlopen(ask, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""
