"""A live job page fetches only what is new (issue 20, item 6): it polled its JSON twin every
second, and the twin held every kept sample, 12 MB a poll with ten samples of 100,000 characters.
A real redis-server, the dashboard as a user starts it, headless Chromium; the job's record is
written as a trainer writes it (no worker: the sizes are the point)."""

import json

import pytest
from test_dashboard import browser as browser  # noqa: F401 (a fixture)
from test_dashboard import dash as dash  # noqa: F401 (a fixture)
from test_dashboard import text, texts, wait_for

from worker import keys

from conftest import make_corpus

pytestmark = pytest.mark.integration

BIG = 100_000


def write_sample(r, job_id: str, iteration: int) -> None:
    """As the trainer writes one: pushed, and the count bumped, together."""
    body = f"iteration {iteration} " + "x" * BIG
    with r.pipeline(transaction=True) as p:
        p.rpush(keys.samples(job_id), json.dumps({"iteration": iteration, "text": body}))
        p.hincrby(keys.job(job_id), "samples_written", 1)
        p.execute()


def running_job(r) -> str:
    from charrnn import Config
    from worker.spec import JobSpec
    from worker.store import JobStore, new_job_id

    store = JobStore(r)
    sha, _ = store.put_corpus(make_corpus(0, 200))
    job_id = new_job_id()
    store.create(job_id, JobSpec(corpus_sha256=sha, config=Config(), total_iterations=10**6))
    store.cancel(job_id)  # out of the queued index: no worker's reaper sends it
    r.hset(keys.job(job_id), "status", "running")
    return job_id


def polls(browser) -> list[dict]:
    return browser.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('.json'))"
        ".map(e => ({url: e.name, bytes: e.decodedBodySize}))"
    )


@pytest.mark.browser
def test_a_job_page_polls_only_the_new_samples_and_history_rows(r, dash, browser):
    job_id = running_job(r)
    for i in range(10):
        write_sample(r, job_id, 100 * (i + 1))
        r.rpush(keys.history(job_id), json.dumps([100 * (i + 1), 4.0 - 0.1 * i, None]))
    status, full, _ = dash.get(f"/job/{job_id}.json")
    assert status == 200 and len(full) > 10 * BIG  # the whole twin, as a script reads it

    browser.get(dash.link(f"/job/{job_id}"))
    wait_for(
        lambda: len(texts(browser, "#samples figure.sample")) == 10,
        10,
        0.2,
        what="the ten samples on the page",
    )
    points = int(
        browser.execute_script("return document.getElementById('loss-chart').dataset.points")
    )
    browser.execute_script("window.__loaded_once = true; performance.clearResourceTimings()")
    wait_for(lambda: len(polls(browser)) >= 3, 20, 0.2, what="three polls")
    write_sample(r, job_id, 1100)
    r.rpush(keys.history(job_id), json.dumps([1100, 3.0, None]))
    wait_for(
        lambda: "iteration 1100" in (texts(browser, "#samples figure.sample") or [""])[-1],
        10,
        0.2,
        what="the new sample at the end of the page",
    )
    wait_for(
        lambda: (
            int(
                browser.execute_script(
                    "return document.getElementById('loss-chart').dataset.points"
                )
            )
            > points
        ),
        10,
        0.2,
        what="the new history row on the chart",
    )
    wait_for(lambda: len(polls(browser)) >= 6, 20, 0.2, what="three polls more")
    seen = polls(browser)
    assert all("samples_since=" in p["url"] for p in seen), seen
    assert max(p["bytes"] for p in seen) < 1.5 * BIG, seen  # one new sample at most
    assert sum(p["bytes"] > BIG for p in seen) == 1, seen  # the new one, once
    assert len(texts(browser, "#samples figure.sample")) == 11
    assert text(browser, "#samples-count") == "11"
    assert browser.execute_script("return window.__loaded_once") is True, "the page reloaded"

    # the twin, asked as the page asks: the new sample and row alone
    status, body, _ = dash.get(f"/job/{job_id}.json?samples_since=10&history_since=10")
    new = json.loads(body)
    assert [s["iteration"] for s in new["samples"]] == [1100]
    assert new["curves"]["train_loss"] == [3.0] and len(new["curves"]["train_chars"]) == 1
    assert (new["samples_since"], new["history_since"]) == (10, 10)
    # a count past what the store holds (the job was reset): the whole lists, to start over
    status, body, _ = dash.get(f"/job/{job_id}.json?samples_since=50&history_since=50")
    whole = json.loads(body)
    assert len(whole["samples"]) == 11 and whole["samples_since"] == 0
    assert len(whole["curves"]["train_chars"]) == 11 and whole["history_since"] == 0
