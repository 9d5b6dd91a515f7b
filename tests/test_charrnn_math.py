"""charrnn's mathematics: the fast layer-by-layer path of every cell (rnn, gru, lstm), with one
and with several streams, is checked against central finite differences (float64, relative
error <= 1e-6 per parameter block, every parameter, 1-3 layers, with and without fixed dropout
masks), against the per-timestep oracle (to 1e-10, with carried non-zero state and dropout), and
whole training steps of `Trainer` against `oracle.BaselineTrainer`; the optimizers against their
textbook (torch.optim) formulas, the schedule, the clips.

Every corpus is generated in code; nothing here reads /work/shared.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn import Config, Trainer, oracle
from charrnn.model import Model, init_params, param_shapes, views

from textgen import pseudo_english  # noqa: E402

CELLS = ("rnn", "gru", "lstm")


def make_model(V, H, L, T, dropout, seed, cell="rnn", B=1, E=0):
    rng = np.random.default_rng(seed)
    m = Model(V, H, L, T, np.float64, dropout, cell=cell, B=B, E=E)
    # larger than the library's init so that every gradient is well away from zero
    m.theta[:] = rng.standard_normal(m.theta.size) * 0.5
    # a carried, non-zero state (and cell state)
    m.set_state(np.tanh(rng.standard_normal((L, B, H))), rng.standard_normal((L, B, H)))
    inputs = rng.integers(0, V, (T, B))
    targets = rng.integers(0, V, (T, B))
    if dropout > 0:
        m.draw_masks(rng)  # fixed from here on
    return m, inputs, targets


def loss_at(m, inputs, targets):
    return m.forward(inputs, targets)


def saved_state(m):
    return m.state(), m.cell_state()


def restore(m, s):
    m.set_state(s[0], s[1] if len(s[1]) else None)


# --- gradient check ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "L,dropout,B,E",
    [(L, d, B, 0) for L in (1, 2, 3) for d in (0.0, 0.4) for B in (1, 3)]
    + [(1, 0.0, 1, 3), (2, 0.4, 3, 3)],  # a learned embedding in front of layer 0
)
def test_gradient_matches_central_differences(cell, L, dropout, B, E):
    V, H, T = 6, 4, 5
    seed = 10 * L + int(dropout * 10) + B + E
    m, inputs, targets = make_model(V, H, L, T, dropout, seed, cell, B, E)
    s0 = saved_state(m)
    m.forward(inputs, targets)
    m.backward(inputs, targets)
    analytic = m.grad.copy()
    numeric = np.zeros_like(analytic)
    eps = 1e-5
    for i in range(m.theta.size):  # every parameter
        old = m.theta[i]
        m.theta[i] = old + eps
        restore(m, s0)
        lp = loss_at(m, inputs, targets)
        m.theta[i] = old - eps
        restore(m, s0)
        lm = loss_at(m, inputs, targets)
        m.theta[i] = old
        numeric[i] = (lp - lm) / (2 * eps)
    # relative error of each parameter block, |a - n| / (|a| + |n|) in the 2-norm: per element
    # it would divide rounding noise (~1e-10 here) by gradients that happen to be ~1e-6
    a, n = views(analytic, V, H, L, cell, E), views(numeric, V, H, L, cell, E)
    rel = {
        k: float(np.linalg.norm(a[k] - n[k]) / (np.linalg.norm(a[k]) + np.linalg.norm(n[k])))
        for k in a
    }
    assert max(rel.values()) <= 1e-6, rel
    assert np.abs(analytic - numeric).max() <= 1e-8
    # and the check is not vacuous: every parameter block has sizeable gradients
    for name, g in a.items():
        assert np.abs(g).max() > 1e-3, name
    if dropout > 0:
        # some units really are dropped, so the masks are exercised
        assert any((mk == 0).any() for mk in m.masks[1:])


def test_dropout_masks_are_inverted_and_fixed_until_redrawn():
    m, inputs, targets = make_model(5, 50, 2, 20, 0.3, seed=3)
    for mk in m.masks[1:]:
        assert set(np.unique(mk)) <= {0.0, 1.0 / 0.7}
        assert 0.15 < (mk == 0).mean() < 0.45
    h0 = m.state()
    a = m.forward(inputs, targets)
    m.set_state(h0)
    assert m.forward(inputs, targets) == a


# --- fast path vs the per-timestep oracle ----------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "L,dropout,B,E",
    [(L, d, B, 0) for L in (1, 2, 3) for d in (0.0, 0.5) for B in (1, 4)]
    + [(1, 0.0, 1, 5), (2, 0.5, 4, 5)],  # a learned embedding in front of layer 0
)
def test_fast_path_matches_oracle(cell, L, dropout, B, E):
    V, H, T = 11, 9, 13
    m, inputs, targets = make_model(V, H, L, T, dropout, 100 + L + B + E, cell, B, E)
    h0, c0 = m.state(), m.cell_state()
    hprev = [h0[l].copy() for l in range(L)]
    cprev = [c0[l].copy() for l in range(L)] if cell == "lstm" else None
    masks = [None] + [mk.copy() for mk in m.masks[1:]] if dropout > 0 else None
    params = {k: v.copy() for k, v in m.p.items()}
    loss = m.forward(inputs, targets)
    m.backward(inputs, targets)
    res = oracle.loss_and_grads(params, inputs, targets, hprev, masks, cprev)
    o_loss, o_grads, o_last = res[:3]
    o_last_c = res[3] if cell == "lstm" else None
    assert abs(loss - o_loss) <= 1e-10 * max(1.0, abs(o_loss))
    assert set(o_grads) == {name for name, _ in param_shapes(V, H, L, cell, E)}
    for name, g in o_grads.items():
        np.testing.assert_allclose(m.g[name], g, rtol=0, atol=1e-10, err_msg=name)
    for l in range(L):
        np.testing.assert_allclose(m.hs[l][T], o_last[l], rtol=0, atol=1e-12)
        if cell == "lstm":
            np.testing.assert_allclose(m.cs[l][T], o_last_c[l], rtol=0, atol=1e-12)
    # carrying the state into a second window still agrees (the state is the carried one)
    m.carry_state()
    rng = np.random.default_rng(7)
    inputs2, targets2 = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    loss2 = m.forward(inputs2, targets2)
    m.backward(inputs2, targets2)
    res = oracle.loss_and_grads(params, inputs2, targets2, o_last, masks, o_last_c)
    o_loss2, o_grads2 = res[0], res[1]
    assert abs(loss2 - o_loss2) <= 1e-10 * max(1.0, abs(o_loss2))
    for name, g in o_grads2.items():
        np.testing.assert_allclose(m.g[name], g, rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_streams_are_independent(cell):
    """B streams in one window compute what each stream computes alone, averaged."""
    V, H, L, T, B = 7, 6, 2, 5, 3
    m, inputs, targets = make_model(V, H, L, T, 0.0, 3, cell, B)
    h0, c0 = m.state(), m.cell_state()
    loss = m.forward(inputs, targets)
    m.backward(inputs, targets)
    grads, losses = np.zeros_like(m.grad), []
    one = Model(V, H, L, T, np.float64, cell=cell, B=1, theta=m.theta)
    for b in range(B):
        one.set_state(h0[:, b], c0[:, b] if cell == "lstm" else None)
        losses.append(one.forward(inputs[:, b : b + 1], targets[:, b : b + 1]))
        one.backward(inputs[:, b : b + 1], targets[:, b : b + 1])
        grads += one.grad
        np.testing.assert_allclose(one.hs[L - 1][T, 0], m.hs[L - 1][T, b], rtol=0, atol=1e-13)
    assert loss == pytest.approx(np.mean(losses), rel=1e-13)
    np.testing.assert_allclose(m.grad, grads / B, rtol=0, atol=1e-12)


def test_lower_layers_affect_the_loss():
    """The article's bug: lower layers disconnected from the loss. Here they are not."""
    m, inputs, targets = make_model(7, 6, 3, 9, 0.0, seed=5)
    m.forward(inputs, targets)
    m.backward(inputs, targets)
    for l in range(3):
        assert np.abs(m.g[f"Wxh{l}"]).max() > 1e-3
        assert np.abs(m.g[f"Whh{l}"]).max() > 1e-3


