"""Sweeps end to end (issue 6): a real redis-server, two real Celery workers, the orchestrator as a
user runs it. Grid and random sweeps, ASHA across both workers, compare (table, JSON, CSV), plot
(a PNG checked pixel by pixel), status/watch/cancel of a whole sweep, and bad input."""

import csv
import io
import itertools
import json
import math
import time
import uuid

import numpy as np
import pytest

from charrnn import Config
from worker import asha, keys
from worker.spec import JobSpec, RungPlan
from worker.store import JobStore

from conftest import (
    assert_matches_reference,
    job_field,
    run_cli,
    run_cli_without,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.integration

TINY = [
    "--num-layers",
    "1",
    "--hidden-size",
    "16",
    "--eval-every",
    "100",
    "--sample-every",
    "100",
    "--sample-length",
    "30",
]
ENDED = ("succeeded", "failed", "cancelled", "stopped")


def sweep(url, *args, check=True, timeout=120):
    p = run_cli("sweep", "--json", *args, url=url, timeout=timeout)
    if check:
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])
    return p


@pytest.fixture
def sweep_corpus(redis_server, corpus_file):
    """sweep_corpus(*args) is sweep(URL, "--corpus", CORPUS, *args) on the session's Redis."""
    return lambda *args, **kw: sweep(redis_server.url(), "--corpus", str(corpus_file), *args, **kw)


def hypers(r, job_ids):
    return [json.loads(job_field(r, j, "spec"))["hyper"] for j in job_ids]


def wait_all(r, job_ids, timeout=180):
    for j in job_ids:
        wait_status(r, j, ENDED, timeout=timeout)


@pytest.mark.slow
def test_grid_sweep_runs_every_point_once(pool, r, redis_server, corpus_file, sweep_corpus):
    url = redis_server.url()
    out = sweep_corpus(
        "--grid",
        "hidden_size=8,16",
        "--grid",
        "learning_rate=0.05,0.02",
        "--iterations",
        "200",
        "--num-layers",
        "1",
        "--eval-every",
        "100",
        "--sample-every",
        "0",
        "--name",
        "grid",
        "--tag",
        "g",
    )
    sid, ids = out["sweep_id"], out["job_ids"]
    assert len(ids) == len(set(ids)) == 4
    wait_all(r, ids)
    points = [(h["hidden_size"], h["learning_rate"]) for h in hypers(r, ids)]
    assert points == [(8, 0.05), (8, 0.02), (16, 0.05), (16, 0.02)]  # each once, in grid order
    for j in ids:
        assert job_field(r, j, "status") == "succeeded"
        assert job_field(r, j, "sweep_id") == sid
        assert int(r.get(keys.fence(j))) == 1, "a point was trained more than once"
    tagged = json.loads(
        run_cli("list", "--tag", f"sweep:{sid}", "--json", url=url, check=True).stdout
    )
    assert sorted(j["job_id"] for j in tagged) == sorted(ids)
    assert sorted(
        j["job_id"]
        for j in json.loads(run_cli("list", "--tag", "g", "--json", url=url, check=True).stdout)
    ) == sorted(ids)
    st = json.loads(run_cli("status", sid, "--json", url=url, check=True).stdout)
    assert st["counts"] == {"succeeded": 4} and st["varying"] == ["hidden_size", "learning_rate"]
    assert [j["job_id"] for j in st["jobs"]] == ids and st["name"] == "grid"
    table = run_cli("status", sid, url=url, check=True).stdout
    assert all(j[:8] in table and j not in table for j in ids) and "4 succeeded" in table
    table = run_cli("status", sid, "--long", url=url, check=True).stdout  # whole ids
    assert all(j in table for j in ids)
    listed = json.loads(run_cli("sweeps", "--json", url=url, check=True).stdout)
    assert listed[0]["sweep_id"] == sid and listed[0]["counts"] == {"succeeded": 4}
    # prune removes the jobs, then the sweep they leave empty
    time.sleep(0.01)  # an age must be above 0
    pruned = json.loads(
        run_cli("prune", "--older-than", "0.01s", "--json", url=url, check=True).stdout
    )["deleted"]
    assert sorted(pruned) == sorted(ids)
    assert not r.exists(keys.sweep(sid)) and not r.exists(keys.sweep_jobs(sid))
    assert run_cli("status", sid, url=url).returncode == 3


