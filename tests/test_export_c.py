"""``statelite export-c``: the model as an aligned C array and a header of what a TFLite Micro step loop needs,
compiled with the system C++ compiler under -Wall -Wextra -Werror; the state indices are TFLM's, paired by name."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from statelite import BadInputError, read_metadata
from statelite.bench import is_emulated
from statelite.cli import main
from statelite.export_c import c_name, export_c
from statelite.tflite_file import read_tflite

ROOT = Path(__file__).resolve().parent.parent
ONE_SUBGRAPH = ["gru_int8", "gru_float32", "lstm_int8", "lstm_float32", "gru_panel_int8", "lstm_int8_b8"]
CXX = shutil.which("g++") or shutil.which("c++")


def _defines(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"#define (\w+) (-?\d+)", text)}


def _array(text: str, name: str) -> list[str]:
    found = re.search(rf"{name}\[\] = \{{(.*?)\}};", text)
    return [v.strip().strip('"') for v in found.group(1).split(",")]


@pytest.mark.parametrize("stem", ONE_SUBGRAPH)
def test_the_header_pairs_each_state_with_its_tflm_index_by_name(tmp_path, stem):
    model = ROOT / "models" / f"{stem}.tflite"
    result = export_c(model, tmp_path, arena_bytes=8192)
    md = read_metadata(model)
    info = read_tflite(model.read_bytes())
    inputs, outputs = info.subgraph_io[0]
    sig = info.signatures[0]
    text = result.info.read_text()
    d = _defines(text)
    upper = stem.upper()
    assert d[f"{upper}_INPUT_X"] == inputs.index(sig.inputs["x"])
    assert d[f"{upper}_OUTPUT_Y"] == outputs.index(sig.outputs["y"])
    assert d[f"{upper}_HORIZON"] == md.horizon and d[f"{upper}_N_STATES"] == len(md.states)
    assert d[f"{upper}_DIFFERENCE"] == int(md.difference) and d[f"{upper}_ARENA_BYTES"] == 8192
    names = _array(text, f"{stem}_state_names")
    state_in = [int(v) for v in _array(text, f"{stem}_state_inputs")]
    state_out = [int(v) for v in _array(text, f"{stem}_state_outputs")]
    for name, i, o in zip(names, state_in, state_out):
        assert inputs[i] == sig.inputs[name] and outputs[o] == sig.outputs[f"{name}_out"]
    offsets = [float(v.rstrip("f")) for v in _array(text, f"{stem}_feature_offset")]
    assert np.allclose(offsets, md.scaler.feature_offset)


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
@pytest.mark.skipif(is_emulated(), reason="under qemu user-mode emulation the host compiler builds for the host")
@pytest.mark.parametrize("stem", ["gru_int8", "lstm_float32"])
def test_the_generated_files_compile_under_werror_and_hold_the_models_bytes(tmp_path, stem):
    model = ROOT / "models" / f"{stem}.tflite"
    export_c(model, tmp_path, arena_bytes=8192)
    (tmp_path / "main.cc").write_text(
        f'#include <cstdio>\n#include "{stem}_model.h"\n#include "{stem}_statelite.h"\n'
        "int main() {\n"
        f"  if (reinterpret_cast<unsigned long>({stem}_model) % 16 != 0) return 3;\n"
        f"  std::fwrite({stem}_model, 1, {stem}_model_len, stdout);\n"
        f"  return {stem}_state_inputs[0] >= 0 && {stem.upper()}_ARENA_BYTES > 0 ? 0 : 1;\n"
        "}\n"
    )
    build = subprocess.run(
        [CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "main.cc", f"{stem}_model.cc", "-o", "check"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(tmp_path / "check")], capture_output=True)
    assert out.returncode == 0 and out.stdout == model.read_bytes()


def test_a_chunk_model_is_refused_with_one_line(tmp_path):
    with pytest.raises(BadInputError, match="one subgraph for TFLite Micro"):
        export_c(ROOT / "models" / "gru_float32_c8.tflite", tmp_path, arena_bytes=8192)


def test_the_arena_is_measured_with_tflm_when_installed(tmp_path):
    pytest.importorskip("tflite_micro")
    result = export_c(ROOT / "models" / "lstm_int8.tflite", tmp_path)
    assert result.measured_arena_bytes and result.arena_bytes >= result.measured_arena_bytes
    assert result.arena_bytes % 16 == 0


def test_names_become_c_identifiers_and_the_cli_writes_the_files(tmp_path):
    assert c_name("co2-int8.v2") == "co2_int8_v2" and c_name("8bit") == "m_8bit"
    r = CliRunner().invoke(main, ["export-c", str(ROOT / "models" / "gru_int8.tflite"), "--out", str(tmp_path),
                                  "--name", "sensor-1", "--arena-bytes", "4096"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sensor_1_model.cc", "sensor_1_model.h",
                                                          "sensor_1_statelite.h"]
    r = CliRunner().invoke(main, ["export-c", str(ROOT / "models" / "gru_int8.tflite"), "--out", str(tmp_path),
                                  "--arena-bytes", "10"])
    assert r.exit_code == 2 and "at least 1024" in r.output


def _floats(text: str, name: str) -> list[float]:
    return [float(v.rstrip("f")) for v in _array(text, name)]


def test_a_panel_series_key_puts_that_series_scaler_in_the_header(tmp_path):
    model = ROOT / "models" / "gru_panel_int8.tflite"
    md = read_metadata(model)
    key = sorted(md.panel.scalers)[1]
    text = export_c(model, tmp_path / "key", arena_bytes=8192, key=key).info.read_text()
    own = md.panel.scalers[key]
    assert np.allclose(_floats(text, "gru_panel_int8_feature_scale"), own.feature_scale)
    assert np.allclose(_floats(text, "gru_panel_int8_target_offset"), own.target_offset)
    assert f'series "{key}"' in text
    glob = export_c(model, tmp_path / "global", arena_bytes=8192).info.read_text()
    assert np.allclose(_floats(glob, "gru_panel_int8_feature_scale"), md.scaler.feature_scale)
    assert not np.allclose(own.feature_scale, md.scaler.feature_scale)
    assert "global scaler" in glob


def test_an_unknown_key_or_a_key_for_a_single_series_model_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["export-c", str(ROOT / "models" / "gru_panel_int8.tflite"), "--out",
                                  str(tmp_path), "--arena-bytes", "4096", "--key", "no-such-sensor"])
    assert r.exit_code == 2 and "Received: 'no-such-sensor'" in r.output and len(r.output.strip().splitlines()) == 1
    with pytest.raises(BadInputError, match="expected a panel model for --key"):
        export_c(ROOT / "models" / "gru_int8.tflite", tmp_path, arena_bytes=8192, key="a")
    assert not list(tmp_path.iterdir())
