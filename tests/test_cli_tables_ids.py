"""Issue 21, items 2 and 3, with a real redis-server and real workers: tables at 80 columns show
8-character ids and leave out columns by priority, never cutting a number (through a
pseudo-terminal, as at a user's terminal); any unique prefix of at least 4 characters names a job
or a sweep for every command, and an ambiguous one lists its matches."""

import json

import pytest

from worker import keys

from conftest import TINY_JOB, run_cli, submit, wait_status
from terminal import run as run_at

pytestmark = pytest.mark.integration


@pytest.fixture
def finished(pool, r, redis_server, corpus_file):
    """A named job and a sweep of four, all ended: (url, job id, sweep id, sweep's job ids)."""
    url = redis_server.url()
    job = submit(url, corpus_file, "--name", "a-rather-long-job-name-for-the-table", **TINY_JOB)
    hyper = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_JOB.items() if k != "hidden_size"]
    out = run_cli(
        "sweep",
        "--corpus",
        str(corpus_file),
        "--grid",
        "hidden_size=8,12",
        "--grid",
        "learning_rate=0.1,0.03",
        *hyper,
        "--json",
        url=url,
        check=True,
    )
    sw = json.loads(out.stdout)
    for j in [job, *sw["job_ids"]]:
        assert wait_status(r, j, timeout=180) == "succeeded"
    return url, job, sw["sweep_id"], sw["job_ids"]


def lines_fit(text: str, columns: int = 80) -> None:
    for line in text.splitlines():
        assert len(line.rstrip()) <= columns, line


@pytest.mark.slow
def test_tables_at_80_columns_keep_every_number_whole(finished):
    url, job, sweep, jobs = finished
    board = json.loads(run_cli("compare", sweep, "--json", url=url, check=True).stdout)["jobs"]
    listed = json.loads(run_cli("list", "--json", url=url, check=True).stdout)
    shown = {
        "list": [f"{j['val_loss']:.3f}" for j in listed],
        "compare": [f"{j['best_val_loss']:.4f}" for j in board],
        "status": [f"{j['best_val_loss']:.3f}" for j in board],
        "watch": [f"{j['best_val_loss']:.3f}" for j in board],
    }
    for args in (["list"], ["compare", sweep], ["status", sweep], ["watch", sweep]):
        code, text = run_at(*args, url=url)
        assert code == 0, text
        lines_fit(text)
        for j in jobs:
            assert j[:8] in text and j not in text, (args, text)
        for number in shown[args[0]]:
            assert number in text, (args, number, text)  # whole, not `2.…`
        assert "0.…" not in text and "1.…" not in text and "2.…" not in text, text
    code, text = run_at("compare", sweep, url=url)
    assert [line.split()[0] for line in text.splitlines()[2:6]] == ["1", "2", "3", "4"], text
    code, text = run_at("list", url=url)
    assert "succeeded" in text and job[:8] in text and "iteration" in text
    # --long: the whole ids, columns dropped to make room rather than cut
    code, text = run_at("compare", sweep, "--long", url=url)
    assert code == 0 and all(j in text for j in jobs), text
    lines_fit(text)
    # a wide terminal shows every column, corpus and duration included
    code, text = run_at("list", url=url, columns=200)
    assert all(h in text for h in ("corpus", "took", "submitted", "chars/s")), text
    assert "corpus.txt" in text


@pytest.mark.slow
def test_unique_prefixes_name_jobs_and_sweeps_everywhere(finished, r, tmp_path):
    url, job, sweep, jobs = finished
    p = job[:4]
    if any(j.startswith(p) for j in jobs) or sweep.startswith(p):
        p = job[:8]
    res = json.loads(run_cli("results", p, "--json", url=url, check=True).stdout)
    assert res["job_id"] == job
    assert (
        json.loads(run_cli("status", sweep[:6], "--json", url=url, check=True).stdout)["sweep_id"]
        == sweep
    )
    assert run_cli("samples", job[:8], "--last", url=url, check=True).stdout
    assert run_cli("sample", job[:8], "--length", "20", url=url, check=True).stdout
    out = tmp_path / "m.npz"
    run_cli("checkpoint", job[:8], "-o", str(out), url=url, check=True)
    assert out.stat().st_size > 0
    board = json.loads(run_cli("compare", sweep[:8], job[:8], "--json", url=url, check=True).stdout)
    assert {row["job_id"] for row in board["jobs"]} == {job, *jobs}
    assert run_cli("watch", jobs[0][:8], url=url, check=True).returncode == 0
    assert "cancelled" not in run_cli("cancel", job[:8], url=url, check=True).stdout
    run_cli("delete", jobs[0][:8], url=url, check=True)
    assert not r.exists(keys.job(jobs[0]))
    # a prefix that matches nothing: exit 3; too short or not hex: exit 2, before any connection
    miss = run_cli("results", "ffffffff-ffff" if not job.startswith("f") else "0000000", url=url)
    assert miss.returncode == 3 and "no job with an id starting" in miss.stderr, miss.stderr
    for bad in ("abc", "xyz12345"):
        q = run_cli("results", bad, url="redis://127.0.0.1:1/0")
        assert q.returncode == 2 and q.stderr.startswith("error: not a job id"), q.stderr


def test_an_ambiguous_prefix_lists_its_matches(r, redis_server):
    """Two job ids and a sweep id sharing a prefix, put in the store's indexes as the store
    does: one line naming each, exit 2."""
    a, b = "abcd1234-0000-4000-8000-000000000001", "abcd5678-0000-4000-8000-000000000002"
    s = "abcd9999-0000-4000-8000-000000000003"
    r.zadd(keys.jobs_by_time(), {a: 1, b: 2})
    r.zadd(keys.sweeps_by_time(), {s: 3})
    url = redis_server.url()
    p = run_cli("status", "abcd", url=url)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip()
    assert "\n" not in line and line.startswith("error: abcd is the start of 3 ids"), line
    assert a in line and b in line and f"sweep {s}" in line
    # a job-only command looks among jobs only
    q = run_cli("results", "abcd9", url=url)
    assert q.returncode == 3 and "no job with an id starting abcd9" in q.stderr, q.stderr


def test_columns_drop_by_priority_and_numbers_stay_whole():
    """The fitting itself, at several widths: lines never wider than the console, numbers and
    ids never cut, free text cut with an ellipsis, the lowest priority left out first."""
    import io

    from rich.console import Console

    from orchestrator.tables import Col, fitted

    cols = [
        Col("job", 100),
        Col("best val", 90, right=True),
        Col("name", 50, free=True),
        Col("chars/s", 20, right=True),
        Col("submitted", 10),
    ]
    rows = [["8b7d895c", "2.421534", "a-very-long-name-indeed-for-a-job", "123456", "12-05 15:05"]]
    seen, texts = {}, {}
    for width in (30, 40, 50, 60, 200):
        out = io.StringIO()
        Console(file=out, width=width).print(fitted(cols, rows, width))
        text = out.getvalue()
        assert all(len(line.rstrip()) <= width for line in text.splitlines()), (width, text)
        assert "8b7d895c" in text and "2.421534" in text, (width, text)
        seen[width] = [c.header for c in cols if c.header in text]
        texts[width] = text
    assert seen[30] == ["job", "best val", "name"]  # name cut to 8, the rest left out
    assert seen[40] == ["job", "best val", "name", "chars/s"]
    assert seen[200] == [c.header for c in cols]
    assert "a-very-lo…" in texts[30] and "a-very-long-name-indeed-for-a-job" in texts[200]
