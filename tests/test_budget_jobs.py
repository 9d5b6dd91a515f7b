"""Time budgets on the pool (issue 19, item 4): `submit --minutes M` stores the minutes; the
worker that starts the job turns them into iterations with its own speed and records them in
the spec, so the job ends with its schedule complete, is bit-identical to the `--iterations N`
run, and a resume on another worker continues the same run. Real Redis, real workers."""

import json

import pytest

from worker import keys
from worker.spec import JobSpec, RungPlan, SpecError

from conftest import (
    assert_matches_reference,
    events,
    job_field,
    make_corpus,
    run_cli,
    submit,
    wait_for,
    wait_iteration,
    wait_status,
)

SPEC = dict(hidden_size=16, num_layers=1, seq_length=16, eval_every=200, sample_every=0, seed=5)
SHA = "0" * 64


def stored_spec(r, job_id) -> JobSpec:
    return JobSpec.from_json(r.hget(keys.job(job_id), "spec"))


def test_a_budget_is_unsettled_until_a_worker_settles_it():
    from charrnn import Config

    spec = JobSpec(SHA, Config(), None, minutes=2.0)
    assert spec.unsettled and JobSpec.from_json(spec.to_json()) == spec
    with pytest.raises(SpecError, match="positive integer"):
        JobSpec(SHA, Config(), None)  # no length and no budget
    with pytest.raises(SpecError, match="when it starts"):
        JobSpec(SHA, Config(), 100, minutes=2.0)
    with pytest.raises(SpecError, match="minutes must be a positive"):
        JobSpec(SHA, Config(), None, minutes=float("nan"))


def test_rung_fractions_become_the_trials_own_milestones():
    plan = RungPlan("s", (), 3.0, (1 / 9, 1 / 3))
    settled = plan.settled(900)
    assert settled is not None and settled.milestones == (100, 300)
    assert settled.label(100) == plan.settled(450).label(50)  # same rung, another length
    assert plan.settled(1) is None  # too short for any rung
    with pytest.raises(SpecError, match=r"in \(0, 1\)"):
        RungPlan("s", (), 3.0, (0.5, 1.5))


@pytest.mark.slow
def test_minutes_on_the_pool_end_complete_and_exact(stack, tmp_path):
    """The job's recorded spec holds the iterations its worker measured; the job ends at them,
    and its weights are those of an in-process `--iterations N` run. `status` shows the budget
    while the job waits for a worker."""
    server, worker = stack
    r = server.client()
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=3))
    job = submit(server.url(), corpus, "--minutes", "0.15", **SPEC)
    st = json.loads(run_cli("status", job, "--json", url=server.url(), check=True).stdout)
    assert st["iterations"] is None and st["minutes"] == 0.15
    human = run_cli("status", job, url=server.url(), check=True).stdout
    assert "budget 0.15 min" in human
    worker("a").start()
    assert wait_status(r, job, timeout=120) == "succeeded"
    spec = stored_spec(r, job)
    n = spec.total_iterations
    assert spec.budget is not None and spec.budget["iterations"] == n == spec.config.iterations
    assert int(job_field(r, job, "iteration")) == n
    assert [e["event"] for e in events(r, job)].count("budget") == 1
    assert_matches_reference(r, job, corpus.read_text(), {**SPEC, "iterations": n})


@pytest.mark.slow
def test_a_budgeted_job_resumes_exactly_on_another_worker(stack, tmp_path):
    """Killed after its budget was settled, the job resumes on a fresh worker with the same
    iteration count (not one measured again) and ends bit-identical to the uninterrupted run."""
    server, worker = stack
    env = {"CHARRNN_VISIBILITY_TIMEOUT": "3"}
    w = worker("a", **env).start()
    r = server.client()
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=4))
    job = submit(server.url(), corpus, "--minutes", "0.3", "--checkpoint-every", "200", **SPEC)
    wait_for(lambda: stored_spec(r, job).budget, timeout=60, what="the budget settled")
    n = stored_spec(r, job).total_iterations
    wait_iteration(r, job, min(n // 2, 1000), timeout=60)
    w.kill_all()
    worker("b", **env).start()
    assert wait_status(r, job, timeout=180) == "succeeded"
    names = [e["event"] for e in events(r, job)]
    assert "resumed" in names and names.count("budget") == 1
    assert stored_spec(r, job).total_iterations == n
    assert_matches_reference(r, job, corpus.read_text(), {**SPEC, "iterations": n})


def test_a_sweep_recipe_fills_what_the_sweep_leaves():
    from orchestrator import launch

    spec = {"fixed": {"hidden_size": 32}, "grid": {"learning_rate": [0.01, 0.003]}}
    out = launch.with_recipe(spec, "2min")
    assert out["fixed"]["hidden_size"] == 32 and out["fixed"]["cell"] == "gru"
    assert "learning_rate" not in out["fixed"] and out["recipe"] == "2min"
    assert launch.with_recipe(spec, None) is spec


@pytest.mark.slow
def test_a_job_whose_deadline_passed_in_the_queue_is_cancelled_not_failed(stack, tmp_path):
    """A budget with a deadline (a tune's trial) that a worker reaches only after it: the job
    ends cancelled with the reason, nothing trained, instead of failing."""
    import dataclasses
    import time

    server, worker = stack
    r = server.client()
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_corpus(seed=3))
    job = submit(server.url(), corpus, "--minutes", "1", **SPEC)
    spec = dataclasses.replace(stored_spec(r, job), deadline=time.time() - 1)
    r.hset(keys.job(job), "spec", spec.to_json())
    worker("a").start()
    assert wait_status(r, job, timeout=60) == "cancelled"
    [ev] = [e for e in events(r, job) if e["event"] == "cancelled"]
    assert "deadline" in ev["reason"] and not r.exists(keys.checkpoint(job, "latest"))
