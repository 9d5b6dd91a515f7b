"""Issue 12, "The embedded stack": what `orchestrator up`, `submit` and `down` may and may not do
to the machine they run on. Real redis-server and real Celery workers, the CLI run as a user runs
it; processes are found through /proc (their environment names the CHARRNN_HOME they belong to)."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from orchestrator import embedded

from conftest import REPO, cli_submit, free_port, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = [
    "--hidden-size",
    "8",
    "--num-layers",
    "1",
    "--iterations",
    "50",
    "--eval-every",
    "0",
    "--sample-every",
    "0",
]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def processes_of(home) -> dict[int, list[str]]:
    """Live processes started for this CHARRNN_HOME, pid -> command line: workers and their pool
    children by their environment, redis-server by its working directory (its `dir`; setting its
    process title overwrites its environment)."""
    tag = f"CHARRNN_HOME={home}".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if int(pid) == os.getpid() or (
            tag not in _read(f"/proc/{pid}/environ").split(b"\0") and cwd != str(home / "redis")
        ):
            continue
        state = _read(f"/proc/{pid}/stat").rsplit(b") ", 1)[-1][:1]
        if state and state != b"Z":
            cmdline = _read(f"/proc/{pid}/cmdline").rstrip(b"\0")
            found[int(pid)] = cmdline.decode(errors="replace").split("\0")
    return found


def servers_of(home) -> list[int]:
    return [p for p, cmd in processes_of(home).items() if "redis-server" in cmd[0]]


def worker_leaders_of(home) -> list[int]:
    """Celery worker main processes (their prefork pool children have the same command line)."""
    procs = {p: cmd for p, cmd in processes_of(home).items() if "celery" in cmd}
    ppid = {p: int(_read(f"/proc/{p}/stat").rsplit(b") ", 1)[-1].split()[1]) for p in procs}
    return [p for p in procs if ppid[p] not in procs]


def kill_leftovers(home):
    """Test hygiene: whatever a failing run left behind for this home."""
    for pid in processes_of(home):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    yield path
    run_cli("down", env={"CHARRNN_HOME": str(path)}, timeout=120)
    kill_leftovers(path)


def test_concurrent_first_starts_make_one_stack(home):
    env = dict(os.environ, CHARRNN_HOME=str(home))
    env.pop("CHARRNN_REDIS_URL", None)
    ups = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "up", "--workers", "1"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in ups]
    assert [p.returncode for p in ups] == [0, 0], outs
    state = json.loads((home / "embedded.json").read_text())
    assert servers_of(home) == [state["redis_pid"]]
    wait_for(lambda: len(worker_leaders_of(home)) >= 1, timeout=30, what="the worker")
    assert worker_leaders_of(home) == state["workers"]
    live = processes_of(home)
    for pid in [state["redis_pid"], *state["workers"]]:  # recorded once exec had set them up
        assert state["identities"][str(pid)]["cmdline"] == live[pid] != [""]

    run_cli("down", env={"CHARRNN_HOME": str(home)}, check=True, timeout=120)
    assert processes_of(home) == {}


def _start_ticks(pid: int) -> int:
    return int(_read(f"/proc/{pid}/stat").rsplit(b") ", 1)[-1].split()[19])


def test_down_leaves_processes_it_did_not_start_alone(home):
    """After a reboot the state file's PIDs may name anything: here a `sleep` of ours."""
    home.mkdir(mode=0o700)
    sleeper = subprocess.Popen(["sleep", "300"])
    url = f"redis://:not-the-password@127.0.0.1:{free_port()}/0"  # nothing listens there
    pid, start = sleeper.pid, _start_ticks(sleeper.pid)
    bare = {"url": url, "redis_pid": pid, "workers": [pid], "home": str(home)}
    try:
        planted = [
            bare,  # the state file of earlier versions: PIDs alone
            # same PID, another process: its start time or its command line differs
            {
                **bare,
                "identities": {
                    str(pid): {"pid": pid, "start": start + 1, "cmdline": ["sleep", "300"]}
                },
            },
            {
                **bare,
                "identities": {
                    str(pid): {
                        "pid": pid,
                        "start": start,
                        "cmdline": [sys.executable, "-m", "celery"],
                    }
                },
            },
        ]
        for state in planted:
            (home / "embedded.json").write_text(json.dumps(state))
            p = run_cli("down", env={"CHARRNN_HOME": str(home)}, timeout=60)
            assert p.returncode == 0 and "no embedded stack running" in p.stdout, (
                p.stdout + p.stderr
            )
            time.sleep(0.2)
            assert sleeper.poll() is None, "down killed a process it did not start"
            assert "stale" in p.stderr and str(sleeper.pid) in p.stderr, p.stderr
        # nor does `up` take the sleep for a running server or worker
        (home / "embedded.json").write_text(json.dumps(bare))
        run_cli("up", "--workers", "1", env={"CHARRNN_HOME": str(home)}, check=True)
        state = json.loads((home / "embedded.json").read_text())
        assert pid != state["redis_pid"] and pid not in state["workers"] and state["workers"]
        run_cli("down", env={"CHARRNN_HOME": str(home)}, check=True, timeout=120)
        assert sleeper.poll() is None and processes_of(home) == {}
    finally:
        sleeper.kill()
        sleeper.wait()


