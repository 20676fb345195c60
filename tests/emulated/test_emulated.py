"""The device side on emulated Raspberry Pis: Debian bookworm's python3.11 for arm64 and armhf under qemu-user.

arm64 (Pi 4/5, ai-edge-litert): the runtime's TensorFlow-free test suite, and ``statelite verify`` on every
reference model. armhf (Pi 2/3/Zero 2, tflite-runtime 2.14 with Debian's numpy 1.24): ``verify`` on the models
converted for that target. Both: a stream stepped across a saved and restored state (a reboot mid-stream), and
``bench`` saying its timings are emulated.

Run with ``pytest -m emulated tests/emulated`` (``.ci/emulated.sh``). Skipped where the environments cannot be built
(no x86_64 Debian host, registries unreachable); a build that completes but is broken, or a check that fails, fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from . import envs

pytestmark = pytest.mark.emulated

MODELS = envs.REPO / "models"
ALL_MODELS = sorted(p.name for p in MODELS.glob("*.tflite"))
TFL214_MODELS = sorted(p.name for p in MODELS.glob("*tfl214*.tflite"))
# The stream model per environment: LSTM int8 has two states and requantizes them; the armhf one is built for 2.14.
STREAM_MODEL = {"arm64": "lstm_int8.tflite", "armhf": "gru_int8_tfl214.tflite"}
INTERPRETER = {"arm64": "litert", "armhf": "tflite-runtime"}

_built: dict[str, object] = {}


def _attempt(key: str, build) -> object:
    if key not in _built:
        try:
            _built[key] = build()
        except (envs.EmulationUnavailable, envs.BuildError) as exc:
            _built[key] = exc
    return _built[key]


def get_env(name: str) -> envs.Env:
    """Build ``name`` once per session; skip when this host cannot, fail when the result is broken."""
    got = _attempt("qemu", envs.ensure_qemu)  # both environments need it: a host without it is told once
    if not isinstance(got, Exception):
        got = _attempt(name, lambda: envs.build(name))
    if isinstance(got, envs.EmulationUnavailable):
        pytest.skip(f"emulated {name} environment unavailable: {got}")
    if isinstance(got, envs.BuildError):
        pytest.fail(f"emulated {name} environment is broken: {got}", pytrace=False)
    return got


def run_inside(name: str, cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = get_env(name)
    try:
        return envs.run(env, cmd, timeout=timeout, cwd=envs.REPO)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: {' '.join(cmd[:4])} ... did not finish in {timeout:.0f} s under emulation", pytrace=False)


def explain(proc: subprocess.CompletedProcess) -> str:
    out = f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    crashed = proc.returncode < 0 or "uncaught target signal" in proc.stderr
    return ("the process CRASHED (a signal inside the emulated python; on a device it would crash too unless qemu "
            "is at fault): " if crashed else "") + out


def reference(name: str) -> Path:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"reference model models/{name} missing; regenerate with: python models/regenerate.py")
    return path


def field(report: str, key: str) -> str:
    match = re.search(rf"^{key}\s+(.*)$", report, re.MULTILINE)
    assert match, f"no {key!r} line in the verify report:\n{report}"
    return match.group(1).strip()


# -- the environments themselves --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(envs.ENVS))
def test_environment_is_the_device(name):
    spec = envs.ENVS[name]
    code = textwrap.dedent(
        """
        import json, os, platform, sys
        import statelite
        from statelite.interpreter import load_backend
        backend, _ = load_backend()
        print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "backend": backend,
                          "emulated": os.environ.get("STATELITE_EMULATED"), "statelite": statelite.__file__,
                          "tensorflow": "tensorflow" in sys.modules, "executable": sys.executable}))
        """
    )
    proc = run_inside(name, ["python3.11", "-c", code])
    assert proc.returncode == 0, explain(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["machine"] == spec.machine
    assert got["python"].startswith("3.11.")
    assert got["backend"] == INTERPRETER[name]
    assert got["emulated"] == "1"
    assert not got["tensorflow"], "import statelite pulled in TensorFlow"
    # The checkout's runtime is what runs, not an installed copy.
    assert Path(got["statelite"]).parent.name == "statelite" and "statelite-emu-" in got["statelite"]


# -- arm64: the runtime's own tests ---------------------------------------------------------------------------------


def test_runtime_suite_on_arm64():
    """The TensorFlow-free tests (files that need TensorFlow skip themselves) under Debian arm64's python3.11.

    The fuzz harness (tests/fuzz) is left to the workstation and device-only runs: it starts worker processes by the
    dozen, each a second or more under qemu, which would take the stage past its time budget; the property tests of
    the runner (hypothesis) do run here."""
    cmd = ["python3.11", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--ignore=tests/emulated",
           "--ignore=tests/fuzz", "-m", "not tf and not tflite214 and not slow and not emulated", "tests"]
    proc = run_inside("arm64", cmd, timeout=1200)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"arm64 runtime suite: {summary}")
    assert proc.returncode == 0, explain(proc)
    assert re.search(r"\d+ passed", summary), f"the runtime suite ran no test under arm64: {summary}"


# -- verify on the reference models ---------------------------------------------------------------------------------


def _verify(name: str, model: str) -> None:
    path = reference(model)
    proc = run_inside(name, ["python3.11", "-m", "statelite.cli", "verify", str(path.relative_to(envs.REPO))])
    report = proc.stdout
    print(f"{name}: {model}: " + " | ".join(
        f"{k} {field(report, k)}" for k in ("interpreter", "machine", "max abs err", "result") if k in report
    ))
    assert proc.returncode == 0, explain(proc)
    assert field(report, "machine") == envs.ENVS[name].machine
    assert field(report, "interpreter").split()[0] == INTERPRETER[name]
    assert field(report, "result") == "PASS"


@pytest.mark.parametrize("model", ALL_MODELS or ["(none)"])
def test_verify_on_arm64(model):
    if model == "(none)":
        pytest.skip("no reference models in models/; regenerate with: python models/regenerate.py")
    _verify("arm64", model)


@pytest.mark.parametrize("model", TFL214_MODELS or ["(none)"])
def test_verify_on_armhf_tflite_runtime_2_14(model):
    if model == "(none)":
        pytest.skip("no models/*tfl214*.tflite; regenerate with: python models/regenerate.py")
    _verify("armhf", model)


# -- a stream across a reboot ---------------------------------------------------------------------------------------

_FIRST_HALF = """
import sys, numpy as np
from statelite import StatefulRunner
model, golden, state, out = sys.argv[1:5]
x = np.load(golden)["x"]
r = StatefulRunner(model)
np.save(out, r.run(x[: len(x) // 2]))
r.save_state(state)
"""

_SECOND_HALF = """
import json, platform, sys, numpy as np
from statelite import StatefulRunner
model, golden, state, first = sys.argv[1:5]
x = np.load(golden)["x"]
half = len(x) // 2
straight = StatefulRunner(model).run(x)            # one process, never interrupted
resumed = StatefulRunner(model)
resumed.load_state(state)                          # a fresh process after a reboot
second = resumed.run(x[half:])
cold = StatefulRunner(model).run(x[half:])         # what forgetting the state would give
print(json.dumps({
    "machine": platform.machine(), "backend": resumed.backend, "states": list(resumed.state_names),
    "first_equal": bool(np.array_equal(np.load(first), straight[:half])),
    "second_equal": bool(np.array_equal(second, straight[half:])),
    "second_max_diff": float(np.abs(second - straight[half:]).max()),
    "cold_max_diff": float(np.abs(cold - straight[half:]).max()),
}))
"""


@pytest.mark.parametrize("name", list(envs.ENVS))
def test_stream_resumes_from_saved_state(name, tmp_path):
    model = reference(STREAM_MODEL[name])
    golden = model.with_name(model.stem + ".golden.npz")
    state, first = tmp_path / "state.npz", tmp_path / "first.npy"
    proc = run_inside(name, ["python3.11", "-c", _FIRST_HALF, str(model), str(golden), str(state), str(first)])
    assert proc.returncode == 0, explain(proc)
    proc = run_inside(name, ["python3.11", "-c", _SECOND_HALF, str(model), str(golden), str(state), str(first)])
    assert proc.returncode == 0, explain(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{name}: {model.name} stream across save/load: {got}")
    assert got["machine"] == envs.ENVS[name].machine
    assert got["first_equal"], "the first half differs between two runs of the same model on the same device"
    assert got["second_equal"], f"the resumed stream differs from the uninterrupted one by {got['second_max_diff']}"
    assert got["cold_max_diff"] > 0, "a cold start gave the same forecasts as the restored state: state has no effect"


# -- bench knows it is emulated -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(envs.ENVS))
def test_bench_says_emulated(name):
    model = reference(STREAM_MODEL[name])
    proc = run_inside(name, ["python3.11", "-m", "statelite.cli", "bench", "--steps", "50", "--warmup", "5", str(model)])
    assert proc.returncode == 0, explain(proc)
    machine = field(proc.stdout, "machine")
    print(f"{name}: bench: {field(proc.stdout, 'per step')} | machine {machine}")
    assert machine.startswith(envs.ENVS[name].machine) and "EMULATED" in machine


# -- a known tflite-runtime 2.14 crash on ARM -----------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["GRU", "LSTM", "SimpleRNN"])
def test_bias_free_integer_models_on_armhf(tmp_path, cell):
    """Regression: tflite-runtime 2.14's ARM int8 FULLY_CONNECTED kernel (gemmlowp per-channel path) dereferences a
    missing bias and segfaults; the converter drops all-zero biases (an untrained layer has them, and the recurrent
    matmul of LSTM and SimpleRNN never has one). statelite writes explicit zero biases, so every integer mode allowed
    for the tflite-runtime-2.14 target must run on the emulated 32-bit Pi, within its golden tolerance."""
    pytest.importorskip("tensorflow")
    import keras

    from statelite.convert import ConvertConfig, convert

    get_env("armhf")
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, 2))
    h = getattr(keras.layers, cell)(8, return_sequences=True)(inp)
    h = getattr(keras.layers, cell)(8, return_sequences=True)(h)
    keras.Model(inp, keras.layers.Dense(3)(h)).save(tmp_path / "m.keras")
    paths = []
    for quant in ("int8", "int16x8"):
        config = ConvertConfig(quant=quant, target="tflite-runtime-2.14", check_parity=False)
        paths.append(str(convert(tmp_path / "m.keras", tmp_path / f"m_{quant}.tflite", config, log=None).path))
    code = (
        "import sys, numpy as np; from statelite import StatefulRunner as R\n"
        "for p in sys.argv[1:]:\n"
        "    g = np.load(p[:-7] + '.golden.npz'); y = R(p).run(g['x'])\n"
        "    e = (y - g['y_keras']) / g['target_scale']\n"
        "    print(p, float(np.abs(e).max()), float(g['tol_max_abs']))\n"
    )
    proc = run_inside("armhf", ["python3.11", "-c", code, *paths])
    assert proc.returncode == 0, explain(proc)
    lines = [line.split() for line in proc.stdout.strip().splitlines()[-len(paths):]]
    assert len(lines) == len(paths), explain(proc)
