"""Least privilege in Redis: one ACL user per role, each allowed exactly the commands, keys and
channels its processes use, and none of the commands that could flush, reconfigure, inspect or
stop the server (FLUSHALL, FLUSHDB, CONFIG, KEYS, DEBUG, SHUTDOWN, ACL, MODULE, REPLICAOF, SAVE...).

    worker        trains: Celery's consumer (queue, unacked messages, control and events) and
                  the job store, written through the fenced Lua scripts of lease.py
    orchestrator  submits, reads, cancels, deletes, prunes; sends tasks and asks the workers
                  who runs what (`orchestrator workers`)
    viewer        reads the job store only: status, list, results, samples, compare, plot, the
                  dashboard
    flower        Celery's monitor: events, the control channel, queue lengths; no job store

The rules are data (ROLES) and this module is their one definition: `python -m worker.acl`
prints an ACL file for redis-server's `aclfile` (passwords from the environment, written as
SHA-256 digests), `python -m worker.acl --rules ROLE` one role's rules (the compose file holds a
copy that tests/test_acl.py compares with these), and the tests load the same file.

What each role needs was found by running it for real under these rules and reading Redis's
`ACL LOG`, which records every refusal (tests/test_acl.py keeps it empty for a whole job).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass

import redis

from . import broker, keys, scripts
from .broker import QUEUE

EXIT_DENIED = 6
"""The exit code of a command or worker whose Redis user may not do what it was asked (for the
orchestrator and the worker alike; orchestrator/errors.py lists the others)."""

PLACEHOLDER = "change-me"
MIN_PASSWORD = 16

# Commands by what they are for. Names as ACL rules spell them (`script|load`: a subcommand).
CONNECTION = ("ping", "hello", "select", "client|setname")
"""Connecting: redis-py and kombu say hello and name their connections; SELECT for a URL's db.
(redis-py also sends CLIENT SETINFO, and ignores the refusal: Redis before 7.2 has no such
subcommand, and an ACL file naming it would not load there.)"""
TRANSACTIONS = ("multi", "exec", "discard", "watch", "unwatch")
"""MULTI/EXEC alone change nothing: the commands queued inside are checked one by one."""
STORE_READ = (
    "exists",
    "type",
    "get",
    "hget",
    "hgetall",
    "hmget",
    "hscan",
    "llen",
    "lrange",
    "lindex",
    "scard",
    "smembers",
    "zcard",
    "zcount",
    "zrange",
    "zrevrange",
    "zrangebyscore",
    "zscan",
)
"""What `status`, `list`, `results`, `samples`, `compare`, `plot` and the dashboard read."""
STORE_WRITE = ("set", "del", "hset", "rpush", "zadd", "zrem", "sadd", "srem")
"""The clients' transactions on the job store (store.py): submit, cancel, delete, prune."""
TRAINER_WRITE = ("incr", "incrby", "hincrby", "ltrim", "rename", "copy", "pttl")
"""What a trainer's fenced writes add (lease.py, training.py, asha.py): fencing counters,
capped lists, checkpoints rotated in place."""
PRESENCE = ("expire", "zremrangebyscore")
"""A worker's entry in the registry of live workers (presence.py): it expires unless renewed,
and the names of workers gone quiet are dropped."""
SCRIPTS = ("script|exists",)
"""Lua: a role runs only the scripts of worker/scripts.py, by digest (`+evalsha|<sha1>`, see
Role.scripts), loaded by the set-up as the admin; SCRIPT EXISTS is how redis-py checks before
a pipeline's scripts. No EVAL, SCRIPT LOAD, FLUSH or KILL, FUNCTION or FCALL: a script of a
role's own could hang Redis (BUSY for every client) or reach the Lua interpreter's bugs. Every
command a script calls is checked against the role's rules too."""
KOMBU_SCRIPTS = ("kombu_refresh_binding", "kombu_sweep_bindings", "redis_lock_release")
"""kombu's Redis transport keeps expiring queues' bindings (Celery's control and event queues)
alive, and sweeps stale ones, with these; it releases the lock it restores unacknowledged
messages under with redis-py's."""
TRAINER_SCRIPTS = ("acquire", "fenced", "decide", "claim", "claim_queued")
"""The lease and fenced writes (lease.py), ASHA's rung decisions (asha.py), the reaper's claims
(reaper.py)."""
STORE_SCRIPTS = ("remove", "collect_corpus")
"""delete and prune (store.py)."""
BROKER = (
    "lpush",
    "brpop",
    "llen",
    "del",
    "sadd",
    "srem",
    "smembers",
    "hget",
    "hset",
    "hdel",
    "zadd",
    "zrem",
    "zrange",
    "zrangebyscore",
    "set",
    "get",
    "pexpire",
    "exists",
    "time",
)
"""kombu's Redis transport: queues are lists (LPUSH, BRPOP), bindings sets, delivered messages
the `unacked` hash and `unacked_index` sorted set under the `unacked_mutex` lock."""
SERVER_STATS = ("info",)
"""INFO, read only: used and max memory for a full store's line and wait (space.py), and the
persistence a worker checks at start (serverconf.py). CONFIG stays refused: those two fall back
to what INFO tells."""
UNDO_SUBMIT = ("lrem",)
"""A submit or sweep that a full store refused partway takes back the task messages it had
already queued (orchestrator/jobs.py)."""
DEAD_LETTER = ("lpush", "ltrim")
"""Setting aside a raw item taken off a queue (broker.py): every role whose kombu consumer reads
a queue (a worker its queue, the orchestrator and Flower their control replies) keeps it in the
capped dead-letter list."""
PUBLISH = ("publish",)
"""Celery's control (pidbox) and events are fanout exchanges: Redis pub/sub channels."""
SUBSCRIBE = ("subscribe", "psubscribe", "unsubscribe", "punsubscribe")
"""Receiving them: a worker its control commands and its peers' events, Flower every event."""

