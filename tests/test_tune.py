"""`orchestrator tune` (issue 19): trials proposed by Optuna's TPE from the trials in the store,
no driver process, exactly one next trial per ended trial. Real Redis and real workers for the
system tests (slow); the proposal is a pure function, tested without either."""

import json
import time

import pytest

from worker import keys
from worker import tune as advance
from worker.spec import JobSpec

from conftest import make_corpus, run_cli, wait_for

SPACE = {
    "hidden_size": {"choice": [8, 16]},
    "cell": {"choice": ["rnn", "gru"]},
    "learning_rate": {"log_uniform": [1e-3, 3e-2]},
    "num_layers": {"uniform": [1, 2]},
}


def results(n: int, seed: int = 0) -> list[dict]:
    """n ended trials with made-up losses, proposed as a tune proposes them."""
    out: list[dict] = []
    for number in range(n):
        p = advance.propose(SPACE, seed, number, out)
        loss = 2.0 + abs(p["learning_rate"] - 0.01) * 10 + (0.1 if p["cell"] == "rnn" else 0)
        state = "pruned" if number % 3 == 2 else "complete"
        out.append({"params": p, "state": state, "value": loss if state == "complete" else None,
                    "rungs": {111111: loss + 0.5}})  # fmt: skip
    return out


def test_same_seed_and_results_give_the_same_proposals():
    """A pure function: rebuilt from the same trials with the same seed, in any process, the
    study proposes the same point; the proposals follow the results (and the seed)."""
    trials = results(12, seed=4)
    running = [{**trials[-1], "state": "running", "value": None}]
    a = advance.propose(SPACE, 4, 12, trials[:-1] + running)
    b = advance.propose(SPACE, 4, 12, json.loads(json.dumps(trials[:-1] + running)))
    assert a == b
    assert results(12, seed=4) == trials  # the whole sequence again
    other = [dict(t, value=(5.0 - t["value"]) if t["value"] else None) for t in trials]
    assert advance.propose(SPACE, 4, 12, other) != advance.propose(SPACE, 4, 12, trials)
    assert advance.propose(SPACE, 5, 12, trials) != advance.propose(SPACE, 4, 12, trials)


def test_the_default_space_fits_the_corpus_and_the_budget():
    from orchestrator import tunespace

    space = tunespace.default_space(1_000_000, 5.0)
    assert space["cell"] == {"choice": ["rnn", "gru", "lstm"]}
    assert space["learning_rate"]["log_uniform"][0] < space["learning_rate"]["log_uniform"][1]
    small = tunespace.default_space(10_000, 1.0)
    b, t = max(small["batch_size"]["choice"]), max(small["seq_length"]["choice"])
    assert b * t * tunespace.WINDOWS_PER_EPOCH <= 10_000
    assert tunespace.default_space(100, 1.0) == {}
    assert tunespace.trial_minutes(30, 2) <= 15 and tunespace.trial_minutes(1, 2) == 0.5


# --- bad input: one line, exit 2, nothing stored ----------------------------------------------
def tune_file(tmp_path, corpus, **extra) -> str:
    spec = {"search": "tpe", "corpus": str(corpus), "space": SPACE,
            "fixed": {"seq_length": 16, "batch_size": 4, "eval_every": 50}, **extra}  # fmt: skip
    path = tmp_path / "tune.json"
    path.write_text(json.dumps(spec))
    return str(path)


def assert_refused(p, r, match: str):
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], p.stderr
    assert not list(r.scan_iter(keys.PREFIX + "sweep*")) and not list(
        r.scan_iter(keys.PREFIX + "job:*")
    )


def test_bad_input_is_refused_before_anything_is_stored(redis_server, r, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=1))
    url = redis_server.url()
    f = tune_file(tmp_path, corpus)
    assert_refused(run_cli("tune", "-f", f, "--minutes", "0.2", url=url), r, "too short")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("ab")
    assert_refused(run_cli("tune", "--corpus", str(tiny), "--minutes", "5", url=url), r, "too")
    big = tune_file(tmp_path, corpus, space={"hidden_size": {"choice": [8, 8192]},
                                             "num_layers": {"uniform": [1, 16]}})  # fmt: skip
    assert_refused(run_cli("tune", "-f", big, "--minutes", "5", url=url), r, "limits")
    assert_refused(run_cli("tune", "-f", f, url=url), r, "budget")
    blocked = tmp_path / "no_optuna"
    (blocked / "optuna").mkdir(parents=True)
    (blocked / "optuna" / "__init__.py").write_text("raise ImportError('no optuna here')\n")
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])}
    assert_refused(run_cli("tune", "-f", f, "--minutes", "5", url=url, env=env), r, "optuna")


