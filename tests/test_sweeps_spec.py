"""Sweep specs, ASHA's pure rules, the leaderboard and the plot: pure functions only (no Redis,
no Celery)."""

import itertools
import json
import math
import os
import random
import uuid

import pytest

from charrnn.config import FIELDS, Config
from charrnn.data import prepare
from orchestrator import leaderboard as lb
from orchestrator import plots, sweeps
from orchestrator.errors import BadInput
from worker.asha import default_rungs
from worker.spec import JobSpec, RungPlan, SpecError

WORDS = "alpha beta gamma delta rnn train worker redis job the of and lease token".split()


def opts(**kw):
    """sweeps.from_options with every option unset unless given."""
    args = dict(
        corpora=("a.txt",),
        fixed={},
        grid=(),
        samples=None,
        uniform=(),
        log_uniform=(),
        choice=(),
        seed=None,
        early_stop=None,
        rungs=None,
        grace_period=None,
        reduction_factor=None,
    )
    args.update(kw)
    return sweeps.from_options(**args)


def points(**kw):
    return sweeps.expand(sweeps.normalize(opts(**kw)))


def test_grid_expands_every_combination_once_typed():
    pts = points(grid=("hidden-size=64,128", "learning_rate=1,0.03"))
    hypers = [h for _, h in pts]
    assert hypers == [
        {"hidden_size": 64, "learning_rate": 1.0},
        {"hidden_size": 64, "learning_rate": 0.03},
        {"hidden_size": 128, "learning_rate": 1.0},
        {"hidden_size": 128, "learning_rate": 0.03},
    ]
    assert all(type(h["hidden_size"]) is int and type(h["learning_rate"]) is float for h in hypers)


def test_comma_list_in_fixed_option_is_a_grid_axis_and_fixed_values_are_everywhere():
    # as the generated options give them: typed, a comma list as a list, None when not given
    fixed = {"hidden_size": [16, 32], "iterations": 500, "dropout": None}
    spec = sweeps.normalize(opts(fixed=fixed))
    assert spec["grid"] == {"hidden_size": [16, 32]}
    assert spec["fixed"] == {"iterations": 500}
    assert [h for _, h in sweeps.expand(spec)] == [
        {"iterations": 500, "hidden_size": 16},
        {"iterations": 500, "hidden_size": 32},
    ]


def test_several_corpora_multiply_points_corpus_major():
    pts = points(corpora=("a.txt", "b.txt"), grid=("num_layers=1,2,3",))
    assert [c for c, _ in pts] == ["a.txt"] * 3 + ["b.txt"] * 3
    assert [h for _, h in pts[:3]] == [h for _, h in pts[3:]]
    spec = sweeps.normalize(opts(corpora=("a", "b"), grid=("num_layers=1,2,3",)))
    assert sweeps.n_points(spec) == 6


SPACE = dict(
    uniform=("hidden_size=16,18", "dropout=0,0.5"),
    log_uniform=("learning_rate=0.001,0.1",),
    choice=("num_layers=1,2,3",),
)


def test_same_seed_same_points_other_seed_other_points():
    a = points(samples=5, seed=7, **SPACE)
    assert a == points(samples=5, seed=7, **SPACE)
    assert a != points(samples=5, seed=8, **SPACE)


def test_samples_times_grid_points_each_sample_crossed_with_the_grid():
    pts = points(samples=4, seed=1, grid=("seq_length=10,20,30",), **SPACE)
    assert len(pts) == 12
    for i in range(4):
        block = [h for _, h in pts[3 * i : 3 * i + 3]]
        assert [h["seq_length"] for h in block] == [10, 20, 30]
        rest = [{k: v for k, v in h.items() if k != "seq_length"} for h in block]
        assert rest[0] == rest[1] == rest[2]


def test_drawn_values_are_typed_bounded_and_rounded():
    hypers = [h for _, h in points(samples=60, seed=3, **SPACE)]
    ints = {h["hidden_size"] for h in hypers}
    assert all(type(v) is int for v in ints) and ints == {16, 17, 18}  # inclusive bounds
    for h in hypers:
        lr, dropout = h["learning_rate"], h["dropout"]
        assert type(lr) is float and 0.001 <= lr <= 0.1 and lr == float(f"{lr:.6g}")
        assert 0.0 <= dropout <= 0.5 and dropout == float(f"{dropout:.6g}")
        assert h["num_layers"] in (1, 2, 3) and type(h["num_layers"]) is int
    assert len({h["learning_rate"] for h in hypers}) > 50
    logint = [h for _, h in points(samples=30, seed=3, log_uniform=("hidden_size=16,256",))]
    assert all(type(h["hidden_size"]) is int and 16 <= h["hidden_size"] <= 256 for h in logint)


