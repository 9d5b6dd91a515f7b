"""The dashboard (issue 14) in a real browser: a real redis-server, two real Celery workers, the
dashboard started as a user starts it (`orchestrator dashboard`, a subprocess on a free port), and
headless Chromium driven by selenium, checking what a person would see."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode

import pytest

from worker import keys

from conftest import (
    REPO,
    RedisServer,
    free_port,
    make_corpus,
    run_cli,
    run_cli_without,
    submit,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.integration

TINY = ["--num-layers", "1", "--hidden-size", "16", "--sample-length", "40"]
ENDED = ("succeeded", "failed", "cancelled", "stopped")
PAYLOAD = (
    '<script>window.__pwned = "sample"</script>'
    '<img src="x" onerror="window.__pwned = \'img\'"> & </pre>'
)


class Dashboard:
    """`orchestrator dashboard` in a subprocess, on a free port."""

    def __init__(self, url: str, *args: str, env: dict | None = None):
        self.url, self.args, self.port = url, args, free_port()
        self.env = dict(os.environ, CHARRNN_REDIS_URL=url, **(env or {}))
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "dashboard",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(
            lambda: self.answers() or self.proc.poll() is not None,
            20,
            what="the dashboard to listen",
        )
        assert self.proc.poll() is None, self.proc.communicate()[1]
        self.address = self.printed()
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.address).query)
        self.token = query["token"][0] if "token" in query else None
        return self

    def printed(self) -> str:
        """The address the command printed (with this run's token on loopback)."""
        for line in self.proc.stderr:
            if line.startswith("dashboard on "):
                return line.split()[2]
        raise AssertionError("the dashboard printed no address")

    def link(self, path: str) -> str:
        """An address a person opens: the token on it (the dashboard keeps it in a cookie and
        sends the browser on to the same address without it)."""
        if not self.token:
            return self.base + path
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path}{sep}{urllib.parse.urlencode({'token': self.token})}"

    def get(self, path: str, auth: tuple[str, str] | None = None, **headers) -> tuple:
        """A script's request: the token in the header Jupyter's clients send too."""
        if self.token:
            headers.setdefault("Authorization", f"token {self.token}")
        return get(self.base + path, auth, **headers)

    def answers(self) -> bool:
        try:
            get(self.base + "/jobs.json")
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> tuple[str, str]:
        self.proc.terminate()
        try:
            return self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()


def get(url: str, auth: tuple[str, str] | None = None, **headers) -> tuple:
    req = urllib.request.Request(url, headers=headers)
    if auth:
        req.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


@pytest.fixture(scope="module")
def dash(redis_server):
    d = Dashboard(redis_server.url()).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def chromium(*args: str):
    """Headless Chromium driven by selenium; `args`: more command-line switches."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1100",
        *args,
    ):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts
    )
    driver.set_page_load_timeout(30)
    return driver


def css(browser, selector):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


def text(browser, selector) -> str:
    """What a person sees in the first element matching (read in one call: the page's script
    replaces elements while it updates, so a held element can go stale)."""
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector
    )


def texts(browser, selector) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", selector
    )


def attr(browser, selector, name):
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])",
        selector,
        name,
    )


def row_ids(browser, table: str) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.jobId)",
        f"{table} tbody tr[data-job-id]",
    )


def page_errors(browser) -> list[str]:
    """Errors the page's scripts raised (a broken script would leave the page silently static)."""
    return [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]