# --- the system: real Redis, real workers ------------------------------------------------------
def trials_of(r, tune_id) -> list[str]:
    return [j.decode() for j in r.lrange(keys.sweep_jobs(tune_id), 0, -1)]


def starts(r, job_id) -> int:
    evs = [json.loads(x)["event"] for x in r.lrange(keys.events(job_id), 0, -1)]
    return evs.count("started")


def assert_each_trial_once(r, tune_id, parallel: int):
    """Every trial after the first `parallel` was made by exactly one ended trial's claim, and
    each trial started once (a resume is not a second start)."""
    ids = trials_of(r, tune_id)
    claims = {k.decode(): v.decode() for k, v in r.hgetall(keys.tune_claims(tune_id)).items()}
    made = [v for v in claims.values() if v != "end"]
    assert sorted(made) == sorted(ids[parallel:]) and len(set(made)) == len(made)
    assert set(claims) == set(ids)  # every trial advanced once
    assert all(starts(r, j) == 1 for j in ids)


@pytest.mark.slow
def test_a_short_tune_ends_on_time_with_a_best_checkpoint(stack, tmp_path):
    """Two workers, a 1.5-minute tune of half-minute trials in the default space: the 2min
    recipe trains on one worker for the whole budget, never stopped early; the other runs
    searched trials one after another. It follows to the end, each trial's budget fits in what
    was left of the tune, and the result is a trial with a best checkpoint, the lowest best
    held-out loss of them all, the recipe trial's included."""
    server, worker = stack
    worker("a").start()
    worker("b").start()
    r = server.client()
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=2, words=6000))
    p = run_cli("tune", "--corpus", str(corpus), "--minutes", "1.5", "--trial-minutes", "0.5",
                "--seed", "3", "--wait", "--json", url=server.url(), timeout=400)  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    tune_id, best = out["tune_id"], out["best"]
    sw = json.loads(r.hget(keys.sweep(tune_id), "spec"))
    deadline = sw["tune"]["deadline"]
    ids = trials_of(r, tune_id)
    assert out["trials"] == len(ids) > 2  # trials ended and were followed by new ones
    for j in ids:
        spec = JobSpec.from_json(r.hget(keys.job(j), "spec"))
        created = float(r.hget(keys.job(j), "submitted_at"))
        assert spec.minutes is not None and created + 60 * spec.minutes <= deadline + 1
    recipe = JobSpec.from_json(r.hget(keys.job(ids[0]), "spec"))
    assert recipe.name.endswith("(2min recipe)") and recipe.budget is not None
    assert recipe.budget["minutes"] > 1.3  # settled from (nearly) the whole budget
    assert r.hget(keys.job(ids[0]), "status") == b"succeeded"
    assert r.exists(keys.checkpoint(best["job_id"], "best"))
    losses = {j: float(v) for j in ids if (v := r.hget(keys.job(j), "best_val_loss"))}
    assert ids[0] in losses and best["best_val_loss"] == min(losses.values())
    assert_each_trial_once(r, tune_id, 2)
    status = json.loads(run_cli("status", tune_id, "--json", url=server.url()).stdout)
    assert len(status["jobs"]) == len(ids)  # the tune's id is a sweep's
    # and it stands for its result where one job is read
    path = tmp_path / "best.npz"
    run_cli("checkpoint", tune_id, "-o", str(path), url=server.url(), check=True)
    assert path.read_bytes() == r.hget(keys.checkpoint(best["job_id"], "best"), "data")
    res = json.loads(run_cli("results", tune_id, "--json", url=server.url(), check=True).stdout)
    assert res["job_id"] == best["job_id"]
    assert run_cli("sample", tune_id, "--length", "50", url=server.url(), check=True).stdout


