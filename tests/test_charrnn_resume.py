"""Exactness across processes: training N iterations in one go equals training k, saving a
checkpoint, loading it in a fresh Python process and training N-k (np.array_equal on the
parameters and the Adagrad memories), with and without dropout and samples; samples on or off do
not change the weights; the same seed gives the same bits in two processes; the vocabulary does
not depend on PYTHONHASHSEED. Also: the loss falls on a small text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from charrnn import Config, Hooks, Trainer, checkpoint

from textgen import pseudo_english  # noqa: E402

# Runs in a fresh interpreter: argv = mode, config json, corpus path, checkpoint path, out path
CHILD = r"""
import json, sys
import numpy as np
from charrnn import Config, Hooks, Trainer, checkpoint
mode, cfg, corpus, ckpt, out = sys.argv[1], Config.from_dict(json.loads(sys.argv[2])), *sys.argv[3:6]
text = open(corpus, encoding="utf-8").read()

class Collect(Hooks):
    progress_seconds = 0.0
    def __init__(self): self.samples, self.evals = [], []
    def on_sample(self, t, s): self.samples.append([t.iteration, s])
    def on_eval(self, t, v): self.evals.append([t.iteration, v])

hooks = Collect()
if mode == "full":
    t = Trainer(cfg, text); t.run(hooks)
elif mode == "part":
    t = Trainer(cfg, text); t.run(hooks, until=int(sys.argv[6])); checkpoint.save(t, ckpt)
elif mode == "resume":
    t = checkpoint.load(ckpt).trainer(text); t.run(hooks)
np.savez(out, theta=t.model.theta, mem=t.mem, h=t.model.state())
with open(out + ".json", "w") as f:
    json.dump({"samples": hooks.samples, "evals": hooks.evals, "iteration": t.iteration,
               "pointer": t.pointer, "smooth_loss": t.smooth_loss,
               "vocab": t.vocab.chars}, f)
