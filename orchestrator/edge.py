"""The edge of the command line: the one context object (`Ctx`), the exit codes, and the one
place where domain errors become a line on stderr and an exit code (`Group.invoke`).

Exit codes: 0 success; 1 a job failed or was cancelled (submit --wait, sweep --wait, watch); 2
usage or bad input (options, corpus, hyperparameter, search space, id syntax, Redis URL, prime,
checkpoint file, a malformed CHARRNN_* setting); 3 unknown job or sweep id; 4 Redis unreachable, refused the password, or no
embedded stack running; 5 the job has no checkpoint or sample yet; 6 permission denied: the Redis
user may not do this (a viewer's submit, cancel, delete; worker/acl.py has the users' rules); 7
the store is full (Redis at its maxmemory refused the write; nothing of it was kept); 130 Ctrl-C
(while following a job or sweep: it goes on running, and the line says how to follow or cancel it).
"""

from __future__ import annotations

import click
import redis

from charrnn.errors import CharRNNError
from worker import acl, space
from worker.errors import (
    CorpusTooLarge,
    InvalidJobId,
    JobTooLarge,
    NoCheckpoint,
    NoSuchCorpus,
    NoSuchJob,
    StoreFull,
    Unreachable,
)
from worker.settings import BadSetting
from worker.store import JobStore, connect, redact

from . import embedded, render
from .jobs import BadInput

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNKNOWN_JOB, EXIT_UNREACHABLE, EXIT_NOT_YET = range(6)
EXIT_DENIED = acl.EXIT_DENIED
EXIT_STORE_FULL = 7
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
URL_SCHEMES = ("redis", "rediss", "unix")


class NoStack(Exception):
    """No --redis-url, and the embedded stack is not running (a read-only command never starts
    it)."""


class Fail(click.ClickException):
    """One line on stderr (printed by charrnn.cli.run) and its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(render.plain(message))
        self.code = code

    # click declares exit_code one per class (a ClassVar); a Fail carries its own, read on exit
    @property
    def exit_code(self) -> int:
        return self.code

    @exit_code.setter
    def exit_code(self, code: int) -> None:
        self.code = code


ERRORS: tuple[tuple[tuple[type, ...], int], ...] = (
    ((NoSuchJob,), EXIT_UNKNOWN_JOB),
    ((NoSuchCorpus,), EXIT_UNKNOWN_JOB),
    ((InvalidJobId, CorpusTooLarge, JobTooLarge, CharRNNError, BadInput, BadSetting), EXIT_USAGE),
    ((NoCheckpoint,), EXIT_NOT_YET),
    ((StoreFull,), EXIT_STORE_FULL),
    ((Unreachable, embedded.EmbeddedError, NoStack), EXIT_UNREACHABLE),
)
"""Each domain error and its exit code; redis.RedisError is 'permission denied' (NOPERM: an ACL
user without the right), else 'unreachable' (or 'refused the password'), naming the URL without
its password."""

DENIED = {
    "submit": "submit jobs",
    "sweep": "submit sweeps",
    "cancel": "cancel jobs",
    "delete": "delete jobs",
    "prune": "prune jobs",
    "workers": "ask the workers what they run (Celery's control channel)",
}
"""What a command that Redis refused was for, in `permission denied: ... may not {what}`."""


def denied(url: str, command: str | None) -> Fail:
    """Redis refused a command to the URL's user. Nothing was written: the first write of every
    changing command is refused before it is applied, inside MULTI/EXEC or alone."""
    what = DENIED.get(command or "") or (f"run `{command}`" if command else "do this")
    return Fail(f"permission denied: Redis user '{acl.user_of(url)}' may not {what}", EXIT_DENIED)


def failure(
    e: Exception, url: str | None, command: str | None = None, r: redis.Redis | None = None
) -> Fail | None:
    """The Fail a domain error becomes, or None for anything else (a bug: let it show).
    `command`: the subcommand that ran, to say what a refused user may not do; `r`, the store's
    connection if one was opened, gives a full store's figures."""
    for types, code in ERRORS:
        if isinstance(e, types):
            return Fail(str(e), code)
    if acl.is_denied(e):
        return denied(url or "", command)
    if space.is_full(e):  # from redis-py, or from kombu sending a task message
        return Fail(space.refused_line(r) if r is not None else f"store full: Redis refused "
                    f"the write (OOM); {space.ADVICE}", EXIT_STORE_FULL)  # fmt: skip
    if isinstance(e, redis.RedisError):
        return unreachable(url or "redis://?", e)
    return None


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


PLAIN_TO_TLS = ("connection reset by peer", "connection closed by server")
"""How a plain redis:// connection to a TLS-only port ends: the server drops it (a restart
may look the same, hence a hint, not a verdict)."""


def unreachable(url: str, e: Exception) -> Fail:
    text = str(e)
    if isinstance(e, redis.AuthenticationError) or any(
        s in text.lower()
        for s in ("wrongpass", "noauth", "invalid password", "invalid username-password")
    ):
        return Fail(f"Redis at {redact(url)} refused the password", EXIT_UNREACHABLE)
    reason = text.splitlines()[0] if text else type(e).__name__
    if url.lower().startswith("redis://") and any(s in text.lower() for s in PLAIN_TO_TLS):
        reason += " (if that Redis serves TLS only, use rediss://)"
    return Fail(f"Redis unreachable at {redact(url)}: {reason}", EXIT_UNREACHABLE)


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