def test_float32_close_to_float64():
    V, H, L, T = 10, 16, 2, 12
    m64, inputs, targets = make_model(V, H, L, T, 0.0, seed=9)
    m32 = Model(V, H, L, T, np.float32, 0.0)
    m32.theta[:] = m64.theta
    m32.set_state(m64.state())
    l64, l32 = m64.forward(inputs, targets), m32.forward(inputs, targets)
    m64.backward(inputs, targets)
    m32.backward(inputs, targets)
    assert abs(l64 - l32) < 1e-4 * abs(l64)
    np.testing.assert_allclose(m32.grad, m64.grad, rtol=0, atol=1e-4)


# --- Trainer vs BaselineTrainer ----------------------------------------------------------------
@pytest.mark.parametrize("L,H,T,lr", [(1, 12, 10, 0.1), (2, 10, 7, 0.05), (3, 8, 5, 0.1)])
def test_trainer_steps_match_baseline(L, H, T, lr):
    # lr kept moderate: at lr 0.3 a 3-layer net is chaotic enough that 1e-16 rounding
    # differences grow to 1e-9 within 50 steps, which says nothing about correctness
    text = pseudo_english(60, seed=L)  # short: the data pointer wraps within the steps
    cfg = Config(
        hidden_size=H,
        num_layers=L,
        seq_length=T,
        learning_rate=lr,
        grad_clip=1.0,
        val_fraction=0.1,
        iterations=1000,
        eval_every=0,
        sample_every=0,
    )
    tr = Trainer(cfg, text)
    V = tr.vocab.size
    base = oracle.BaselineTrainer(
        {k: v.copy() for k, v in tr.model.p.items()}, tr.train_ids, T, lr, grad_clip=1.0
    )
    n_steps = (len(tr.train_ids) - 1) // T + 5  # past one wrap of the corpus
    clipped = False
    for _ in range(n_steps):
        loss = tr.step()
        bloss = base.step()
        assert abs(loss - bloss) <= 1e-10 * max(1.0, abs(bloss))
        clipped |= bool((np.abs(tr.model.grad) == 1.0).any())
        assert tr.pointer == base.pointer
    assert clipped, "the test should exercise clipping"
    mem = views(tr.mem, V, H, L)
    for k in base.p:
        np.testing.assert_allclose(tr.model.p[k], base.p[k], rtol=0, atol=1e-10, err_msg=k)
        np.testing.assert_allclose(mem[k], base.mem[k], rtol=1e-10, atol=1e-10, err_msg=k)
    for l in range(L):
        np.testing.assert_allclose(tr.model.state()[l, 0], base.h[l], rtol=0, atol=1e-10)


