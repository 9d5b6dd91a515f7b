"""Issue 22 item 1 and issue 20 item 1: one module owns the job record (worker/job.py), and a record
this version cannot read harms its own job at most.

Reproduced first, with a real redis-server and real workers: a job whose stored spec holds a
hyperparameter of a newer version (`future_knob`) made `list` fail for every job ("error: unknown
hyperparameter(s): future_knob"), and so `status`, `cancel`, `delete` and the dashboard's jobs page;
its task message was re-sent every minute forever. The fixture `fixtures/job_record_2026-12.json`
is the exact hash the code before worker/job.py wrote for a job that ran to its end (captured from
a real worker), read here by the new code.
"""

import json
import pathlib
import re
import time

import pytest

from orchestrator.dashboard import views as dashboard_views
from orchestrator.jobs import _enqueue
from worker import job as record
from worker import keys, lease, reaper
from worker.app import QUEUE, TASK_NAME, client_app
from worker.job import RECORD_SCHEMA, SCHEMA_HEADER, Job, StoredSpec
from worker.spec import JobSpec
from worker.store import JobStore

from conftest import TINY_JOB, events, job_field, run_cli, submit, wait_for, wait_status

TODAY = json.loads((pathlib.Path(__file__).parent / "fixtures/job_record_2026-12.json").read_text())


def future(job_id: str, schema: int | None = 2, corpus_sha256: str | None = None) -> dict:
    """TODAY's record as a newer version writes it: a hyperparameter this one does not know, and
    (unless None) the schema version that says so."""
    spec = json.loads(TODAY["spec"])
    spec["hyper"]["future_knob"] = 3
    if corpus_sha256:
        spec["corpus_sha256"] = corpus_sha256
    rec = dict(TODAY, job_id=job_id, spec=json.dumps(spec), future_field="kept")
    rec.update(status="queued", finished_at="", error="", iteration="0", worker="")
    rec.update(deliveries="0", attempts="0")
    rec.pop("token")
    rec.pop("write_id")
    if schema is not None:
        rec["schema"] = str(schema)
    return rec


def store_raw(r, rec: dict) -> None:
    now = float(rec["submitted_at"])
    r.hset(keys.job(rec["job_id"]), mapping=rec)
    r.zadd(keys.jobs_by_time(), {rec["job_id"]: now})
    r.zadd(keys.status_index(rec["status"]), {rec["job_id"]: now})


# --- pure: the codec -------------------------------------------------------------------------
def test_todays_record_reads_whole_through_the_new_code():
    job = Job.restore({k.encode(): v.encode() for k, v in TODAY.items()})
    assert job.unreadable is None and job.extra == {} and job.schema == 1
    assert isinstance(job.spec, JobSpec) and job.spec.config.hidden_size == 8
    # read whole; written back, it names the one field added since: no embedding, as it trained
    today = json.loads(TODAY["spec"])
    today["hyper"]["embedding_size"] = 0
    assert json.loads(job.spec.to_json()) == today
    assert (job.status, job.name, job.tags, job.sweep_id) == (
        "succeeded",
        "today",
        ["fixture"],
        None,
    )
    assert job.train_loss == float(TODAY["smooth_loss"]) and job.iteration == 300
    assert (job.token, job.write_id, job.deliveries, job.attempts) == ("1", "1:309", 1, 0)
    assert job.samples_written == 3 and job.finished_at == float(TODAY["finished_at"])
    view = job.view()
    # every field the readers took before, under the same name and value
    assert view["smooth_loss"] == view["train_loss"] == float(TODAY["smooth_loss"])
    assert view["error"] is None and view["waiting"] is None and view["cancel_requested"] is False
    assert (view["restarts"], view["rollbacks"], view["worker"]) == (0, 0, "it1@vm")


def test_every_stored_field_is_declared_and_round_trips():
    assert set(TODAY) <= set(record.HASH_FIELDS), set(TODAY) - set(record.HASH_FIELDS)
    spec = Job.restore(TODAY).spec
    assert isinstance(spec, JobSpec)
    new = Job.new("c9580f4f-be38-46fe-aa2e-e4550a7caf99", spec, 1796483128.822975)
    stored = {k: str(v) for k, v in new.to_mapping().items()}
    assert stored["schema"] == str(RECORD_SCHEMA)
    back = Job.restore(stored)
    assert (
        back == Job.restore(stored) and back.spec == spec and back.submitted_at == new.submitted_at
    )


def test_a_field_this_version_does_not_know_is_kept_not_dropped():
    job = Job.restore(dict(TODAY, future_field="x"))
    assert job.extra == {"future_field": "x"} and job.view()["unknown_fields"] == {
        "future_field": "x"
    }
    assert job.unreadable is None


def test_the_lua_scripts_write_only_declared_fields():
    """The fields written inside Redis (lease.py's scripts) are in FIELDS too."""
    for script in (lease.ACQUIRE, lease.FENCED, reaper.CLAIM, reaper.CLAIM_QUEUED):
        for f in re.findall(r"'(?:HSET|HINCRBY|HGET)', KEYS\[[12]\], '(\w+)'", script):
            assert f in record.HASH_FIELDS, f


