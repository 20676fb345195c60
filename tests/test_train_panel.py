"""Panel training: one model learns from many series (a key column, or a folder of CSV/Parquet shards), each with
its own chronological split and scaler, a global scaler for unseen keys, calendar inputs from the time column, and
the tf.data pipeline that reads shards lazily."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from statelite.calendar import cell_values  # noqa: E402
from statelite.errors import BadInputError  # noqa: E402
from statelite.train import TrainConfig, load_run, train  # noqa: E402
from statelite.train import panel as P  # noqa: E402

pytestmark = pytest.mark.tf

# three sites of one daily cycle at very different magnitudes: a per-series scaler makes them alike
SITES = {"north": (1.0, 10.0), "south": (100.0, 5000.0), "tiny": (0.01, -3.0)}
ROWS = 360


def _site_rows(scale, offset, seed, rows=ROWS):
    rng = np.random.default_rng(seed)
    hours = np.arange(rows)
    values = offset + scale * (np.sin(2 * np.pi * hours / 24) + 0.1 * rng.normal(size=rows))
    start = np.datetime64("2026-01-05T00:00")
    times = [str(start + np.timedelta64(int(h), "h")) for h in hours]
    return times, values


def _keyed_csv(path):
    lines = ["site,time,load"]
    for i, (site, (scale, offset)) in enumerate(SITES.items()):
        times, values = _site_rows(scale, offset, i)
        lines += [f"{site},{t},{float(v)!r}" for t, v in zip(times, values)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _shards(folder, parquet=("south",)):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    for i, (site, (scale, offset)) in enumerate(SITES.items()):
        times, values = _site_rows(scale, offset, i)
        if site in parquet:
            pq.write_table(pa.table({"time": times, "load": values}), folder / f"{site}.parquet")
        else:
            (folder / f"{site}.csv").write_text("time,load\n" + "".join(f"{t},{float(v)!r}\n" for t, v in zip(times, values)))
    return str(folder)


def _config(tmp_path, data, **overrides):
    options = dict(out=str(tmp_path / "run"), data=data, targets=("load",), time_column="time", units=8, window=24,
                   horizon=2, epochs=2, batch_size=16, learning_rate=0.01)
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def keyed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keyed")
    return train(_config(tmp, _keyed_csv(tmp / "sites.csv"), series_column="site", calendar=("hour", "dow")))


def test_each_series_has_its_own_split_and_scaler_and_the_global_scaler_spans_them(keyed_run):
    raw = json.loads((keyed_run.run_dir / "run.json").read_text())
    panel = raw["panel"]
    assert panel["key_column"] == "site" and list(panel["series"]) == list(SITES)
    for site, (scale, offset) in SITES.items():
        member = panel["series"][site]
        assert member["rows"] == ROWS and member["split"]["test"] == [306, ROWS]
        # the scaler is fitted on the series' own training rows: mean near its offset, std near its swing
        assert member["scaler"]["target_offset"][0] == pytest.approx(offset, abs=0.1 * scale)
        assert member["scaler"]["target_scale"][0] == pytest.approx(scale * 0.71, rel=0.1)
    # the global scaler is fitted on every training row: its spread covers the largest series' offsets
    assert raw["scaler"]["target_scale"][0] > 1000
    assert raw["calendar"] == ["hour", "dow"]
    assert panel["residual_units"] == "target_scale"


def test_metrics_per_series_and_pooled(keyed_run):
    m = keyed_run.metrics
    assert set(m["series"]) == set(SITES)
    test = m["test"]
    assert test["series"] == 3 and test["positions"] == sum(s["positions"] for s in m["series"].values())
    # the pooled RMSE weighs raw units: the 5000-level series dominates it
    south = m["series"]["south"]["streaming"]["rmse"]
    assert test["streaming"]["rmse"] == pytest.approx(south / np.sqrt(3), rel=0.05)
    ratios = [s["streaming"]["rmse"] / s["persistence"]["rmse"] for s in m["series"].values()]
    assert test["relative"]["mean_ratio_to_persistence"] == pytest.approx(np.mean(ratios))
    assert test["relative"]["beats_persistence"] == sum(r < 1 for r in ratios)
    assert 0.0 <= test["coverage"]["adaptive"]["0.9"] <= 1.0


def test_the_model_takes_the_calendar_columns_after_the_features(keyed_run):
    assert keyed_run.model.inputs[0].shape[-1] == 1 + 4


def test_series_npz_keeps_the_sample_and_load_run_reads_it_back(keyed_run):
    info, first = load_run(keyed_run.run_dir)
    assert [key for key, _ in info.sample] == list(SITES)
    assert first.rows == ROWS and info.panel["key_column"] == "site" and info.calendar == ("hour", "dow")
    times, values = _site_rows(*SITES["tiny"], 2)
    key, tiny = info.sample[2]
    assert key == "tiny" and np.allclose(tiny.targets[:, 0], values) and list(tiny.time) == times


def test_shards_in_a_folder_train_the_same_model_as_a_key_column(tmp_path, keyed_run):
    shards = _shards(tmp_path / "sites")
    # sorted file names: north, south, tiny (the key column's order of first appearance is the same)
    result = train(_config(tmp_path, shards, calendar=("hour", "dow")))
    assert list(result.metrics["series"]) == ["north", "south", "tiny"]
    assert result.metrics["test"]["streaming"]["rmse"] == pytest.approx(
        keyed_run.metrics["test"]["streaming"]["rmse"], rel=1e-6)
    raw = json.loads((result.run_dir / "run.json").read_text())
    assert raw["panel"]["lazy"] is True and raw["panel"]["key_column"] is None


def test_a_glob_names_the_shards(tmp_path):
    folder = _shards(tmp_path / "sites")
    source = P.open_source(_config(tmp_path, folder + "/*.parquet"))
    assert source.keys == ("south",) and source.lazy


def test_training_chunks_hold_a_few_series_at_a_time(tmp_path):
    folder = _shards(tmp_path / "sites")
    config = _config(tmp_path, folder)
    source = P.open_source(config)
    loads = []
    counting = P.PanelSource(source.keys, lambda key: loads.append(key) or source.load(key), None, folder, True)
    members, _, _ = P.plan(counting, config)
    loads.clear()
    chunks = list(P.training_chunks(counting, members, config, np.random.default_rng(0), group=1))
    # with one series per group each series is read once an epoch, and its chunks come out together
    assert sorted(loads) == sorted(SITES) and len(chunks) == P.chunk_count(members, config.window)


def test_calendar_inputs_are_the_device_functions_values(tmp_path):
    config = _config(tmp_path, _keyed_csv(tmp_path / "s.csv"), series_column="site", calendar=("hour",))
    source = P.open_source(config)
    members, _, _ = P.plan(source, config)
    series = source.load("north")
    x, _, _ = P.model_stream(series, members[0], config, 0, 30)
    assert np.allclose(x[:, 1:], cell_values(series.time[:30], ["hour"]).astype(np.float32))


@pytest.mark.parametrize("overrides, words", [
    (dict(calendar=("hour", "week")), "calendar features among hour, dow, month, doy"),
    (dict(calendar=("hour",), time_column=None), "a time column (--time-column)"),
    (dict(series_column="load"), "neither a feature, a target nor the time column"),
])
def test_bad_panel_options_fail_in_one_line(tmp_path, overrides, words):
    with pytest.raises(BadInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _config(tmp_path, "x.csv", **overrides)


def test_a_series_too_short_is_named(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(_keyed_csv(tmp_path / "k.csv") and (tmp_path / "k.csv").read_text() + "".join(
        f"stub,2026-01-01T{h:02d}:00,{h}\n" for h in range(20)))
    with pytest.raises(BadInputError, match="series 'stub'"):
        train(_config(tmp_path, str(path), series_column="site"))


def test_a_missing_key_column_and_an_empty_folder_are_clear(tmp_path):
    with pytest.raises(BadInputError, match="available columns"):
        P.open_source(_config(tmp_path, _keyed_csv(tmp_path / "s.csv"), series_column="plant"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="expected CSV or Parquet files"):
        P.open_source(_config(tmp_path, str(tmp_path / "empty")))


def test_a_bad_shard_is_named(tmp_path):
    folder = _shards(tmp_path / "sites", parquet=())
    (tmp_path / "sites" / "zz.csv").write_text("time,other\n2026-01-01T00:00,1\n")
    with pytest.raises(BadInputError, match=r"zz\.csv: expected columns of the CSV, Received: unknown column\(s\) 'load'"):
        P.plan(P.open_source(_config(tmp_path, folder)), _config(tmp_path, folder))
