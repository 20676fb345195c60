"""Rolling-origin backtests: the folds' cuts (consecutive test splits, the last fold the whole data), the last fold
equal to a plain train run, the table, JSON and plot, panels, and the errors before anything trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow")

from statelite.cli import main  # noqa: E402
from statelite.errors import BadInputError  # noqa: E402
from statelite.train import TrainConfig, train  # noqa: E402
from statelite.train.backtest import backtest, check_cuts, fold_cuts  # noqa: E402

pytestmark = pytest.mark.tf

ROWS = 400
SMALL = dict(targets=("v",), units=8, epochs=2, window=24, horizon=2, batch_size=16, learning_rate=0.01)
SMALL_ARGS = ["--target", "v", "--units", "8", "--epochs", "2", "--window", "24", "--horizon", "2",
              "--batch-size", "16", "--learning-rate", "0.01"]


def _values(rows, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    return scale * (10 + 0.01 * t + np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=rows))


@pytest.fixture(scope="module")
def series_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "s.csv"
    path.write_text("v\n" + "".join(f"{float(x)!r}\n" for x in _values(ROWS, 0)))
    return str(path)


@pytest.fixture(scope="module")
def cli_run(series_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("bt") / "out"
    result = CliRunner().invoke(
        main, ["backtest", series_csv, *SMALL_ARGS, "--season", "24", "--folds", "3", "--out", str(out), "--quiet"]
    )
    return result, out


def test_fold_cuts_are_consecutive_and_the_last_is_the_whole_series():
    config = TrainConfig(out="x", targets=("v",), test_fraction=0.1)
    cuts = fold_cuts(1003, 4, config)
    assert cuts[-1] == (1003, 0.1)
    starts = [n - int(round(n * f)) for n, f in cuts]
    assert [n for n, _ in cuts[:-1]] == starts[1:]  # each fold ends where the next one's test split starts
    assert all(abs((n - s) - 100) <= 1 for (n, _), s in zip(cuts, starts))  # round(1003 * 0.1) rows, within one


def test_cli_prints_the_table_and_writes_json_table_plot_and_run_folders(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("backtest of gru 1x8 on ") and "3 folds" in lines[0]
    assert lines[1] == "| fold | rows | test rows | model RMSE | persistence | ratio | seasonal naive | ratio |"
    assert [line.split(" | ")[:3] for line in lines[3:6]] == [["| 1", "280", "60"], ["| 2", "340", "60"],
                                                             ["| 3", "400", "60"]]
    assert lines[6].startswith("| mean |") and lines[7].startswith("| spread (sd) |")
    assert lines[8].startswith("model better than persistence in ")
    for name in ("backtest.json", "backtest.md", "backtest.png", "fold-1/run.json", "fold-3/model.keras"):
        assert (out / name).is_file(), name
    assert (out / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "\n".join(lines[1:8]) in (out / "backtest.md").read_text()


def test_json_folds_cut_rows_and_test_splits(cli_run):
    _, out = cli_run
    report = json.loads((out / "backtest.json").read_text())
    assert report["format"] == "statelite-backtest" and report["folds"] == 3 and not report["panel"]
    folds = report["per_fold"]
    splits = [f["series"]["None"]["split"]["test"] for f in folds]
    assert splits == [[220, 280], [280, 340], [340, 400]]
    for fold in folds:  # the figures are the fold's own run's
        run = json.loads((out / fold["run_dir"] / "run.json").read_text())
        assert run["split"] == fold["series"]["None"]["split"]
        assert run["data"]["rows"] == fold["rows"]
        assert fold["model"] == run["metrics"]["test"]["streaming"]
        assert fold["ratio_to_persistence"] == pytest.approx(fold["model"]["rmse"] / fold["persistence"]["rmse"])
        assert fold["seasonal_naive"] is not None
    rmse = [f["model"]["rmse"] for f in folds]
    assert report["mean"]["model"]["rmse"] == pytest.approx(np.mean(rmse))
    assert report["std"]["model"]["rmse"] == pytest.approx(np.std(rmse, ddof=1))
    assert report["config"]["test_fraction"] == 0.15 and report["config"]["season"] == 24


def test_the_last_fold_is_a_plain_train_run(cli_run, series_csv, tmp_path):
    _, out = cli_run
    plain = train(TrainConfig(out=str(tmp_path / "plain"), data=series_csv, season=24, **SMALL))
    last = json.loads((out / "fold-3" / "run.json").read_text())
    assert last["metrics"]["test"]["streaming"] == plain.metrics["test"]["streaming"]
    assert last["metrics"]["test"]["persistence"] == plain.metrics["test"]["persistence"]
    assert last["split"] == {"train": [0, 280], "val": [280, 340], "test": [340, 400]}


def test_panel_folds_cut_each_series_and_use_pooled_figures(tmp_path):
    lines = ["site,v"]
    for key, rows, scale in (("a", 300, 1.0), ("b", 240, 50.0)):
        lines += [f"{key},{float(x)!r}" for x in _values(rows, len(lines), scale)]
    path = tmp_path / "panel.csv"
    path.write_text("\n".join(lines) + "\n")
    config = TrainConfig(out=str(tmp_path / "bt"), data=str(path), series_column="site", **SMALL)
    result = backtest(config, 2)
    assert result.panel and len(result.folds) == 2
    first, last = result.folds
    assert {k: s["split"]["test"] for k, s in first.series.items()} == {"a": [210, 255], "b": [168, 204]}
    assert {k: s["split"]["test"] for k, s in last.series.items()} == {"a": [255, 300], "b": [204, 240]}
    assert first.rows == 255 + 204 and last.rows == 540
    run = json.loads((tmp_path / "bt" / "fold-1" / "run.json").read_text())
    assert {k: s["split"]["test"] for k, s in run["panel"]["series"].items()} == {"a": [210, 255], "b": [168, 204]}
    test = run["metrics"]["test"]
    assert first.model == test["streaming"]  # pooled
    assert first.ratio_to_persistence == test["relative"]["mean_ratio_to_persistence"]
    assert first.seasonal_naive is None and result.mean["seasonal_naive"] is None
    report = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    assert report["panel"] and report["series"] == 2
    assert "seasonal naive" not in result.table()


def test_errors_before_anything_trains(series_csv, tmp_path):
    config = TrainConfig(out=str(tmp_path / "bt"), data=series_csv, **SMALL)
    with pytest.raises(BadInputError, match=r"expected folds to be an integer >= 2 .*Received: folds=1$"):
        backtest(config, 1)
    with pytest.raises(BadInputError) as info:
        check_cuts({None: ROWS}, 8, config)
    assert str(info.value) == (
        "expected each fold to leave train, validation and test splits of at least window + horizon = 26 rows, "
        "Received: rows=400 and folds=8 of about 60 test rows each, whose fold 4 would keep 160 rows (train 76, "
        "val 24, test 60); --folds 4 or fewer fits, or use more data, a smaller --window or a smaller --test-fraction"
    )
    with pytest.raises(BadInputError, match=r"rows=300 \(series 'b'\) and folds=3 .*not even 2 folds fit"):
        check_cuts({"a": 4000, "b": 300}, 3, TrainConfig(out="x", targets=("v",), window=40, horizon=4))
    (tmp_path / "file").write_text("")
    with pytest.raises(BadInputError, match="expected a folder for the backtest"):
        backtest(TrainConfig(out=str(tmp_path / "file"), data=series_csv, **SMALL), 2)
    assert not (tmp_path / "bt").exists()


def test_cli_too_short_is_one_line_and_exit_2(series_csv, tmp_path):
    result = CliRunner().invoke(main, ["backtest", series_csv, *SMALL_ARGS, "--folds", "6", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "--folds 4 or fewer fits" in result.output
    assert "Traceback" not in result.output
