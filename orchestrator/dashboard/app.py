"""The dashboard's web app: server-rendered pages and a JSON twin of each (`/job/ID` and
`/job/ID.json`), read only (GET alone is routed), built by `create_app` so a test starts it on a
free port against a real Redis.

Live updates are short polling: each page's script fetches its own JSON twin every few seconds and
redraws in place. Not server-sent events, because nothing would push them: the workers write the
store in fenced Lua scripts and publish nothing, so an SSE endpoint would itself poll Redis, once
per open page, holding a server thread for as long as the page is open. Polling the twin costs the
same Redis reads, holds no connection, passes through basic auth and proxies unchanged, and
recovers by itself when Redis comes back (the next poll simply succeeds).

Escaping: Jinja autoescapes every template (`.html`), data for the charts goes into
`<script type="application/json">` through `tojson` (which escapes <, > and &), and the scripts
write text with `textContent`, never `innerHTML`. A Content-Security-Policy allows scripts from
this server only, so a sample that holds markup could not run even if it were inserted as HTML.
"""

from __future__ import annotations

import hmac
import json
import math
import time

import redis
from flask import Flask, Response, current_app, jsonify, redirect, render_template, request, url_for
from flask.json.provider import DefaultJSONProvider

from worker.errors import InvalidJobId, NoCheckpoint, NoSuchJob
from worker.store import JobStore, Status, redact

from . import guard, views

