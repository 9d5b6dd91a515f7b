"""Bad parameters are 400s, and Redis's failures are told apart (issue 20, item 9): unreachable,
refusing this dashboard's user, or answering with another error. A real redis-server and the
dashboard as a user starts it; no workers."""

import json
from urllib.parse import quote

import pytest
from test_dashboard import Dashboard

from worker import keys

from conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dash(redis_server):
    d = Dashboard(redis_server.url()).start()
    yield d
    d.stop()


@pytest.mark.parametrize(
    "query",
    ["offset=²", "offset=-1", "offset=1e3", "offset=" + "9" * 30, "offset=", "status=bogus"],
)
def test_a_bad_parameter_is_a_400_not_a_500_nor_unreachable(r, dash, query):
    name, _, value = query.partition("=")
    for path in ("/jobs", "/jobs.json"):
        status, body, _ = dash.get(f"{path}?{name}={quote(value)}")
        assert status == 400, (path, query, body[:300])
        assert b"Traceback" not in body and b"unreachable" not in body
    status, body, _ = dash.get(f"/jobs.json?{name}={quote(value)}")
    assert (
        f"bad {name}" in json.loads(body)["error"] or "no such status" in json.loads(body)["error"]
    )


def test_a_large_offset_past_the_end_is_an_empty_page(r, dash):
    status, body, _ = dash.get("/jobs.json?offset=1000000000000")
    assert status == 200 and json.loads(body)["jobs"] == []


def test_an_error_redis_answers_is_not_called_unreachable(r, dash):
    r.set(keys.jobs_by_time(), "not a sorted set")  # WRONGTYPE for the jobs index
    try:
        status, body, _ = dash.get("/jobs.json")
        assert status == 500
        error = json.loads(body)["error"]
        assert "answered with an error" in error and "WRONGTYPE" in error
        assert "unreachable" not in error
    finally:
        r.delete(keys.jobs_by_time())


def test_a_user_redis_refuses_is_told_from_unreachable(redis_server, r):
    """A user without the read rights (NOPERM), and a wrong password."""
    admin = redis_server.client()
    secret = "limited-user-password-0123456789"
    admin.acl_setuser(
        "limited",
        enabled=True,
        passwords=["+" + secret],
        commands=["+ping", "+hello", "+select", "+client|setname"],
        keys=["*"],
    )
    try:
        limited = f"redis://limited:{secret}@127.0.0.1:{redis_server.port}/0"
        wrong = f"redis://limited:wrong-{secret}@127.0.0.1:{redis_server.port}/0"
        for url, said in (
            (limited, "refused this dashboard's user"),
            (wrong, "refused the password"),
        ):
            d = Dashboard(url).start()
            try:
                status, body, _ = d.get("/jobs.json")
                error = json.loads(body)["error"]
                assert status == 503 and said in error, error
                assert "unreachable" not in error and secret not in error
                status, html, _ = d.get("/jobs")
                assert status == 503 and b"Redis refused" in html
            finally:
                d.stop()
    finally:
        admin.acl_deluser("limited")


def test_a_password_in_the_urls_query_is_not_on_the_error_page(redis_server):
    """Issue 20, item 5: the 503 page named the URL with its `?password=` (Redis down, and Redis
    refusing the password)."""
    down = f"redis://127.0.0.1:{free_port()}/0?password=s3cret-pw"
    wrong = f"redis://127.0.0.1:{redis_server.port}/0?password=wrong-s3cret-pw"
    for url, title in ((down, b"Redis unreachable"), (wrong, b"Redis refused")):
        d = Dashboard(url).start()
        try:
            status, html, _ = d.get("/jobs")
            assert status == 503 and title in html, html[:500]
            assert b"s3cret" not in html and b"password=***" in html
        finally:
            out, err = d.stop()
        assert "s3cret" not in out + err
