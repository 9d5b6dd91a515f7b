"""Issue 13: workers on other hosts, for real. Each host is a network namespace with its own
address on a private bridge (stacks/hosts.py): Redis on host A, workers on B and C, the
orchestrator command line on D. Every byte between them crosses the bridge, none loopback; the
test reads the store over Redis's unix socket. Run with `pytest -m hosts` (root: namespaces).
"""

import json
import os
import re
import secrets
import sys
import time

import hosts
import pytest

from orchestrator.embedded import redis_server_binary
from worker import keys

from conftest import (
    LONG_JOB,
    LONG_JOB_EVERY,
    REPO,
    HostWorker,
    assert_matches_reference,
    events,
    job_field,
    make_corpus,
    start_together,
    wait_for,
    wait_iteration,
    wait_status,
)

pytestmark = pytest.mark.hosts

SPEC, EVERY = LONG_JOB, LONG_JOB_EVERY


def cli(host: hosts.Host, url: str, *args, timeout: float = 60):
    """`orchestrator ARGS` run on a host, the URL in the environment (never on a command line)."""
    env = dict(os.environ, CHARRNN_REDIS_URL=url)
    return host.run(
        [sys.executable, "-m", "orchestrator.cli", *args], env=env, cwd=REPO, timeout=timeout
    )