"""


def run_child(
    tmp_path,
    mode,
    cfg: Config,
    corpus,
    ckpt="ckpt.npz",
    out="out.npz",
    *extra,
    env=None,
    script=CHILD,
):
    """Run `script` (a child trainer) in a fresh process; its arrays and its JSON line."""
    out = str(tmp_path / out)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            mode,
            json.dumps(cfg.to_dict()),
            str(corpus),
            str(tmp_path / ckpt),
            out,
            *map(str, extra),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, r.stderr
    with np.load(out) as z:
        arrays = {k: z[k] for k in z.files}
    with open(out + ".json") as f:
        info = json.load(f)
    return arrays, info


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("corpus") / "text.txt"
    # a few non-ASCII characters: their order must not depend on the process
    p.write_text(pseudo_english(1500, seed=3) + "Éire — naïve café ☃\n", encoding="utf-8")
    return p


BASE = dict(
    hidden_size=16,
    num_layers=2,
    seq_length=10,
    iterations=120,
    eval_every=25,
    sample_every=0,
    sample_length=15,
    learning_rate=0.05,
    seed=11,
)


@pytest.mark.parametrize("dropout,sample_every", [(0.0, 0), (0.0, 7), (0.3, 0), (0.3, 7)])
def test_resume_in_fresh_process_is_exact(tmp_path, corpus, dropout, sample_every):
    cfg = Config(**{**BASE, "dropout": dropout, "sample_every": sample_every})
    N, k = cfg.iterations, 47
    full, full_info = run_child(tmp_path, "full", cfg, corpus, "unused.npz", "full.npz")
    _, part_info = run_child(tmp_path, "part", cfg, corpus, "ckpt.npz", "part.npz", k)
    assert part_info["iteration"] == k
    resumed, res_info = run_child(tmp_path, "resume", cfg, corpus, "ckpt.npz", "resumed.npz")
    assert res_info["iteration"] == N
    for key in ("theta", "mem", "h"):
        assert np.array_equal(full[key], resumed[key]), key
    assert full_info["pointer"] == res_info["pointer"]
    assert full_info["smooth_loss"] == res_info["smooth_loss"]
    # the samples drawn after the resume are the ones the uninterrupted run drew
    assert full_info["samples"] == part_info["samples"] + res_info["samples"]
    if sample_every:
        assert len(full_info["samples"]) == N // sample_every
    assert full_info["evals"] == part_info["evals"] + res_info["evals"]


def test_resume_in_process_matches_and_checkpoint_is_complete(tmp_path, corpus):
    text = corpus.read_text(encoding="utf-8")
    cfg = Config(**{**BASE, "dropout": 0.2, "sample_every": 5})
    one = Trainer(cfg, text)
    one.run()
    a = Trainer(cfg, text)
    a.run(until=33)
    ck = checkpoint.load(checkpoint.to_bytes(a))
    b = ck.trainer(text)
    assert b.iteration == 33 and b.pointer == a.pointer and b.last_char == a.last_char
    assert np.array_equal(b.model.state(), a.model.state())
    b.run()
    assert np.array_equal(one.model.theta, b.model.theta)
    assert np.array_equal(one.mem, b.mem)


def test_samples_on_or_off_give_identical_weights(corpus):
    text = corpus.read_text(encoding="utf-8")
    results = []
    for dropout in (0.0, 0.25):
        thetas = []
        for sample_every in (0, 1, 13):
            t = Trainer(
                Config(
                    **{**BASE, "dropout": dropout, "sample_every": sample_every, "iterations": 60}
                ),
                text,
            )
            t.run()
            thetas.append((t.model.theta.copy(), t.mem.copy()))
        for theta, mem in thetas[1:]:
            assert np.array_equal(theta, thetas[0][0]) and np.array_equal(mem, thetas[0][1])
        results.append(thetas[0][0])
    assert not np.array_equal(results[0], results[1])  # dropout did something


def test_same_seed_same_bits_across_processes(tmp_path, corpus):
    cfg = Config(**{**BASE, "dropout": 0.3, "sample_every": 9, "iterations": 50})
    a, ai = run_child(tmp_path, "full", cfg, corpus, "x.npz", "a.npz", env={"PYTHONHASHSEED": "1"})
    b, bi = run_child(tmp_path, "full", cfg, corpus, "x.npz", "b.npz", env={"PYTHONHASHSEED": "2"})
    for key in ("theta", "mem", "h"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert ai["samples"] == bi["samples"]
    # and in this process too
    t = Trainer(cfg, corpus.read_text(encoding="utf-8"))
    t.run()
    assert t.model.theta.tobytes() == a["theta"].tobytes()
    # a different seed gives different weights
    c, _ = run_child(tmp_path, "full", cfg.replace(seed=12), corpus, "x.npz", "c.npz")
    assert not np.array_equal(a["theta"], c["theta"])


def test_vocabulary_independent_of_hash_seed(tmp_path, corpus):
    cfg = Config(**{**BASE, "iterations": 3, "eval_every": 0})
    vocabs, thetas = set(), set()
    for seed in ("0", "1", "12345", "random"):
        arrays, info = run_child(
            tmp_path, "full", cfg, corpus, "x.npz", f"v{seed}.npz", env={"PYTHONHASHSEED": seed}
        )
        vocabs.add(info["vocab"])
        thetas.add(arrays["theta"].tobytes())
    assert len(vocabs) == 1 and len(thetas) == 1
    chars = vocabs.pop()
    assert chars == "".join(sorted(set(corpus.read_text(encoding="utf-8"))))
    assert "☃" in chars and "é" in chars


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_float32_resume_is_exact(tmp_path, corpus, dropout):
    text = corpus.read_text(encoding="utf-8")
    cfg = Config(**{**BASE, "dtype": "float32", "dropout": dropout, "iterations": 40})
    one = Trainer(cfg, text)
    one.run()
    assert one.model.theta.dtype == np.float32
    a = Trainer(cfg, text)
    a.run(until=17)
    path = tmp_path / "f32.npz"
    checkpoint.save(a, str(path))
    b = checkpoint.load(str(path)).trainer(text)
    b.run()
    assert np.array_equal(one.model.theta, b.model.theta) and np.array_equal(one.mem, b.mem)


def test_resume_with_more_iterations_continues_the_same_run(corpus):
    text = corpus.read_text(encoding="utf-8")
    cfg = Config(**{**BASE, "iterations": 60})
    long = Trainer(cfg.replace(iterations=90), text)
    long.run()
    short = Trainer(cfg, text)
    short.run()
    more = checkpoint.load(checkpoint.to_bytes(short)).trainer(text, cfg.replace(iterations=90))
    more.run()
    assert np.array_equal(long.model.theta, more.model.theta)


def test_hooks_stop_and_checkpoint_every(corpus):
    text = corpus.read_text(encoding="utf-8")
    seen = []

    class H(Hooks):
        progress_seconds = 1e9  # should_stop is then asked only after checkpoints

        def on_checkpoint(self, t):
            seen.append(t.iteration)

        def should_stop(self, t):
            return t.iteration >= 40

    t = Trainer(Config(**{**BASE, "iterations": 100}), text)
    assert t.run(H(), checkpoint_every=20) == "stopped"
    assert seen == [20, 40] and t.iteration == 40


# --- learning ------------------------------------------------------------------------------------
def test_loss_falls_on_a_small_text():
    text = pseudo_english(6000, seed=1)  # ~30 KB of pseudo-English
    cfg = Config(
        hidden_size=48,
        num_layers=2,
        seq_length=25,
        iterations=400,
        eval_every=0,
        sample_every=0,
        val_max_chars=3000,
    )
    t = Trainer(cfg, text)
    v0 = t.evaluate()
    assert v0 == pytest.approx(np.log(t.vocab.size), rel=0.25)
    s0 = t.smooth_loss
    losses = [t.step() for _ in range(cfg.iterations)]
    v1 = t.evaluate()
    first, last = np.mean(losses[:20]) / 25, np.mean(losses[-50:]) / 25
    assert last < first - 0.8, (first, last)  # nats/char per window
    assert v1 < v0 - 0.8, (v0, v1)
    assert v1 < 2.6, v1
    assert t.smooth_loss < s0 - 0.12  # the EMA (nats/char) moves clearly too
    st = t.stats()
    assert st["val_loss"] == v1 and st["val_bits_per_char"] == pytest.approx(v1 / np.log(2))
    assert st["chars"] == 400 * 25


def test_loss_falls_on_real_text():
    """Real English prose that every machine has: the builtin corpus (stdlib docstrings)."""
    from charrnn import read_corpus

    text = read_corpus("builtin:python-docs")[:120_000]
    cfg = Config(
        hidden_size=64,
        num_layers=2,
        seq_length=25,
        iterations=1500,
        eval_every=0,
        sample_every=0,
        val_max_chars=5000,
    )
    t = Trainer(cfg, text)
    v0 = t.evaluate()
    t.run()
    v1 = t.evaluate()
    assert v0 > 4.0 and v1 < v0 - 1.2 and v1 < 3.3, (v0, v1)  # from ~ln(V) to ~2.9 nats/char


# --- every cell, optimizer, schedule and streams: resume in a fresh process is exact -------------
CHILD_OPT = r"""
import json, sys
import numpy as np
from charrnn import Config, Trainer, checkpoint
mode, cfg, corpus, ckpt, out = sys.argv[1], Config.from_dict(json.loads(sys.argv[2])), *sys.argv[3:6]
text = open(corpus, encoding="utf-8").read()
if mode == "full":
    t = Trainer(cfg, text); t.run()
