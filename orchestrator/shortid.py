"""Short ids, as git and Docker show them: tables print a job's or sweep's id by its first SHORT
characters, and every command that takes an id takes any unique prefix of at least MIN_PREFIX
characters. The one place a prefix becomes an id: Redis walks its own index of job (or sweep)
ids (ZSCAN MATCH prefix*), and only the matches come back."""

from __future__ import annotations

import re

import redis

from worker import keys
from worker.errors import InvalidJobId, NoSuchJob
from worker.store import as_text, validate_job_id

from .errors import AmbiguousId

SHORT = 8
"""Characters of an id shown in tables (--long or --json for the whole id)."""

MIN_PREFIX = 4
"""The shortest prefix taken for an id: shorter ones match too much to be worth a scan."""

SHOWN_MATCHES = 10
"""Matches an ambiguous prefix lists (then `...`)."""

_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]*")
INDEXES = {"job": keys.jobs_by_time, "sweep": keys.sweeps_by_time}


def short(some_id: str | None, long: bool = False) -> str:
    return "" if some_id is None else some_id if long else some_id[:SHORT]


def parse(text: str) -> str:
    """The canonical form of a whole id, or a lowercase prefix of one; InvalidJobId for anything
    else. Checked before anything connects: only hex digits and dashes reach a MATCH pattern."""
    try:
        return validate_job_id(text)
    except InvalidJobId:
        t = str(text).strip().lower()
        if len(t) <= 36 and _PREFIX.fullmatch(t) and len(t.replace("-", "")) >= MIN_PREFIX:
            return t
        raise InvalidJobId(
            f"not a job id: {str(text)[:80]!r} (job and sweep ids are UUIDs; any unique "
            f"prefix of at least {MIN_PREFIX} of their characters names one too)"
        ) from None


def is_whole(some_id: str) -> bool:
    return len(some_id) == 36


def expand(r: redis.Redis, prefix: str, kinds: tuple[str, ...] = ("job", "sweep")) -> str:
    """The one id of these kinds starting with prefix (a whole id is returned as is: whether it
    exists is the command's question). NoSuchJob for none, AmbiguousId for several."""
    if is_whole(prefix):
        return prefix
    found = [
        (kind, as_text(member))
        for kind in kinds
        for member, _ in r.zscan_iter(INDEXES[kind](), match=prefix + "*", count=1000)
    ]
    what = " or ".join(kinds)
    if not found:
        raise NoSuchJob(f"no {what} with an id starting {prefix}")
    if len(found) > 1:
        shown = ", ".join(f"{k} {i}" for k, i in sorted(found)[:SHOWN_MATCHES])
        more = ", ..." if len(found) > SHOWN_MATCHES else ""
        raise AmbiguousId(f"{prefix} is the start of {len(found)} ids: {shown}{more}")
    return found[0][1]