def test_smooth_loss_is_per_char_starts_at_uniform_and_is_an_ema():
    """Per character (changed from per window), so it reads against the validation loss."""
    text = pseudo_english(200)
    cfg = Config(
        hidden_size=8, num_layers=1, seq_length=10, iterations=5, eval_every=0, sample_every=0
    )
    tr = Trainer(cfg, text)
    s = -math.log(1.0 / tr.vocab.size)
    assert tr.smooth_loss == pytest.approx(s)
    loss = tr.step()
    assert tr.smooth_loss == pytest.approx(0.999 * s + 0.001 * loss / 10)
    # shown debiased: after one step, that step's loss, not 99.9% of ln V
    assert tr.stats()["smooth_loss"] == pytest.approx(loss / 10, rel=1e-9)
    assert tr.train_loss == tr.stats()["smooth_loss"] != pytest.approx(tr.smooth_loss)
    losses = [loss / 10] + [tr.step() / 10 for _ in range(4)]
    w = [0.999 ** (4 - i) for i in range(5)]  # a zero-started average, corrected
    assert tr.train_loss == pytest.approx(np.dot(w, losses) / sum(w), rel=1e-9)
    assert tr.smooth_loss == pytest.approx(0.999**5 * s + 0.001 * np.dot(w, losses), rel=1e-9)


