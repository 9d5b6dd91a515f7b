"""Sampling: same seed same text, different seed different text; prime text with unknown
characters is a PrimeError naming them; top_k, argmax, temperature and option validation;
sampling continues from the checkpoint's state without a prime.
"""

from __future__ import annotations

import numpy as np
import pytest

from charrnn import CharRNNError, Config, ConfigError, PrimeError, Trainer, checkpoint
from charrnn.sampling import sample_from

from textgen import pseudo_english  # noqa: E402

TEXT = pseudo_english(2000, seed=4)


@pytest.fixture(scope="module")
def ck():
    t = Trainer(
        Config(
            hidden_size=32,
            num_layers=2,
            seq_length=20,
            iterations=150,
            learning_rate=0.05,
            eval_every=0,
            sample_every=0,
        ),
        TEXT,
    )
    t.run()
    return checkpoint.load(checkpoint.to_bytes(t))


def test_same_seed_same_text(ck):
    a = ck.sample(length=300, seed=5)
    assert a == ck.sample(length=300, seed=5)
    assert len(a) == 300 and set(a) <= set(ck.vocab.chars)
    assert ck.sample(length=300, seed=5, prime="The ") == ck.sample(
        length=300, seed=5, prime="The "
    )


def test_different_seed_different_text(ck):
    texts = {ck.sample(length=200, seed=s) for s in range(5)}
    assert len(texts) == 5


def test_prime_is_prefix_and_changes_the_continuation(ck):
    out = ck.sample(length=50, seed=1, prime="The king")
    assert out.startswith("The king") and len(out) == len("The king") + 50
    assert (
        ck.sample(length=50, seed=1, prime="The queen")[len("The queen") :]
        != out[len("The king") :]
    )


def test_without_prime_continues_from_checkpoint_state(ck):
    # the stored hidden state matters: zeroing it changes the text for the same seed
    zeroed = sample_from(
        ck.theta, ck.config, ck.vocab, np.zeros_like(ck.h), None, 200, rng=np.random.default_rng(3)
    )
    assert zeroed != ck.sample(length=200, seed=3)
    assert np.abs(ck.h).max() > 0


@pytest.mark.parametrize("prime", ["Zebra!", "naïve ☃", "\x00x", "The king"])
def test_prime_with_unknown_characters(ck, prime):
    unknown = sorted(set(prime) - set(ck.vocab.chars))
    if not unknown:
        assert ck.sample(length=5, prime=prime).startswith(prime)
        return
    with pytest.raises(PrimeError) as e:
        ck.sample(length=10, prime=prime)
    msg = str(e.value)
    assert isinstance(e.value, CharRNNError) and "\n" not in msg
    for c in unknown:
        assert repr(c) in msg, (c, msg)
    for c in set(prime) - set(unknown):
        assert repr(c) not in msg, (c, msg)


def test_argmax_is_deterministic_and_seed_independent(ck):
    a = ck.sample(length=100, argmax=True, seed=1)
    assert a == ck.sample(length=100, argmax=True, seed=99)
    # argmax equals top_k=1 and the zero-temperature limit
    assert a == ck.sample(length=100, top_k=1, seed=7)
    assert a == ck.sample(length=100, temperature=1e-4, seed=3)


def test_top_k_restricts_choices(ck):
    V = ck.vocab.size
    p = ck.params
    h = ck.h.copy()
    y = p["Why"] @ h[-1] + p["by"]
    top3 = {ck.vocab.chars[i] for i in np.argsort(y)[-3:]}
    firsts = {ck.sample(length=1, top_k=3, seed=s, temperature=5.0) for s in range(60)}
    assert firsts <= top3 and len(firsts) >= 2
    # at a high temperature, without top_k, many more characters show up
    assert len({ck.sample(length=1, temperature=5.0, seed=s) for s in range(60)}) > 3
    assert ck.sample(length=50, top_k=V, seed=2) == ck.sample(length=50, seed=2)
    assert ck.sample(length=50, top_k=V + 10, seed=2) == ck.sample(length=50, seed=2)


def test_temperature_changes_diversity(ck):
    cold = ck.sample(length=2000, temperature=0.3, seed=0)
    hot = ck.sample(length=2000, temperature=3.0, seed=0)

    def entropy(s):
        _, c = np.unique(list(s), return_counts=True)
        p = c / c.sum()
        return -(p * np.log(p)).sum()

    assert entropy(cold) < entropy(hot)


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=0),
        dict(temperature=-1.0),
        dict(temperature=float("nan")),
        dict(temperature=float("inf")),
        dict(temperature="1"),
        dict(top_k=0),
        dict(top_k=-2),
        dict(top_k=1.5),
        dict(length=-1),
        dict(length=2.0),
        dict(length=True),
    ],
)
def test_bad_options(ck, kw):
    with pytest.raises(ConfigError):
        ck.sample(**{"length": 10, **kw})


def test_zero_length(ck):
    assert ck.sample(length=0) == ""
    assert ck.sample(length=0, prime="The") == "The"


def test_training_samples_do_not_touch_the_training_stream():
    cfg = Config(
        hidden_size=16,
        num_layers=2,
        seq_length=10,
        iterations=20,
        dropout=0.3,
        eval_every=0,
        sample_every=0,
    )
    t = Trainer(cfg, TEXT)
    state = t.train_rng.bit_generator.state
    s1 = t.sample_during_training()
    assert t.train_rng.bit_generator.state == state
    assert len(s1) == cfg.sample_length
    assert t.sample_during_training() != s1  # the sample stream advances