def test_seed_is_recorded_when_not_given_and_reproduces_the_points():
    spec = sweeps.normalize(opts(samples=4, **SPACE))
    assert type(spec["random"]["seed"]) is int
    again = sweeps.normalize(json.loads(json.dumps(spec)))  # as stored, then read back
    assert again["random"]["seed"] == spec["random"]["seed"]
    assert sweeps.expand(again) == sweeps.expand(spec)


def test_option_order_does_not_matter():
    a = points(
        samples=6, seed=11, uniform=("dropout=0,0.5", "grad_clip=1,10"), choice=("num_layers=1,2",)
    )
    b = points(
        samples=6, seed=11, choice=("num_layers=1,2",), uniform=("grad_clip=1,10", "dropout=0,0.5")
    )
    space = {
        "num_layers": {"choice": [1, 2]},
        "grad_clip": {"uniform": [1, 10]},
        "dropout": {"uniform": [0, 0.5]},
    }
    c = sweeps.expand(
        sweeps.normalize({"corpus": "a.txt", "random": {"samples": 6, "seed": 11, "space": space}})
    )
    assert a == b == c


@pytest.mark.parametrize(
    "match, kw",
    [
        (
            r"unknown hyperparameter 'hiden_size' \(did you mean hidden_size\?\)",
            dict(grid=("hiden_size=1,2",)),
        ),
        ("empty range", dict(grid=("hidden_size=",))),
        ("empty range", dict(grid=("hidden_size=16,,32",))),
        ("above high", dict(samples=2, uniform=("dropout=0.5,0.1",))),
        ("empty range", dict(samples=2, uniform=("dropout=0.2,0.2",))),
        ("positive", dict(samples=2, log_uniform=("learning_rate=0,0.1",))),
        ("positive", dict(samples=2, log_uniform=("learning_rate=-1,0.1",))),
        ("not numeric", dict(samples=2, uniform=("dtype=1,2",))),
        (
            "both fixed and in the grid",
            dict(fixed={"hidden_size": "64"}, grid=("hidden_size=16,32",)),
        ),
        (
            "both fixed and in the random",
            dict(fixed={"dropout": "0.1"}, samples=2, choice=("dropout=0,0.5",)),
        ),
        (
            "both in the grid and in the random",
            dict(grid=("dropout=0,0.1",), samples=2, choice=("dropout=0,0.5",)),
        ),
        ("repeats a value", dict(grid=("hidden_size=64,064",))),
        ("repeats a value", dict(grid=("learning_rate=0.1,0.10",))),
        ("--seed", dict(seed=3)),
        ("--random N too", dict(uniform=("dropout=0,0.5",))),
        ("draws from a space", dict(samples=3)),
        ("distinct and increasing", dict(early_stop="asha", rungs="300,200")),
        ("distinct and increasing", dict(early_stop="asha", rungs="200,200")),
        ("not both", dict(early_stop="asha", rungs="100,200", grace_period=100)),
        ("need --early-stop asha", dict(rungs="100,200")),
        ("need --early-stop asha", dict(grace_period=100)),
        ("above the limit", dict(samples=sweeps.MAX_POINTS + 1, choice=("num_layers=1,2",))),
        ("not an integer", dict(fixed={"hidden_size": "1.5"})),
        ("not an integer", dict(grid=("num_layers=1,2.5",))),
        ("not an integer", dict(samples=2, uniform=("hidden_size=16,64.5",))),
    ],
)
def test_invalid_space_is_bad_input(match, kw):
    with pytest.raises(BadInput, match=match):
        sweeps.normalize(opts(**kw))


def test_max_points_is_allowed_and_file_values_are_checked_too():
    spec = sweeps.normalize(opts(samples=sweeps.MAX_POINTS, choice=("num_layers=1,2",)))
    assert sweeps.n_points(spec) == sweeps.MAX_POINTS
    with pytest.raises(BadInput, match="not an integer"):
        sweeps.normalize({"corpus": "a.txt", "grid": {"hidden_size": [64, 1.5]}})


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("s.yaml", "corpus: a.txt\ngrid: [unclosed\n", "not valid YAML"),
        ("s.json", '{"corpus": "a.txt",', "not valid JSON"),
        ("s.json", '{"corpus": "a.txt", "gird": {}}', "'gird' was unexpected"),
        (
            "s.yaml",
            "corpus: a.txt\ngrid:\n  hidden_size: 64\n",
            r"grid\.hidden_size.*not of type 'array'",
        ),
        ("s.yaml", "- a\n- b\n", "expected a mapping"),
    ],
)
def test_invalid_sweep_file(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInput, match=match):
        sweeps.read_file(str(path))


