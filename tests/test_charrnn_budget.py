"""Recipes and time budgets (issue 19, items 4 and 5): a recipe expands into a config the
options override; minutes become an iteration count recorded in the config, so the run is the
exact run `--iterations N` would be, with its schedule complete."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from test_charrnn_cli import assert_user_error, charrnn

from charrnn import budget, checkpoint, recipes
from charrnn.config import Config
from charrnn.errors import ConfigError

from textgen import pseudo_english

TEXT = pseudo_english(3000, seed=3)


def test_every_recipe_is_a_valid_config():
    for r in recipes.RECIPES.values():
        Config.from_dict(recipes.expand(r.name, {}))
    assert recipes.expand("article", {}) == {}  # the defaults are the article's trainer


def test_explicit_options_override_a_recipe():
    values = recipes.expand("10min", {"hidden_size": 64, "dropout": 0.1})
    assert values["hidden_size"] == 64 and values["dropout"] == 0.1
    assert values["cell"] == "gru" and values["optimizer"] == "adam"


def test_a_recipe_budget_gives_way_to_an_explicit_length():
    assert recipes.minutes_for("2min", {}, None) == 2
    assert recipes.minutes_for("2min", {"iterations": 50}, None) is None
    assert recipes.minutes_for("2min", {"epochs": 1.5}, None) is None
    assert recipes.minutes_for("2min", {}, 0.5) == 0.5
    assert recipes.minutes_for(None, {}, None) is None


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="no recipe 'fast'"):
        recipes.expand("fast", {})


def ticking(dt: float):
    """A clock that moves dt a reading: the probe's arithmetic without a real clock."""
    counter = itertools.count()
    return lambda: next(counter) * dt


def test_minutes_buy_the_largest_run_that_fits():
    cfg = Config(hidden_size=8, num_layers=1, seq_length=10, sample_every=50)
    b = budget.iterations_for_minutes(cfg, TEXT, 0.5, clock=ticking(0.01))
    left = budget.MARGIN * (30.0 - (b.probe_seconds - 0.01))  # less the last reading

    def cost(n):
        return budget.run_seconds(
            cfg, n, b.seconds_per_step, b.seconds_per_eval, b.seconds_per_sample
        )

    assert cost(b.iterations) <= left + 1e-9
    assert cost(b.iterations + 1) > left - 0.05  # no room for one more, to a reading or two
    assert b.iterations > 100


def test_a_budget_shorter_than_the_warmup_is_refused():
    cfg = Config(hidden_size=8, num_layers=1, seq_length=10, warmup=10**6)
    with pytest.raises(ConfigError, match="give more minutes"):
        budget.iterations_for_minutes(cfg, TEXT, 0.05, clock=ticking(0.01))
    with pytest.raises(ConfigError, match="positive"):
        budget.iterations_for_minutes(cfg, TEXT, float("nan"))


def test_train_minutes_records_iterations_and_is_exact(tmp_path):
    """A budgeted run finishes its schedule, and `--iterations N` with the N it recorded gives
    the same bits."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    common = ["--corpus", corpus, "--hidden-size", 8, "--num-layers", 1, "--seq-length", 10]
    common += ["--lr-schedule", "cosine", "--sample-every", 0, "--json"]
    a = charrnn("train", *common, "--minutes", 0.04, "--checkpoint", tmp_path / "a.npz")
    assert a.returncode == 0, a.stderr
    assert "budget: 0.04 min ->" in a.stderr
    out = json.loads(a.stdout)
    n = out["config"]["iterations"]
    assert out["iterations"] == n and n > 0  # the schedule ran to its end
    assert out["learning_rate"] == pytest.approx(0.1 * 0.02)  # the cosine's floor
    b = charrnn("train", *common, "--iterations", n, "--checkpoint", tmp_path / "b.npz")
    assert b.returncode == 0, b.stderr
    ca, cb = checkpoint.load(str(tmp_path / "a.npz")), checkpoint.load(str(tmp_path / "b.npz"))
    assert np.array_equal(ca.theta, cb.theta)


def test_minutes_with_a_length_or_a_resume_is_refused(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    r = charrnn("train", "--corpus", corpus, "--minutes", 1, "--iterations", 5)
    assert_user_error(r, "not two")
    r = charrnn("train", "--corpus", corpus, "--minutes", 0)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = charrnn("train", "--corpus", corpus, "--recipe", "2min", "--resume", tmp_path / "x.npz")
    assert_user_error(r, "--resume with --iterations")