# Keys, as glob patterns. The queue's messages wait in `charrnn` and, by priority, in
# `charrnn\x06\x16{3,6,9}` (broker.py): `charrnn??[369]` names those and no key of the store (all
# longer), without writing control characters into an ACL file.
QUEUES = (
    QUEUE,
    QUEUE + "?" * len(broker.SEP) + "[" + "".join(map(str, broker.PRIORITY_STEPS)) + "]",
)
STORE = (f"{keys.PREFIX}*",)
BINDINGS = ("_kombu.binding*",)
"""kombu's exchange bindings: `_kombu.binding.{exchange}`, `..._permanent.*`, `..._deadlines`."""
UNACKED = (f"{broker.UNACKED}*",)
"""`unacked`, `unacked_index`, `unacked_mutex`."""
DEAD_LETTERS = (keys.DEAD_LETTERS,)
"""The dead-letter list, for a role without the whole store (Flower)."""
PIDBOX = ("*.celery.pidbox*",)
"""Each worker's control queue `{node}.celery.pidbox` and clients' reply queues
`{uuid}.reply.celery.pidbox` (with their priority lists)."""
REPLIES = ("*.reply.celery.pidbox*",)
EVENT_QUEUES = ("celeryev.*",)
"""An event receiver's queue (a worker's gossip, Flower), deleted when it stops."""


def control_channel(db: int) -> str:
    """The control fanout (broadcast commands, e.g. `inspect active`, `shutdown`)."""
    return f"/{db}.celery.pidbox"


def task_events(db: int) -> str:
    """The events a client publishes when it sends a task (`task-sent`, for Flower)."""
    return f"/{db}.celeryev/task.*"


def event_channels(db: int) -> tuple[str, ...]:
    """Events: published as `/{db}.celeryev/{type}`. PSUBSCRIBE patterns are matched literally
    by Redis's ACL, so the patterns receivers subscribe with are listed as they are: a worker's
    gossip `worker.*`, Flower's `*`."""
    return (f"/{db}.celeryev/*", f"/{db}.celeryev/worker.*")


@dataclass(frozen=True)
class Role:
    name: str
    env: str  # the variable holding its password (compose, `python -m worker.acl`)
    commands: tuple[str, ...]
    keys: tuple[str, ...]
    channels: tuple[str, ...]
    scripts: tuple[str, ...] = ()  # names in worker/scripts.py, run by EVALSHA of their digest

    def rules(self) -> str:
        """The ACL rules after `reset on #password`: keys, channels, then commands. (Redis 6.2's
        `reset` leaves every channel allowed: `resetchannels` first.)"""
        parts = ["resetchannels"] + [f"~{k}" for k in self.keys]
        parts += [f"&{c}" for c in self.channels]
        evalsha = [f"evalsha|{sha}" for sha in scripts.digests(self.scripts)]
        parts += [f"+{c}" for c in sorted(set(self.commands + tuple(evalsha)))]
        return " ".join(parts)


def roles(db: int = 0) -> dict[str, Role]:
    """Every role, for a store and broker on database `db` (channels name it)."""
    events, control = event_channels(db), control_channel(db)
    return {
        r.name: r
        for r in (
            Role(
                "worker",
                "REDIS_WORKER_PASSWORD",
                CONNECTION
                + TRANSACTIONS
                + STORE_READ
                + STORE_WRITE
                + TRAINER_WRITE
                + PRESENCE
                + SCRIPTS
                + SERVER_STATS
                + BROKER
                + DEAD_LETTER
                + PUBLISH
                + SUBSCRIBE,
                QUEUES + STORE + BINDINGS + UNACKED + PIDBOX + EVENT_QUEUES,
                (control, *events),
                TRAINER_SCRIPTS + KOMBU_SCRIPTS,
            ),
            Role(
                "orchestrator",
                "REDIS_ORCHESTRATOR_PASSWORD",
                CONNECTION
                + TRANSACTIONS
                + STORE_READ
                + STORE_WRITE
                + SCRIPTS
                + SERVER_STATS
                + UNDO_SUBMIT
                + DEAD_LETTER
                + BROKER
                + PUBLISH,
                QUEUES + STORE + BINDINGS + UNACKED + REPLIES,
                (control, task_events(db)),
                STORE_SCRIPTS + KOMBU_SCRIPTS,
            ),
            Role(
                "viewer",
                "REDIS_VIEWER_PASSWORD",
                CONNECTION + TRANSACTIONS + STORE_READ,
                STORE,
                (),
            ),
            Role(
                "flower",
                "REDIS_FLOWER_PASSWORD",
                CONNECTION + TRANSACTIONS + SCRIPTS + BROKER + DEAD_LETTER + PUBLISH + SUBSCRIBE,
                QUEUES + BINDINGS + UNACKED + REPLIES + EVENT_QUEUES + DEAD_LETTERS,
                (control, *events),
                KOMBU_SCRIPTS,
            ),
        )
    }


