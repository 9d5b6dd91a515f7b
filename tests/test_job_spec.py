"""The job spec, as pure functions: one typed form, one serialised form, bounds on what a
spec may ask of the store (issue 11; the rung bounds are issue 12's)."""

import json

import pytest

from charrnn import CharRNNError, Config
from worker.spec import MAX_RUNGS, JobSpec, RungPlan, SpecError

SHA = "ab" * 32


def spec(**kw):
    return JobSpec(
        **{"corpus_sha256": SHA, "config": Config(hidden_size=16), "total_iterations": 500, **kw}
    )


def test_round_trip_is_exact():
    s = spec(
        corpus="a.txt",
        name="n",
        tags=("x", "sweep:abc"),
        checkpoint_every=50,
        sweep_id="abc",
        rungs=RungPlan("abc", (100, 300), 3.0),
    )
    assert JobSpec.from_json(s.to_json()) == s
    d = json.loads(s.to_json())
    assert d["hyper"] == Config(hidden_size=16).to_dict() and d["early_stop"]["rungs"] == [100, 300]


def test_reads_specs_stored_before_the_rename():
    legacy = {
        "corpus_sha256": SHA,
        "corpus": "a.txt",
        "hyper": {"hidden_size": 8},
        "checkpoint_every": 1000,
        "iterations_total": 77,
    }
    s = JobSpec.from_json(json.dumps(legacy))
    assert s.total_iterations == 77 and s.config.hidden_size == 8 and s.rungs is None


@pytest.mark.parametrize(
    "raw, message",
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ("{}", "malformed job spec"),
        (
            json.dumps({"corpus_sha256": "xyz", "hyper": {}, "total_iterations": 1}),
            "not a corpus sha256",
        ),
        (
            json.dumps({"corpus_sha256": SHA, "hyper": {"hidden_size": 0}, "total_iterations": 1}),
            "hidden-size must be >= 1",
        ),
    ],
)
def test_malformed_specs_are_one_clear_error(raw, message):
    with pytest.raises(CharRNNError) as e:  # SpecError, or the Config's own ConfigError
        JobSpec.from_json(raw)
    assert message in str(e.value)


def test_bounds():
    with pytest.raises(SpecError, match="total iterations must be a positive integer"):
        spec(total_iterations=0)
    with pytest.raises(SpecError, match="checkpoint-every"):
        spec(checkpoint_every=0)
    with pytest.raises(SpecError, match="tags, above"):
        spec(tags=tuple(f"t{i}" for i in range(21)))
    with pytest.raises(SpecError, match="rungs belong to the job's own sweep"):
        spec(sweep_id="a", rungs=RungPlan("b", (10,), 3.0))


@pytest.mark.parametrize(
    "milestones, eta, message",
    [
        ((), 3.0, "1 to 20 rungs"),
        (tuple(range(1, MAX_RUNGS + 2)), 3.0, "1 to 20 rungs"),
        ((300, 100), 3.0, "increasing"),
        ((100, 100), 3.0, "increasing"),
        ((0,), 3.0, "increasing"),
        ((100,), 1.00001, "reduction factor must be in [1.5, 100]"),
        ((100,), float("nan"), "reduction factor"),
        ((100,), 1000.0, "reduction factor"),
    ],
)
def test_rung_plans_are_bounded(milestones, eta, message):
    with pytest.raises(SpecError) as e:
        RungPlan("s", milestones, eta)
    assert message in str(e.value)


def test_the_sweep_tag_prefix_is_reserved_for_sweeps():
    assert JobSpec.check_user_tags(["a", "b:c"]) == ("a", "b:c")
    with pytest.raises(SpecError, match="reserved for sweeps"):
        JobSpec.check_user_tags(["sweep:1234"])


def test_a_spec_stored_before_embeddings_reads_without_one():
    """A gated job queued before `embedding_size` existed resumes the checkpoint it wrote: its
    spec means no embedding, not today's default for its cell."""
    import json

    from worker.spec import JobSpec

    old = {"corpus_sha256": "a" * 64, "total_iterations": 10, "hyper": {"cell": "gru"}}
    assert JobSpec.from_json(json.dumps(old)).config.embedding_size == 0
    new = JobSpec.from_json(json.dumps({**old, "hyper": {"cell": "gru", "hidden_size": 32}}))
    assert new.config.embedding_size == 0  # still a spec without the field: stored before
    fresh = JobSpec.from_dict(JobSpec.from_json(json.dumps(old)).to_dict())
    assert fresh.config.embedding_size == 0  # written back with the field, it stays 0