def test_init_is_deterministic_and_scaled():
    flat1 = np.zeros(sum(int(np.prod(s)) for _, s in param_shapes(20, 64, 2)))
    flat2 = flat1.copy()
    init_params(flat1, 20, 64, 2, np.random.default_rng(1))
    init_params(flat2, 20, 64, 2, np.random.default_rng(1))
    assert np.array_equal(flat1, flat2)
    p = views(flat1, 20, 64, 2)
    assert np.all(p["bh0"] == 0) and np.all(p["by"] == 0)
    assert 0.7 < p["Whh1"].std() * np.sqrt(64) < 1.3


def test_the_library_imports_neither_celery_nor_redis():
    import subprocess
    import sys

    code = (
        "import sys, charrnn, charrnn.cli, charrnn.checkpoint, charrnn.oracle; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'redis', 'kombu')); "
        "assert not bad, bad"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# --- optimizers, schedules, clips ----------------------------------------------------------------
def reference_updates(opt, grads, lr, b1=0.9, b2=0.999, alpha=0.99, eps=1e-8):
    """torch.optim's Adam and RMSprop, and min-char-rnn's Adagrad, written out per step."""
    p = np.zeros_like(grads[0])
    s1, s2 = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if opt == "adagrad":
            s1 += g * g
            p -= lr * g / np.sqrt(s1 + eps)
        elif opt == "rmsprop":
            s1 = alpha * s1 + (1 - alpha) * g * g
            p -= lr * g / (np.sqrt(s1) + eps)
        else:
            s1 = b1 * s1 + (1 - b1) * g
            s2 = b2 * s2 + (1 - b2) * g * g
            p -= lr * (s1 / (1 - b1**t)) / (np.sqrt(s2 / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("opt", ["adagrad", "rmsprop", "adam"])
def test_optimizer_updates_match_their_formulas(opt):
    text = pseudo_english(300)
    cfg = Config(
        hidden_size=6,
        num_layers=1,
        seq_length=8,
        iterations=10,
        eval_every=0,
        sample_every=0,
        optimizer=opt,
        learning_rate=0.01,
        beta1=0.8,
        beta2=0.99,
        rmsprop_decay=0.9,
    )
    tr = Trainer(cfg, text)
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(tr.model.theta.size) for _ in range(5)]
    theta0 = tr.model.theta.copy()
    for g in grads:
        tr._update(g.copy(), tr.learning_rate)
        tr.iteration += 1
    ref = reference_updates(opt, grads, 0.01, 0.8, 0.99, 0.9)
    np.testing.assert_allclose(tr.model.theta - theta0, ref, rtol=1e-12, atol=1e-15)
    assert len(tr.opt_states) == (2 if opt == "adam" else 1)


def test_cosine_schedule_with_warmup():
    text = pseudo_english(300)
    cfg = Config(
        hidden_size=6,
        num_layers=1,
        seq_length=8,
        iterations=110,
        eval_every=0,
        sample_every=0,
        learning_rate=0.5,
        lr_schedule="cosine",
        warmup=10,
    )
    tr = Trainer(cfg, text)
    f = [tr.schedule(i) for i in range(110)]
    assert f[0] == pytest.approx(1 / 11) and f[9] == pytest.approx(10 / 11)
    assert f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down
    assert all(a >= b for a, b in zip(f[10:-1], f[11:], strict=True)) and f[109] > 0.1
    assert tr.learning_rate == pytest.approx(0.5 / 11)
    tr.iteration = 60
    assert tr.learning_rate == pytest.approx(0.5 * 0.55)
    assert tr.halve_learning_rate() == pytest.approx(0.5 * 0.55 / 2)
    assert tr.rollback_scale == 0.5
    with pytest.raises(AttributeError):
        tr.learning_rate = 1.0  # read-only
    const = Trainer(cfg.replace(lr_schedule="constant", warmup=0), text)
    assert [const.schedule(i) for i in (0, 50, 109)] == [1.0, 1.0, 1.0]


def test_clip_norm_bounds_the_global_norm():
    text = pseudo_english(300)
    cfg = Config(
        hidden_size=6,
        num_layers=1,
        seq_length=8,
        iterations=10,
        eval_every=0,
        sample_every=0,
        clip_norm=0.01,
        grad_clip=1.0,
    )
    tr = Trainer(cfg, text)
    tr.step()
    g = tr.model.grad
    assert np.abs(g).max() <= 1.0
    assert np.linalg.norm(g) == pytest.approx(0.01, rel=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_learns(cell):
    text = pseudo_english(3000, seed=1)
    cfg = Config(
        hidden_size=32,
        num_layers=1,
        seq_length=16,
        iterations=150,
        eval_every=0,
        sample_every=0,
        val_max_chars=0,
        cell=cell,
        batch_size=4,
        optimizer="adam",
        learning_rate=0.01,
    )
    t = Trainer(cfg, text)
    v0 = t.evaluate()
    t.run()
    v1 = t.evaluate()
    assert v1 < v0 - 0.9, (v0, v1)


@pytest.mark.parametrize("cell", CELLS)
def test_the_step_allocates_nothing_that_grows_with_the_model(cell):
    """Every buffer is preallocated: what a training step (forward, backward, clips, Adam)
    allocates is NumPy's iterator buffers for broadcasting operations, at most 8192 elements
    per operand whatever the sizes, and Python's small objects; never an array of the window."""
    import tracemalloc

    text = pseudo_english(4000, seed=2)
    peaks = []
    for H, T, B in ((64, 32, 4), (128, 64, 8)):  # windows of 64 KB and 512 KB
        cfg = Config(
            hidden_size=H,
            num_layers=2,
            seq_length=T,
            batch_size=B,
            cell=cell,
            optimizer="adam",
            clip_norm=1.0,
            dropout=0.2,
            lr_schedule="cosine",
            warmup=2,
            iterations=100,
            eval_every=0,
            sample_every=0,
        )
        t = Trainer(cfg, text)
        t.step()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(2):
                t.step()
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
        finally:
            tracemalloc.stop()
    assert max(peaks) <= 4 * 8192 * 8, peaks
    assert peaks[1] <= peaks[0] + 8192, peaks


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("cap", [0, 300, 555])
def test_evaluation_scores_every_held_out_character(cell, cap):
    """The held-out loss is the mean over all of its characters (up to val_max_chars), the last
    block shorter than EVAL_CHUNK included, from a zero state carried through: the same as one
    forward pass over the whole held-out text."""
    text = pseudo_english(1200, seed=6)
    cfg = Config(
        hidden_size=12,
        num_layers=2,
        seq_length=10,
        iterations=5,
        eval_every=0,
        sample_every=0,
        val_max_chars=cap,
        cell=cell,
    )
    t = Trainer(cfg, text)
    t.run()
    n = len(t.val_ids) - 1 if cap == 0 else min(cap, len(t.val_ids) - 1)
    assert n % 256 != 0 and n > 256
    whole = Model(
        t.vocab.size, 12, 2, n, np.float64, theta=t.model.theta, cell=cell, E=cfg.embedding
    )
    expected = whole.forward(t.val_ids[:n, None], t.val_ids[1 : n + 1, None]) / n
    assert t.evaluate() == pytest.approx(expected, rel=1e-12)