ADMIN_ENV = "REDIS_PASSWORD"
"""The `default` user's password: the operator's, with every right; no service uses it."""


class BadPassword(ValueError):
    """A password that is missing, still the placeholder, or too short."""


def check_password(env: str, value: str | None) -> str:
    if not value:
        raise BadPassword(f"{env} is not set")
    if value.startswith(PLACEHOLDER):
        raise BadPassword(
            f"{env} is still the placeholder of .env.example; set a random one "
            f'(python3 -c "import secrets; print(secrets.token_hex(32))")'
        )
    if len(value) < MIN_PASSWORD:
        raise BadPassword(f"{env} must be at least {MIN_PASSWORD} characters")
    return value


def digest(password: str) -> str:
    """How an ACL file holds a password: its SHA-256, so the file never holds the password."""
    return hashlib.sha256(password.encode()).hexdigest()


def acl_file(passwords: dict[str, str], admin: str | None, db: int = 0, on: bool = True) -> str:
    """An ACL file: the `default` user (every right with the admin password, or off without
    one: left out, it would be on with no password) and one user per role given a password.
    `on=False`: the roles may not log in yet (a set-up loads the scripts first, then ACL LOAD
    of the file with them on)."""
    lines = [f"user default on #{digest(admin)} ~* &* +@all" if admin else "user default off"]
    defined, state = roles(db), "on" if on else "off"
    for name, password in passwords.items():
        lines.append(f"user {name} reset {state} #{digest(password)} {defined[name].rules()}")
    return "\n".join(lines) + "\n"


def passwords_from(environ: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """({role: password} for each role whose variable is set, admin password or None), each
    checked."""
    given = {
        name: check_password(r.env, environ.get(r.env))
        for name, r in roles().items()
        if environ.get(r.env)
    }
    if not given:
        raise BadPassword(
            "no role has a password: set at least one of "
            + ", ".join(r.env for r in roles().values())
        )
    admin = environ.get(ADMIN_ENV)
    return given, check_password(ADMIN_ENV, admin) if admin else None


# --- telling a user what their Redis user may not do ---------------------------------------


def is_denied(e: BaseException) -> bool:
    """Redis refused a command to this user (NOPERM), directly or inside a transaction."""
    text = str(e)
    return isinstance(e, redis.exceptions.NoPermissionError) or (
        isinstance(e, redis.RedisError) and ("NOPERM" in text or "no permissions to" in text)
    )


def user_of(url: str) -> str:
    """The Redis user a URL logs in as (`default` when it names none, as Redis does)."""
    head, sep, rest = url.partition("//")
    userinfo, at, _ = rest.rpartition("@")
    return (userinfo.partition(":")[0] if at else "") or "default"


def probe(r: redis.Redis, queue: str = QUEUE) -> None:
    """Raise NoPermissionError unless this connection may do what a worker does first: read its
    queue and write the job store. Writes nothing: DEL of a key that never exists. Then
    scripts.NotLoaded if Redis lacks the pool's Lua scripts and this user may not load them."""
    r.llen(queue)
    r.delete(f"{keys.PREFIX}acl-probe")
    if scripts.missing(r):
        try:
            scripts.load(r)  # the admin (the embedded stack's one user) may
        except redis.exceptions.NoPermissionError:
            raise scripts.NotLoaded(scripts.NOT_LOADED) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.acl",
        description="Print a Redis ACL file for charrnn's users (passwords from "
        + ", ".join(r.env for r in roles().values())
        + f"; {ADMIN_ENV} for the default user, which is off without it).",
    )
    parser.add_argument("-o", "--output", help="write the file here (mode 600), not to stdout")
    parser.add_argument("--db", type=int, default=0, help="the database of CHARRNN_REDIS_URL")
    parser.add_argument("--rules", metavar="ROLE", choices=sorted(roles()), help="one role's rules")
    args = parser.parse_args(argv)
    if args.rules:
        print(roles(args.db)[args.rules].rules())
        return 0
    try:
        passwords, admin = passwords_from(dict(os.environ))
    except BadPassword as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = acl_file(passwords, admin, args.db)
    if args.output:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
