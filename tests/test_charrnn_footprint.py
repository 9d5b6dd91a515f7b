"""footprint() against what a trainer really allocates: the parameter count exactly, the memory
within 2x (the job system refuses jobs on it), for every cell, one and several streams, each
optimizer, dropout, float32 and float64."""

from __future__ import annotations

import pytest

from charrnn import Config, Trainer, checkpoint
from charrnn.footprint import footprint
from charrnn.model import param_count

from textgen import pseudo_english  # noqa: E402

TEXT = pseudo_english(3000, seed=5)


def allocated(t: Trainer) -> int:
    """Bytes of every array the trainer holds, the corpus ids excluded."""
    total = t.model.theta.nbytes + t._tmp.nbytes + sum(s.nbytes for s in t.opt_states)
    total += t.model.nbytes() + sum(ev.nbytes() for ev in t._evaluators.values())
    return total


@pytest.mark.parametrize(
    "cfg",
    [
        dict(),
        dict(cell="gru", batch_size=8, optimizer="adam", seq_length=32),
        dict(cell="lstm", batch_size=16, optimizer="rmsprop", dropout=0.3, dtype="float32"),
        dict(cell="lstm", hidden_size=64, num_layers=3, batch_size=4, seq_length=64),
        dict(cell="gru", embedding_size=16, batch_size=4, optimizer="adam"),
        dict(cell="lstm", embedding_size=48, dropout=0.2),
        dict(
            cell="rnn",
            hidden_size=100,
            num_layers=1,
            batch_size=32,
            seq_length=50,
            optimizer="adam",
            dropout=0.2,
        ),
    ],
)
def test_footprint_within_2x_of_what_is_allocated(cfg):
    cfg = Config(
        **{
            "hidden_size": 32,
            "num_layers": 2,
            "seq_length": 25,
            "iterations": 2,
            "eval_every": 0,
            "sample_every": 0,
            "val_max_chars": 0,
            **cfg,
        }
    )
    t = Trainer(cfg, TEXT)
    t.run()  # evaluates at the end: the evaluators exist
    assert len(t._evaluators) == 2  # a full block and the last, shorter one
    fp = footprint(cfg, t.vocab.size, 0)
    assert (
        fp.parameters
        == param_count(t.vocab.size, cfg.hidden_size, cfg.num_layers, cfg.cell, cfg.embedding_size)
        == t.model.theta.size
    )
    real = allocated(t)
    assert real / 2 <= fp.memory_bytes <= 2 * real, (fp.memory_bytes, real)
    raw = checkpoint.to_bytes(t)
    assert len(raw) / 2 <= fp.checkpoint_bytes <= 2 * len(raw) + 128 * 1024, (
        fp.checkpoint_bytes,
        len(raw),
    )


def test_footprint_grows_with_the_corpus():
    cfg = Config()
    assert footprint(cfg, 65, 10**6).memory_bytes - footprint(cfg, 65, 0).memory_bytes >= 8 * 10**6