def submit_on(host, url, corpus_path, **hyper) -> str:
    args = ["submit", "--corpus", str(corpus_path), "--json", "--checkpoint-every", str(EVERY)]
    for k, v in hyper.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    p = cli(host, url, *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["job_id"]


@pytest.fixture
def net():
    """A bridge and four hosts, all removed at teardown (also on failure)."""
    with hosts.Network() as n:
        n.host("a"), n.host("b"), n.host("c"), n.host("d")
        yield n


@pytest.fixture
def short_tmp():
    """A short folder (a unix socket path must stay under 108 bytes)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="chh")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_harness_hosts_reach_each_other_over_the_bridge_only(net):
    """Each host has its own address and no default route; a TCP connection from D to A's
    address arrives from D's address (it crossed the bridge), and a host cut off by `partition`
    cannot connect until `heal`."""
    a, d = net.hosts[0], net.hosts[3]
    assert len({h.addr for h in net.hosts}) == 4
    for h in net.hosts:
        assert h.run(["ip", "route", "show", "default"]).stdout.strip() == ""
    listen = (
        "import socket, sys; s=socket.socket(); s.bind((sys.argv[1], 7000)); s.listen(); "
        "s.settimeout(20); c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()"
    )
    server = a.popen([sys.executable, "-c", listen, a.addr])
    probe = (
        "import socket, sys, time\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        s = socket.create_connection((sys.argv[1], 7000), timeout=2); break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
        "print(s.recv(100).decode())\n"
    )
    p = d.run([sys.executable, "-c", probe, a.addr], timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == d.addr, p.stderr
    server.wait(10)
    net.partition(d)
    one_try = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], 7001), timeout=2); print('connected')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    assert d.run([sys.executable, "-c", one_try, a.addr]).stdout.strip() == "TimeoutError"
    net.heal(d)
    # healed: the port is closed on A, so the answer is a refusal, not silence
    assert wait_for(
        lambda: (
            d.run([sys.executable, "-c", one_try, a.addr]).stdout.strip()
            == "ConnectionRefusedError"
        ),
        timeout=15,
        poll=0.2,
        what="the link back",
    )


@pytest.mark.slow
def test_a_job_completes_over_tls_and_nothing_crosses_in_clear(net, short_tmp):
    """Redis serves TLS only (port 0, tls-port; a CA and server certificate made now with
    openssl). Workers on B and C and the orchestrator on D connect with
    rediss://...?ssl_cert_reqs=required&ssl_ca_certs=CA; the job completes, bit-identical to an
    uninterrupted run. Everything on the bridge during the job is captured: it holds TLS
    application data, and neither the password nor a marker string embedded in the corpus."""
    a, b, c, d = net.hosts
    tls = hosts.make_tls(os.path.join(short_tmp, "tls"), a.addr)
    redis = hosts.RedisOnHost(
        a, os.path.join(short_tmp, "r"), hosts.tls_redis_binary(), tls=tls
    ).start()
    url = redis.url()
    cap = net.capture(os.path.join(short_tmp, "bridge.pcap"))
    workers = start_together(HostWorker(h, url, short_tmp) for h in (b, c))
    marker = "MARKER" + secrets.token_hex(8)
    text = make_corpus(seed=5) + f" {marker} " + make_corpus(seed=6)
    corpus = os.path.join(short_tmp, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(text)
    spec = dict(SPEC, iterations=6000)
    job = submit_on(d, url, corpus, **spec)
    r = redis.client()
    assert wait_status(r, job, timeout=120) == "succeeded"
    p = cli(d, url, "results", job, "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "succeeded", p.stderr
    raw = cap.stop()
    stats = open(cap.log).read()
    assert "0 packets dropped by kernel" in stats, f"the capture missed packets: {stats}"
    assert len(raw) > len(text), "the corpus crossed the bridge: the capture must be larger"
    assert b"\x17\x03\x03" in raw, "no TLS 1.2/1.3 application data record on the bridge"
    assert redis.password.encode() not in raw, "the password crossed the bridge in clear text"
    assert marker.encode() not in raw, "the corpus crossed the bridge in clear text"
    assert text[:200].encode() not in raw
    assert_matches_reference(r, job, text, spec)
    for w in workers:
        w.stop()


def _one_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    return lines[0]


@pytest.mark.slow
def test_wrong_ca_and_plain_redis_are_refused_clearly(net, short_tmp):
    """A worker given a CA that did not sign the server's certificate is refused: its log says
    CERTIFICATE_VERIFY_FAILED in one line (each time it tries again). The orchestrator with that
    CA exits 4 with one line naming the certificate problem, and a plain redis:// client to the
    TLS port exits 4 with one line at once, not a hang."""
    a, b, c, d = net.hosts
    tls = hosts.make_tls(os.path.join(short_tmp, "tls"), a.addr)
    other = hosts.make_tls(os.path.join(short_tmp, "other"), a.addr, name="other")
    redis = hosts.RedisOnHost(
        a, os.path.join(short_tmp, "r"), hosts.tls_redis_binary(), tls=tls
    ).start()
    wrong = redis.url(ca=other["ca"])
    w = HostWorker(b, wrong, short_tmp).start(wait=False)
    wait_for(
        lambda: b"CERTIFICATE_VERIFY_FAILED" in open(w.log, "rb").read(),
        timeout=30,
        poll=0.2,
        what="the worker to report the certificate failure",
    )
    line = next(x for x in open(w.log).read().splitlines() if "CERTIFICATE_VERIFY_FAILED" in x)
    assert "certificate verify failed" in line and redis.password not in line, line
    print("worker:", line)
    w.stop()

    p = cli(d, wrong, "list")
    assert p.returncode == 4, (p.returncode, p.stderr)
    line = _one_line(p.stderr)
    assert "CERTIFICATE_VERIFY_FAILED" in line and redis.password not in line, line
    print("cli, wrong CA:", line)

    t0 = time.monotonic()
    p = cli(d, redis.url(scheme="redis"), "list", timeout=30)
    assert time.monotonic() - t0 < 15, "a plain client to the TLS port must fail fast"
    assert p.returncode == 4, (p.returncode, p.stderr)
    line = _one_line(p.stderr)
    assert line.startswith("error: Redis unreachable at redis://***@"), line
    assert "use rediss://" in line and redis.password not in line, line
    print("cli, plain to TLS:", line)


@pytest.mark.slow
def test_partitioned_worker_is_taken_over_and_fenced_off_when_healed(net, short_tmp, report):
    """Host B's cable is pulled mid-job: its lease expires, the reaper on C re-sends the job and
    C resumes it from the last checkpoint under a new fencing token. When the link is healed,
    B's trainer (alive all along, its write stuck in the network) has its first write refused by
    the fence (the job's `refused` counter) and stops. The job ends once, succeeded, with final
    weights bit-identical to an uninterrupted run."""
    a, b, c, d = net.hosts
    redis = hosts.RedisOnHost(a, os.path.join(short_tmp, "r"), redis_server_binary()).start()
    url = redis.url()
    r = redis.client()
    text = make_corpus(seed=11)
    corpus = os.path.join(short_tmp, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(text)
    # B starts first and alone, so it is the one that takes the job
    wb = HostWorker(b, url, short_tmp).start()
    spec = dict(SPEC, iterations=60000)
    job = submit_on(d, url, corpus, **spec)
    wait_iteration(r, job, 5000)  # past two checkpoints, on B
    assert job_field(r, job, "worker").startswith("b@")
    wc = HostWorker(c, url, short_tmp).start()
    net.partition(b)
    t_cut = time.monotonic()
    try:
        stale_at = int(job_field(r, job, "iteration"))
        # lease (2 s) gone, two reaper scans on C (2 s apart), the re-sent job resumed on C
        wait_for(
            lambda: "resumed" in [e["event"] for e in events(r, job)],
            timeout=30,
            poll=0.1,
            what="C to take the job over",
        )
        t_takeover = time.monotonic() - t_cut
        resumed = [e for e in events(r, job) if e["event"] == "resumed"][0]
        assert resumed["host"].startswith("c@") and 0 < resumed["iteration"] <= stale_at
        assert int(r.get(keys.fence(job))) == 2 and int(r.get(keys.refused(job)) or 0) == 0
        wait_for(
            lambda: int(job_field(r, job, "iteration")) > stale_at + 1000,
            timeout=30,
            what="C's progress past where B was cut off",
        )
    finally:
        net.heal(b)
    t_heal = time.monotonic()
    wait_for(
        lambda: b"lost its lease" in open(wb.log, "rb").read(),
        timeout=60,
        poll=0.2,
        what="B's trainer to hit the fence and stop",
    )
    t_fenced = time.monotonic() - t_heal
    assert wait_status(r, job, timeout=120) == "succeeded"
    print(
        f"cut off at iteration {stale_at}; taken over {t_takeover:.1f} s after the cut, "
        f"resumed at {resumed['iteration']}; B fenced off {t_fenced:.1f} s after the heal; "
        f"writes refused: {int(r.get(keys.refused(job)))}"
    )
    assert re.search(rb"succeeded in [0-9.]+s: 'lost_lease'", open(wb.log, "rb").read())
    assert int(r.get(keys.refused(job))) >= 1
    ev = [e["event"] for e in events(r, job)]
    assert ev.count("started") == 1 and ev.count("resumed") == 1 and ev.count("finished") == 1
    assert ev.count("requeued_by_reaper") == 1
    assert job_field(r, job, "worker").startswith("c@")
    assert_matches_reference(r, job, text, spec)
    fig = report(
        r, [job], 1, "a worker's host cut off mid-job (link down), healed after the takeover"
    )
    assert fig["lost"] == 0 and fig["trainers"] == 2 and fig["stale_writes_refused"] >= 1
    wb.stop(), wc.stop()


RTT_PROBE = """
import sys, time, redis
r = redis.Redis.from_url(sys.argv[1], socket_connect_timeout=10, socket_timeout=30)
r.ping()
t0 = time.monotonic()
for _ in range(3):
    r.ping()
print((time.monotonic() - t0) / 3)
"""


@pytest.mark.slow
def test_bad_link_jobs_complete_and_progress_reaches_the_store(net, short_tmp):
    """Workers reach Redis over a bad link: 200 ms each way (this kernel has no netem, so a TCP
    relay on a fifth host holds every byte 200 ms in each direction; the workers connect through
    it) and 5% of the workers' packets dropped each way (iptables, real loss: TCP retransmits).
    Two jobs still complete, bit-identical to uninterrupted runs, and their progress reaches the
    store while they run (iterations seen between start and end, history rows written), with
    the lease at 5 s (six round trips of this link and more)."""
    a, b, c, d = net.hosts
    relay = net.host("r")
    redis = hosts.RedisOnHost(a, os.path.join(short_tmp, "r"), redis_server_binary()).start()
    net.relay(relay, 6379, a.addr, hosts.RedisOnHost.PORT, 0.2)
    slow = f"redis://:{redis.password}@{relay.addr}:6379/0"
    for h in (b, c):
        net.loss(h, 0.05)
    p = b.run([sys.executable, "-c", RTT_PROBE, slow], timeout=60)
    assert p.returncode == 0, p.stderr
    rtt = float(p.stdout)
    assert 0.39 <= rtt < 5, f"a round trip through the bad link took {rtt:.3f} s"
    workers = start_together(
        (HostWorker(h, slow, short_tmp, CHARRNN_LEASE_SECONDS=5) for h in (b, c)), timeout=120
    )
    text = make_corpus(seed=17)
    corpus = os.path.join(short_tmp, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(text)
    spec = dict(SPEC, iterations=8000, eval_every=2000, sample_every=4000)
    jobs = [submit_on(d, redis.url(), corpus, **spec) for _ in range(2)]
    r = redis.client()
    seen = {j: set() for j in jobs}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        rows = [r.hmget(keys.job(j), "status", "iteration") for j in jobs]
        for j, (status, it) in zip(jobs, rows, strict=True):
            if status == b"running":
                seen[j].add(int(it))
        if all(s in (b"succeeded", b"failed", b"cancelled") for s, _ in rows):
            break
        time.sleep(0.1)
    for j in jobs:
        assert job_field(r, j, "status") == "succeeded", job_field(r, j, "error")
        mid = {i for i in seen[j] if 0 < i < spec["iterations"]}
        assert len(mid) >= 2, f"job {j}: progress seen while running: {sorted(seen[j])}"
        assert r.llen(keys.history(j)) >= 5
        assert_matches_reference(r, j, text, spec)
    print(
        f"round trip {rtt:.3f} s; packets dropped: b {net.dropped(b)}, c {net.dropped(c)}; "
        f"progress seen: {[len(s) for s in seen.values()]}"
    )
    assert net.dropped(b) + net.dropped(c) > 0
    for w in workers:
        w.stop()