@pytest.mark.slow
@pytest.mark.browser
def test_jobs_table_lists_the_submitted_jobs_and_updates_them_live(
    pool, r, redis_server, corpus_file, dash, browser
):
    url = redis_server.url()
    ids = [
        submit(
            url,
            corpus_file,
            *TINY,
            "--iterations",
            "150",
            "--eval-every",
            "50",
            "--sample-every",
            "50",
            "--name",
            f"listed-{i}",
        )
        for i in range(2)
    ]
    browser.get(dash.link("/jobs"))
    browser.execute_script("window.__loaded_once = true")
    wait_for(
        lambda: set(ids) <= set(row_ids(browser, "#jobs-table")),
        10,
        0.2,
        what="the submitted jobs in the table",
    )
    shown = row_ids(browser, "#jobs-table")
    assert shown.index(ids[1]) < shown.index(ids[0]), "newest first"
    for j in ids:
        wait_status(r, j, ENDED)
    # the rows turn to succeeded without a reload (the page polls its JSON twin)
    wait_for(
        lambda: all("succeeded" in text(browser, f'tr[data-job-id="{j}"]') for j in ids),
        10,
        0.2,
        what="the rows to show succeeded",
    )
    assert browser.execute_script("return window.__loaded_once") is True
    assert not page_errors(browser)
    # filters, as `orchestrator list --status/--tag`, and the JSON twin
    browser.get(dash.link("/jobs?status=succeeded"))
    assert set(ids) <= set(row_ids(browser, "#jobs-table"))
    browser.get(dash.link("/jobs?status=running"))
    assert not set(ids) & set(row_ids(browser, "#jobs-table"))
    listed = json.loads(run_cli("list", "--json", url=url, check=True).stdout)
    status, body, _ = dash.get("/jobs.json")
    assert status == 200
    assert [j["job_id"] for j in json.loads(body)["jobs"]][: len(listed)] == [
        j["job_id"] for j in listed
    ]
    # the checkpoint download is the bytes `orchestrator checkpoint` writes, verified
    out = os.path.join(os.path.dirname(str(corpus_file)), "ck.npz")
    run_cli("checkpoint", ids[0], "-o", out, url=url, check=True)
    for which in ("latest", "best"):
        status, raw, headers = dash.get(f"/job/{ids[0]}/checkpoint/{which}")
        assert status == 200 and headers["Content-Disposition"].startswith("attachment")
        if which == "latest":
            assert raw == open(out, "rb").read()
    r.hset(keys.checkpoint(ids[0], "best"), "sha256", "0" * 64)  # a corrupted record
    status, raw, _ = dash.get(f"/job/{ids[0]}/checkpoint/best")
    assert status == 422 and b"does not match its stored sha256" in raw


@pytest.mark.slow
@pytest.mark.browser
def test_job_page_chart_grows_and_samples_appear_without_a_reload(
    pool, r, redis_server, corpus_file, dash, browser
):
    url = redis_server.url()
    job_id = submit(
        url,
        corpus_file,
        *TINY,
        "--iterations",
        "40000",
        "--eval-every",
        "1000",
        "--sample-every",
        "1500",
        "--checkpoint-every",
        "5000",
    )
    try:
        browser.get(dash.link(f"/job/{job_id}"))
        browser.execute_script("window.__loaded_once = true")

        def points():
            return int(attr(browser, "#loss-chart", "data-points") or 0)

        first = wait_for(points, 60, 0.2, what="points on the loss chart")
        assert css(browser, "#loss-chart canvas"), "uPlot drew no canvas"
        wait_for(lambda: points() > first, 60, 0.2, what="the loss chart to grow")

        # a sample shows within a few seconds of being written
        def count():
            return int(r.hget(keys.job(job_id), "samples_written") or 0)

        before = count()
        wait_for(lambda: count() > before, 60, 0.05, what="a new sample in the store")
        written = time.monotonic()
        newest = json.loads(r.lindex(keys.samples(job_id), -1))
        wait_for(
            lambda: any(
                f"iteration {newest['iteration']}" in t
                for t in texts(browser, "#samples figure.sample")
            ),
            5,
            0.1,
            what="the new sample on the page",
        )
        assert time.monotonic() - written < 5
        assert "started\thost=" in text(browser, "#events tbody")
        # events and status follow live too
        run_cli("cancel", job_id, url=url, check=True)
        wait_for(
            lambda: text(browser, '[data-field="status"]') == "cancelled",
            20,
            0.2,
            what="the status to turn cancelled on the page",
        )
        assert "cancelled" in text(browser, "#events tbody").split("cancel_requested", 1)[1]
        assert browser.execute_script("return window.__loaded_once") is True, "the page reloaded"
        assert not page_errors(browser)
    finally:
        run_cli("cancel", job_id, url=url)
        wait_status(r, job_id, ENDED)