@pytest.mark.slow
def test_random_sweep_with_a_seed_gives_the_same_points_twice(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    args = [
        "--corpus",
        str(corpus_file),
        "--random",
        "3",
        "--log-uniform",
        "learning_rate=0.001,0.1",
        "--uniform",
        "hidden_size=4,12",
        "--choice",
        "seq_length=8,16",
        "--grid",
        "num_layers=1,2",
        "--iterations",
        "30",
        "--eval-every",
        "0",
        "--sample-every",
        "0",
    ]
    a = sweep(url, *args, "--seed", "11")
    b = sweep(url, *args, "--seed", "11")
    c = sweep(url, *args, "--seed", "12")
    pa, pb, pc = (hypers(r, x["job_ids"]) for x in (a, b, c))
    assert len(pa) == 6 and pa == pb  # 3 samples x 2 grid points, same bits
    assert pa != pc
    for h in pa:
        assert 0.001 <= h["learning_rate"] <= 0.1 and 4 <= h["hidden_size"] <= 12
        assert isinstance(h["hidden_size"], int) and h["seq_length"] in (8, 16)
    # without --seed one is drawn and recorded: the sweep can be repeated from its record
    d = sweep(url, *args)
    spec = json.loads(run_cli("status", d["sweep_id"], "--json", url=url, check=True).stdout)[
        "spec"
    ]
    e = sweep(url, *args, "--seed", str(spec["random"]["seed"]))
    assert hypers(r, d["job_ids"]) == hypers(r, e["job_ids"])
    wait_all(r, sum((x["job_ids"] for x in (a, b, c, d, e)), []))


def _decisions(r, sid, milestone):
    return JobStore(r).rung_decisions(sid, milestone)


@pytest.mark.slow
def test_asha_stops_the_bad_configurations_across_two_workers(
    pool, r, redis_server, corpus_file, sweep_corpus, tmp_path
):
    """A learning rate of 1e-6 learns nothing: at the first rung every such job is behind the
    good ones (which start first), and is stopped there with its checkpoint. Every decision
    follows the rule, recomputed here from what the rung recorded; the ranking of `compare`
    matches the stored losses; a job that went through every rung ends bit-identical to an
    uninterrupted run."""
    url = redis_server.url()
    out = sweep_corpus(
        "--grid",
        "learning_rate=0.05,0.000001",
        "--grid",
        "seed=1,2,3",
        *TINY,
        "--iterations",
        "1500",
        "--checkpoint-every",
        "500",
        "--early-stop",
        "asha",
        "--rungs",
        "300,900",
        "--reduction-factor",
        "3",
    )
    sid, ids = out["sweep_id"], out["job_ids"]
    p = run_cli("watch", sid, url=url, timeout=240)
    assert p.returncode == 0, p.stderr  # stopped is an ending, not a failure
    for j in ids:
        assert job_field(r, j, "sweep_id") == sid
    good, bad = ids[:3], ids[3:]
    for j in bad:
        assert job_field(r, j, "status") == "stopped"
        assert int(job_field(r, j, "iteration")) == 300
        raw = r.hget(keys.checkpoint(j, "latest"), "iteration")
        assert int(raw) == 300, "a stopped job keeps its checkpoint at the rung"
        ev = [json.loads(x) for x in r.lrange(keys.events(j), 0, -1)]
        assert ev[-1]["event"] == "early_stopped" and ev[-1]["iteration"] == 300
    assert any(job_field(r, j, "status") == "succeeded" for j in good)
    # jobs of the sweep ran on both workers, at the same time
    workers = {job_field(r, j, "worker") for j in ids}
    assert len(workers) == 2, workers
    spans = sorted(
        (float(job_field(r, j, "started_at")), float(job_field(r, j, "finished_at"))) for j in ids
    )
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), "no two jobs overlapped"
    # every decision, recomputed from the rung's record
    for m in (300, 900):
        dec = _decisions(r, sid, m)
        scores = dict(
            (k.decode(), s) for k, s in r.zrange(keys.rung(sid, m), 0, -1, withscores=True)
        )
        assert set(dec) == set(scores)
        for j, d in dec.items():
            before = [k for k, e in dec.items() if e["reached"] <= d["reached"]]
            assert len(before) == d["reached"]
            rank = 1 + sum(scores[k] < scores[j] for k in before)
            assert d["rank"] == rank and d["continue"] == (rank <= math.ceil(d["reached"] / 3.0))
            assert d["continue"] == (
                job_field(r, j, "status") != "stopped" or int(job_field(r, j, "iteration")) > m
            )
    assert set(_decisions(r, sid, 300)) == set(ids)  # every job reached the first rung
    # the leaderboard: ranked by the stored best validation loss, CSV the same
    board = json.loads(run_cli("compare", sid, "--json", url=url, check=True).stdout)
    stored = {j: float(job_field(r, j, "best_val_loss")) for j in ids}
    assert [row["job_id"] for row in board["jobs"]] == sorted(ids, key=stored.get)
    assert [row["best_val_loss"] for row in board["jobs"]] == sorted(stored.values())
    assert board["varying"] == ["learning_rate", "seed"]
    top = board["jobs"][0]
    assert top["status"] == "succeeded" and top["params"]["learning_rate"] == 0.05
    assert top["iteration"] == top["iterations"] == 1500 and top["chars_per_second"] > 0
    assert top["sample"] and "\n" not in top["sample"]
    rows = list(
        csv.DictReader(io.StringIO(run_cli("compare", sid, "--csv", url=url, check=True).stdout))
    )
    assert [row["job_id"] for row in rows] == [b["job_id"] for b in board["jobs"]]
    assert [float(row["best_val_loss"]) for row in rows] == sorted(stored.values())
    assert {row["learning_rate"] for row in rows} == {"0.05", "1e-06"}
    text = run_cli("compare", sid, url=url, check=True).stdout
    first, last = board["jobs"][0]["job_id"][:8], board["jobs"][-1]["job_id"][:8]  # short ids
    assert text.index(first) < text.index(last)
    # the rungs changed nothing in the weights of a job that went through all of them
    finished = [j for j in good if job_field(r, j, "status") == "succeeded"][0]
    hyper = hypers(r, [finished])[0]
    assert_matches_reference(r, finished, corpus_file.read_text(), hyper)
    # a stopped job's checkpoint downloads and samples like any other
    ck = tmp_path / "stopped.npz"
    run_cli("checkpoint", bad[0], "-o", str(ck), url=url, check=True)
    assert ck.stat().st_size > 0
    assert run_cli("sample", bad[0], "--length", "20", url=url, check=True).stdout.strip()
    # and it ended with a sample of the weights it stopped with (issue 21)
    last = json.loads(run_cli("samples", bad[0], "--last", "--json", url=url, check=True).stdout)
    assert last[0]["iteration"] == int(job_field(r, bad[0], "iteration"))


TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _pixels_of(img, hex_color):
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return int(np.all(np.abs(img[..., :3] - rgb) < 0.02, axis=-1).sum())


@pytest.mark.slow
def test_plot_writes_a_png_with_one_line_per_job(
    pool, r, redis_server, corpus_file, sweep_corpus, tmp_path
):
    pytest.importorskip("matplotlib", reason="the [plot] extra; .ci/run installs it with [test]")
    import matplotlib.image

    url = redis_server.url()
    out = sweep_corpus(
        "--grid",
        "learning_rate=0.05,0.02,0.005",
        *TINY,
        "--iterations",
        "600",
    )
    wait_all(r, out["job_ids"])
    png = tmp_path / "loss.png"
    p = run_cli("plot", out["sweep_id"], "-o", str(png), url=url)
    assert p.returncode == 0, p.stderr
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 20_000
    img = matplotlib.image.imread(str(png))
    assert img.shape[0] >= 400 and img.shape[1] >= 1000
    # one line per job: the first three colors of the cycle are drawn, the fourth is not
    counts = [_pixels_of(img, c) for c in TAB10[:4]]
    assert all(n > 200 for n in counts[:3]) and counts[3] == 0, counts
    # a job id works as well as a sweep id, and several ids together
    one = tmp_path / "one.png"
    run_cli("plot", out["job_ids"][0], out["job_ids"][1], "-o", str(one), url=url, check=True)
    img = matplotlib.image.imread(str(one))
    counts = [_pixels_of(img, c) for c in TAB10[:3]]
    assert counts[0] > 200 and counts[1] > 200 and counts[2] == 0, counts


