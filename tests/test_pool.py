"""StreamPool on the committed batch-8 reference models: lanes independent, idle streams keep their state exactly."""

from __future__ import annotations

import numpy as np
import pytest

from statelite import BadInputError, StatefulRunner, StreamPool


@pytest.fixture(params=[("gru_float32_b8", "gru_float32"), ("lstm_int8_b8", "lstm_int8")], ids=["f32", "int8"])
def models(request, reference_model):
    batched, single = request.param
    return reference_model(batched + ".tflite"), reference_model(single + ".tflite")


def _streams(n, steps=40, seed=0):
    rng = np.random.default_rng(seed)
    return 360 + np.cumsum(rng.normal(0, 0.5, (n, steps, 1)), axis=1)


def test_pool_equals_batched_runner_lanes(models):
    """Each stream gets exactly what its lane of the same batched graph computes, whatever the other lanes do."""
    batched, _ = models
    pool = StreamPool(batched)
    data = _streams(3)
    for key in "abc":
        pool.add(key)
    runner = StatefulRunner(batched)
    xs = np.full((data.shape[1], 8, 1), 400.0)  # the other lanes run a stream of their own
    xs[:, :3] = data.transpose(1, 0, 2)
    expected = runner.run(xs)
    for t in range(data.shape[1]):
        out = pool.step({key: data[i, t] for i, key in enumerate("abc")})
        lanes = [pool._slots[key] for key in "abc"]
        for key, lane in zip("abc", lanes):
            np.testing.assert_allclose(out[key], expected[t, lane], rtol=0, atol=1e-9)


def test_float_pool_equals_separate_runners(reference_model):
    pool = StreamPool(reference_model("gru_float32_b8.tflite"))
    runners = {key: StatefulRunner(reference_model("gru_float32.tflite")) for key in "abc"}
    data = _streams(3)
    for key in "abc":
        pool.add(key)
    for t in range(data.shape[1]):
        out = pool.step({key: data[i, t] for i, key in enumerate("abc")})
        for i, key in enumerate("abc"):
            np.testing.assert_allclose(out[key], runners[key].step(data[i, t]), rtol=0, atol=1e-5)


def test_idle_streams_keep_their_state_exactly(models):
    pool = StreamPool(models[0])
    data = _streams(2)
    pool.add("busy")
    pool.add("idle")
    for t in range(10):
        pool.step({"busy": data[0, t], "idle": data[1, t]})
    frozen = pool.state("idle")
    for t in range(10, 30):
        pool.step({"busy": data[0, t]})
    for name, value in pool.state("idle").items():
        np.testing.assert_array_equal(value, frozen[name])
    # And it resumes as if it had never paused.
    twin = StreamPool(models[0])
    twin.add("idle")
    for t in range(10):
        twin.step({"idle": data[1, t]})
    np.testing.assert_array_equal(pool.step({"idle": data[1, 10]})["idle"], twin.step({"idle": data[1, 10]})["idle"])


def test_reset_one_stream_leaves_the_others(models):
    pool = StreamPool(models[0])
    data = _streams(2)
    pool.add(1)
    pool.add(2)
    for t in range(5):
        pool.step({1: data[0, t], 2: data[1, t]})
    other = pool.state(2)
    pool.reset(1)
    assert not pool.state(1)["h_0"].any()
    for name, value in pool.state(2).items():
        np.testing.assert_array_equal(value, other[name])


def test_membership_errors(models):
    pool = StreamPool(models[0])
    for i in range(pool.capacity):
        pool.add(i)
    with pytest.raises(BadInputError, match="the pool is full: 8 streams"):
        pool.add("one more")
    with pytest.raises(BadInputError, match="already in the pool"):
        pool.add(0)
    with pytest.raises(BadInputError, match="no stream 'ghost' in the pool"):
        pool.step({"ghost": [360.0]})
    pool.remove(3)
    pool.add("new")
    assert "new" in pool and 3 not in pool and len(pool) == 8
    assert not pool.state("new")["h_0"].any()


def test_bad_row_steps_nothing(models):
    pool = StreamPool(models[0])
    pool.add("a")
    pool.add("b")
    pool.step({"a": [360.0], "b": [361.0]})
    before = {k: pool.state(k) for k in "ab"}
    with pytest.raises(BadInputError, match=r"rows of streams \['b'\] contain NaN or inf; nothing was stepped"):
        pool.step({"a": [360.5], "b": [np.nan]})
    with pytest.raises(BadInputError, match="every row must have 1 values"):
        pool.step({"a": [360.5, 1.0]})
    for k in "ab":
        for name, value in pool.state(k).items():
            np.testing.assert_array_equal(value, before[k][name])


def test_single_stream_model_is_refused(reference_model):
    with pytest.raises(BadInputError, match="needs a model converted with --batch N"):
        StreamPool(reference_model("gru_float32.tflite"))


def test_step_all_equals_dict_step(models):
    a, b = StreamPool(models[0]), StreamPool(models[0])
    for key in range(5):
        a.add(key)
        b.add(key)
    data = _streams(5, steps=12)
    for t in range(12):
        by_dict = a.step({key: data[key, t] for key in range(5)})
        block = b.step_all(data[:, t])
        np.testing.assert_array_equal(np.stack([by_dict[k] for k in range(5)]), block)
    with pytest.raises(BadInputError, match=r"xs must have shape \(5, 1\)"):
        b.step_all(data[:4, 0])


def test_set_state_round_trip(models):
    pool = StreamPool(models[0])
    pool.add("a")
    pool.add("b")
    data = _streams(1, steps=10)
    for t in range(8):
        pool.step({"a": data[0, t]})
    pool.set_state("b", pool.state("a"))
    out = pool.step({"a": data[0, 8], "b": data[0, 8]})
    np.testing.assert_array_equal(out["a"], out["b"])
    with pytest.raises(BadInputError, match="state must have exactly the keys"):
        pool.set_state("b", {"h_0": np.zeros((1, 32))})
