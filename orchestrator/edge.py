"""The edge of the command line: the one context object (`Ctx`), with the Redis URL it checks,
and the one place where domain errors become a line on stderr and an exit code (`Group.invoke`,
through the table in `errors`, where the exit codes are listed).
"""

from __future__ import annotations

import click
import redis

from worker.store import JobStore, connect, redact

from . import embedded
from .errors import BadInput, NoStack, failure

URL_SCHEMES = ("redis", "rediss", "unix")


class Group(click.Group):
    """The root group: every domain error raised by a command (or by a parameter's check) is
    mapped here, once, to one line and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as e:
            obj = ctx.find_object(Ctx)
            f = failure(
                e,
                obj.url_for_messages() if obj is not None else None,
                ctx.invoked_subcommand,
                obj.opened() if obj is not None else None,
            )
            if f is None:
                raise
            raise f from None


def check_url(url: str) -> str:
    """The URL, or BadInput (exit 2) saying what is wrong with it, password masked."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in URL_SCHEMES:
        raise BadInput(
            f"bad Redis URL {redact(url)}: expected redis://[:password@]host:port/db "
            f"(or rediss://, unix://)"
        )
    if any(c in rest[: rest.rfind("@") + 1] for c in "/#?"):
        raise BadInput(
            f"bad Redis URL {redact(url)}: percent-encode '/', '#' and '?' in the "
            f"password (%2F, %23, %3F)"
        )
    try:
        redis.connection.parse_url(url)
    except ValueError:
        # our message replaces parse_url's: it says what is wrong, with the password masked
        raise BadInput(
            f"bad Redis URL {redact(url)}: expected redis://[:password@]host:port/db"
        ) from None
    return url


class Ctx:
    """The one context object: the Redis URL (option, environment, or the embedded stack) and a
    connection opened on first use. Read-only commands use a running embedded stack but never
    start one; `submit` and `sweep` start it (and say so on stderr)."""

    def __init__(self, url: str | None):
        self.given_url = url
        self._url: str | None = None
        self._store: JobStore | None = None

    def url_for_messages(self) -> str | None:
        return self._url or self.given_url

    def opened(self) -> redis.Redis | None:
        """The store's connection if a command opened one (for the figures of an error)."""
        return self._store.r if self._store is not None else None

    def url(self, start: bool = False) -> str:
        if self._url is None:
            self._url = check_url(self.given_url) if self.given_url else _embedded_url(start)
        return self._url

    def store(self, start: bool = False) -> JobStore:
        """The job store, checked with a PING; start: start the embedded stack if need be."""
        if self._store is None:
            url = self.url(start)
            s = JobStore(connect(url))
            s.r.ping()
            self._store = s
        return self._store


def _embedded_url(start: bool) -> str:
    if not start:
        url = embedded.running_url()
        if url is None:
            raise NoStack(
                "no embedded stack is running: start one with `orchestrator up` "
                "(or give --redis-url)"
            )
        return url
    before = embedded.read_state() or {}
    was_up = embedded.running_url() is not None
    st = embedded.start_workers(embedded.wanted_workers())
    if not was_up or set(st["workers"]) - set(before.get("workers") or ()):
        click.echo(
            f"started the embedded stack in the background (Redis and "
            f"{len(st['workers'])} worker(s), data in {st['home']}); "
            f"stop it with `orchestrator down`",
            err=True,
        )
    return st["url"]