def test_plot_without_matplotlib_says_how_to_install_it(redis_server, tmp_path):
    job = f"{'0' * 8}-0000-4000-8000-{'0' * 12}"
    env = {"CHARRNN_REDIS_URL": redis_server.url(), "PATH": "/usr/bin:/bin"}
    p = run_cli_without("matplotlib", "plot", job, "-o", f"{tmp_path}/x.png", env=env)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "pip install" in p.stderr
    assert "charrnn[plot]" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_cancel_a_sweep_and_wait_for_it(pool, r, redis_server, corpus_file, sweep_corpus):
    url = redis_server.url()
    out = sweep_corpus(
        "--grid",
        "seed=1,2,3,4",
        "--num-layers",
        "1",
        "--hidden-size",
        "32",
        "--iterations",
        "200000",
        "--eval-every",
        "0",
        "--sample-every",
        "0",
    )
    sid, ids = out["sweep_id"], out["job_ids"]
    wait_for(
        lambda: sum(job_field(r, j, "status") == "running" for j in ids) == 2,
        60,
        what="two jobs running",
    )
    p = run_cli("cancel", sid, "--json", url=url, check=True)
    res = json.loads(p.stdout)
    assert len(res["cancel_requested"]) == 2 and len(res["cancelled"]) == 2
    assert sorted(res["cancel_requested"] + res["cancelled"]) == sorted(ids)
    w = run_cli("watch", sid, url=url, timeout=90)
    assert w.returncode == 1  # cancelled jobs: exit 1, as for a job
    assert all(job_field(r, j, "status") == "cancelled" for j in ids)
    for j in res["cancel_requested"]:  # a running job kept its checkpoint
        assert r.hget(keys.checkpoint(j, "latest"), "iteration") is not None
    again = json.loads(run_cli("cancel", sid, "--json", url=url, check=True).stdout)
    assert sorted(again["already_ended"]) == sorted(ids)
    run_cli("delete", sid, url=url, check=True)
    assert run_cli("status", sid, url=url).returncode == 3
    assert not any(r.exists(keys.job(j)) for j in ids)


