"""The command line's edge, pure: URL checks and masking, plain text, ages, and the one error
mapping. (The same behaviours end to end, with Redis and workers: test_cli_system.py.)"""

import pytest
import redis

from charrnn.errors import CorpusError
from charrnn.exits import Failure
from orchestrator import control, edge, errors, render
from orchestrator.errors import AmbiguousId, BadInput, EmbeddedError
from worker.errors import NoCheckpoint, NoSuchJob, Unreachable


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:p/w#x?y@host:6379/0", "redis://***@host:6379/0"),
        ("redis://user:p@ss@host/1", "redis://***@host/1"),
        ("rediss://:secret@h:1/0", "rediss://***@h:1/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix://:pw@/run/redis.sock", "unix://***@/run/redis.sock"),
        # redis-py also takes the password from the query, its name percent-decoded
        ("redis://h:6379/0?password=secret", "redis://h:6379/0?password=***"),
        ("redis://h/0?db=1&Pass%77ord=secret&x=1", "redis://h/0?db=1&Pass%77ord=***&x=1"),
        ("unix:///s.sock?db=0&password=se%26cret", "unix:///s.sock?db=0&password=***"),
        (
            "redis://u:a@h/0?ssl_password=k&password=p",
            "redis://***@h/0?ssl_password=***&password=***",
        ),
        ("redis://h/0?password", "redis://h/0?password"),
    ],
)
def test_redact_masks_everything_between_the_slashes_and_the_last_at(url, shown):
    assert edge.redact(url) == shown


@pytest.mark.parametrize(
    "url, word",
    [
        ("http://localhost", "expected redis://"),
        ("localhost:6379", "expected redis://"),
        ("redis://:a/b@h:1/0", "percent-encode"),
        ("redis://:a#b@h:1/0", "percent-encode"),
        ("redis://:a?b@h:1/0", "percent-encode"),
        ("redis://h:port/0", "expected redis://"),
    ],
)
def test_malformed_urls_are_bad_input_without_the_password(url, word):
    with pytest.raises(BadInput, match=word) as e:
        edge.check_url(url)
    assert ":a" not in str(e.value) and "b@" not in str(e.value)


def test_good_urls_pass():
    for url in ("redis://localhost:6379/0", "redis://:p%2Fw@h:1/2", "rediss://h", "unix:///s"):
        assert edge.check_url(url) == url


def test_plain_text_keeps_words_drops_controls():
    assert render.plain("[/oops]") == "[/oops]"
    assert render.plain("a\x1b[31mb\x07\x9bc\x7f") == "a[31mbc"
    assert render.plain("x\n\ty") == "x  y"
    assert render.plain("x\n\ty\x1b", multiline=True) == "x\n\ty"


@pytest.mark.parametrize(
    "raw, seconds",
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7D", 604800), ("2w", 1209600), ("0.5h", 1800)],
)
def test_ages_with_units(raw, seconds):
    assert control.parse_age(raw) == seconds


@pytest.mark.parametrize("raw", ["30", "-5m", "0s", "0", "1y", "m", "", "inf s", "nan s"])
def test_ages_without_a_unit_or_not_positive_are_refused(raw):
    with pytest.raises(BadInput):
        control.parse_age(raw)


@pytest.mark.parametrize(
    "error, code",
    [
        (NoSuchJob("x"), 3),
        (BadInput("x"), 2),
        (CorpusError("x"), 2),
        (NoCheckpoint("x"), 5),
        (Unreachable("x"), 4),
        (errors.NoStack("x"), 4),
        (EmbeddedError("x"), 4),
        (AmbiguousId("x"), 2),
        (redis.exceptions.NoPermissionError("no permissions to run the 'set' command"), 6),
        (redis.ConnectionError("x"), 4),
        (KeyError("x"), None),
    ],
)
def test_one_mapping_from_domain_errors_to_exit_codes(error, code):
    f = errors.failure(error, "redis://:pw@h:1/0")
    assert (f and f.exit_code) == code


@pytest.mark.parametrize(
    "url, command, line",
    [
        ("redis://viewer:p@w@h:1/0", "submit", "Redis user 'viewer' may not submit jobs"),
        ("rediss://viewer:pw@h:1/0", "cancel", "Redis user 'viewer' may not cancel jobs"),
        ("unix://:pw@/run/redis.sock", "delete", "Redis user 'default' may not delete jobs"),
        ("redis://h:1/0", "status", "Redis user 'default' may not run `status`"),
    ],
)
def test_a_refused_command_names_the_user_and_what_it_may_not_do(url, command, line):
    f = errors.failure(redis.exceptions.NoPermissionError("x"), url, command)
    assert f is not None and f.exit_code == 6
    assert f.message == f"permission denied: {line}" and "pw" not in f.message


def test_both_command_lines_fail_in_one_style():
    """The orchestrator's Fail is the charrnn command's Failure: each instance carries its own
    exit code (click declares one per class), and the orchestrator's line is made printable."""
    a, b = Failure("bad"), errors.Fail("gone\x1b[31m\nred", errors.EXIT_UNKNOWN_JOB)
    assert isinstance(b, Failure) and (a.exit_code, b.exit_code) == (2, 3)
    assert Failure("x", 130).exit_code == 130 and Failure("y").exit_code == 2
    assert b.message == "gone[31m red"


def test_times_are_utc_and_say_so(monkeypatch):
    """One convention for times in both command line and dashboard (issue 22, item 5): UTC,
    named, whatever the machine's time zone."""
    import time as _time

    from orchestrator import render

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: a local time would show 05:30
    _time.tzset()
    try:
        assert render.when(86400) == "1970-01-02 00:00:00 UTC"
    finally:
        monkeypatch.delenv("TZ")
        _time.tzset()
