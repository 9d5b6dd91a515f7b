"""Which workers are alive, idle or not: a registry in the store, as python-rq keeps one.

Celery's remote control (`inspect`) knows the live workers too, but it answers only after a
broadcast and a timeout, needs write access to the broker's control channels, and says nothing
when no worker answers. A dashboard that redraws every few seconds, with a read-only Redis user,
needs a plain read instead. So each worker's main process renews its entry every
PRESENCE_SECONDS (settings.py): a hash that expires after three missed renewals, and its name in
a sorted set scored by the time of the last renewal. A reader lists the names whose hash has not
expired; a worker killed hard drops out within three periods, one that stops cleanly at once.

Every time here is Redis's (TIME, and the hash's expiry), as the leases' are (lease.py): each
worker's own clock was used, so a worker 45 s behind was never listed and one an hour ahead
stayed listed an hour after it died. The reader needs no clock at all (the viewer role may not
run TIME), only which hashes Redis has not expired.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis

from . import keys, settings
from .store import _num

log = logging.getLogger("charrnn.presence")


def forget_after() -> float:
    """Seconds without a renewal after which a worker is gone: three periods. A function, not a
    constant, so a malformed CHARRNN_PRESENCE_SECONDS is an error where it is used (one line),
    never at import (the dashboard imports this module)."""
    return 3 * settings.PRESENCE_SECONDS


class Presence:
    """The worker's entry, renewed by a daemon thread of its main process."""

    def __init__(self, r: redis.Redis, name: str, concurrency: int | None = None):
        self.r, self.name = r, name
        self.info: dict = {
            "name": name,
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "concurrency": str(concurrency or ""),
            "started_at": "",
        }
        self.stop = threading.Event()

    def renew(self) -> None:
        seconds, micros = self.r.time()  # Redis's clock, not this host's
        now = seconds + micros / 1e6
        self.info["started_at"] = self.info["started_at"] or repr(now)
        entry = dict(self.info)
        entry["seen_at"] = repr(now)
        with self.r.pipeline(transaction=False) as p:
            p.hset(keys.worker(self.name), mapping=entry)
            p.expire(keys.worker(self.name), int(forget_after()) + 1)
            p.zadd(keys.workers(), {self.name: now})
            # the registry stays as large as the live pool: whoever renews sweeps out the dead
            p.zremrangebyscore(keys.workers(), "-inf", now - forget_after())
            p.execute()

    def forget(self) -> None:
        with self.r.pipeline(transaction=False) as p:
            p.delete(keys.worker(self.name))
            p.zrem(keys.workers(), self.name)
            p.execute()

    def loop(self) -> None:
        while True:
            try:
                self.renew()
            except redis.RedisError as e:  # Redis restarting: the next renewal puts it back
                log.info("presence: store unreachable (%s)", type(e).__name__)
            if self.stop.wait(settings.PRESENCE_SECONDS):
                break
        try:
            self.forget()
        except redis.RedisError:
            pass  # the entry expires by itself

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.loop, name="charrnn-presence", daemon=True)
        t.start()
        return t


def live(r: redis.Redis) -> list[dict]:
    """The workers whose entry has not expired (renewed within their three periods, by Redis's
    clock), by name (name, host, pid, concurrency, started_at, seen_at): one ZRANGE of the
    registry (as large as the live pool: each renewal sweeps out the dead), one pipelined read
    of their hashes."""
    names = [
        n.decode() if isinstance(n, bytes) else str(n) for n in r.zrange(keys.workers(), 0, -1)
    ]
    with r.pipeline(transaction=False) as p:
        for n in names:
            p.hgetall(keys.worker(n))
        rows = p.execute()
    out: list[dict] = []
    for n, h in zip(names, rows, strict=True):
        if not h:  # expired: not renewed for three periods (or gone since the ZRANGE)
            continue
        d = {k.decode(): v.decode() for k, v in h.items()}
        out.append(
            {
                "name": n,
                "host": d.get("host", ""),
                "pid": _num(d.get("pid"), int),
                "concurrency": _num(d.get("concurrency"), int),
                "started_at": _num(d.get("started_at"), float),
                "seen_at": _num(d.get("seen_at"), float),
            }
        )
    return sorted(out, key=lambda d: d["name"])
