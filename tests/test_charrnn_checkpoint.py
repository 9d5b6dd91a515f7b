"""Checkpoints that are wrong in every way we can think of give a CheckpointError (a
CharRNNError), never another exception: truncated, random bytes, tampered arrays, pickled object
arrays, wrong version, re-signed files with bad shapes, dtypes, values or metadata, the wrong
corpus on resume. A non-finite loss stops training with DivergedError and no NaN is ever written.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from charrnn import (
    CharRNNError,
    CheckpointError,
    Config,
    ConfigError,
    CorpusError,
    DivergedError,
    Hooks,
    Trainer,
    checkpoint,
)

from textgen import pseudo_english  # noqa: E402

TEXT = pseudo_english(400, seed=2)
CFG = Config(
    hidden_size=8,
    num_layers=2,
    seq_length=10,
    iterations=30,
    eval_every=0,
    sample_every=0,
    dropout=0.1,
)


@pytest.fixture(scope="module")
def good() -> bytes:
    t = Trainer(CFG, TEXT)
    t.run(until=12)
    return checkpoint.to_bytes(t)


def parts(raw: bytes) -> tuple[dict, dict]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    return meta, arrays


def build(meta, arrays, resign=True, meta_bytes=None) -> bytes:
    """An .npz like the library writes; with resign, a valid checksum over the tampered data, so
    that the checks behind the checksum are exercised too."""
    meta = dict(meta)
    if resign:
        meta.pop("sha256", None)
        meta["sha256"] = checkpoint._digest(
            meta,
            *(
                arrays[k]
                for k in checkpoint.ARRAYS.get(meta.get("version"), checkpoint.ARRAYS[2])
                if k in arrays
            ),
        )
    raw = meta_bytes if meta_bytes is not None else json.dumps(meta).encode()
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(raw, dtype=np.uint8), **arrays)
    return buf.getvalue()


def assert_checkpoint_error(raw_or_path, match=None):
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(raw_or_path)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    if match:
        assert match in msg.lower(), msg
    return msg


def test_round_trip(good, tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.write_bytes(good, str(path))
    ck = checkpoint.load(str(path))
    assert ck.iteration == 12
    assert ck.config == CFG
    assert ck.vocab.chars == "".join(sorted(set(TEXT)))
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left behind
    meta, arrays = parts(good)
    assert meta["format"] == checkpoint.FORMAT and meta["version"] == checkpoint.VERSION
    assert set(arrays) == {"theta", "opt", "h", "c"}
    assert {"train", "sample"} <= set(meta["rng"])
    for key in ("corpus_sha256", "pointer", "iteration", "smooth_loss", "config", "vocab"):
        assert key in meta


def test_save_is_atomic_and_replaces(tmp_path):
    t = Trainer(CFG, TEXT)
    path = tmp_path / "m.npz"
    path.write_bytes(b"old contents")
    checkpoint.save(t, str(path))
    assert checkpoint.load(str(path)).iteration == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_missing_and_unreadable_files(tmp_path):
    assert_checkpoint_error(str(tmp_path / "nope.npz"), "not found")
    assert_checkpoint_error(str(tmp_path))  # a directory
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert_checkpoint_error(str(empty))


@pytest.mark.parametrize("cut", [1, 10, 100, 0.5, 0.9, -1])
def test_truncated(good, cut):
    n = int(len(good) * cut) if isinstance(cut, float) else cut % len(good)
    assert_checkpoint_error(good[:n])


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(seed):
    rng = np.random.default_rng(seed)
    assert_checkpoint_error(rng.bytes(int(rng.integers(1, 5000))))


def test_random_bytes_with_zip_magic():
    assert_checkpoint_error(b"PK\x03\x04" + np.random.default_rng(0).bytes(3000))


def test_other_npz_and_text_files():
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(3))
    assert_checkpoint_error(buf.getvalue(), "not a charrnn checkpoint")
    assert_checkpoint_error(b"hello, I am a text file\n")
    buf = io.BytesIO()
    np.save(buf, np.arange(10.0))  # .npy, not .npz
    assert_checkpoint_error(buf.getvalue())


@pytest.mark.parametrize("key", ["theta", "opt", "h"])
def test_flipped_byte_in_array(good, key):
    meta, arrays = parts(good)
    arrays[key].reshape(-1).view(np.uint8)[3] ^= 0x10
    assert_checkpoint_error(build(meta, arrays, resign=False), "checksum")


def test_flipped_byte_in_the_file_itself(good):
    raw = bytearray(good)
    # somewhere inside theta's data: find it through the zip directory
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        info = z.getinfo("theta.npy")
    raw[info.header_offset + 30 + len(info.filename) + 200] ^= 0x01
    assert_checkpoint_error(bytes(raw))


def test_tampered_metadata(good):
    meta, arrays = parts(good)
    meta["iteration"] = 5
    assert_checkpoint_error(build(meta, arrays, resign=False), "checksum")


def test_pickled_object_array(good):
    meta, arrays = parts(good)
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        theta=np.array([{"evil": 1}, None], dtype=object),
        opt=arrays["opt"],
        h=arrays["h"],
        c=arrays["c"],
    )
    assert_checkpoint_error(buf.getvalue(), "pickle")
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([meta], dtype=object), **arrays)
    assert_checkpoint_error(buf.getvalue(), "pickle")


@pytest.mark.parametrize("version", [0, 3, "2", None, True])
def test_wrong_version(good, version):
    meta, arrays = parts(good)
    meta["version"] = version
    assert_checkpoint_error(build(meta, arrays), "version")


def test_missing_array(good):
    meta, arrays = parts(good)
    del arrays["opt"]
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    assert_checkpoint_error(buf.getvalue(), "missing opt")


def _shape(a):
    a["theta"] = a["theta"][:-1]


def _dtype(a):
    a["theta"] = a["theta"].astype(np.float32)


def _h_shape(a):
    a["h"] = a["h"].reshape(-1)


def _c_shape(a):
    a["c"] = np.zeros((1,) + a["c"].shape[1:], a["c"].dtype)


def _nan(a):
    a["opt"][0, 7] = np.nan


def _inf(a):
    a["theta"][0] = np.inf


def _int_theta(a):
    a["theta"] = a["theta"].astype(np.int64)


@pytest.mark.parametrize("tamper", [_shape, _dtype, _h_shape, _c_shape, _nan, _inf, _int_theta])
def test_resigned_bad_arrays(good, tamper):
    meta, arrays = parts(good)
    tamper(arrays)
    assert_checkpoint_error(build(meta, arrays))


META_TAMPERS = {
    "format": lambda m: m.update(format="something-else"),
    "config unknown key": lambda m: m["config"].update(colour="blue"),
    "config bad value": lambda m: m["config"].update(hidden_size=-3),
    "config wrong type": lambda m: m["config"].update(hidden_size="8"),
    "config size mismatch": lambda m: m["config"].update(hidden_size=9),
    "config not a dict": lambda m: m.update(config=[1, 2]),
    "vocab unsorted": lambda m: m.update(vocab=m["vocab"][::-1]),
    "vocab one symbol": lambda m: m.update(vocab="a"),
    "vocab not str": lambda m: m.update(vocab=5),
    "iteration negative": lambda m: m.update(iteration=-1),
    "iteration float": lambda m: m.update(iteration=1.5),
    "pointer missing": lambda m: m.pop("pointer"),
    "smooth_loss str": lambda m: m.update(smooth_loss="x"),
    "smooth_loss nan": lambda m: m.update(smooth_loss=float("nan")),
    "rollback_scale zero": lambda m: m.update(rollback_scale=0),
    "rollback_scale none": lambda m: m.update(rollback_scale=None),
    "rollback_scale above one": lambda m: m.update(rollback_scale=2.0),
    "config bad cell": lambda m: m["config"].update(cell="transformer"),
    "config other cell": lambda m: m["config"].update(cell="lstm"),
    "config other batch": lambda m: m["config"].update(batch_size=2),
    "config other optimizer": lambda m: m["config"].update(optimizer="adam"),
}


@pytest.mark.parametrize("name", sorted(META_TAMPERS))
def test_resigned_bad_metadata(good, name):
    meta, arrays = parts(good)
    META_TAMPERS[name](meta)
    assert_checkpoint_error(build(meta, arrays))


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b"null", b"{}"])
def test_metadata_not_a_json_object(good, raw):
    meta, arrays = parts(good)
    assert_checkpoint_error(build(meta, arrays, resign=False, meta_bytes=raw))


@pytest.mark.parametrize(
    "rng", [{}, {"train": {}, "sample": {}}, {"train": 3, "sample": None}, "nonsense"]
)
def test_resigned_bad_rng_state_is_a_checkpoint_error(good, rng):
    """A file whose checksum is valid but whose generator state is garbage must fail with a
    CheckpointError when loaded or resumed, not with a KeyError/TypeError from NumPy."""
    meta, arrays = parts(good)
    meta["rng"] = rng
    raw = build(meta, arrays)
    with pytest.raises(CheckpointError):
        checkpoint.load(raw).trainer(TEXT)


def test_wrong_corpus_on_resume(good):
    ck = checkpoint.load(good)
    other = TEXT.replace("king", "kong")
    with pytest.raises(CharRNNError) as e:
        ck.trainer(other)
    assert isinstance(e.value, (CheckpointError, CorpusError))
    assert "corpus" in str(e.value)
    # even a corpus with the same vocabulary and length
    assert len(other) == len(TEXT) and set(other) <= set(TEXT) | {"o"}


@pytest.mark.parametrize(
    "change",
    [
        dict(hidden_size=9),
        dict(num_layers=1),
        dict(seq_length=11),
        dict(dtype="float32"),
        dict(dropout=0.2),
        dict(val_fraction=0.2),
    ],
)
def test_resume_with_incompatible_config(good, change):
    ck = checkpoint.load(good)
    with pytest.raises(CheckpointError):
        ck.trainer(TEXT, ck.config.replace(**change))


def test_resume_past_the_end(good):
    ck = checkpoint.load(good)
    with pytest.raises(CheckpointError):
        ck.trainer(TEXT, ck.config.replace(iterations=5))


# --- divergence ----------------------------------------------------------------------------------
def test_nan_weights_raise_diverged_before_any_update(tmp_path):
    t = Trainer(CFG, TEXT)
    t.run(until=5)
    t.model.p["by"][2] = np.nan  # as if something had gone badly wrong
    theta, mem, it = t.model.theta.copy(), t.mem.copy(), t.iteration
    with pytest.raises(DivergedError, match="diverged"):
        t.step()
    assert t.iteration == it
    assert np.array_equal(t.model.theta, theta, equal_nan=True) and np.array_equal(t.mem, mem)
    path = tmp_path / "nan.npz"
    with pytest.raises(CheckpointError):
        checkpoint.save(t, str(path))
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype,lr", [("float64", 1e307), ("float32", 1e37)])
def test_huge_learning_rate_diverges_and_never_writes_nan(tmp_path, dtype, lr):
    path = tmp_path / "d.npz"

    class SaveEvery(Hooks):
        def on_checkpoint(self, t):
            checkpoint.save(t, str(path))

    t = Trainer(CFG.replace(learning_rate=lr, dtype=dtype, iterations=200, dropout=0.0), TEXT)
    with pytest.raises(CharRNNError) as e:  # DivergedError, or the refusal to save NaN
        t.run(SaveEvery(), checkpoint_every=1)
    assert isinstance(e.value, (DivergedError, CheckpointError))
    if path.exists():
        ck = checkpoint.load(str(path))  # whatever was written is finite and loads
        assert np.isfinite(ck.theta).all() and np.isfinite(ck.mem).all()
    assert [p.name for p in tmp_path.iterdir()] in ([], ["d.npz"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_diverged_validation_loss(tmp_path):
    t = Trainer(CFG, TEXT)
    t.model.p["Why"][0, 0] = np.inf
    with pytest.raises(DivergedError):
        t.evaluate()


# --- format 2 specifics -------------------------------------------------------------------------
def test_a_text_file_is_not_a_charrnn_checkpoint(tmp_path):
    p = tmp_path / "notes.npz"
    p.write_text("these are my notes, not weights\n")
    msg = assert_checkpoint_error(str(p), "not a charrnn checkpoint")
    assert "pickle" not in msg


def test_zip_bomb_is_refused_before_decompressing(good):
    """A member whose declared size is far beyond what its shape needs is refused from the zip
    directory alone: nothing is inflated."""
    meta, arrays = parts(good)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta.npy", _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8)))
        for k in ("opt", "h", "c"):
            z.writestr(f"{k}.npy", _npy(arrays[k]))
        with z.open("theta.npy", "w", force_zip64=True) as f:  # 64 MB of zeros, ~64 KB zipped
            f.write(_npy(np.zeros(0)))  # a header, then 64 MB
            zeros = bytes(1 << 20)
            for _ in range(64):
                f.write(zeros)
    raw = buf.getvalue()
    assert len(raw) < 1 << 20
    assert_checkpoint_error(raw, "refused")


def _npy(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


@pytest.mark.parametrize(
    "cell,optimizer,B", [("gru", "adam", 3), ("lstm", "rmsprop", 2), ("lstm", "adam", 1)]
)
def test_round_trip_of_every_cell(cell, optimizer, B):
    cfg = CFG.replace(cell=cell, optimizer=optimizer, batch_size=B)
    t = Trainer(cfg, TEXT)
    t.run(until=7)
    ck = checkpoint.load(checkpoint.to_bytes(t))
    assert ck.config == cfg and ck.opt.shape == (
        2 if optimizer == "adam" else 1,
        t.model.theta.size,
    )
    assert ck.state_h.shape == (2, B, 8) and ck.h.shape == (2, 8)
    assert ck.state_c.shape == ((2 if cell == "lstm" else 0), B, 8)
    assert np.array_equal(ck.state_h, t.model.state())
    assert len(ck.sample(length=20, seed=2, prime="The")) == 23


NON_RESUMABLE = dict(
    hidden_size=9,
    num_layers=1,
    seq_length=11,
    dtype="float32",
    dropout=0.2,
    val_fraction=0.2,
    seed=3,
    cell="gru",
    embedding_size=4,
    batch_size=2,
    optimizer="adam",
    beta1=0.8,
    beta2=0.99,
    rmsprop_decay=0.9,
)


@pytest.mark.parametrize("field", sorted(NON_RESUMABLE))
def test_resume_refuses_every_changed_non_resumable_field(good, field):
    from charrnn.config import RESUMABLE

    assert field not in RESUMABLE
    ck = checkpoint.load(good)
    with pytest.raises(CheckpointError) as e:
        ck.trainer(TEXT, ck.config.replace(**{field: NON_RESUMABLE[field]}))
    flag = field.replace("_", "-")
    assert str(e.value) == (
        f"cannot resume with a different {flag}: the checkpoint has {getattr(ck.config, field)!r}"
    )


def test_every_field_is_either_resumable_or_refused():
    from charrnn.config import FIELDS, RESUMABLE

    assert set(FIELDS) == set(RESUMABLE) | set(NON_RESUMABLE)


def test_resume_applies_every_changed_resumable_field(good):
    ck = checkpoint.load(good)
    new = ck.config.replace(
        learning_rate=0.07,
        iterations=50,
        grad_clip=2.0,
        clip_norm=3.0,
        lr_schedule="cosine",
        warmup=1,
        eval_every=7,
        sample_every=5,
        sample_length=9,
        temperature=0.5,
        val_max_chars=0,
    )
    t = ck.trainer(TEXT, new)
    assert t.config == new and t.total_iterations == 50
    assert t.learning_rate == pytest.approx(0.07 * t.schedule(12))
    t.step()
    assert np.abs(t.model.grad).max() <= 2.0 and np.linalg.norm(t.model.grad) <= 3.0 + 1e-9


@pytest.mark.parametrize(
    "change,error,needle",
    [
        (dict(cell="transformer"), ConfigError, "cell"),
        (dict(optimizer="sgd"), ConfigError, "optimizer"),
        (dict(batch_size=0), ConfigError, "batch-size"),
        (dict(lr_schedule="step"), ConfigError, "lr-schedule"),
        (dict(clip_norm=-1.0), ConfigError, "clip-norm"),
        (dict(warmup=30), ConfigError, "warmup"),
        (dict(batch_size=4000), CorpusError, "batch-size"),
    ],
)
def test_bad_input(change, error, needle):
    with pytest.raises(error) as e:
        Trainer(CFG.replace(**change), TEXT)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_warmup_longer_than_an_epoch_run():
    with pytest.raises(ConfigError, match="warmup"):
        Trainer(CFG.replace(iterations=None, epochs=0.5, warmup=10**6), TEXT)


@pytest.mark.parametrize("cell,G", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_torch_state_dict_has_pytorchs_names_and_shapes(cell, G):
    """The shapes nn.RNN/nn.GRU/nn.LSTM(V, H, num_layers=2) and nn.Linear(H, V) declare (checked
    here without torch; benchmarks/bench_charrnn.py --cells checks the outputs with torch)."""
    t = Trainer(CFG.replace(cell=cell), TEXT)
    t.run(until=2)
    sd = checkpoint.load(checkpoint.to_bytes(t)).torch_state_dict()
    V, H = t.vocab.size, 8
    expected = {"out.weight": (V, H), "out.bias": (V,)}
    for l in range(2):
        expected.update(
            {
                f"rnn.weight_ih_l{l}": (G * H, V if l == 0 else H),
                f"rnn.weight_hh_l{l}": (G * H, H),
                f"rnn.bias_ih_l{l}": (G * H,),
                f"rnn.bias_hh_l{l}": (G * H,),
            }
        )
    assert {k: v.shape for k, v in sd.items()} == expected
    assert sum(v.size for v in sd.values()) == t.model.theta.size + (2 * 8 if cell == "rnn" else 0)
    assert np.array_equal(sd["rnn.weight_ih_l0"][:, 3], t.model.p["Wxh0"][:, 3])
    if cell == "lstm":  # the forget gate's bias block: rows H..2H
        assert np.all(sd["rnn.bias_ih_l1"][H : 2 * H] != 0)