def test_yaml_and_json_files_give_the_same_spec(tmp_path):
    spec = {
        "name": "lr-vs-size",
        "corpus": ["a.txt", "b.txt"],
        "fixed": {"iterations": 200},
        "grid": {"hidden_size": [64, 128]},
        "random": {
            "samples": 3,
            "seed": 5,
            "space": {
                "learning_rate": {"log_uniform": [0.001, 0.1]},
                "num_layers": {"choice": [1, 2]},
            },
        },
        "early_stop": {"scheduler": "asha", "grace_period": 50},
    }
    (tmp_path / "s.json").write_text(json.dumps(spec), encoding="utf-8")
    (tmp_path / "s.yml").write_text(
        "name: lr-vs-size\ncorpus: [a.txt, b.txt]\nfixed: {iterations: 200}\n"
        "grid:\n  hidden-size: [64, 128]\nrandom:\n  samples: 3\n  seed: 5\n  space:\n"
        "    learning_rate: {log_uniform: [0.001, 0.1]}\n    num_layers: {choice: [1, 2]}\n"
        "early_stop: {scheduler: asha, grace_period: 50}\n",
        encoding="utf-8",
    )
    a = sweeps.normalize(sweeps.read_file(str(tmp_path / "s.json")))
    b = sweeps.normalize(sweeps.read_file(str(tmp_path / "s.yml")))
    assert a == b and a["early_stop"]["reduction_factor"] == 3.0
    assert sweeps.expand(a) == sweeps.expand(b) and len(sweeps.expand(a)) == 12


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "words.txt"
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(3000)) + "\n", encoding="utf-8")
    return str(path)


def test_plan_sweep_totals_per_point(corpus):
    spec = sweeps.normalize(
        opts(corpora=(corpus,), grid=("iterations=30,60",), fixed={"seq_length": "10"})
    )
    texts, pts = sweeps.plan(spec)
    assert list(texts) == [corpus] and texts[corpus].startswith(tuple(WORDS))
    assert [(c, cfg.iterations, total) for c, cfg, total in pts] == [
        (corpus, 30, 30),
        (corpus, 60, 60),
    ]
    spec = sweeps.normalize(opts(corpora=(corpus,), fixed={"seq_length": "10", "epochs": "2"}))
    ((_, cfg, total),) = sweeps.plan(spec)[1]
    n_train = len(prepare(texts[corpus], cfg.val_fraction, 10)[1])
    assert total == math.ceil(2 * ((n_train - 1) // 10))


def test_plan_sweep_fills_default_rungs(corpus):
    spec = sweeps.normalize(
        opts(corpora=(corpus,), grid=("iterations=300,900",), early_stop="asha")
    )
    sweeps.plan(spec)
    assert spec["early_stop"]["rungs"] == default_rungs(900, 3.0, None)
    spec = sweeps.normalize(
        opts(corpora=(corpus,), grid=("iterations=300,900",), early_stop="asha", grace_period=100)
    )
    sweeps.plan(spec)
    assert spec["early_stop"]["rungs"] == [100, 300]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(fixed={"iterations": "500", "val_fraction": "0"}, early_stop="asha"), "val_fraction"),
        (
            dict(fixed={"iterations": "500"}, early_stop="asha", grace_period=1000),
            "no early-stopping rung",
        ),
        (
            dict(fixed={"iterations": "500"}, early_stop="asha", rungs="500,900"),
            "no early-stopping rung",
        ),
    ],
)
def test_plan_sweep_rejects(corpus, kw, match):
    spec = sweeps.normalize(opts(corpora=(corpus,), **kw))
    with pytest.raises(BadInput, match=match):
        sweeps.plan(spec)


def test_default_rungs_without_grace_period_grow_by_eta_below_the_end():
    r = default_rungs(10000, 3, None)
    assert r[0] == 371 and r == sorted(set(r)) and all(m < 10000 for m in r)
    assert all(2.9 < b / a < 3.1 for a, b in itertools.pairwise(r))
    assert default_rungs(2700, 3, None) == [100, 300, 900]


def test_default_rungs_without_grace_period_gives_count_rungs():
    """Not a fourth rung just before the end (r rounded down put one at 9990 of 10000)."""
    for top in (10000, 20000, 1000, 2700, 900):
        assert len(default_rungs(top, 3, None)) == 3, top


def test_default_rungs_with_grace_period():
    assert default_rungs(1000, 2, 100) == [100, 200, 400, 800]
    assert default_rungs(801, 2, 100) == [100, 200, 400, 800]
    assert default_rungs(100, 2, 100) == []


