"""The `charrnn` command line, driven as a user would (a subprocess per command): train --json,
checkpoint then sample, exact resume, and every bad input of the issue, each of which must give
exactly one line on stderr starting with "error:", exit code 2 and no traceback.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from textgen import pseudo_english  # noqa: E402

SMALL = [
    "--hidden-size",
    "16",
    "--num-layers",
    "2",
    "--seq-length",
    "10",
    "--eval-every",
    "0",
    "--sample-every",
    "0",
]


def charrnn(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "charrnn.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def assert_user_error(r, *needles, code=2):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:"), r.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    assert r.stdout == "", r.stdout
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "corpus.txt"
    p.write_text(pseudo_english(2500, seed=8), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def trained(corpus):
    ckpt = corpus.parent / "trained.npz"
    r = charrnn(
        "train", "--corpus", corpus, *SMALL, "--iterations", 60, "--checkpoint", ckpt, "--json"
    )
    assert r.returncode == 0, r.stderr
    return ckpt, r


# --- the happy paths -----------------------------------------------------------------------------
def test_train_json(trained):
    ckpt, r = trained
    assert "Traceback" not in r.stderr
    out = r.stdout.strip().splitlines()
    assert len(out) == 1, r.stdout  # one JSON object, nothing else on stdout
    res = json.loads(out[0])
    for key in (
        "iterations",
        "chars",
        "seconds",
        "chars_per_second",
        "smooth_loss",
        "val_loss",
        "val_bits_per_char",
    ):
        assert key in res, key
    assert res["iterations"] == 60 and res["chars"] == 600
    assert res["seconds"] > 0 and res["chars_per_second"] > 0
    assert res["chars_per_second"] == pytest.approx(res["chars"] / res["seconds"], rel=0.05)
    assert 0 < res["val_loss"] < 5 and math.isfinite(res["smooth_loss"])
    assert res["val_bits_per_char"] == pytest.approx(res["val_loss"] / math.log(2))
    assert ckpt.exists()


def test_train_without_json_prints_a_summary(corpus, tmp_path):
    r = charrnn(
        "train",
        "--corpus",
        corpus,
        *SMALL,
        "--iterations",
        20,
        "--sample-every",
        10,
        "--sample-length",
        30,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "20" in r.stdout and "chars" in r.stdout


def test_sample_from_checkpoint(trained):
    ckpt, _ = trained
    a = charrnn("sample", "--checkpoint", ckpt, "--length", 80, "--seed", 3)
    assert a.returncode == 0, a.stderr
    assert a.stdout.endswith("\n") and len(a.stdout[:-1]) == 80
    assert a.stdout == charrnn("sample", "--checkpoint", ckpt, "--length", 80, "--seed", 3).stdout
    assert a.stdout != charrnn("sample", "--checkpoint", ckpt, "--length", 80, "--seed", 4).stdout
    p = charrnn(
        "sample",
        "--checkpoint",
        ckpt,
        "--length",
        30,
        "--prime",
        "The king",
        "--temperature",
        "0.5",
        "--top-k",
        "5",
    )
    assert p.returncode == 0 and p.stdout.startswith("The king"), p.stderr
    g1 = charrnn("sample", "--checkpoint", ckpt, "--length", 40, "--argmax", "--seed", 1)
    g2 = charrnn("sample", "--checkpoint", ckpt, "--length", 40, "--argmax", "--seed", 2)
    assert g1.returncode == 0 and g1.stdout == g2.stdout


def test_sample_matches_the_library(trained):
    from charrnn import checkpoint

    ckpt, _ = trained
    r = charrnn("sample", "--checkpoint", ckpt, "--length", 60, "--seed", 9, "--prime", "He")
    assert r.stdout[:-1] == checkpoint.load(str(ckpt)).sample(length=60, seed=9, prime="He")


def test_resume_is_exact(corpus, tmp_path):
    from charrnn import checkpoint

    args = [*SMALL, "--dropout", "0.2", "--seed", "5"]
    one = charrnn(
        "train",
        "--corpus",
        corpus,
        *args,
        "--iterations",
        70,
        "--checkpoint",
        tmp_path / "one.npz",
        "--json",
    )
    assert one.returncode == 0, one.stderr
    half = charrnn(
        "train",
        "--corpus",
        corpus,
        *args,
        "--iterations",
        30,
        "--checkpoint",
        tmp_path / "half.npz",
    )
    assert half.returncode == 0, half.stderr
    rest = charrnn(
        "train",
        "--corpus",
        corpus,
        "--resume",
        tmp_path / "half.npz",
        "--iterations",
        70,
        "--checkpoint",
        tmp_path / "rest.npz",
        "--json",
    )
    assert rest.returncode == 0, rest.stderr
    res = json.loads(rest.stdout)
    assert res["iterations"] == 70 and res["chars"] == 40 * 10
    a, b = checkpoint.load(str(tmp_path / "one.npz")), checkpoint.load(str(tmp_path / "rest.npz"))
    assert np.array_equal(a.theta, b.theta) and np.array_equal(a.mem, b.mem)
    assert np.array_equal(a.h, b.h)
    assert json.loads(one.stdout)["smooth_loss"] == res["smooth_loss"]


def test_checkpoint_every(corpus, tmp_path):
    ck = tmp_path / "every.npz"
    r = charrnn(
        "train",
        "--corpus",
        corpus,
        *SMALL,
        "--iterations",
        25,
        "--checkpoint",
        ck,
        "--checkpoint-every",
        10,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    from charrnn import checkpoint

    assert checkpoint.load(str(ck)).iteration == 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["every.npz"]


def test_console_script_exists():
    import shutil

    exe = shutil.which("charrnn", path=os.path.dirname(sys.executable)) or shutil.which("charrnn")
    if exe is None:
        pytest.skip("charrnn console script not installed in this environment")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "train" in r.stdout and "sample" in r.stdout


# --- bad input: one line, exit 2, no traceback -----------------------------------------------------
def test_missing_corpus(tmp_path):
    assert_user_error(charrnn("train", "--corpus", tmp_path / "nope.txt"), "not found", "nope.txt")


def test_corpus_is_a_directory(tmp_path):
    assert_user_error(charrnn("train", "--corpus", tmp_path))


def test_non_utf8_corpus_says_where(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"first line\nsecond line caf" + b"\xe9 au lait\n" * 20)
    line = assert_user_error(charrnn("train", "--corpus", p), "utf-8")
    assert "0xe9" in line and "offset 26" in line and "line 2" in line, line


def test_empty_corpus(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    assert_user_error(charrnn("train", "--corpus", p), "empty")


def test_corpus_too_short(tmp_path):
    p = tmp_path / "short.txt"
    p.write_text("hello world, short text\n")
    assert_user_error(charrnn("train", "--corpus", p, "--seq-length", 25), "too short")
    # long enough for the window but not for the validation split on top
    p.write_text("abcdefghijklmnopqrstuvwxyz0")
    assert_user_error(
        charrnn("train", "--corpus", p, "--seq-length", 25, "--val-fraction", "0.1"), "too short"
    )


def test_one_symbol_vocabulary(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("a" * 1000)
    assert_user_error(charrnn("train", "--corpus", p), "one symbol")


@pytest.mark.parametrize(
    "opt,value,name",
    [
        ("--hidden-size", "0", "hidden-size"),
        ("--hidden-size", "-5", "hidden-size"),
        ("--num-layers", "0", "num-layers"),
        ("--seq-length", "0", "seq-length"),
        ("--seq-length", "-3", "seq-length"),
        ("--learning-rate", "0", "learning-rate"),
        ("--lr", "-0.1", "learning-rate"),
        ("--lr", "nan", "learning-rate"),
        ("--iterations", "0", "iterations"),
        ("--epochs", "0", "epochs"),
        ("--epochs", "-1", "epochs"),
        ("--grad-clip", "0", "grad-clip"),
        ("--temperature", "0", "temperature"),
        ("--sample-length", "0", "sample-length"),
        ("--dropout", "1", "dropout"),
        ("--dropout", "1.5", "dropout"),
        ("--dropout", "-0.1", "dropout"),
        ("--val-fraction", "1", "val-fraction"),
        ("--val-fraction", "-0.2", "val-fraction"),
        ("--eval-every", "-1", "eval-every"),
        ("--checkpoint-every", "-1", "checkpoint-every"),
    ],
)
def test_bad_hyperparameter(corpus, opt, value, name):
    assert_user_error(
        charrnn("train", "--corpus", corpus, opt, value, "--iterations", "1")
        if opt not in ("--iterations", "--epochs")
        else charrnn("train", "--corpus", corpus, opt, value),
        name,
    )


def test_iterations_and_epochs_together(corpus):
    assert_user_error(charrnn("train", "--corpus", corpus, "--iterations", 5, "--epochs", 1))


@pytest.mark.parametrize("kind", ["missing", "directory", "random", "truncated", "text"])
def test_unreadable_checkpoint(trained, tmp_path, corpus, kind):
    ckpt, _ = trained
    path = tmp_path / "bad.npz"
    if kind == "missing":
        pass
    elif kind == "directory":
        path = tmp_path
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(2000))
    elif kind == "truncated":
        path.write_bytes(ckpt.read_bytes()[:-100])
    else:
        path.write_text("not a checkpoint\n")
    assert_user_error(charrnn("sample", "--checkpoint", path))
    assert_user_error(charrnn("train", "--corpus", corpus, "--resume", path))


def test_tampered_checkpoint(trained, tmp_path):
    ckpt, _ = trained
    raw = bytearray(ckpt.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path = tmp_path / "tampered.npz"
    path.write_bytes(bytes(raw))
    assert_user_error(charrnn("sample", "--checkpoint", path))


def test_prime_with_unknown_characters(trained):
    ckpt, _ = trained
    line = assert_user_error(charrnn("sample", "--checkpoint", ckpt, "--prime", "Xylophone ☃"))
    assert "'X'" in line and "'☃'" in line


@pytest.mark.parametrize(
    "opt,value",
    [("--temperature", "0"), ("--temperature", "-1"), ("--top-k", "0"), ("--length", "-1")],
)
def test_bad_sample_options(trained, opt, value):
    ckpt, _ = trained
    assert_user_error(charrnn("sample", "--checkpoint", ckpt, opt, value))


def test_resume_with_another_corpus(trained, tmp_path):
    ckpt, _ = trained
    other = tmp_path / "other.txt"
    other.write_text(pseudo_english(2500, seed=9), encoding="utf-8")
    assert_user_error(
        charrnn("train", "--corpus", other, "--resume", ckpt, "--iterations", 100), "corpus"
    )


def test_resume_with_changed_shape(trained, corpus):
    ckpt, _ = trained
    assert_user_error(
        charrnn(
            "train", "--corpus", corpus, "--resume", ckpt, "--hidden-size", 32, "--iterations", 100
        ),
        "hidden-size",
    )


def test_checkpoint_into_missing_folder(corpus, tmp_path):
    # (better still would be to say so before training, not after it)
    r = charrnn(
        "train",
        "--corpus",
        corpus,
        *SMALL,
        "--iterations",
        3,
        "--checkpoint",
        tmp_path / "no" / "such" / "dir.npz",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "dir.npz" in errors[0], r.stderr
    assert r.stderr.strip().splitlines()[-1] == errors[0]


def test_divergence_is_one_line_and_writes_no_nan(corpus, tmp_path):
    ck = tmp_path / "d.npz"
    r = charrnn(
        "train",
        "--corpus",
        corpus,
        *SMALL,
        "--iterations",
        200,
        "--lr",
        "1e307",
        "--checkpoint",
        ck,
        "--checkpoint-every",
        1,
        "--json",
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "diverged" in errors[0].lower(), r.stderr
    if ck.exists():
        from charrnn import checkpoint

        c = checkpoint.load(str(ck))
        assert np.isfinite(c.theta).all() and np.isfinite(c.mem).all()


def test_non_numeric_option_is_a_usage_error_without_traceback(corpus):
    r = charrnn("train", "--corpus", corpus, "--hidden-size", "abc")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "hidden-size" in r.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--corpus", "{corpus}", "--hidden-size", "abc"], "--hidden-size"),
        (["train", "--corpus", "{corpus}", "--resume", "{tmp}"], "checkpoint"),
        (
            ["train", "--corpus", "{corpus}", "--checkpoint", "{tmp}/no/such/dir/m.npz"],
            "no such directory",
        ),
        (["bogus"], "No such command"),
        (["sample"], "--checkpoint"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, fragment):
    corpus = tmp_path / "c.txt"
    corpus.write_text(pseudo_english(400))
    args = [a.format(corpus=corpus, tmp=tmp_path) for a in args]
    p = subprocess.run([sys.executable, "-m", "charrnn.cli", *args], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(corpus, tmp_path):
    """SIGINT stops between windows, writes the checkpoint, exits 130; resuming it to K
    iterations gives the bits of an uninterrupted K-iteration run."""
    import re
    import signal
    import time

    from charrnn import Config, Hooks, Trainer, checkpoint

    ck = tmp_path / "int.npz"
    small = [
        "--hidden-size",
        "16",
        "--num-layers",
        "2",
        "--seq-length",
        "10",
        "--dropout",
        "0.1",
        "--sample-every",
        "0",
        "--eval-every",
        "0",
        "--seed",
        "4",
    ]
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn.cli",
            "train",
            "--corpus",
            str(corpus),
            "--iterations",
            "10000000",
            "--checkpoint",
            str(ck),
            *small,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"},
    )
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    stopped_at = int(re.search(r"interrupted at iteration (\d+)", err).group(1))
    assert checkpoint.load(str(ck)).iteration == stopped_at > 0
    K = stopped_at + 37
    r = charrnn("train", "--corpus", corpus, "--resume", ck, "--iterations", K, "--checkpoint", ck)
    assert r.returncode == 0, r.stderr
    cfg = Config(
        hidden_size=16,
        num_layers=2,
        seq_length=10,
        dropout=0.1,
        sample_every=0,
        eval_every=0,
        seed=4,
        iterations=K,
    )
    t = Trainer(cfg, corpus.read_text(encoding="utf-8"))
    t.run(Hooks())
    resumed = checkpoint.load(str(ck))
    assert resumed.iteration == K
    assert np.array_equal(resumed.theta, t.model.theta) and np.array_equal(resumed.mem, t.mem)


def test_progress_is_one_whole_line_without_a_terminal(corpus):
    """Piped, the progress line used to be cut at 80 columns ('20000/200…')."""
    r = charrnn(
        "train",
        "--corpus",
        corpus,
        *SMALL,
        "--hidden-size",
        "4",
        "--num-layers",
        "1",
        "--iterations",
        20000,
    )
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "chars/s" in ln)
    assert "20000/20000" in line and "/char" in line and "…" not in r.stderr, r.stderr


@pytest.mark.parametrize("device", ["/dev/zero", "fifo"])
def test_corpus_must_be_a_regular_file(tmp_path, device):
    if device == "fifo":
        device = tmp_path / "fifo"
        os.mkfifo(device)
    assert_user_error(charrnn("train", "--corpus", device), "not a regular file")


# --- resume: what is reported is what is used ------------------------------------------------------
def test_resume_with_a_new_learning_rate_trains_at_it(corpus, tmp_path):
    """The bug this fixes: --resume a.npz --learning-rate 0.5 reported 0.5 and saved it in the
    config but trained at the stored rate."""
    from charrnn import Config, Trainer, checkpoint

    half = tmp_path / "half.npz"
    r = charrnn("train", "--corpus", corpus, *SMALL, "--iterations", 20, "--checkpoint", half)
    assert r.returncode == 0, r.stderr
    rest = tmp_path / "rest.npz"
    r = charrnn(
        "train",
        "--corpus",
        corpus,
        "--resume",
        half,
        "--iterations",
        40,
        "--learning-rate",
        0.5,
        "--checkpoint",
        rest,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["config"]["learning_rate"] == 0.5 and res["learning_rate"] == 0.5
    # in process: 20 iterations at the default rate, then 20 at 0.5
    text = corpus.read_text(encoding="utf-8")
    cfg = Config(
        hidden_size=16, num_layers=2, seq_length=10, eval_every=0, sample_every=0, iterations=40
    )
    t = Trainer(cfg, text)
    t.run(until=20)
    t = checkpoint.load(checkpoint.to_bytes(t)).trainer(text, cfg.replace(learning_rate=0.5))
    assert t.learning_rate == 0.5
    t.run()
    assert np.array_equal(checkpoint.load(str(rest)).theta, t.model.theta)
    # and not what the stored rate gives
    same = checkpoint.load(str(half)).trainer(text, cfg)
    same.run()
    assert not np.array_equal(same.model.theta, t.model.theta)


def test_resume_with_a_different_seed_is_refused(corpus, tmp_path):
    half = tmp_path / "half.npz"
    r = charrnn("train", "--corpus", corpus, *SMALL, "--iterations", 5, "--checkpoint", half)
    assert r.returncode == 0, r.stderr
    line = assert_user_error(
        charrnn("train", "--corpus", corpus, "--resume", half, "--iterations", 10, "--seed", 3)
    )
    assert "cannot resume with a different seed: the checkpoint has 0" in line, line
    # the same seed, given explicitly, is fine
    r = charrnn("train", "--corpus", corpus, "--resume", half, "--iterations", 10, "--seed", 0)
    assert r.returncode == 0, r.stderr


def test_resume_help_states_the_rule():
    r = charrnn("train", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "new base rate" in text and "refused" in text


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--cell", "transformer"], "cell"),
        (["--optimizer", "sgd"], "optimizer"),
        (["--batch-size", "0"], "batch-size"),
        (["--batch-size", "100000"], "batch-size"),
        (["--warmup", "5"], "warmup"),
        (["--lr-schedule", "step"], "lr-schedule"),
        (["--clip-norm", "-1"], "clip-norm"),
    ],
)
def test_bad_new_hyperparameters(corpus, args, needle):
    assert_user_error(charrnn("train", "--corpus", corpus, *args, "--iterations", "5"), needle)


def test_train_lstm_streams_adam_json(corpus, tmp_path):
    ck = tmp_path / "lstm.npz"
    r = charrnn(
        "train",
        "--corpus",
        corpus,
        *SMALL,
        "--cell",
        "lstm",
        "--batch-size",
        4,
        "--optimizer",
        "adam",
        "--learning-rate",
        0.01,
        "--lr-schedule",
        "cosine",
        "--warmup",
        3,
        "--clip-norm",
        5,
        "--iterations",
        12,
        "--checkpoint",
        ck,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["chars"] == 12 * 4 * 10
    assert res["smooth_loss"] == res["smooth_loss_per_char"] < 5
    s = charrnn("sample", "--checkpoint", ck, "--length", 20, "--prime", "The")
    assert s.returncode == 0 and s.stdout.startswith("The") and len(s.stdout) == 24, s.stderr
