"""`orchestrator dashboard`: a read-only web dashboard of the job store (issue 14). Jobs, sweeps,
loss curves, samples and workers in the browser, updated live by short polling (see `app`).

    views.py     what each page shows, as dicts (the JSON twins), read through JobStore and
                 orchestrator.leaderboard: the command line's data path, no other
    app.py       the Flask app built by create_app(store, url, password, ...): routes, errors
    guard.py     the Host allow-list and the token (who may read it)
    templates/   Jinja templates, autoescaped
    static/      dashboard.js and .css (ours), uPlot (vendored, MIT; see static/VENDORED.md)

Flask and waitress are the optional extra charrnn[dashboard]; without them the command says what
to install. Loopback by default, with a token made at each start (guard.py); any other address
needs a password and serves HTTP basic auth. Either way only the Host names allowed are answered.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import secrets
import sys
import threading
import webbrowser
from urllib.parse import urlencode

from ..errors import BadInput

PASSWORD_ENV = "CHARRNN_DASHBOARD_PASSWORD"
TOKEN_ENV = "CHARRNN_DASHBOARD_TOKEN"
HOSTS_ENV = "CHARRNN_DASHBOARD_HOSTS"
MISSING = (
    "dashboard needs Flask and waitress, the optional extra charrnn[dashboard]: "
    "pip install flask waitress (or, in a clone, pip install '.[dashboard]')"
)
THREADS = 8
"""waitress threads: each request holds one for a few milliseconds of Redis reads."""


def check_installed() -> None:
    try:
        import flask  # noqa: F401
        import waitress  # noqa: F401
    except ImportError:
        raise BadInput(MISSING) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, password: str | None) -> None:
    """Anything but loopback serves the store's corpora and samples to a network: not without
    a password."""
    if not is_loopback(host) and not password:
        raise BadInput(
            f"binding {host} (not loopback) needs a password: --password or "
            f"{PASSWORD_ENV}; the dashboard then asks for it (HTTP basic auth)"
        )


def make_token(host: str, password: str | None) -> str | None:
    """On loopback without a password: the token every request must show (guard.py), made at
    each start unless CHARRNN_DASHBOARD_TOKEN sets one (as JUPYTER_TOKEN does)."""
    if password or not is_loopback(host):
        return None
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)


def serve(
    url: str,
    host: str = "127.0.0.1",
    port: int = 8265,
    password: str | None = None,
    open_browser: bool = False,
    hosts: tuple[str, ...] = (),
    down_hint: str | None = None,
) -> None:
    """Serve the dashboard until interrupted. BadInput for a missing extra or an unsafe bind.
    `hosts`: Host names answered besides loopback's and `host` (guard.py)."""
    check_installed()
    password = password or None
    check_bind(host, password)
    from waitress import create_server

    from worker.store import JobStore, connect

    from .app import create_app

    token = make_token(host, password)
    hosts = (*hosts, *os.environ.get(HOSTS_ENV, "").split(","))
    app = create_app(JobStore(connect(url)), url, password, token, host, hosts)
    app.config["CHARRNN_DOWN_HINT"] = down_hint  # what the page says to do when Redis is gone
    try:
        server = create_server(app, host=host, port=port, threads=THREADS, ident="charrnn")
    except OSError as e:
        raise BadInput(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{server.effective_port}/"
    if token:  # the address to open, as Jupyter prints it; the token is this run's secret
        address += "?" + urlencode({"token": token})
    print(
        f"dashboard on {address} (read only{', basic auth' if password else ''}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    if open_browser:
        threading.Timer(0.5, open_in_browser, [address]).start()
    # Everything imported so far (Flask, Celery, NumPy...) lives as long as the server: out of the
    # collector's sight, a request that decodes a 1,000-job sweep no longer pays for rescanning it.
    gc.freeze()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def open_in_browser(address: str) -> None:
    """--open: the system's browser, or one line saying there is none (a server, ssh)."""
    try:
        opened = webbrowser.open(address)
    except webbrowser.Error:
        opened = False
    if not opened:
        print(f"no browser to open here: open {address} yourself", file=sys.stderr, flush=True)