@pytest.mark.slow
def test_a_worker_killed_mid_tune_loses_no_trial(stack, tmp_path):
    """A tune of six trials; a worker is killed while it trains one. The trial resumes on
    another worker, the tune still makes exactly six trials, each started once, and each
    ended trial gave exactly one next."""
    from orchestrator import tune as tune_cmd
    from worker.store import JobStore

    server, worker = stack
    env = {"CHARRNN_VISIBILITY_TIMEOUT": "3"}
    a = worker("a", **env).start()
    worker("b", **env).start()
    r = server.client()
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=5, words=6000))
    f = tune_file(tmp_path, corpus, checkpoint_every=100)
    p = run_cli("tune", "-f", f, "--trials", "6", "--trial-minutes", "0.5", "--seed", "1",
                "--json", url=server.url(), check=True)  # fmt: skip
    tune_id = json.loads(p.stdout)["tune_id"]
    wait_for(lambda: len(trials_of(r, tune_id)) >= 3, timeout=180, what="a third trial")
    # no follower yet: the third trial was asked for by the pool (a trial's worker, or a reaper)
    makers = [e for j in trials_of(r, tune_id)[:2] for e in map(json.loads, r.lrange(
        keys.events(j), 0, -1)) if e["event"] == "tune_next"]  # fmt: skip
    assert makers and all(e["by"] != "follower" for e in makers)

    def a_trial_of_a_running() -> bool:
        return any(
            (r.hget(keys.job(j), "status") or b"") == b"running"
            and (r.hget(keys.job(j), "worker") or b"").startswith(b"a@")
            and int(r.hget(keys.job(j), "iteration") or 0) > 100
            for j in trials_of(r, tune_id)
        )

    wait_for(a_trial_of_a_running, timeout=120, what="worker a training a trial")
    a.kill_all()
    worker("c", **env).start()
    store = JobStore(server.client())
    t0 = time.monotonic()
    out = tune_cmd.follow(store, server.url(), tune_id, quiet=True)
    assert time.monotonic() - t0 < 600
    ids = trials_of(r, tune_id)
    assert len(ids) == 6 and out["trials"] == 6 and out["best"] is not None
    statuses = {r.hget(keys.job(j), "status").decode() for j in ids}
    assert statuses <= {"succeeded", "stopped"}, statuses
    assert_each_trial_once(r, tune_id, 2)
    resumed = [j for j in ids if b"resumed" in b"".join(r.lrange(keys.events(j), 0, -1))]
    assert resumed  # the killed worker's trial came back


# --- the advance step against a real Redis, no worker: exactly once, and cancel ---------------
def queued_tune(redis_server, r, tmp_path, *extra) -> tuple[str, list[str]]:
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=6))
    p = run_cli("tune", "-f", tune_file(tmp_path, corpus), "--trials", "9", "--seed", "2",
                "--json", *extra, url=redis_server.url(), check=True)  # fmt: skip
    out = json.loads(p.stdout)
    return out["tune_id"], out["job_ids"]


def end_trial(r, job_id: str, loss: float) -> None:
    """What a worker's last write leaves of a trial that ran to its end (no worker here)."""
    r.hset(keys.job(job_id), mapping={"status": "succeeded", "best_val_loss": repr(loss)})


def test_many_advances_of_one_ended_trial_make_one_trial(redis_server, r, tmp_path):
    """Eight followers and workers asking at once for the next trial after the same ended
    trial: one trial is stored, claimed by that trial; the others find the claim."""
    import threading

    from worker.store import JobStore

    tune_id, first = queued_tune(redis_server, r, tmp_path)
    end_trial(r, first[0], 1.5)
    made: list = []
    sent: list = []

    def ask():
        made.append(advance.advance(JobStore(redis_server.client()), tune_id, first[0],
                                    sent.append))  # fmt: skip

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    new = [m for m in made if m]
    assert len(new) == 1 and sent == new
    assert trials_of(r, tune_id) == first + new
    assert r.hget(keys.tune_claims(tune_id), first[0]).decode() == new[0]
    assert r.hget(keys.job(new[0]), "status") == b"queued"


def test_a_cancelled_tune_adds_no_trial(redis_server, r, tmp_path):
    from worker.store import JobStore

    tune_id, first = queued_tune(redis_server, r, tmp_path)
    p = run_cli("cancel", tune_id, url=redis_server.url())
    assert p.returncode == 0, p.stderr
    assert {r.hget(keys.job(j), "status") for j in first} == {b"cancelled"}
    assert advance.advance_all(JobStore(r), tune_id, lambda j: None) == []
    assert trials_of(r, tune_id) == first
    assert {v for v in r.hgetall(keys.tune_claims(tune_id)).values()} == {b"end"}
    p = run_cli("checkpoint", tune_id, "-o", str(tmp_path / "x.npz"), url=redis_server.url())
    assert p.returncode != 0 and "no trial with a best checkpoint" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_reaper_advances_a_trial_nobody_advanced(stack, tmp_path):
    """A trial ended with nobody to ask for the next (its worker died right after, no one
    follows the tune): a worker's reaper asks, once."""
    server, worker = stack
    r = server.client()
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=6))
    p = run_cli("tune", "-f", tune_file(tmp_path, corpus), "--trials", "9", "--seed", "2",
                "--json", url=server.url(), check=True)  # fmt: skip
    tune_id, first = json.loads(p.stdout)["tune_id"], json.loads(p.stdout)["job_ids"]
    r.hset(keys.job(first[0]), mapping={"status": "cancelled", "finished_at": repr(time.time())})
    from worker.broker import message_id, queue_lists

    for q in queue_lists():  # its message gone too: no worker sees it end
        for raw in r.lrange(q, 0, -1):
            if message_id(raw) == first[0]:
                r.lrem(q, 0, raw)
    worker("a").start()
    wait_for(lambda: r.hget(keys.tune_claims(tune_id), first[0]), timeout=60, what="an advance")
    made = [e for e in map(json.loads, r.lrange(keys.events(first[0]), 0, -1))
            if e["event"] == "tune_next"]  # fmt: skip
    assert len(made) == 1 and made[0]["by"].startswith("reaper ")
    assert trials_of(r, tune_id) == first + [made[0]["trial"]]


