"""What a new user tripped over, and the hardening of the command line (issues 11 and 12), each
driven as a user drives it: real redis-server, real Celery workers, `orchestrator` in a
subprocess."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from worker import keys

from conftest import REPO, TINY_JOB, cli_submit, free_port, run_cli, submit, wait_status

pytestmark = pytest.mark.integration


def one_error_line(p, code):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


@pytest.mark.slow
def test_names_tags_and_samples_are_plain_text(pool, r, redis_server, corpus_file):
    """A name like '[/oops]' used to crash `list` (rich markup); escape sequences in a name or a
    sample must not reach the terminal."""
    url = redis_server.url()
    odd = submit(url, corpus_file, "--name", "[/oops]", "--tag", "[bold]t", **TINY_JOB)
    esc = submit(url, corpus_file, "--name", "red\x1b[31mname\x07", **TINY_JOB)
    for j in (odd, esc):
        assert wait_status(r, j) == "succeeded"
    r.rpush(keys.samples(esc), json.dumps({"iteration": 301, "text": "a\x1b[2Jb\n\tc\x9bd"}))
    p = run_cli("list", url=url)
    assert p.returncode == 0, p.stderr
    assert "[/oops]" in p.stdout and "red[31mname" in p.stdout  # ESC removed, text kept
    assert "\x1b" not in p.stdout and "\x07" not in p.stdout
    for cmd in (["samples", esc], ["results", esc]):
        out = run_cli(*cmd, url=url, check=True).stdout
        assert "a[2Jb\n\tcd" in out and "\x1b" not in out and "\x9b" not in out, cmd
    listed = json.loads(run_cli("list", "--tag", "[bold]t", "--json", url=url, check=True).stdout)
    assert [j["name"] for j in listed] == ["[/oops]"]  # JSON keeps the text as given


@pytest.mark.slow
def test_losses_per_char_and_which_history_rows_are_shown(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    job = submit(url, corpus_file, **dict(TINY_JOB, eval_every=30))
    wait_status(r, job)
    st = json.loads(run_cli("status", job, "--json", url=url, check=True).stdout)
    text = run_cli("status", job, url=url, check=True).stdout
    per_char = st["smooth_loss"]  # stored per character, as shown
    assert f"loss/char         {per_char:.4f}" in text and "smooth_loss" not in text
    res = run_cli("results", job, url=url, check=True).stdout
    n = len(json.loads(run_cli("results", job, "--json", url=url, check=True).stdout)["history"])
    assert n > 5 and f"loss history      {n} points, last 5 of {n}" in res
    assert res.count("loss/char ") >= 5


@pytest.mark.slow
def test_progress_is_whole_lines_without_a_terminal(pool, r, redis_server, corpus_file):
    p = cli_submit(
        corpus_file,
        "--wait",
        hidden_size=8,
        num_layers=1,
        iterations=20000,
        eval_every=0,
        sample_every=0,
        url=redis_server.url(),
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "20000/20000" in p.stderr and "chars/s" in p.stderr and "…" not in p.stderr


def test_reserved_sweep_tag_is_refused(r, redis_server, corpus_file):
    url = redis_server.url()
    for cmd in (
        ["submit", "--corpus", str(corpus_file)],
        ["sweep", "--corpus", str(corpus_file), "--grid", "hidden_size=8,16"],
    ):
        line = one_error_line(run_cli(*cmd, "--tag", f"sweep:{uuid.uuid4()}", url=url), 2)
        assert "reserved" in line
    assert r.zcard(keys.jobs_by_time()) == 0


@pytest.mark.parametrize(
    "age, word",
    [("30", "unit"), ("-5m", "above 0"), ("0s", "above 0"), ("1y", "unit"), ("soon", "unit")],
)
def test_prune_needs_a_positive_age_with_a_unit(redis_server, age, word):
    line = one_error_line(run_cli("prune", "--older-than", age, url=redis_server.url()), 2)
    assert word in line


@pytest.mark.slow
def test_prune_dry_run_deletes_nothing(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    job = submit(url, corpus_file, **dict(TINY_JOB, iterations=30))
    wait_status(r, job)
    time.sleep(0.05)
    dry = json.loads(
        run_cli("prune", "--older-than", "0.01s", "--dry-run", "--json", url=url, check=True).stdout
    )
    assert dry == {"would_delete": [job]} and r.exists(keys.job(job))
    text = run_cli("prune", "--older-than", "0.01s", "--dry-run", url=url, check=True).stdout
    assert "would delete 1 job(s)" in text and job in text and r.exists(keys.job(job))
    assert json.loads(
        run_cli("prune", "--older-than", "0.01s", "--json", url=url, check=True).stdout
    ) == {"deleted": [job]}


def test_devices_and_fifos_are_refused_at_once(r, redis_server, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for corpus in ("/dev/zero", str(fifo)):
        t0 = time.monotonic()
        line = one_error_line(
            run_cli("submit", "--corpus", corpus, url=redis_server.url(), timeout=30), 2
        )
        assert "not a regular file" in line and time.monotonic() - t0 < 20
        c = subprocess.run(
            [sys.executable, "-m", "charrnn.cli", "train", "--corpus", corpus],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
        assert one_error_line(c, 2)
    assert r.zcard(keys.jobs_by_time()) == 0


def test_sweep_file_cannot_reach_outside_its_folder(r, redis_server, tmp_path, corpus_file):
    sub = tmp_path / "shared"
    sub.mkdir()
    f = sub / "sweep.yaml"
    f.write_text("corpus: /etc/passwd\ngrid: {hidden_size: [8, 16]}\nfixed: {iterations: 10}\n")
    url = redis_server.url()
    line = one_error_line(run_cli("sweep", "-f", str(f), url=url), 2)
    assert "outside the file's folder" in line and "--corpus" in line
    assert r.zcard(keys.sweeps_by_time()) == 0
    ok = run_cli("sweep", "-f", str(f), "--corpus", str(corpus_file), "--json", url=url)
    assert ok.returncode == 0, ok.stderr  # the user named the corpus: allowed
    for j in json.loads(ok.stdout)["job_ids"]:
        wait_status(r, j, ("succeeded", "failed", "cancelled", "queued", "running"))
    run_cli("delete", json.loads(ok.stdout)["sweep_id"], url=url, check=True)


def test_sweep_file_cannot_upload_a_dotfile(r, redis_server, tmp_path, corpus_file):
    """`corpus: .env` beside a sweep file uploaded the Redis password (issue 20, item 7)."""
    env = tmp_path / ".env"
    env.write_text("REDIS_PASSWORD=" + "s3cret" * 20 + "\n")
    f = tmp_path / "sweep.yaml"
    f.write_text("corpus: .env\ngrid: {hidden_size: [8, 16]}\nfixed: {iterations: 10}\n")
    url = redis_server.url()
    line = one_error_line(run_cli("sweep", "-f", str(f), url=url), 2)
    assert "hidden file" in line and "--corpus" in line
    assert r.zcard(keys.sweeps_by_time()) == 0 and not r.keys(keys.PREFIX + "corpus*")
    # named on the command line, it is the user's choice
    ok = run_cli("sweep", "-f", str(f), "--corpus", str(env), "--json", url=url)
    assert ok.returncode == 0, ok.stderr
    run_cli("delete", json.loads(ok.stdout)["sweep_id"], url=url, check=True)


@pytest.mark.parametrize("password", ["Xq1/Zz9", "Xq1#Zz9", "Xq1?Zz9", "Xq1@Zz9", "Xq1/Zz9#Kk?"])
def test_passwords_are_never_printed(password):
    port = free_port()
    p = run_cli("list", url=f"redis://:{password}@127.0.0.1:{port}/0", timeout=20)
    line = one_error_line(p, 2 if set(password) & set("/#?") else 4)
    assert "Xq1" not in line and "Zz9" not in line and "Kk" not in line, line
    assert f"127.0.0.1:{port}" in line


@pytest.mark.parametrize("url", ["http://localhost", "localhost:6379", "redis://h:port/0"])
def test_malformed_redis_url_is_bad_input(url):
    line = one_error_line(run_cli("list", url=url, timeout=20), 2)
    assert "bad Redis URL" in line


@pytest.mark.slow
def test_read_only_commands_never_start_the_embedded_stack(tmp_path, corpus_file):
    home = tmp_path / "home"
    env = {"CHARRNN_HOME": str(home)}
    try:
        for cmd in (["list"], ["status", str(uuid.uuid4())], ["sweeps"], ["workers"]):
            line = one_error_line(run_cli(*cmd, env=env), 4)
            assert "no embedded stack" in line and "orchestrator up" in line, (cmd, line)
        assert not (home / "embedded.json").exists()  # nothing was started
        assert "no embedded stack running" in run_cli("down", env=env, check=True).stdout
        p = cli_submit(
            corpus_file,
            "--hidden-size",
            "8",
            "--iterations",
            "20",
            "--json",
            env=env,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        json.loads(p.stdout)  # --json: only JSON on stdout
        started = p.stderr.strip().splitlines()
        assert (
            len(started) == 1
            and "started the embedded stack" in started[0]
            and "orchestrator down" in started[0]
        ), p.stderr
        again = cli_submit(
            corpus_file,
            hidden_size=8,
            iterations=20,
            env=env,
            timeout=120,
        )
        assert again.returncode == 0 and "started" not in again.stderr, again.stderr
        assert "embedded stack stopped" in run_cli("down", env=env, check=True).stdout
        one_error_line(run_cli("list", env=env), 4)
        state = json.loads((home / "embedded.json").read_text())
        assert state["redis_pid"] is None
    finally:
        run_cli("down", env=env)