def test_rungs_from_spec_and_ahead():
    r = RungPlan("s1", (100, 300, 900), 3.0)
    assert r.ahead(0, 2000) == [100, 300, 900]
    assert r.ahead(300, 2000) == [300, 900]  # a rung at the current iteration is ahead
    assert r.ahead(301, 2000) == [900]
    assert r.ahead(0, 900) == [100, 300]  # a rung at the job's end is no decision
    assert r.ahead(0, 250) == [100]


def job(best=None, corpus="a.txt", history_iters=100, rungs=None, name=None, **hyper):
    sweep_id = "s1" if rungs else None
    spec = JobSpec(
        corpus_sha256="0" * 64,
        config=Config(**hyper),
        total_iterations=history_iters,
        corpus=corpus,
        sweep_id=sweep_id,
        rungs=RungPlan(sweep_id, tuple(rungs), 3.0) if rungs else None,
    )
    return {
        "job_id": str(uuid.uuid4()),
        "name": name,
        "status": "succeeded",
        "best_val_loss": best,
        "val_loss": best,
        "smooth_loss": 30.0,
        "iteration": history_iters,
        "iterations": history_iters,
        "chars_per_second": 1000.0,
        "sweep_id": None,
        "spec": spec,
    }


def test_varying_in_charrnn_order():
    a, b = job(learning_rate=0.1, hidden_size=64), job(learning_rate=0.03, hidden_size=128)
    assert lb.varying([a, b]) == ["hidden_size", "learning_rate"]
    assert FIELDS.index("hidden_size") < FIELDS.index("learning_rate")
    assert lb.varying([a, job(corpus="dir/b.txt", learning_rate=0.1, hidden_size=64)]) == ["corpus"]
    assert lb.varying([a, job(learning_rate=0.1, hidden_size=64)]) == []
    assert lb.params(job(corpus="dir/b.txt", hidden_size=64), ["corpus", "hidden_size"]) == {
        "corpus": "b.txt",
        "hidden_size": 64,
    }


def test_label_and_fmt_value():
    a = job(learning_rate=0.0123456, hidden_size=64, name=None)
    assert lb.label(a, ["hidden_size", "learning_rate"]) == "hidden=64 lr=0.01235"
    assert lb.label(a, []) == a["job_id"][:8]
    assert lb.label(job(name="mine"), []) == "mine"
    assert (lb.fmt_value(1.0), lb.fmt_value(64), lb.fmt_value(None)) == ("1", "64", "None")


def test_rank_best_first_none_last_ties_in_given_order():
    js = [job(None), job(1.5), job(1.2), job(None), job(1.5), job(0.9)]
    ranked = lb.rank(js)
    assert [j["best_val_loss"] for j in ranked] == [0.9, 1.2, 1.5, 1.5, None, None]
    assert [j["job_id"] for j in ranked] == [js[i]["job_id"] for i in (5, 2, 1, 4, 0, 3)]


def test_eval_points():
    j = job(history_iters=12000, rungs=[1000, 3000], eval_every=5000)
    assert lb.eval_points(j) == {1000, 3000, 5000, 10000, 12000}
    assert lb.eval_points(job(history_iters=700, eval_every=0)) == {700}
    j = job(history_iters=700, eval_every=300)
    j["iterations"] = None  # falls back on the spec's total
    assert lb.eval_points(j) == {300, 600, 700}


def test_curves_chars_per_char_loss_and_val_at_eval_points_only():
    j = job(history_iters=250, eval_every=100, seq_length=25)
    history = [
        [50, 100.0, 3.0],
        [100, 75.0, 2.9],
        [100, 74.0, 2.5],
        [150, 60.0, 2.5],
        [200, 50.0, 2.1],
        [250, None, 2.0],
    ]
    c = lb.curves(j, history)
    assert c["train_chars"] == [1250, 2500, 2500, 3750, 5000]
    # per character through the one conversion (charrnn.units), whatever unit the trainer reports
    assert c["train_loss"] == [100.0, 75.0, 74.0, 60.0, 50.0]  # stored per character
    assert c["val_chars"] == [2500, 5000, 6250]
    assert c["val_loss"] == [2.5, 2.1, 2.0]  # the last row at iteration 100


