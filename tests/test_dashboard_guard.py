"""Who may read the dashboard (issue 20, item 4): on loopback a token made at each start, kept in
a cookie after the first visit; a Host allow-list against DNS rebinding. A real redis-server, the
dashboard as a user starts it, raw HTTP (to send any Host header) and headless Chromium."""

import http.client
import json
from base64 import b64encode

import pytest
from test_dashboard import Dashboard, chromium, text, wait_for

pytestmark = pytest.mark.integration


def raw(d: Dashboard, path: str, host: str | None = None, **headers) -> http.client.HTTPResponse:
    """One request, redirects not followed, any Host header."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=20)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", host or f"127.0.0.1:{d.port}")
    for k, v in headers.items():
        c.putheader(k.replace("_", "-"), v)
    c.endheaders()
    resp = c.getresponse()
    resp.body = resp.read()  # type: ignore[attr-defined]
    c.close()
    return resp


def test_loopback_asks_for_the_token_it_printed(redis_server):
    d = Dashboard(redis_server.url()).start()
    try:
        assert d.address.startswith(f"http://127.0.0.1:{d.port}/?token=")
        assert d.token and len(d.token) >= 32
        auth = {"Authorization": f"token {d.token}"}
        # another local user, who knows the port and not the token: nothing
        for path in ("/jobs", "/jobs.json", "/static/dashboard.js", "/workers.json", "/"):
            resp = raw(d, path)
            assert resp.status == 403, path
            assert d.token.encode() not in resp.body
        assert "token" in json.loads(raw(d, "/jobs.json").body)["error"]
        assert raw(d, "/jobs.json?token=wrong").status == 403
        assert raw(d, "/jobs.json", Authorization="token wrong").status == 403
        # a script: the header or ?token= on each request
        assert raw(d, "/jobs.json", **auth).status == 200
        assert raw(d, f"/jobs.json?token={d.token}").status == 200
        # a browser's first visit: a cookie, and on to the same address without the token
        resp = raw(d, f"/jobs?status=queued&token={d.token}")
        assert resp.status == 303 and resp.getheader("Location") == "/jobs?status=queued"
        cookie = resp.getheader("Set-Cookie")
        assert f"={d.token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = cookie.split(";", 1)[0]
        assert raw(d, "/jobs?status=queued", Cookie=jar).status == 200
        assert raw(d, "/jobs", Cookie=jar.split("=", 1)[0] + "=guess").status == 403
        # DNS rebinding: a page of evil.example, its name rebound to 127.0.0.1, sends its Host
        for host in (f"evil.example:{d.port}", "evil.example", f"localhost.evil.example:{d.port}"):
            resp = raw(d, "/jobs.json", host, **auth)
            assert resp.status == 403 and b"not one this dashboard answers to" in resp.body, host
        for host in (f"localhost:{d.port}", f"[::1]:{d.port}", f"LOCALHOST.:{d.port}"):
            assert raw(d, "/jobs.json", host, **auth).status == 200, host
    finally:
        d.stop()
    # a new start, a new token: the old one opens nothing
    again = Dashboard(redis_server.url()).start()
    try:
        assert again.token != d.token
        assert raw(again, "/jobs.json", Authorization=f"token {d.token}").status == 403
    finally:
        again.stop()


def test_the_operator_may_allow_more_host_names(redis_server):
    d = Dashboard(
        redis_server.url(),
        "--allow-host",
        "dash.example",
        env={"CHARRNN_DASHBOARD_HOSTS": "other.example, third.example"},
    ).start()
    try:
        auth = {"Authorization": f"token {d.token}"}
        for host in ("dash.example", "other.example:8000", "third.example"):
            assert raw(d, "/jobs.json", host, **auth).status == 200, host
        assert raw(d, "/jobs.json", "fourth.example", **auth).status == 403
    finally:
        d.stop()


def test_with_a_password_no_token_and_still_the_host_list(redis_server):
    secret = "correct horse battery staple"
    d = Dashboard(
        redis_server.url(), "--host", "0.0.0.0", env={"CHARRNN_DASHBOARD_PASSWORD": secret}
    ).start()
    try:
        assert d.token is None and "token" not in d.address
        basic = {"Authorization": "Basic " + b64encode(b"u:" + secret.encode()).decode()}
        assert raw(d, "/jobs.json", **basic).status == 200
        # listening on every address: reached by any address typed as digits, by no foreign name
        assert raw(d, "/jobs.json", f"10.1.2.3:{d.port}", **basic).status == 200
        assert raw(d, "/jobs.json", "evil.example", **basic).status == 403
    finally:
        d.stop()


@pytest.mark.browser
def test_a_browser_opens_the_printed_address_and_a_rebound_name_gets_nothing(redis_server):
    d = Dashboard(redis_server.url()).start()
    # evil.test resolves to 127.0.0.1 in this browser: what a rebinding attack arranges
    browser = chromium("--host-resolver-rules=MAP evil.test 127.0.0.1")
    try:
        browser.get(d.address)
        assert browser.current_url == f"{d.base}/jobs", "the token left the address bar"
        assert text(browser, "h1") == "Jobs"
        assert d.token not in browser.execute_script("return document.cookie"), "HttpOnly"
        browser.execute_script("window.__loaded_once = true")
        wait_for(  # the page's own polls carry the cookie
            lambda: (
                browser.execute_script(
                    "return performance.getEntriesByType('resource')"
                    ".filter(e => e.name.includes('/jobs.json')).length"
                )
                >= 2
            ),
            20,
            0.2,
            what="two polls of the JSON twin",
        )
        assert browser.execute_script("return document.getElementById('banner').hidden")
        assert browser.execute_script("return window.__loaded_once") is True
        browser.get(f"{d.base}/workers")
        assert text(browser, "h1") == "Workers"
        browser.get(f"http://evil.test:{d.port}/jobs")
        assert "not one this dashboard answers to" in text(browser, "body")
        browser.get(f"http://evil.test:{d.port}/?token={d.token}")  # even with the token
        assert "not one this dashboard answers to" in text(browser, "body")
    finally:
        browser.quit()
        d.stop()
