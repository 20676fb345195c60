"""The saved-state file: round trip, atomic replace, and a clear StateFileError for every way it can be wrong."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from device_models import device_model, sample_rows  # noqa: F401 (device_model is a fixture)

from statelite import BadInputError, StatefulRunner, StateFileError, StreamPool
from statelite.state_file import HEADER_KEY, load_pool_state, load_state, save_pool_state, save_state

SHA = "a1" * 32
OTHER = "b2" * 32
STATE = {"h_0": np.arange(8, dtype=np.float32).reshape(1, 8) / 7, "c_0": -np.ones((1, 8), np.float32)}
SHAPES = {"h_0": (1, 8), "c_0": (1, 8)}


def test_round_trip(tmp_path):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    loaded = load_state(path, SHA, SHAPES)
    assert list(loaded) == ["h_0", "c_0"]
    for name in STATE:
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], STATE[name])
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"], "no temporary file left behind"


def test_is_a_plain_npz(tmp_path):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    with np.load(path) as d:
        header = json.loads(str(d[HEADER_KEY]))
        np.testing.assert_array_equal(d["h_0"], STATE["h_0"])
    assert header["model_sha256"] == SHA
    assert [s["name"] for s in header["states"]] == ["h_0", "c_0"]


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    newer = {k: v + 1 for k, v in STATE.items()}
    save_state(path, newer, SHA)
    np.testing.assert_array_equal(load_state(path, SHA, SHAPES)["c_0"], newer["c_0"])


def test_float64_previous_row_keeps_its_precision(tmp_path):
    # A differencing model's x_prev is a raw float64 row: 370.12345678 must not come back as float32.
    state = {"h_0": np.zeros((1, 4), np.float32), "x_prev": np.array([[370.12345678, np.nan]])}
    save_state(tmp_path / "s.npz", state, SHA)
    loaded = load_state(tmp_path / "s.npz", SHA, {"h_0": (1, 4), "x_prev": (1, 2)})
    assert loaded["h_0"].dtype == np.float32 and loaded["x_prev"].dtype == np.float64
    assert loaded["x_prev"][0, 0] == 370.12345678 and np.isnan(loaded["x_prev"][0, 1])


@pytest.mark.parametrize("keep", [0, 10, 0.25, 0.5, 0.9, -1])
def test_truncated(tmp_path, keep):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    data = path.read_bytes()
    cut = keep if isinstance(keep, int) and keep >= 0 else int(len(data) * keep) if keep > 0 else len(data) - 1
    path.write_bytes(data[:cut])
    with pytest.raises(StateFileError, match="not a readable statelite state file.*truncated or corrupt") as e:
        load_state(path, SHA, SHAPES)
    assert "delete it to start from a zero state" in str(e.value)


def test_flipped_byte_in_payload(tmp_path):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    data = bytearray(path.read_bytes())
    # The last stored array's data sits just before the zip's central directory.
    at = data.rfind(b"PK\x01\x02") - 5
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StateFileError, match="not a readable statelite state file"):
        load_state(path, SHA, SHAPES)


def test_checksum_catches_rewritten_arrays(tmp_path):
    # A file that unzips cleanly but whose arrays no longer match the header's checksum.
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    with np.load(path) as d:
        header = d[HEADER_KEY]
    np.savez(path, **{HEADER_KEY: header, "h_0": STATE["h_0"] * 2, "c_0": STATE["c_0"]})
    with pytest.raises(StateFileError, match="checksum does not match"):
        load_state(path, SHA, SHAPES)


def test_other_model(tmp_path):
    path = tmp_path / "s.npz"
    save_state(path, STATE, OTHER)
    with pytest.raises(StateFileError) as e:
        load_state(path, SHA, SHAPES)
    message = str(e.value)
    assert "another model" in message and OTHER[:12] in message and SHA[:12] in message


def test_wrong_names(tmp_path):
    save_state(tmp_path / "s.npz", {"h_0": STATE["h_0"]}, SHA)
    with pytest.raises(StateFileError, match=r"expected states \['c_0', 'h_0'\]; received \['h_0'\]"):
        load_state(tmp_path / "s.npz", SHA, SHAPES)


def test_wrong_shape(tmp_path):
    save_state(tmp_path / "s.npz", {"h_0": np.zeros((1, 16), np.float32), "c_0": STATE["c_0"]}, SHA)
    with pytest.raises(StateFileError, match=r"h_0 expected \(1, 8\), received \(1, 16\)"):
        load_state(tmp_path / "s.npz", SHA, SHAPES)


def test_missing_file(tmp_path):
    with pytest.raises(StateFileError, match="state file not found"):
        load_state(tmp_path / "nope.npz", SHA, SHAPES)


def test_foreign_npz_and_zip(tmp_path):
    np.savez(tmp_path / "a.npz", h_0=STATE["h_0"])
    with pytest.raises(StateFileError, match=f"no '{HEADER_KEY}' header"):
        load_state(tmp_path / "a.npz", SHA, SHAPES)
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(StateFileError, match="not a readable statelite state file"):
        load_state(tmp_path / "b.npz", SHA, SHAPES)
    (tmp_path / "c.npz").write_text("h_0,1,2,3\n")
    with pytest.raises(StateFileError, match="not a readable statelite state file"):
        load_state(tmp_path / "c.npz", SHA, SHAPES)


def test_newer_format(tmp_path):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    header = json.loads(str(arrays[HEADER_KEY]))
    header["format_version"] = 99
    arrays[HEADER_KEY] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    with pytest.raises(StateFileError, match="format version 99; this statelite reads up to 2"):
        load_state(path, SHA, SHAPES)


def test_previous_row_key_matches_the_runner():
    # state_file names x_prev without importing the runner; the two must agree.
    from statelite import state_file
    from statelite.runner import PREV_KEY

    assert state_file._PREV_KEY == PREV_KEY


def test_unwritable_directory(tmp_path):
    with pytest.raises(StateFileError, match="cannot write the state file"):
        save_state(tmp_path / "missing" / "s.npz", STATE, SHA)


def test_runner_resumes_exactly(tmp_path, device_model):
    """Stop after k steps, save, load into a new runner: the rest of the stream matches an unbroken run."""
    model = device_model("int8")
    xs = sample_rows(model, 40)
    whole = StatefulRunner(model).run(xs)
    first = StatefulRunner(model)
    head = first.run(xs[:17])
    first.save_state(tmp_path / "s.npz")
    second = StatefulRunner(model)
    second.load_state(tmp_path / "s.npz")
    tail = second.run(xs[17:])
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)


def test_runner_refuses_other_models_state(tmp_path, device_model):
    gru, lstm = device_model("gru"), device_model("lstm")
    a = StatefulRunner(gru)
    a.save_state(tmp_path / "s.npz")
    with pytest.raises(StateFileError, match=f"saved by model sha256 {a.model_sha256[:12]}"):
        StatefulRunner(lstm).load_state(tmp_path / "s.npz")


# -- pool files: many streams with their keys ------------------------------------------------------------------------

POOL = {
    "sensor-7": {"h_0": np.full((1, 4), 0.5, np.float32), "x_prev": np.array([[370.12345678]])},
    3: {"h_0": -np.ones((1, 4), np.float32), "x_prev": np.array([[np.nan]])},
}
POOL_SHAPES = {"h_0": (1, 4), "x_prev": (1, 1)}


def test_pool_round_trip(tmp_path):
    path = tmp_path / "p.npz"
    save_pool_state(path, POOL, SHA)
    loaded = load_pool_state(path, SHA, POOL_SHAPES)
    assert list(loaded) == ["sensor-7", 3], "keys keep their order and type (str, int)"
    for key, state in POOL.items():
        assert list(loaded[key]) == ["h_0", "x_prev"]
        assert loaded[key]["h_0"].dtype == np.float32 and loaded[key]["x_prev"].dtype == np.float64
        np.testing.assert_array_equal(loaded[key]["h_0"], state["h_0"])
        np.testing.assert_array_equal(loaded[key]["x_prev"], state["x_prev"])  # NaN where equal NaN
    with np.load(path) as d:
        header = json.loads(str(d[HEADER_KEY]))
        assert d["h_0"].shape == (2, 1, 4), "streams stacked on a new first axis, in key order"
    assert header["format_version"] == 2 and header["keys"] == ["sensor-7", 3]
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"], "no temporary file left behind"


def test_single_stream_files_stay_version_1(tmp_path):
    # So a statelite that reads only version 1 still resumes from files this one writes for one stream.
    save_state(tmp_path / "s.npz", STATE, SHA)
    with np.load(tmp_path / "s.npz") as d:
        assert json.loads(str(d[HEADER_KEY]))["format_version"] == 1


def test_empty_pool(tmp_path):
    save_pool_state(tmp_path / "p.npz", {}, SHA)
    assert load_pool_state(tmp_path / "p.npz", SHA, POOL_SHAPES) == {}


def test_pool_and_single_files_refuse_each_other(tmp_path):
    save_pool_state(tmp_path / "p.npz", POOL, SHA)
    with pytest.raises(StateFileError, match=r"holds the states of 2 streams .*expected one stream's state"):
        load_state(tmp_path / "p.npz", SHA, POOL_SHAPES)
    save_state(tmp_path / "s.npz", STATE, SHA)
    with pytest.raises(StateFileError, match=r"holds one stream's state \(saved without --stream-key\)"):
        load_pool_state(tmp_path / "s.npz", SHA, SHAPES)


def test_pool_checks(tmp_path):
    path = tmp_path / "p.npz"
    save_pool_state(path, POOL, OTHER)
    with pytest.raises(StateFileError, match="holds the state of another model"):
        load_pool_state(path, SHA, POOL_SHAPES)
    save_pool_state(path, POOL, SHA)
    with pytest.raises(StateFileError, match=r"h_0 expected \(2, 1, 8\), received \(2, 1, 4\).*the 2 streams"):
        load_pool_state(path, SHA, {"h_0": (1, 8), "x_prev": (1, 1)})
    with pytest.raises(StateFileError, match=r"expected states \['c_0', 'h_0', 'x_prev'\]"):
        load_pool_state(path, SHA, {**POOL_SHAPES, "c_0": (1, 4)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateFileError, match="truncated or corrupt"):
        load_pool_state(path, SHA, POOL_SHAPES)


def test_pool_duplicate_keys_in_header(tmp_path):
    path = tmp_path / "p.npz"
    save_pool_state(path, POOL, SHA)
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    header = json.loads(str(arrays[HEADER_KEY]))
    header["keys"] = ["a", "a"]
    arrays[HEADER_KEY] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    with pytest.raises(StateFileError, match="list of stream keys is not a list of distinct strings or integers"):
        load_pool_state(path, SHA, POOL_SHAPES)


def test_pool_bad_arguments(tmp_path):
    with pytest.raises(BadInputError, match=r"keys in a state file must be strings or integers; received \[\(1, 2\)\]"):
        save_pool_state(tmp_path / "p.npz", {(1, 2): POOL[3]}, SHA)
    with pytest.raises(BadInputError, match="must be strings or integers"):
        save_pool_state(tmp_path / "p.npz", {True: POOL[3]}, SHA)
    with pytest.raises(BadInputError, match="every stream's state must have the names and shapes of the first"):
        save_pool_state(tmp_path / "p.npz", {"a": POOL[3], "b": {**POOL[3], "h_0": np.zeros((1, 5))}}, SHA)
    with pytest.raises(BadInputError, match=r"every stream's state must have the names \['h_0', 'x_prev'\]"):
        save_pool_state(tmp_path / "p.npz", {"a": POOL[3], "b": {**POOL[3], "c_0": np.zeros((1, 4))}}, SHA)
    assert not (tmp_path / "p.npz").exists()


def test_stream_pool_states_round_trip(tmp_path, reference_model):
    """A StreamPool's states saved per key come back bit for bit, for an int8 LSTM (h and c states, x_prev)."""
    model = reference_model("lstm_int8_b8.tflite")
    pool = StreamPool(model)
    rng = np.random.default_rng(0)
    for key in ("a", "b", "c"):
        pool.add(key)
    for t in range(12):
        pool.step({k: [370 + rng.normal()] for k in ("a", "b", "c")[: 1 + t % 3]})
    sha = StatefulRunner(model).model_sha256
    save_pool_state(tmp_path / "p.npz", {k: pool.state(k) for k in pool.keys}, sha)
    loaded = load_pool_state(tmp_path / "p.npz", sha, {k: v.shape for k, v in pool.state("a").items()})
    for key in pool.keys:
        for name, value in pool.state(key).items():
            np.testing.assert_array_equal(loaded[key][name], value)