@pytest.mark.slow
@pytest.mark.browser
def test_sweep_page_ranks_its_jobs_as_compare_does(
    pool, r, redis_server, corpus_file, dash, browser
):
    url = redis_server.url()
    p = run_cli(
        "sweep",
        "--json",
        "--corpus",
        str(corpus_file),
        "--grid",
        "hidden_size=8,16",
        "--grid",
        "learning_rate=0.05,0.005",
        "--iterations",
        "200",
        "--num-layers",
        "1",
        "--eval-every",
        "50",
        "--sample-every",
        "100",
        "--sample-length",
        "30",
        url=url,
        check=True,
    )
    out = json.loads(p.stdout)
    sid, ids = out["sweep_id"], out["job_ids"]
    browser.get(dash.link(f"/sweep/{sid}"))
    assert set(row_ids(browser, "#leaderboard")) == set(ids)
    for j in ids:
        wait_status(r, j, ENDED, timeout=180)
    compare = json.loads(run_cli("compare", sid, "--json", url=url, check=True).stdout)
    ranked = [row["job_id"] for row in compare["jobs"]]
    wait_for(
        lambda: row_ids(browser, "#leaderboard") == ranked,
        10,
        0.2,
        what="the leaderboard in compare's order",
    )
    assert json.loads(dash.get(f"/sweep/{sid}.json")[1])["varying"] == compare["varying"]
    figs = browser.execute_script(
        "return [...document.querySelectorAll('figure.scatter')]"
        ".map(f => [f.dataset.param, f.dataset.points])"
    )
    assert figs == [["hidden_size", "4"], ["learning_rate", "4"]]
    wait_for(
        lambda: attr(browser, "#curves-train", "data-lines") == "4",
        10,
        0.2,
        what="the four loss curves",
    )
    # each chart has a legend naming its lines by what varies (issue 21: it had none)
    for chart in ("#curves-train", "#curves-val"):
        legend = [e.text for e in css(browser, f"{chart} .u-legend .u-series")]
        assert sorted(t for t in legend if "hidden=" in t) == sorted(
            f"hidden={h} lr={lr}" for h in (8, 16) for lr in (0.05, 0.005)
        ), legend
    assert len(css(browser, "#highlight option")) == 5
    assert not page_errors(browser)
    browser.get(dash.link("/sweeps"))
    assert sid in text(browser, "#sweeps-table")


@pytest.mark.slow
@pytest.mark.browser
def test_markup_in_samples_and_names_shows_as_text_and_runs_nothing(
    pool, r, redis_server, tmp_path, dash, browser
):
    url = redis_server.url()
    corpus = tmp_path / "markup.txt"
    corpus.write_text("<script>alert('corpus')</script> <b onmouseover=alert(1)>x</b>\n" * 200)
    name = "<script>window.__pwned = 'name'</script>"
    job_id = submit(
        url,
        corpus,
        *TINY,
        "--iterations",
        "6000",
        "--eval-every",
        "500",
        "--sample-every",
        "200",
        "--name",
        name,
    )
    try:
        browser.get(dash.link(f"/job/{job_id}"))
        # written as the trainer writes a sample: pushed, and the count bumped, together
        with r.pipeline(transaction=True) as p:
            p.rpush(keys.samples(job_id), json.dumps({"iteration": 1, "text": PAYLOAD}))
            p.hincrby(keys.job(job_id), "samples_written", 1)
            p.execute()
        wait_for(
            lambda: PAYLOAD in text(browser, "#samples"),
            10,
            0.2,
            what="the sample with markup, as text, drawn by the page's script",
        )
        for _ in range(2):
            assert browser.execute_script("return window.__pwned") is None
            assert not css(browser, "#samples script, #samples img, #samples b")
            assert name in text(browser, "h1")
            browser.refresh()  # and as the server renders it
            wait_for(lambda: PAYLOAD in text(browser, "#samples"), 10, 0.2, what="the sample")
        browser.get(dash.link("/jobs"))
        assert name in text(browser, f'tr[data-job-id="{job_id}"]')
        assert browser.execute_script("return window.__pwned") is None
    finally:
        run_cli("cancel", job_id, url=url)
        wait_status(r, job_id, ENDED)


@pytest.mark.browser
def test_a_bad_or_unknown_id_is_a_404_page(r, dash, browser):
    unknown = "00000000-0000-4000-8000-000000000000"
    for path in (
        "/job/not-a-job-id",
        f"/job/{unknown}",
        "/sweep/../../etc",
        f"/sweep/{unknown}",
        f"/job/{unknown}/checkpoint/latest",
        "/job/<script>",
        "/nowhere",
    ):
        status, body, _ = dash.get(path)
        assert status == 404, path
        assert b"Traceback" not in body and b"<script>" not in body
    status, body, _ = dash.get(f"/job/{unknown}.json")
    assert status == 404 and "no job with id" in json.loads(body)["error"]
    browser.get(dash.link("/job/not-a-job-id"))
    assert text(browser, "h1") == "404 Not found"
    assert "not a job id" in text(browser, "#error-message")


