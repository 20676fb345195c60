"""``statelite train`` through click's CliRunner: bad input is one line and exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

pytest.importorskip("statelite.train", exc_type=ImportError)

from statelite.cli import main  # noqa: E402


def run(*args):
    result = CliRunner().invoke(main, ["train", *args])
    return result


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def csv_file(tmp_path):
    rows = "\n".join(f"{i},{i % 7},{(i * 3) % 5}" for i in range(200))
    return write(tmp_path / "d.csv", "t,a,b\n" + rows + "\n")


def assert_bad(result, message):
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_values_without_fill(tmp_path):
    path = write(tmp_path / "m.csv", "t,v\n" + "\n".join(f"{i},{'' if i in (3, 9) else i}" for i in range(100)))
    result = run(path, "--target", "v", "--out", str(tmp_path / "r"))
    assert_bad(result, "Error: expected no missing values in column 'v', Received: 2 empty cell(s) at CSV line(s) 5, 11;")
    assert "--fill interpolate" in result.output


def test_text_cell(tmp_path):
    path = write(tmp_path / "t.csv", "v\n1\n2\nhello\n")
    assert_bad(run(path, "--target", "v", "--out", str(tmp_path / "r")), "Received: 'hello' at CSV line 4")


def test_unknown_column(csv_file, tmp_path):
    result = run(csv_file, "--target", "a", "--features", "a,zz", "--out", str(tmp_path / "r"))
    assert_bad(result, "unknown column(s) 'zz'; available columns: t, a, b")


def test_bundled_data_has_no_such_column(tmp_path):
    assert_bad(run("--target", "temp", "--out", str(tmp_path / "r")), "available columns: date, co2")


def test_too_short(csv_file, tmp_path):
    result = run(csv_file, "--target", "a", "--window", "40", "--horizon", "5", "--out", str(tmp_path / "r"))
    assert_bad(result, "at least window + horizon = 45 rows, Received: rows=200 split into train 140, val 30, test 30")


def test_missing_data_file(tmp_path):
    assert_bad(run(str(tmp_path / "nope.csv"), "--target", "a", "--out", str(tmp_path / "r")), "cannot read the data file")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--units", "0"], "Error: expected units to be an integer >= 1, Received: units=0"),
        (["--layers", "9"], "Received: layers=9"),
        (["--val-fraction", "0.6", "--test-fraction", "0.4"], "val_fraction + test_fraction < 1"),
        (["--window", "10", "--burn-in", "10"], "Received: burn_in=10"),
        (["--season", "2"], "Received: season=2, horizon=4"),
        (["--target", "a", "--features", "b", "--difference"], "every target to also be a feature when differencing"),
        (["--time-column", "a", "--target", "a"], "neither a feature nor a target"),
        ([], "at least one target column (--target)"),
    ],
)
def test_bad_option_combos(csv_file, tmp_path, args, message):
    data = [csv_file] if "--target" in args or not args else []  # the others: the bundled data and its preset
    assert_bad(run(*data, *args, "--out", str(tmp_path / "r")), message)


def test_out_is_a_file(csv_file, tmp_path):
    out = write(tmp_path / "file", "")
    assert_bad(run(csv_file, "--target", "a", "--out", out), "Invalid value for '--out'")


def test_click_usage_errors_exit_2(tmp_path):
    result = run("--cell", "transformer", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "'transformer' is not one of" in result.output
    assert run().exit_code == 2  # --out is required


def test_help_does_not_import_tensorflow():
    code = "import sys; from statelite.cli import main; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "--difference / --no-difference" in CliRunner().invoke(main, ["train", "--help"]).output


@pytest.mark.tf
def test_train_writes_a_run_and_prints_a_summary(tmp_path):
    pytest.importorskip("tensorflow")
    rows = "\n".join(f"{i},{(i % 10) / 10:.2f},{(i % 4)}" for i in range(160))
    path = write(tmp_path / "d.csv", "t,a,b\n" + rows + "\n")
    out = tmp_path / "run"
    args = [path, "--target", "a", "--features", "a,b", "--time-column", "t", "--cell", "gru", "--units", "4"]
    args += ["--window", "12", "--horizon", "2", "--epochs", "2", "--season", "10", "--seed", "3", "--out", str(out)]
    result = run(*args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("epoch   1/2  loss ")
    assert "windowed" in result.output and "seasonal naive" in result.output
    assert lines[-1] == f"run folder: {out}"
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["config"]["seed"] == 3 and run_json["data"]["features"] == ["a", "b"]
    quiet = run(*args, "--quiet")
    assert quiet.exit_code == 0 and "epoch" not in quiet.output.split("trained")[0]
