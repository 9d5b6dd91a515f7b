"""What the job store needs of the Redis it is given, checked once when a worker starts: every
write in the append-only file and fsynced before Redis replies (what a command acknowledged
survives a power loss), and no eviction (a full store refuses writes; it never drops a job, a
checkpoint or a queued message). The embedded stack and the compose file set both; a Redis of
your own may not.

A worker says what is missing, one log line each, and runs on. It does not refuse: a managed Redis
may keep its data safe by means not visible here (replicas, snapshots), or not let us read or
change its settings at all, and a pool that will not start there helps nobody; the line names the
risk and the setting that removes it.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger("charrnn.worker")

SAFE_POLICIES = ("noeviction",)
"""Eviction policies that never drop a key. `volatile-*` drop only keys with an expiry (here the
leases, which the fencing token makes safe to lose), but they too turn into noeviction for
everything else: still, only noeviction says what happens when full."""


def problems(r: redis.Redis) -> list[tuple[int, str]]:
    """(log level, line) for each setting of this Redis that can lose acknowledged work."""
    out: list[tuple[int, str]] = []
    try:
        persistence, memory = r.info("persistence"), r.info("memory")
    except redis.RedisError as e:  # INFO not permitted to this user, say
        return [(logging.INFO, f"cannot read the store's settings ({e}); not checked")]
    if not int(persistence.get("aof_enabled", 0)):
        out.append(
            (
                logging.WARNING,
                "the store keeps no append-only file (appendonly no): jobs, statuses and "
                "checkpoints acknowledged since its last snapshot are lost if Redis stops "
                "abruptly; set appendonly yes and appendfsync always",
            )
        )
    else:
        fsync = _config(r, "appendfsync")
        if fsync not in (None, "always"):
            out.append(
                (
                    logging.WARNING,
                    f"the store fsyncs its append-only file {fsync!r}, not before each reply: "
                    f"a power loss can lose acknowledged jobs and checkpoints (up to a second "
                    f"of them with everysec); set appendfsync always",
                )
            )
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if policy not in SAFE_POLICIES:
        out.append(
            (
                logging.ERROR if policy.startswith("allkeys") else logging.WARNING,
                f"the store's maxmemory-policy is {policy}: when full, Redis deletes keys to "
                f"make room, and a job, a checkpoint or a queued message can vanish; set "
                f"maxmemory-policy noeviction (a full store then refuses writes, and running "
                f"jobs wait for space)",
            )
        )
    return out


def _config(r: redis.Redis, name: str) -> str | None:
    """A CONFIG GET value, or None where CONFIG is not permitted (an ACL user, a managed Redis)."""
    if r.connection_pool.connection_kwargs.get("username") not in (None, "", "default"):
        # a user of worker/acl.py's roles: CONFIG is refused to them all, and asking anyway
        # would put a refusal in ACL LOG, where an operator looks for real ones
        return None
    try:
        reply: dict = dict(r.config_get(name))
    except redis.RedisError:
        return None
    # keys and values are bytes on this store's connections (decode_responses off)
    value = reply.get(name, reply.get(name.encode()))
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


def report(r: redis.Redis) -> None:
    """Log each problem once (a worker's start)."""
    for level, line in problems(r):
        log.log(level, line)