def test_figure_has_one_line_per_job_in_each_panel():
    import matplotlib.pyplot as plt

    history = [[i, 50.0 - i / 10, 2.0 if i % 100 == 0 else None] for i in range(10, 310, 10)]
    js = [
        job(1.0 + k / 10, history_iters=300, eval_every=100, hidden_size=16 * (k + 1))
        for k in range(3)
    ]
    names = lb.varying(js)
    fig = plots.figure([(lb.label(j, names), lb.curves(j, history)) for j in js], "a sweep")
    try:
        assert len(fig.axes) == 2
        assert all(len(ax.get_lines()) == 3 for ax in fig.axes)
        texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        assert texts == ["hidden=16", "hidden=32", "hidden=48"]
    finally:
        plt.close(fig)


def test_sweep_file_corpus_paths_are_relative_to_the_file(tmp_path):
    sub = tmp_path / "exp"
    sub.mkdir()
    f = sub / "s.yaml"
    f.write_text(f"corpus: [data/a.txt, builtin:python-docs, {sub}/abs.txt]\n")
    spec = sweeps.read_file(str(f))
    real = sub.resolve()
    assert spec["corpus"] == [
        str(real / "data" / "a.txt"),
        "builtin:python-docs",
        str(real / "abs.txt"),
    ]


@pytest.mark.parametrize(
    "corpus", ["/etc/passwd", "../secret.txt", "data/../../secret.txt", "link.txt", "/dev/zero"]
)
def test_sweep_file_corpus_stays_under_the_files_folder(tmp_path, corpus):
    """A shared sweep file names no corpus outside its folder: not by an absolute path, not by
    ../, not through a symlink. Naming the corpus on the command line (--corpus) is the way."""
    sub = tmp_path / "exp"
    sub.mkdir()
    (tmp_path / "secret.txt").write_text("secret\n")
    (sub / "link.txt").symlink_to(tmp_path / "secret.txt")
    f = sub / "s.yaml"
    f.write_text(f"corpus: {corpus}\ngrid: {{hidden_size: [8, 16]}}\n")
    with pytest.raises(BadInput, match="outside the file's folder"):
        sweeps.read_file(str(f))
    spec = sweeps.read_file(str(f), corpus_given=True)  # --corpus replaces it
    assert "corpus" not in spec and spec["grid"] == {"hidden_size": [8, 16]}


@pytest.mark.parametrize(
    "corpus", [".env", "./.env", "data/.cache/a.txt", "[a.txt, .env]", "shown.txt", ".d/../.env"]
)
def test_sweep_file_names_no_hidden_file(tmp_path, corpus):
    """A hidden file beside a sweep file is often a secret (`.env` held the Redis password):
    refused in any component, as written or through a symlink (issue 20, item 7)."""
    (tmp_path / ".env").write_text("REDIS_PASSWORD=secret\n")
    (tmp_path / "a.txt").write_text("text\n")
    (tmp_path / "data" / ".cache").mkdir(parents=True)
    (tmp_path / "data" / ".cache" / "a.txt").write_text("text\n")
    (tmp_path / ".d").mkdir()
    (tmp_path / "shown.txt").symlink_to(tmp_path / ".env")
    f = tmp_path / "s.yaml"
    f.write_text(f"corpus: {corpus}\ngrid: {{hidden_size: [8, 16]}}\n")
    with pytest.raises(BadInput, match="hidden file") as e:
        sweeps.read_file(str(f))
    assert "--corpus" in str(e.value)
    assert "corpus" not in sweeps.read_file(str(f), corpus_given=True)


def test_a_sweep_file_in_a_hidden_folder_may_name_its_own_files(tmp_path):
    home = tmp_path / ".config" / "sweeps"
    home.mkdir(parents=True)
    (home / "a.txt").write_text("text\n")
    f = home / "s.yaml"
    f.write_text("corpus: ./a.txt\ngrid: {hidden_size: [8, 16]}\n")
    assert sweeps.read_file(str(f))["corpus"] == [str(home / "a.txt")]


def test_reserved_sweep_tag_is_refused():
    # the one rule is JobSpec's (SpecError, bad input like BadInput: exit 2)
    with pytest.raises(SpecError, match="reserved"):
        sweeps.normalize(dict(opts(), tags=["ok", "sweep:00000000-0000-4000-8000-000000000000"]))
    with pytest.raises(SpecError, match="reserved"):
        sweeps.check_tags(("sweep:x",))
    sweeps.check_tags(("sweeps", "my-sweep:1"))


@pytest.mark.parametrize("command", [["sweep", "--corpus", "x.txt", "-f"], ["tune", "-f"]])
def test_a_sweep_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path, command):
    """A FIFO named as a sweep or tune file blocked both commands for ever (one reader now,
    regular files only, as corpora and checkpoints are)."""
    import subprocess
    import sys

    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)
    p = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *command, str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHARRNN_HOME": str(tmp_path / "home")},
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == f"error: cannot read sweep file {fifo}: it is not a regular file"