def assert_private(home):
    """Directories 0700, files 0600 (the append-only file holds every corpus in clear)."""
    loose = []
    for dirpath, _, filenames in os.walk(home):
        for path in [dirpath] + [os.path.join(dirpath, n) for n in filenames]:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if stat.S_IMODE(st.st_mode) != want:
                loose.append(f"{oct(stat.S_IMODE(st.st_mode))} {os.path.relpath(path, home)}")
    assert not loose, loose


def run_job(home, corpus_file) -> dict:
    p = cli_submit(
        corpus_file,
        "--json",
        "--wait",
        *TINY,
        env={"CHARRNN_HOME": str(home)},
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    job = json.loads(p.stdout)
    assert job["status"] == "succeeded", job
    return job


def test_a_fresh_home_is_private_to_its_user(home, corpus_file):
    run_cli("up", "--workers", "1", env={"CHARRNN_HOME": str(home)}, check=True)
    run_job(home, corpus_file)
    # the submit found the stack up and kept the one worker `up` asked for (it used to top the
    # pool up to one worker per core)
    state = json.loads((home / embedded.STATE_FILE).read_text())
    assert len(state["workers"]) == 1 and state["wanted"] == 1, state
    redis_dir = home / "redis"
    assert any(n.startswith("appendonly") for n in os.listdir(redis_dir)), os.listdir(redis_dir)
    assert_private(home)
    run_cli("down", env={"CHARRNN_HOME": str(home)}, check=True, timeout=120)
    assert_private(home)


def test_workers_import_no_code_from_the_home(home, corpus_file, tmp_path):
    """A home made by an earlier version (0755 directories, 0644 files), with a worker.py in it
    that anyone able to write there could have put: the workers must import the installed
    package, and the start makes the old home private."""
    marker = tmp_path / "planted-code-ran"
    (home / "redis").mkdir(parents=True)
    (home / "logs").mkdir()
    (home / "worker.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (home / "logs" / "worker-1.log").write_text("an old log\n")
    for path, mode in (
        (home, 0o755),
        (home / "redis", 0o755),
        (home / "logs", 0o755),
        (home / "worker.py", 0o644),
        (home / "logs" / "worker-1.log", 0o644),
    ):
        os.chmod(path, mode)

    run_cli("up", "--workers", "1", env={"CHARRNN_HOME": str(home)}, check=True)
    run_job(home, corpus_file)
    assert not marker.exists(), "a worker imported worker.py from CHARRNN_HOME"
    assert_private(home)


def test_an_unusable_home_is_one_line_of_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for command in (["up", "--workers", "1"], ["down"]):
        p = run_cli(*command, env={"CHARRNN_HOME": str(blocker / "home")}, timeout=60)
        assert p.returncode == 4, p.stderr
        assert p.stderr.startswith("error: cannot use ") and p.stderr.count("\n") == 1, p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory another user owns")
def test_a_home_another_user_made_is_refused(tmp_path):
    """Made first by someone else (in a shared /tmp, say), it would stay theirs to read."""
    theirs = tmp_path / "home"
    theirs.mkdir(mode=0o777)
    os.chown(theirs, 4321, 4321)
    p = run_cli("up", "--workers", "1", env={"CHARRNN_HOME": str(theirs)}, timeout=60)
    assert p.returncode == 4 and "belongs to uid 4321" in p.stderr, p.stderr
    assert os.listdir(theirs) == []


def test_an_orphaned_server_on_the_same_data_is_not_joined_by_a_second(home):
    """Earlier versions could orphan a redis-server on the home's append-only file (two first
    starts at once). A start must not put a second server on that file, and down names it."""
    from orchestrator.embedded import redis_server_binary

    (home / "redis").mkdir(parents=True)
    orphan = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(free_port()),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(home / "redis"),
            "--appendonly",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: servers_of(home) == [orphan.pid], timeout=10, what="the orphan")
        p = run_cli("up", "--workers", "1", env={"CHARRNN_HOME": str(home)}, timeout=60)
        assert p.returncode == 4 and f"kill {orphan.pid}" in p.stderr, p.stderr
        assert p.stderr.count("\n") == 1 and servers_of(home) == [orphan.pid]
        p = run_cli("down", env={"CHARRNN_HOME": str(home)}, timeout=60)
        assert p.returncode == 0 and str(orphan.pid) in p.stderr, p.stderr
        assert orphan.poll() is None, "down killed a process it did not start"
    finally:
        orphan.kill()
        orphan.wait()