@pytest.mark.slow
def test_a_tune_runs_with_the_roles_own_rights(tmp_path):
    """A tune under the ACL users of worker/acl.py (orchestrator creates and follows, workers
    advance, the viewer watches and reads its result): Redis refuses no command, so a tune
    needs no right beyond the roles' (issue 15's least privilege)."""
    from conftest import RedisServer, Worker

    server = RedisServer(
        str(tmp_path / "redis"), users=("worker", "orchestrator", "viewer")
    ).start()
    workers = [Worker(server.url(user="worker"), n, str(tmp_path)) for n in ("a", "b")]
    try:
        for w in workers:
            w.start()
        admin = server.client()
        admin.execute_command("ACL", "LOG", "RESET")
        corpus = tmp_path / "c.txt"
        corpus.write_text(make_corpus(seed=8))
        p = run_cli("tune", "-f", tune_file(tmp_path, corpus), "--trials", "4", "--trial-minutes",
                    "0.5", "--seed", "4", "--wait", "--json", url=server.url(user="orchestrator"),
                    timeout=600)  # fmt: skip
        assert p.returncode == 0, p.stderr
        tune_id = json.loads(p.stdout)["tune_id"]
        viewer = server.url(user="viewer")
        assert run_cli("watch", tune_id, url=viewer).returncode == 0
        out = tmp_path / "best.npz"
        assert run_cli("checkpoint", tune_id, "-o", str(out), url=viewer).returncode == 0
        refused = [(e["username"], e["object"]) for e in admin.acl_log(200)
                   if e["object"] != "client"]  # fmt: skip
        assert refused == []
        assert len(trials_of(admin, tune_id)) == 4
    finally:
        for w in workers:
            w.stop()
        server.stop(kill=True)


# --- the recipe trial: one slot trains the recipe for the budget, the others search -----------
def test_the_recipe_for_a_budget_is_the_nearest_on_a_log_scale():
    from charrnn import recipes

    assert [recipes.for_budget(m).name for m in (0.5, 2, 4.4, 4.5, 10, 24, 25, 30, 600)] == [
        "2min", "2min", "2min", "10min", "10min", "10min", "60min", "60min", "60min"
    ]  # fmt: skip


def created_trials(r, out) -> list[JobSpec]:
    return [JobSpec.from_json(r.hget(keys.job(j), "spec")) for j in out["job_ids"]]


def test_a_timed_tune_starts_the_recipe_for_its_budget_beside_its_first_proposals(
    workerless_server, wr, tmp_path
):
    """`tune --minutes 12 --parallel 3`: trial 0 is the 10min recipe (as `submit --recipe
    10min` would train it) for the whole 12 minutes, outside ASHA; trials 1 and 2 are TPE's.
    A later proposal is made from the searched trials alone, as if the recipe trial were not
    there; the recipe trial ending advances the tune like any trial."""
    from charrnn.recipes import RECIPES
    from worker.store import JobStore

    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=6, words=6000))
    url = workerless_server.url()
    p = run_cli("tune", "--corpus", str(corpus), "--minutes", "12", "--parallel", "3",
                "--seed", "5", "--json", url=url, check=True)  # fmt: skip
    out = json.loads(p.stdout)
    recipe, *searched = created_trials(wr, out)
    assert recipe.rungs is None and 11.9 < recipe.minutes <= 12
    assert recipe.name.endswith("#0 (10min recipe)")
    assert {k: recipe.config.to_dict()[k] for k in RECIPES["10min"].values} == RECIPES[
        "10min"
    ].values
    assert len(searched) == 2 and all(s.rungs is not None for s in searched)
    spec = json.loads(wr.hget(keys.sweep(out["tune_id"]), "spec"))
    assert spec["tune"]["recipe_job"] == out["job_ids"][0]
    # trial 1 ends: trial 3 is proposed from trials 1 and 2 alone
    end_trial(wr, out["job_ids"][1], 1.7)
    store = JobStore(workerless_server.client())
    new = advance.advance(store, out["tune_id"], out["job_ids"][1], lambda j: None)
    jobs = store.jobs(out["job_ids"][1:])
    evidence = [advance.trial_of(j, spec["space"], {}) for j in jobs]
    expected = advance.propose(spec["space"], 5, 3, evidence)
    made = JobSpec.from_json(wr.hget(keys.job(new), "spec")).config.to_dict()
    assert {k: made[k] for k in expected} == expected
    end_trial(wr, out["job_ids"][0], 1.6)
    assert advance.advance(store, out["tune_id"], out["job_ids"][0], lambda j: None)