def test_a_newer_record_reads_with_what_can_be_read_and_says_which_version():
    job = Job.restore(future("c9580f4f-be38-46fe-aa2e-e4550a7caf99"))
    assert job.schema == 2 and "record schema 2" in (job.unreadable or "")
    assert "reads up to 1" in (job.unreadable or "")
    # without the version (a newer writer that forgot it), the spec says what it cannot read
    job = Job.restore(future("c9580f4f-be38-46fe-aa2e-e4550a7caf99", schema=None))
    assert "unknown hyperparameter(s): future_knob" in (job.unreadable or "")
    assert isinstance(job.spec, StoredSpec) and job.spec.config is not None
    assert job.spec.config.hidden_size == 8 and job.spec.to_dict()["hyper"]["future_knob"] == 3
    assert job.name == "today" and job.iterations == 300 and job.extra == {"future_field": "kept"}


@pytest.mark.parametrize(
    "spec",
    ["", "not json {", "[1, 2]", json.dumps({"early_stop": {"reduction_factor": "x"}})],
)
def test_a_spec_that_does_not_read_is_said_never_raised(spec):
    job = Job.restore(dict(TODAY, spec=spec))
    assert job.unreadable and job.unreadable.startswith("its spec cannot be read")
    assert isinstance(job.spec, StoredSpec) and job.status == "succeeded"


# --- a real redis-server: the commands and the dashboard's page ------------------------------
FUTURE_ID = "0f0f0f0f-0000-4000-8000-000000000001"


def test_a_newer_record_takes_no_command_down(r, redis_server):
    url = redis_server.url()
    store_raw(r, future(FUTURE_ID))
    other = _store_today(r)
    p = run_cli("list", "--json", url=url)
    assert p.returncode == 0, p.stderr
    rows = {j["job_id"]: j for j in json.loads(p.stdout)}
    assert set(rows) == {FUTURE_ID, other}
    assert "needs a newer charrnn" in rows[FUTURE_ID]["unreadable"]
    assert rows[other]["unreadable"] is None
    p = run_cli("status", FUTURE_ID, "--json", url=url)
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "queued", p.stderr
    p = run_cli("status", FUTURE_ID, url=url)
    assert p.returncode == 0 and "needs a newer charrnn" in p.stdout, p.stderr
    p = run_cli("results", FUTURE_ID, "--json", url=url)
    assert p.returncode == 0 and json.loads(p.stdout)["spec"]["hyper"]["future_knob"] == 3
    page = dashboard_views.jobs_page(JobStore(r))
    assert {j["job_id"] for j in page["jobs"]} == {FUTURE_ID, other}
    assert dashboard_views.job_view(JobStore(r), FUTURE_ID)["spec"]["hyper"]["future_knob"] == 3
    p = run_cli("cancel", FUTURE_ID, url=url)
    assert p.returncode == 0 and job_field(r, FUTURE_ID, "status") == "cancelled", p.stderr
    assert job_field(r, FUTURE_ID, "future_field") == "kept"  # written back untouched
    p = run_cli("delete", FUTURE_ID, url=url)
    assert p.returncode == 0 and not r.exists(keys.job(FUTURE_ID)), p.stderr
    assert r.exists(keys.job(other))


def _store_today(r) -> str:
    rec = dict(TODAY, job_id="0f0f0f0f-0000-4000-8000-000000000002")
    store_raw(r, rec)
    return rec["job_id"]


# --- real workers ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.integration
def test_a_worker_fails_a_newer_job_once_with_the_reason_and_runs_the_next(
    r, redis_server, pool, corpus_file
):
    url = redis_server.url()
    sha, _ = JobStore(r).put_corpus(corpus_file.read_text())
    store_raw(r, future(FUTURE_ID, corpus_sha256=sha))
    r.sadd(keys.corpus_jobs(sha), FUTURE_ID)
    _enqueue(client_app(url), FUTURE_ID)
    assert wait_status(r, FUTURE_ID, timeout=120) == "failed"
    error = job_field(r, FUTURE_ID, "error")
    assert "record schema 2" in error and "needs a newer charrnn" in error, error
    after = submit(url, corpus_file, **TINY_JOB)
    assert wait_status(r, after, timeout=120) == "succeeded"  # the pool is whole
    time.sleep(2)
    assert job_field(r, FUTURE_ID, "deliveries") == "1"  # failed once, never re-sent
    assert [e["event"] for e in events(r, FUTURE_ID)] == ["failed"]
    assert job_field(r, FUTURE_ID, "future_field") == "kept"
    wait_for(lambda: job_field(r, FUTURE_ID, "status") == "failed", 1, what="still failed")


@pytest.mark.slow
@pytest.mark.integration
def test_a_message_of_a_newer_schema_fails_its_job_once_with_the_reason(
    r, redis_server, pool, corpus_file
):
    """The version travels in a header (an older worker ignores it); a worker that reads an
    older one fails the job, and the next job runs."""
    url = redis_server.url()
    sha, _ = JobStore(r).put_corpus(corpus_file.read_text())
    rec = dict(future(FUTURE_ID, schema=None, corpus_sha256=sha))
    rec["spec"] = json.dumps(
        dict(json.loads(rec["spec"]), hyper=json.loads(TODAY["spec"])["hyper"])
    )
    store_raw(r, rec)
    r.sadd(keys.corpus_jobs(sha), FUTURE_ID)
    client_app(url).send_task(
        TASK_NAME, args=[FUTURE_ID], task_id=FUTURE_ID, queue=QUEUE, headers={SCHEMA_HEADER: 2}
    )
    assert wait_status(r, FUTURE_ID, timeout=120) == "failed"
    error = job_field(r, FUTURE_ID, "error")
    assert "message schema 2" in error and "reads up to 1" in error, error
    after = submit(url, corpus_file, **TINY_JOB)
    assert wait_status(r, after, timeout=120) == "succeeded"
    assert job_field(r, FUTURE_ID, "deliveries") == "1"