elif mode == "part":
    t = Trainer(cfg, text); t.run(until=int(sys.argv[6])); checkpoint.save(t, ckpt)
else:
    t = checkpoint.load(ckpt).trainer(text); t.run()
np.savez(out, theta=t.model.theta, opt=np.stack(t.opt_states), h=t.model.state(),
         c=t.model.cell_state())
with open(out + ".json", "w") as f:
    json.dump({"iteration": t.iteration, "pointer": t.pointer, "smooth_loss": t.smooth_loss,
               "learning_rate": t.learning_rate, "val_loss": t.val_loss}, f)
"""


def run_opt_child(tmp_path, mode, cfg, corpus, out, *extra):
    return run_child(tmp_path, mode, cfg, corpus, "ckpt.npz", out, *extra, script=CHILD_OPT)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(
    "optimizer,schedule,warmup,k",
    [
        ("adagrad", "constant", 0, 23),
        ("rmsprop", "cosine", 10, 23),  # stopped after the warm-up, mid-cosine
        ("adam", "cosine", 30, 17),  # stopped mid-warm-up
    ],
)
def test_every_cell_and_optimizer_resumes_exactly(
    tmp_path, corpus, cell, optimizer, schedule, warmup, k
):
    cfg = Config(
        hidden_size=8,
        num_layers=2,
        seq_length=7,
        iterations=60,
        eval_every=20,
        sample_every=0,
        learning_rate=0.01,
        seed=4,
        cell=cell,
        optimizer=optimizer,
        lr_schedule=schedule,
        warmup=warmup,
        batch_size=3,
        dropout=0.1,
        clip_norm=1.0,
    )
    full, fi = run_opt_child(tmp_path, "full", cfg, corpus, "full.npz")
    _, pi = run_opt_child(tmp_path, "part", cfg, corpus, "part.npz", k)
    assert pi["iteration"] == k
    res, ri = run_opt_child(tmp_path, "resume", cfg, corpus, "res.npz")
    for key in ("theta", "opt", "h", "c"):
        assert np.array_equal(full[key], res[key]), key
    assert fi == ri
    assert full["opt"].shape[0] == (2 if optimizer == "adam" else 1)
    assert full["c"].shape[0] == (2 if cell == "lstm" else 0)


def test_streams_cover_the_text_and_wrap_together(corpus):
    text = corpus.read_text(encoding="utf-8")
    cfg = Config(
        hidden_size=8,
        num_layers=1,
        seq_length=10,
        batch_size=4,
        iterations=1000,
        eval_every=0,
        sample_every=0,
    )
    t = Trainer(cfg, text)
    S = len(t.train_ids) // 4
    assert t.segment == S and list(t.pointers) == [0, S, 2 * S, 3 * S]
    t.step()
    # stream b read segment b's first window
    for b in range(4):
        assert np.array_equal(t.inputs[:, b], t.train_ids[b * S : b * S + 10])
    assert t.stats()["chars"] == 40
    per_epoch = (S - 1) // 10
    assert (
        Trainer.iterations_for(cfg.replace(iterations=None, epochs=1.0), len(t.train_ids))
        == per_epoch
    )
    while t.iteration < per_epoch:
        t.step()
    assert t.pointer == per_epoch * 10
    t.model.hs[0][0] = 1.0  # a carried state, which the wrap must reset
    t.step()
    assert t.pointer == 10 and np.array_equal(t.inputs[:, 1], t.train_ids[S : S + 10])


# --- version-1 checkpoints ------------------------------------------------------------------------
def v1_checkpoint(t: Trainer, lr_used: float) -> bytes:
    """The bytes the version-1 writer (cae5df6) made for a vanilla, one-stream, Adagrad trainer:
    its arrays and metadata, written out here since that writer is gone."""
    import hashlib
    import io

    cfg = {
        k: v
        for k, v in t.config.to_dict().items()
        if k
        in (
            "hidden_size",
            "num_layers",
            "seq_length",
            "learning_rate",
            "iterations",
            "epochs",
            "dropout",
            "grad_clip",
            "seed",
            "val_fraction",
            "val_max_chars",
            "eval_every",
            "sample_every",
            "sample_length",
            "temperature",
            "dtype",
        )
    }
    theta, mem, h = t.model.theta, t.mem, t.model.state()[:, 0]
    meta = {
        "format": "charrnn-checkpoint",
        "version": 1,
        "config": cfg,
        "vocab": t.vocab.chars,
        "corpus_sha256": t.corpus_sha256,
        "iteration": t.iteration,
        "pointer": t.pointer,
        "total_iterations": t.total_iterations,
        "smooth_loss": t.smooth_loss * t.config.seq_length,
        "learning_rate": lr_used,
        "last_char": t.last_char,
        "val_loss": t.val_loss,
        "best_val_loss": t.best_val_loss,
        "rng": {
            "train": t.train_rng.bit_generator.state,
            "sample": t.sample_rng.bit_generator.state,
        },
    }
    d = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for a in (theta, mem, h):
        d.update(np.ascontiguousarray(a).tobytes())
    meta["sha256"] = d.hexdigest()
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        theta=theta,
        mem=mem,
        h=h,
    )
    return buf.getvalue()


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_version_1_checkpoint_loads_samples_and_resumes(corpus, dropout):
    text = corpus.read_text(encoding="utf-8")
    cfg = Config(**{**BASE, "dropout": dropout, "iterations": 50, "sample_every": 0})
    one = Trainer(cfg, text)
    one.run()
    a = Trainer(cfg, text)
    a.run(until=20)
    ck = checkpoint.load(v1_checkpoint(a, cfg.learning_rate))
    assert ck.meta["version"] == 1 and ck.iteration == 20
    assert ck.h.shape == (2, 16) and ck.mem.shape == a.mem.shape
    assert ck.sample(length=30, seed=1) == checkpoint.load(checkpoint.to_bytes(a)).sample(
        length=30, seed=1
    )
    b = ck.trainer(text)
    assert b.smooth_loss == pytest.approx(a.smooth_loss) and b.learning_rate == a.learning_rate
    b.run()
    assert np.array_equal(one.model.theta, b.model.theta) and np.array_equal(one.mem, b.mem)


def test_version_1_halved_rate_becomes_the_rollback_scale(corpus):
    text = corpus.read_text(encoding="utf-8")
    cfg = Config(**{**BASE, "iterations": 30})
    a = Trainer(cfg, text)
    a.run(until=10)
    b = checkpoint.load(v1_checkpoint(a, cfg.learning_rate / 4)).trainer(text)
    assert b.rollback_scale == 0.25 and b.learning_rate == cfg.learning_rate / 4
    c = checkpoint.load(v1_checkpoint(a, cfg.learning_rate / 4)).trainer(
        text, cfg.replace(learning_rate=0.1)
    )
    assert c.learning_rate == pytest.approx(0.1 / 4)


def test_rollback_scale_survives_a_checkpoint(corpus):
    text = corpus.read_text(encoding="utf-8")
    cfg = Config(**{**BASE, "iterations": 30, "optimizer": "adam", "learning_rate": 0.004})
    a = Trainer(cfg, text)
    a.run(until=10)
    a.halve_learning_rate()
    b = checkpoint.load(checkpoint.to_bytes(a)).trainer(text)
    assert b.rollback_scale == 0.5 and b.learning_rate == a.learning_rate == 0.002
    a.run()
    b.run()
    assert np.array_equal(a.model.theta, b.model.theta)