@pytest.mark.parametrize(
    "extra",
    [["--no-recipe-trial"], ["--parallel", "1"], ["--trials", "4"], ["-f", "FILE"]],
    ids=["refused", "one slot", "a trial count", "the user's space"],
)
def test_no_recipe_trial_without_a_time_budget_a_spare_slot_and_the_default_space(
    workerless_server, wr, tmp_path, extra
):
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=6, words=6000))
    extra = [tune_file(tmp_path, corpus) if x == "FILE" else x for x in extra]
    budget = [] if "--trials" in extra else ["--minutes", "12"]
    p = run_cli("tune", "--corpus", str(corpus), *budget, "--seed", "5", "--json", *extra,
                url=workerless_server.url(), check=True)  # fmt: skip
    out = json.loads(p.stdout)
    assert all(s.rungs is not None and "recipe" not in s.name for s in created_trials(wr, out))
    spec = json.loads(wr.hget(keys.sweep(out["tune_id"]), "spec"))
    assert spec["tune"]["recipe_trial"] is None


def test_a_tune_runs_as_many_trials_at_once_as_the_pool_has_slots(workerless_server, wr, tmp_path):
    """No --parallel: the live workers' slots (their concurrency, from the presence registry);
    a tune file's `parallel` wins over them, --parallel over both; a bad one is refused."""
    for name, slots in (("w1@a", 3), ("w2@b", 2)):
        wr.zadd(keys.workers(), {name: time.time()})
        wr.hset(keys.worker(name), mapping={"host": "h", "pid": 1, "concurrency": slots})
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=6, words=6000))
    url = workerless_server.url()

    def parallel(*extra) -> int:
        p = run_cli("tune", "--minutes", "12", "--seed", "5", "--json", *extra, url=url)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        spec = json.loads(wr.hget(keys.sweep(out["tune_id"]), "spec"))
        assert len(out["job_ids"]) == spec["tune"]["parallel"]
        return spec["tune"]["parallel"]

    assert parallel("--corpus", str(corpus)) == 5
    assert parallel("-f", tune_file(tmp_path, corpus, parallel=3)) == 3
    assert parallel("-f", tune_file(tmp_path, corpus, parallel=3), "--parallel", "4") == 4
    p = run_cli("tune", "-f", tune_file(tmp_path, corpus, parallel="x"), "--minutes", "12",
                url=url)  # fmt: skip
    assert p.returncode == 2 and "parallel" in p.stderr and len(p.stderr.splitlines()) == 1


def test_no_searched_trial_starts_with_less_than_a_third_of_its_length_left():
    """Clipped to less, a trial would be stopped at its first rung for being short (or fail to
    pass its warm-up); the recipe trial, made at the tune's start, is clipped as before."""
    sweep = {"sweep_id": "s", "job_ids": [], "spec": {
        "corpus": ["c"], "fixed": {}, "space": {}, "early_stop": None,
        "tune": {"trial_minutes": 9.0, "deadline": 1000.0, "minutes": 30.0,
                 "recipe_trial": {"recipe": "10min", "values": {"hidden_size": 8}}}}}  # fmt: skip
    assert advance.trial_spec(sweep, "a" * 64, 5, {}, now=1000 - 60 * 9.5).minutes == 9.0
    assert advance.trial_spec(sweep, "a" * 64, 5, {}, now=1000 - 60 * 3.1).minutes == pytest.approx(
        3.1
    )
    assert advance.trial_spec(sweep, "a" * 64, 5, {}, now=1000 - 60 * 2.9) is None
    assert advance.recipe_trial_spec(sweep, "a" * 64, now=1000 - 60 * 2.9).minutes == pytest.approx(
        2.9
    )