def test_only_gets_are_served(r, dash):
    req = urllib.request.Request(
        dash.base + "/jobs",
        data=b"x",
        method="POST",
        headers={"Authorization": f"token {dash.token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def test_off_loopback_needs_a_password_and_basic_auth(redis_server):
    url = redis_server.url()
    p = run_cli("dashboard", "--host", "0.0.0.0", "--port", str(free_port()), url=url)
    assert p.returncode == 2 and "needs a password" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    secret = "correct horse battery staple"
    d = Dashboard(url, "--host", "0.0.0.0", env={"CHARRNN_DASHBOARD_PASSWORD": secret}).start()
    try:
        assert d.get("/jobs")[0] == 401
        assert d.get("/static/dashboard.js")[0] == 401
        assert d.get("/jobs", auth=("anyone", "wrong"))[0] == 401
        status, _, headers = d.get("/jobs")
        assert headers["WWW-Authenticate"].startswith("Basic ")
        assert d.get("/jobs", auth=("anyone", secret))[0] == 200
        assert d.get("/jobs.json", auth=("anyone", secret))[0] == 200
    finally:
        out, err = d.stop()
    assert secret not in out + err, "the password was printed"


@pytest.mark.browser
def test_redis_down_the_page_says_so_and_recovers(tmp_path, browser):
    server = RedisServer(str(tmp_path / "redis")).start()
    d = Dashboard(server.url()).start()
    try:
        browser.get(d.link("/jobs"))
        assert d.get("/jobs")[0] == 200
        server.stop(kill=True)
        status, body, _ = d.get("/jobs")
        assert status == 503 and b"Redis unreachable" in body
        assert server.password.encode() not in body
        wait_for(
            lambda: "Redis unreachable" in text(browser, "#banner"),
            15,
            0.2,
            what="the live page to say Redis is unreachable",
        )
        server.start()
        wait_for(
            lambda: browser.execute_script("return document.getElementById('banner').hidden"),
            15,
            0.2,
            what="the banner to go when Redis is back",
        )
        assert d.get("/jobs")[0] == 200
        assert d.proc.poll() is None, "the dashboard died with Redis"
    finally:
        d.stop()
        server.stop(kill=True)


def test_without_the_extra_the_command_says_what_to_install(redis_server):
    env = dict(os.environ, CHARRNN_REDIS_URL=redis_server.url())
    p = run_cli_without("flask", "dashboard", env=env)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "pip install" in p.stderr


def test_jobs_pages_cover_the_index_once_newest_first_with_filters(r):
    """Pages of the jobs table, read as `JobStore.list` reads (no workers: jobs only recorded)."""
    from charrnn import Config
    from orchestrator.dashboard import views
    from worker.spec import JobSpec
    from worker.store import JobStore, new_job_id

    store = JobStore(r)
    sha, _ = store.put_corpus(make_corpus(0, 200))
    ids = []
    for i in range(120):
        job_id = new_job_id()
        store.create(
            job_id,
            JobSpec(
                corpus_sha256=sha,
                config=Config(),
                total_iterations=10,
                tags=("even",) if i % 2 == 0 else (),
            ),
        )
        if i % 3 == 0:
            store.cancel(job_id)  # queued -> cancelled
        ids.append(job_id)

    def walk(**filters) -> list[str]:
        out, offset = [], 0
        while offset is not None:
            page = views.jobs_page(store, offset=offset, limit=50, **filters)
            assert len(page["jobs"]) <= 50
            out += [j["job_id"] for j in page["jobs"]]
            offset = page["next"]
        return out

    newest_first = [j["job_id"] for j in store.list(limit=1000)]
    assert walk() == newest_first and len(newest_first) == 120
    assert walk(status="cancelled") == [
        j["job_id"] for j in store.list(status="cancelled", limit=1000)
    ]
    both = walk(status="cancelled", tag="even")
    assert both == [j["job_id"] for j in store.list(status="cancelled", tag="even", limit=1000)]
    assert len(both) == 20 and set(both) == {ids[i] for i in range(0, 120, 6)}
    assert walk(tag="nobody") == []


@pytest.mark.browser
def test_a_diverged_loss_is_valid_json_and_shows_on_the_live_page(r, dash, browser):
    """NaN and infinity are not JSON: the twins send them as strings the page shows."""
    from charrnn import Config
    from worker.spec import JobSpec
    from worker.store import JobStore, new_job_id

    store = JobStore(r)
    sha, _ = store.put_corpus(make_corpus(0, 200))
    job_id = new_job_id()
    store.create(job_id, JobSpec(corpus_sha256=sha, config=Config(), total_iterations=10))
    store.cancel(job_id)  # ended: no worker's reaper takes a record without a message for lost
    r.hset(keys.job(job_id), mapping={"val_loss": "nan", "best_val_loss": "inf"})
    r.rpush(keys.history(job_id), json.dumps([10, float("nan"), float("nan")]))

    def strict(path):
        status, body, _ = dash.get(path)
        assert status == 200, path

        def refuse(token):
            raise AssertionError(f"{path}: bare {token} is not JSON")

        return json.loads(body, parse_constant=refuse)

    assert strict(f"/job/{job_id}.json")["job"]["val_loss"] == "NaN"
    assert strict("/jobs.json")["jobs"][0]["best_val_loss"] == "Infinity"
    browser.get(dash.link("/jobs"))
    wait_for(
        lambda: browser.execute_script(
            "return document.querySelector('#jobs-table tbody tr') !== null"
        ),
        5,
        0.1,
        what="rows",
    )
    time.sleep(4)  # a poll or more: a JSON the script cannot parse shows
    assert browser.execute_script("return document.getElementById('banner').hidden")
    assert "NaN" in text(browser, f'tr[data-job-id="{job_id}"]')
    browser.get(dash.link(f"/job/{job_id}"))
    time.sleep(2)
    assert browser.execute_script("return document.getElementById('banner').hidden")
    assert text(browser, '[data-field="val_loss"]') == "NaN"
    assert not page_errors(browser)


@pytest.mark.slow
@pytest.mark.browser
def test_workers_page_lists_idle_workers_and_what_each_runs(
    pool, r, redis_server, corpus_file, dash, browser
):
    host = __import__("socket").gethostname()
    browser.get(dash.link("/workers"))
    # `r` cleared the store, registry included: each worker is back at its next renewal (10 s)
    want = {f"{w.name}@{host}" for w in pool}

    def states() -> dict[str, str]:
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#workers-table tbody tr')]"
            ".map(tr => [...tr.cells].map(c => c.innerText))"
        )
        return {row[0]: row[2] for row in rows if len(row) > 2}

    wait_for(
        lambda: want <= {n for n, s in states().items() if s == "idle"},
        30,
        0.5,
        what="both workers listed as idle",
    )
    job = submit(redis_server.url(), corpus_file, *TINY, "--iterations", "100000", "--name", "busy")
    wait_status(r, job, ("running",))
    wait_for(
        lambda: sum(s == "running" for s in states().values()) == 1,
        15,
        0.3,
        what="one worker shown running the job, without a reload",
    )
    assert job in text(browser, "#workers-table")
    run_cli("cancel", job, url=redis_server.url(), check=True)
    wait_status(r, job, ENDED)
    assert not page_errors(browser)


@pytest.mark.browser
def test_a_job_waiting_for_a_full_store_says_so_and_the_note_goes_when_it_trains(r, dash, browser):
    """A running job whose checkpoint a full store refused shows why it is not training, on its
    page and in the jobs table, as `orchestrator status` and `list` do; the note goes without a
    reload once the job trains again."""
    from charrnn import Config
    from worker.spec import JobSpec
    from worker.store import JobStore, new_job_id

    store = JobStore(r)
    sha, _ = store.put_corpus(make_corpus(0, 200))
    job_id = new_job_id()
    store.create(job_id, JobSpec(corpus_sha256=sha, config=Config(), total_iterations=10))
    store.cancel(job_id)  # out of the queued index: no worker's reaper sends it
    note = "store full: checkpoint of 3 MB refused (OOM); waiting for space"
    r.hset(keys.job(job_id), mapping={"status": "running", "waiting": note})

    status, html, _ = dash.get(f"/job/{job_id}")  # the page without its script
    assert status == 200 and note.encode() in html
    status, html, _ = dash.get("/jobs")
    assert status == 200 and b"waiting: store full" in html

    browser.get(dash.link("/jobs"))
    wait_for(
        lambda: "waiting: store full" in text(browser, f'tr[data-job-id="{job_id}"]'),
        10,
        0.2,
        what="the note in the live jobs table",
    )
    browser.get(dash.link(f"/job/{job_id}"))
    assert text(browser, '[data-field="waiting"]') == note
    r.hdel(keys.job(job_id), "waiting")
    wait_for(
        lambda: browser.execute_script(
            "return document.querySelector('[data-field=\"waiting\"]').hidden"
        ),
        10,
        0.2,
        what="the note to go without a reload",
    )
    assert text(browser, '[data-field="status"]') == "running"
    assert not page_errors(browser)
