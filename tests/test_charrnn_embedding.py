"""The learned embedding (`embedding_size` E > 0, issue 23): checkpoints with it round-trip and
resume bit for bit, its export has nn.Embedding's name and shape, and a checkpoint written before
the field existed (no `embedding_size` in its config) still loads, samples and resumes with the
weights it holds. The gradient checks and the oracle comparison with E > 0 are in
test_charrnn_math.py; the export through torch itself in benchmarks/bench_charrnn.py --cells.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from charrnn import Config, Trainer, checkpoint
from charrnn.model import param_count

from textgen import pseudo_english  # noqa: E402

TEXT = pseudo_english(600, seed=4)
CFG = Config(  # the vanilla cell: no embedding, kept by CFG.replace(cell=...)
    hidden_size=8,
    num_layers=2,
    seq_length=10,
    batch_size=2,
    optimizer="adam",
    learning_rate=0.01,
    iterations=20,
    eval_every=0,
    sample_every=0,
)


def resigned_without_field(raw: bytes, field: str) -> bytes:
    """The checkpoint as the library wrote it before `field` existed: the field left out of the
    config in the metadata and the checksum recomputed over that metadata."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    del meta["config"][field]
    meta.pop("sha256")
    meta["sha256"] = checkpoint._digest(meta, *(arrays[k] for k in checkpoint.ARRAYS[2]))
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def checkpoint_config(raw: bytes) -> dict:
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return json.loads(z["meta"].tobytes().decode())["config"]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_checkpoint_without_embedding_field_loads_samples_and_resumes(cell):
    cfg = CFG.replace(cell=cell)
    straight = Trainer(cfg, TEXT)
    straight.run(until=12)
    old = resigned_without_field(checkpoint.to_bytes(straight), "embedding_size")
    if cell != "rnn":  # today's default for the cell would be an embedding; the file has none
        assert Config.from_dict(checkpoint_config(old)).embedding_size == 8
    ck = checkpoint.load(old)
    assert ck.config.embedding_size == 0 and ck.config == cfg
    assert np.array_equal(ck.theta, straight.model.theta)  # the weights it holds
    assert ck.sample(length=30, seed=5) == checkpoint.load(checkpoint.to_bytes(straight)).sample(
        length=30, seed=5
    )
    resumed = ck.trainer(TEXT)
    resumed.run()
    straight.run()
    assert np.array_equal(resumed.model.theta, straight.model.theta)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_embedding_round_trip_and_resume_are_exact(cell, tmp_path):
    cfg = CFG.replace(cell=cell, embedding_size=6, dropout=0.2)
    straight = Trainer(cfg, TEXT)
    straight.run(until=9)
    path = str(tmp_path / "e.npz")
    checkpoint.save(straight, path)
    ck = checkpoint.load(path)
    assert ck.config.embedding_size == 6
    assert ck.theta.size == param_count(straight.vocab.size, 8, 2, cell, 6)
    assert len(ck.sample(length=20, seed=2, prime="The")) == 23
    resumed = ck.trainer(TEXT)
    resumed.run()
    straight.run()
    assert np.array_equal(resumed.model.theta, straight.model.theta)
    again = Trainer(cfg, TEXT)
    again.run()
    assert np.array_equal(again.model.theta, straight.model.theta)  # same seed, same bits


def test_gated_cells_default_to_an_embedding_of_hidden_size_and_rnn_to_none():
    assert Config().embedding_size == 0
    assert Config(cell="lstm", hidden_size=64).embedding_size == 64
    assert Config(cell="gru").embedding_size == Config().hidden_size
    assert Config(cell="gru", embedding_size=0).embedding_size == 0  # one-hot, when asked
    saved = Config(cell="lstm", hidden_size=64).to_dict()
    assert saved["embedding_size"] == 64  # the number is saved, not "the default"
    assert Config.from_dict({**saved, "hidden_size": 32}).embedding_size == 64


@pytest.mark.parametrize("cell,G", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_torch_state_dict_of_an_embedding_is_nn_embeddings(cell, G):
    """nn.Embedding(V, E) in front of nn.RNN/GRU/LSTM(E, H, 2): names and shapes (checked here
    without torch; benchmarks/bench_charrnn.py --cells loads the export into torch)."""
    t = Trainer(CFG.replace(cell=cell, embedding_size=5), TEXT)
    t.run(until=2)
    sd = checkpoint.load(checkpoint.to_bytes(t)).torch_state_dict()
    V, H = t.vocab.size, 8
    assert sd["emb.weight"].shape == (V, 5)
    assert sd["rnn.weight_ih_l0"].shape == (G * H, 5)
    assert sd["rnn.weight_ih_l1"].shape == (G * H, H)
    assert np.array_equal(sd["emb.weight"], t.model.p["Emb"])
    assert sum(v.size for v in sd.values()) == t.model.theta.size + (2 * H if cell == "rnn" else 0)


def test_embedding_starts_as_nn_embeddings_and_its_reader_at_unit_gain():
    """Emb is N(0, 1), as nn.Embedding's; the Wxh0 reading it N(0, 1/E), like every matrix that
    reads a vector of unit-size entries; the LSTM's forget bias 0 with it, 1 without."""
    p = Trainer(CFG.replace(cell="lstm", hidden_size=32, embedding_size=64), TEXT).model.p
    assert 0.9 < p["Emb"].std() < 1.1
    assert p["Wxh0"].shape == (4 * 32, 64)
    assert 0.9 < p["Wxh0"].std() * np.sqrt(64) < 1.1
    # the forget gate's bias starts at 0 with an embedding (measured faster), 1 with one-hot rows
    assert not p["bxh0"].any() and not p["bxh1"].any()
    onehot = Trainer(CFG.replace(cell="lstm", hidden_size=32), TEXT).model.p
    assert np.all(onehot["bxh0"][32:64] == 1) and not onehot["bxh0"][:32].any()