POLL_MS = {"jobs": 3000, "job": 1000, "sweeps": 5000, "sweep": 2000, "workers": 3000}
"""How often each page fetches its JSON twin. A job page polls fastest: a new sample should show
within a second or two of being written."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class StrictJSON(DefaultJSONProvider):
    """JSON a browser can parse: a diverged job's NaN or infinite loss goes out as the string
    "NaN" or "Infinity" (Python's json would write the bare tokens, which JSON.parse refuses)."""

    sort_keys = False

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("default", self.default)
        try:
            return json.dumps(obj, allow_nan=False, **kwargs)
        except ValueError:
            return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else "Infinity" if obj > 0 else "-Infinity"
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class NotFound(Exception):
    """An unknown route, id or checkpoint: a 404 page, never a traceback."""


class BadRequest(Exception):
    """A query parameter the page cannot take (an offset that is not a number): 400."""


MAX_OFFSET = 10**12
"""Past any real index, and far inside the 64-bit range Redis's ZREVRANGE takes."""


def count_arg(name: str) -> int:
    """`?offset=` and the like: ASCII digits alone ('²' passes str.isdigit, not int), at most
    MAX_OFFSET."""
    raw = request.args.get(name, "0")
    if not (raw.isascii() and raw.isdigit() and int(raw) <= MAX_OFFSET):
        raise BadRequest(f"bad {name} {raw[:40]!r}: a whole number from 0 to {MAX_OFFSET}")
    return int(raw)


def json_url(offset: str, query: dict[str, str]) -> str:
    """The jobs page's JSON twin, with the same filters."""
    from urllib.parse import urlencode

    return "/jobs.json?" + urlencode({"offset": offset, **query})


def create_app(
    store: JobStore,
    url: str,
    password: str | None = None,
    token: str | None = None,
    bind: str = "127.0.0.1",
    hosts: tuple[str, ...] = (),
) -> Flask:
    """The app over one job store. `url` is shown (redacted) when Redis is unreachable. With a
    password every request needs HTTP basic auth (any user name, that password); with a token,
    the token (guard.py). Only the Host names of guard.allowed_hosts(bind, hosts) are answered."""
    app = Flask(__name__)
    app.json = StrictJSON(app)
    app.jinja_env.filters["fmt"] = fmt
    app.jinja_env.filters["when"] = when
    app.config.update(
        CHARRNN_STORE=store,
        CHARRNN_WHERE=redact(url),
        CHARRNN_PASSWORD=password,
        CHARRNN_TOKEN=token,
        CHARRNN_BIND=bind,
        CHARRNN_HOSTS=guard.allowed_hosts(bind, hosts),
    )
    app.before_request(guard.check_host)
    app.before_request(guard.check_token)
    app.before_request(auth)
    app.after_request(headers)
    for rule, endpoint, view in ROUTES:
        app.add_url_rule(rule, endpoint, view, methods=["GET"])
    for errors, handler in HANDLERS:
        for e in errors:
            app.register_error_handler(e, handler)
    return app


def store() -> JobStore:
    return current_app.config["CHARRNN_STORE"]


# --- around every request --------------------------------------------------------------------
def auth() -> Response | None:
    password = current_app.config["CHARRNN_PASSWORD"]
    if password is None:
        return None
    given = request.authorization
    if (
        given is not None
        and given.type == "basic"
        and given.password is not None
        and hmac.compare_digest(given.password.encode(), password.encode())
    ):
        return None
    return Response(
        "authentication required\n",
        401,
        {
            "WWW-Authenticate": 'Basic realm="charrnn dashboard", charset="UTF-8"',
            "Content-Type": "text/plain; charset=utf-8",
        },
    )


def headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if resp.mimetype == "application/json" or resp.mimetype == "text/html":
        resp.headers["Cache-Control"] = "no-store"
    return resp


def page(
    template: str,
    name: str,
    data: dict,
    json_url: str,
    boot: dict | None = None,
    poll_ms: int | None = None,
    **extra,
):
    """`boot`: the little the page's script needs before its first poll (a chart's points),
    embedded as JSON; the rest it reads from the twin."""
    return render_template(
        template,
        page=name,
        data=data,
        json_url=json_url,
        poll_ms=poll_ms or POLL_MS[name],
        boot=boot or {},
        **extra,
    )


def split(raw: str) -> tuple[str, bool]:
    """'ID.json' -> ('ID', True); the id itself is validated by the store functions."""
    return (raw[:-5], True) if raw.endswith(".json") else (raw, False)


def wants_json() -> bool:
    return request.path.endswith(".json")


# --- the pages, each with its JSON twin --------------------------------------------------------
def index():
    return redirect(url_for("jobs_list"))


def jobs_list():
    status = request.args.get("status") or None
    if status not in (None, *[s.value for s in Status]):
        raise BadRequest(f"no such status {str(status)[:40]!r}")
    tag = request.args.get("tag") or None
    offset = count_arg("offset")
    data = views.jobs_page(store(), status, tag, offset)
    if wants_json():
        return jsonify(data)
    q = {k: v for k, v in (("status", status), ("tag", tag)) if v}
    return page(
        "jobs.html",
        "jobs",
        data,
        json_url(str(offset), q),
        statuses=[s.value for s in Status],
        query=q,
    )


def job(raw):
    job_id, as_json = split(raw)
    if as_json:  # a live page asks for what is new since its last poll (views.job_view)
        since = count_arg("samples_since"), count_arg("history_since")
        return jsonify(views.job_view(store(), job_id, *since))
    data = views.job_view(store(), job_id)
    return page(
        "job.html",
        "job",
        data,
        url_for("job", raw=data["job"]["job_id"] + ".json"),
        boot={k: data[k] for k in ("curves", "samples_written", "history_rows", "finished")},
    )


def checkpoint(job_id, which):
    raw, iteration = views.verified_checkpoint(store(), job_id, which)
    name = f"charrnn-{job_id[:8]}-{which}-{iteration}.npz"
    return Response(
        raw,
        200,
        {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Length": str(len(raw)),
        },
    )


def sweeps_list():
    data = {"sweeps": views.sweeps_list(store())}
    if wants_json():
        return jsonify(data)
    return page("sweeps.html", "sweeps", data, url_for("sweeps_json"))


def sweep(raw):
    sweep_id, as_json = split(raw)
    data = views.sweep_view(store(), sweep_id)
    if as_json:
        return jsonify(data)
    rows = None if request.args.get("all") else views.LEADERBOARD_ROWS
    return page(
        "sweep.html",
        "sweep",
        data,
        url_for("sweep", raw=data["sweep_id"] + ".json"),
        boot={"scatter": data["scatter"], "finished": data["finished"]},
        poll_ms=10000 if len(data["jobs"]) > views.BIG_SWEEP else None,
        curves_url=url_for("sweep_curves", sweep_id=data["sweep_id"]),
        rows=rows,
    )


def sweep_curves(sweep_id):
    return jsonify(views.sweep_curves(store(), sweep_id))


def workers():
    data = views.workers_view(store())
    if wants_json():
        return jsonify(data)
    return page("workers.html", "workers", data, url_for("workers_json"))


ROUTES = (
    ("/", "index", index),
    ("/jobs", "jobs_list", jobs_list),
    ("/jobs.json", "jobs_json", jobs_list),
    ("/job/<raw>", "job", job),
    ("/job/<job_id>/checkpoint/<which>", "checkpoint", checkpoint),
    ("/sweeps", "sweeps_list", sweeps_list),
    ("/sweeps.json", "sweeps_json", sweeps_list),
    ("/sweep/<raw>", "sweep", sweep),
    ("/sweep/<sweep_id>/curves.json", "sweep_curves", sweep_curves),
    ("/workers", "workers", workers),
    ("/workers.json", "workers_json", workers),
)
"""Every page (GET only: nothing here changes a job)."""


# --- errors: a page (or JSON) with the reason, never a traceback ------------------------------
def failure(code: int, message: str, title: str, retry: bool = False):
    if wants_json():
        return jsonify({"error": message}), code
    return render_template("error.html", code=code, title=title, message=message, retry=retry), code


def not_found(e):
    return failure(404, str(e), "Not found")


def no_route(e):
    return failure(
        e.code, e.description if e.code == 405 else f"no page at {request.path[:200]}", e.name
    )


def bad_checkpoint(e):
    # a stored record that does not verify, or is above the pool's limit: refused, as any bad
    # input is (the standards: HTTP 4xx), not a fault of the dashboard's
    return failure(422, str(e), "Checkpoint refused")


def internal(e):
    return failure(500, "internal error; the dashboard's log has the details", "Internal error")


def bad_request(e):
    return failure(400, str(e), "Bad request")


def redis_failed(e):
    """Told apart, as the command line tells them (orchestrator/errors.py): Redis down or
    loading (503, the page retries by itself), Redis refusing this dashboard's user (a wrong
    password, or NOPERM: the operator's to fix, 503 too), anything else Redis answered (500)."""
    reason = (str(e).splitlines() or [type(e).__name__])[0][:300].rstrip(". ")
    where = current_app.config["CHARRNN_WHERE"]
    if isinstance(e, (redis.AuthenticationError, redis.exceptions.AuthorizationError)):
        return failure(503, f"Redis at {where} refused the password: {reason}", "Redis refused")
    if isinstance(e, redis.exceptions.NoPermissionError):
        return failure(
            503,
            f"Redis at {where} refused this dashboard's user: {reason}. The dashboard needs "
            "the viewer role's read rights (see the security section).",
            "Redis refused",
        )
    if isinstance(e, (redis.ConnectionError, redis.TimeoutError)):
        hint = current_app.config.get("CHARRNN_DOWN_HINT")
        return failure(
            503,
            f"Redis unreachable at {where}: {reason}{'; ' + hint if hint else ''}. "
            "This page retries by itself.",
            "Redis unreachable",
            retry=True,
        )
    return failure(500, f"Redis at {where} answered with an error: {reason}", "Redis error")


HANDLERS = (
    ((NotFound, NoSuchJob, InvalidJobId, NoCheckpoint), not_found),
    ((404, 405), no_route),
    ((views.BadCheckpoint,), bad_checkpoint),
    ((500,), internal),
    ((BadRequest,), bad_request),
    ((redis.RedisError,), redis_failed),
)


def fmt(v, digits: int = 4) -> str:
    """As the command line prints numbers: '-' for none, floats to `digits` places."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else _finite(v)  # as the script shows it
    return str(v)


def when(t) -> str:
    """A timestamp in UTC, to the second (the page and its script agree on UTC)."""
    return "-" if not t else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
