"""Who may read the dashboard: a Host allow-list against DNS rebinding, and on loopback a token
against the machine's other users (issue 20, item 4). As Jupyter's server guards itself: a page of
a site whose name is rebound to 127.0.0.1 sends its own name as Host, so only the names this server
is reached by are answered; and loopback is open to every local user, so a secret made at each
start, printed in the address `orchestrator dashboard` shows (`?token=...`), is asked for.

A visit with the right `?token=` gets it in a cookie (HttpOnly: no script reads it; SameSite=Strict:
no other site's page sends it) and is sent to the same address without it, so the token leaves the
address bar and the history. Scripts and other clients may send `Authorization: token ...` (the
header Jupyter takes) or `?token=` on each request instead. With a password (basic auth, any
address) there is no token: the password is the secret.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlencode

from flask import Response, current_app, jsonify, redirect, request
from werkzeug.wrappers import Response as BaseResponse

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")


def host_name(header: str) -> str:
    """'Example.COM.:8265' -> 'example.com', '[::1]:80' -> '::1'."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The loopback names, the address listened on (unless a wildcard) and the operator's own
    names (--allow-host, CHARRNN_DASHBOARD_HOSTS)."""
    names = {*LOOPBACK_NAMES, *(host_name(h) for h in extra if h.strip())}
    if bind not in WILDCARDS:
        names.add(host_name(bind))
    return frozenset(names)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def check_host() -> Response | None:
    """403 for a Host not on the list. Listening on a wildcard, an address typed as digits is
    answered too: a rebound name is a name, never an IP literal."""
    allowed, bind = current_app.config["CHARRNN_HOSTS"], current_app.config["CHARRNN_BIND"]
    name = host_name(request.host or "")
    if name in allowed or (bind in WILDCARDS and _is_ip(name)):
        return None
    return refuse(
        f"Host {name[:100]!r} is not one this dashboard answers to; an operator who reaches it "
        "by that name adds it with --allow-host (or CHARRNN_DASHBOARD_HOSTS)"
    )


def cookie_name() -> str:
    """Browsers keep cookies by host, not port: one name per dashboard's port."""
    return f"charrnn-dashboard-{request.host.rsplit(':', 1)[-1] if ':' in request.host else 80}"


def check_token() -> BaseResponse | None:
    token = current_app.config["CHARRNN_TOKEN"]
    if token is None:
        return None
    given = request.args.get("token")
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "token ":
        given = given or header[6:].strip()
    if given is not None:
        if not hmac.compare_digest(given.encode(), token.encode()):
            return refuse("wrong token: open the address `orchestrator dashboard` printed")
        if "token" in request.args and not request.path.endswith(".json"):
            return remember(token)
        return None
    cookie = request.cookies.get(cookie_name(), "")
    if cookie and hmac.compare_digest(cookie.encode(), token.encode()):
        return None
    return refuse(
        "this dashboard asks for its token: open the address `orchestrator dashboard` printed "
        "(http://127.0.0.1:PORT/?token=...), or send the header 'Authorization: token ...'"
    )


def remember(token: str) -> BaseResponse:
    """The cookie, and the same address without the token (303: a GET)."""
    rest = [(k, v) for k, vs in request.args.lists() if k != "token" for v in vs]
    resp = redirect(request.path + ("?" + urlencode(rest) if rest else ""), 303)
    resp.set_cookie(cookie_name(), token, httponly=True, samesite="Strict", path="/")
    return resp


def refuse(message: str) -> Response:
    if request.path.endswith(".json"):
        resp = jsonify({"error": message})
    else:
        resp = Response(message + "\n", mimetype="text/plain")
    resp.status_code = 403
    return resp