@pytest.mark.slow
def test_sweep_wait_prints_ids_then_the_table(pool, r, redis_server, corpus_file):
    url = redis_server.url()
    p = run_cli(
        "sweep",
        "--corpus",
        str(corpus_file),
        "--grid",
        "hidden_size=8,12",
        *TINY[4:],
        "--num-layers",
        "1",
        "--iterations",
        "200",
        "--wait",
        url=url,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    lines = [ln.split() for ln in p.stdout.splitlines()]  # `sweep ID`, then `job ID` each
    assert [kind for kind, _ in lines] == ["sweep", "job", "job"], p.stdout
    sid, *ids = [i for _, i in lines]
    assert len(ids) == 2 and all(r.hget(keys.job(j), "status") == b"succeeded" for j in ids)
    assert r.exists(keys.sweep(sid))
    assert "2 succeeded" in p.stderr and all(j[:8] in p.stderr for j in ids)  # short ids


@pytest.mark.slow
def test_bad_sweeps_enqueue_nothing(pool, r, redis_server, corpus_file, tmp_path):
    url = redis_server.url()
    before = r.zcard(keys.jobs_by_time())
    bad_file = tmp_path / "sweep.yaml"
    bad_file.write_text("corpus: x\ngrid: {hidden_size: []}\n")
    cases = [
        (["--grid", "hiden_size=8,16"], "hidden_size"),
        (["--grid", "hidden_size="], "empty"),
        (["--random", "2", "--uniform", "learning_rate=0.1,0.01"], "above"),
        (["--random", "2", "--log-uniform", "learning_rate=0,0.1"], "positive"),
        (["--grid", "hidden_size=8,16", "--hidden-size", "8"], "both"),
        (["--grid", "dropout=0.1,1.5"], "dropout"),
        (["--early-stop", "asha", "--rungs", "900,300"], "increasing"),
        (["--early-stop", "asha", "--iterations", "100", "--rungs", "200"], "rung"),
        (["-f", str(bad_file)], "non-empty"),
    ]
    for args, word in cases:
        p = run_cli("sweep", "--corpus", str(corpus_file), *args, url=url)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("error:") and p.stderr.count("\n") == 1, p.stderr
        assert word in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
    assert r.zcard(keys.jobs_by_time()) == before and r.zcard(keys.sweeps_by_time()) == 0
    # unknown and malformed ids; Redis down
    unknown = "00000000-0000-4000-8000-000000000000"
    for cmd in (
        ["status", unknown],
        ["compare", unknown],
        ["cancel", unknown],
        ["plot", unknown, "-o", str(tmp_path / "p.png")],
        ["watch", unknown],
    ):
        p = run_cli(*cmd, url=url)
        if cmd[0] == "plot" and "matplotlib" in p.stderr:
            continue
        assert p.returncode == 3 and p.stderr.count("\n") == 1, (cmd, p.stderr)
    assert run_cli("compare", url=url).returncode == 2
    assert run_cli("compare", "nope", url=url).returncode == 2
    assert run_cli("compare", unknown, "--json", "--csv", url=url).returncode == 2
    down = "redis://127.0.0.1:1/0"
    for cmd in (
        ["compare", unknown],
        ["status", unknown],
        ["sweeps"],
        ["sweep", "--corpus", str(corpus_file), "--grid", "hidden_size=8,16"],
    ):
        p = run_cli(*cmd, url=down)
        assert p.returncode == 4 and "unreachable" in p.stderr and p.stderr.count("\n") == 1, (
            cmd,
            p.stderr,
        )


def test_rung_decisions_are_fenced_and_idempotent(redis_server, r):
    """One decision per job and rung, whoever asks again (a resumed or rolled-back trainer),
    and none for a trainer whose lease was taken over."""
    from worker.errors import LostLease

    sid = "11111111-1111-4111-8111-111111111111"
    rungs = RungPlan(sid, (100,), 2.0)
    leases = rung_jobs(r, 4)
    got = [
        asha.decide(lease, rungs, 100, j, loss)
        for (lease, j), loss in zip(leases, [2.0, 1.0, 3.0, 1.5], strict=True)
    ]
    assert [d["continue"] for d in got] == [True, True, False, True]  # n=3: keep 2, n=4: keep 2
    assert [d["rank"] for d in got] == [1, 1, 3, 2] and [d["reached"] for d in got] == [1, 2, 3, 4]
    lease, j = leases[2]
    assert asha.decide(lease, rungs, 100, j, 0.1) == got[2]  # asked again: same answer
    r.incr(keys.fence(j))  # another trainer took it
    with pytest.raises(LostLease):
        asha.decide(lease, rungs, 100, j, 0.1)
    assert r.zcard(keys.rung(sid, 100)) == 4 and math.isclose(r.zscore(keys.rung(sid, 100), j), 3.0)


def rung_jobs(r, n: int) -> list:
    """n stored jobs, each with its trainer's lease: what asha.decide needs."""
    from worker.lease import Lease

    store = JobStore(r)
    sha = store.put_corpus("ab" * 50)[0]
    out = []
    for _ in range(n):
        job_id = str(uuid.uuid4())
        store.create(job_id, JobSpec(corpus_sha256=sha, config=Config(), total_iterations=1000))
        lease = Lease(r, job_id, "test")
        assert lease.acquire().kind == "acquired"
        out.append((lease, job_id))
    return out


@pytest.mark.parametrize(
    "rank, reached, eta, keeps",
    [
        (1, 1, 3, True),
        (1, 1, 100, True),
        (1, 2, 3, True),
        (2, 2, 3, False),
        (1, 4, 3, True),
        (2, 4, 3, True),
        (3, 4, 3, False),
        (3, 6, 2, True),
        (4, 6, 2, False),
    ],
)
def test_the_rung_script_keeps_the_top_ceil_n_over_eta(r, rank, reached, eta, keeps):
    """The rule as the Lua script applies it (there is no Python copy of it): a job whose loss
    ranks `rank` among the `reached` jobs at a rung continues iff rank <= ceil(reached / eta)."""
    rungs = RungPlan(str(uuid.uuid4()), (100,), float(eta))
    *others, (lease, job) = rung_jobs(r, reached)
    for i, (other_lease, other) in enumerate(others):  # rank - 1 of them better than the job
        asha.decide(other_lease, rungs, 100, other, 0.5 if i < rank - 1 else 2.0)
    d = asha.decide(lease, rungs, 100, job, 1.0)
    assert (d["rank"], d["reached"], d["continue"]) == (rank, reached, keeps)
