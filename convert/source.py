"""Reading what is to be converted: a run folder from ``statelite train`` or a user's own ``.keras`` model.

The recurrent stack is reduced to plain weights (``LayerWeights``) so the step graph can be rebuilt from constants:
no variables, no ``While`` loop, only TFLite builtin ops.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from statelite.errors import BadInputError, ModelFormatError
from statelite.metadata import Panel, Scaler

SUPPORTED_LAYERS = ("InputLayer", "SimpleRNN", "GRU", "LSTM", "Dropout", "Dense", "TimeDistributed(Dense)")
ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")


@dataclasses.dataclass(frozen=True)
class LayerWeights:
    """One recurrent layer's weights in Keras layout (gate order: GRU z,r,h; LSTM i,f,c,o)."""

    cell: str  # gru | lstm | simplernn
    units: int
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    activation: str
    recurrent_activation: str | None
    reset_after: bool = True

    @property
    def state_kinds(self) -> tuple[str, ...]:
        return ("h", "c") if self.cell == "lstm" else ("h",)


@dataclasses.dataclass(frozen=True)
class DenseWeights:
    kernel: np.ndarray
    bias: np.ndarray | None
    activation: str


@dataclasses.dataclass(frozen=True)
class Source:
    """A model to convert with the data context the device needs."""

    keras_model: object
    layers: tuple[LayerWeights, ...]
    head: tuple[DenseWeights, ...]
    n_features: int
    features: tuple[str, ...]
    targets: tuple[str, ...]
    horizon: int
    scaler: Scaler
    difference: bool
    time_column: str | None
    warmup_steps: int
    calibration_rows: np.ndarray  # raw feature rows (training split) for calibration
    parity_rows: np.ndarray  # raw feature rows (test split) for the parity proof
    parity_truth: np.ndarray | None  # raw target rows aligned with parity_rows plus horizon following rows
    origin: str
    residuals: dict | None = None  # the run's validation residual calibration (statelite.monitor), carried as is
    sampling: dict | None = None  # the run's time column sampling (statelite.timecol.Sampling)
    calendar: tuple[str, ...] = ()  # calendar inputs appended to the features (statelite.calendar)
    # A panel run's series scalers by key, as the metadata will hold them; ``scaler`` is then the global one
    panel: Panel | None = None
    parity_key: str | None = None  # the panel series the parity rows come from
    calibration_times: np.ndarray | None = None  # time cells of calibration_rows (calendar models)
    parity_times: np.ndarray | None = None  # time cells of parity_rows (calendar models)
    # The other panel series kept in the run, as (key, training rows, their time cells): calibrated on as well
    more_calibration: tuple = ()

    @property
    def n_user_features(self) -> int:
        return len(self.features)


def _activation_name(fn, layer_name: str) -> str:
    name = getattr(fn, "__name__", str(fn))
    if name not in ACTIVATIONS:
        raise BadInputError(
            f"layer {layer_name!r} uses activation {name!r}; statelite converts {', '.join(ACTIVATIONS)}."
        )
    return name


def extract_layers(model) -> tuple[tuple[LayerWeights, ...], tuple[DenseWeights, ...], int]:
    """The recurrent layers and dense head of a Keras model, or a clear error naming what is unsupported."""
    import keras

    recurrent: list[LayerWeights] = []
    head: list[DenseWeights] = []
    n_features = model.inputs[0].shape[-1]
    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, keras.layers.TimeDistributed) and isinstance(layer.layer, keras.layers.Dense):
            layer, kind = layer.layer, "Dense"
        if kind in ("InputLayer", "Dropout"):
            continue
        if kind in ("GRU", "LSTM", "SimpleRNN"):
            if head:
                raise BadInputError(f"layer {layer.name!r} ({kind}) comes after a Dense layer; statelite converts "
                                    f"recurrent layers followed by a Dense head.")
            if getattr(layer, "go_backwards", False) or getattr(layer, "stateful", False):
                raise BadInputError(
                    f"layer {layer.name!r} ({kind}) is go_backwards or stateful=True; statelite converts forward, "
                    f"non-stateful layers (the state is fed by the runner instead)."
                )
            cell = layer.cell
            weights = [np.asarray(w, dtype=np.float32) for w in cell.get_weights()]
            kernel, rec = weights[0], weights[1]
            bias = weights[2] if len(weights) > 2 else None
            recurrent.append(
                LayerWeights(
                    cell=kind.lower(),
                    units=int(cell.units),
                    kernel=kernel,
                    recurrent_kernel=rec,
                    bias=bias,
                    activation=_activation_name(cell.activation, layer.name),
                    recurrent_activation=(
                        _activation_name(cell.recurrent_activation, layer.name) if kind != "SimpleRNN" else None
                    ),
                    reset_after=bool(getattr(cell, "reset_after", True)),
                )
            )
            continue
        if kind == "Dense":
            if not recurrent:
                raise BadInputError(f"layer {layer.name!r} (Dense) comes before any recurrent layer; statelite "
                                    f"converts recurrent layers followed by a Dense head.")
            w = [np.asarray(v, dtype=np.float32) for v in layer.get_weights()]
            head.append(DenseWeights(w[0], w[1] if len(w) > 1 else None, _activation_name(layer.activation, layer.name)))
            continue
        raise BadInputError(
            f"layer {layer.name!r} is a {kind}, which statelite cannot convert. Supported layers: "
            f"{', '.join(SUPPORTED_LAYERS)}."
        )
    if not recurrent:
        raise BadInputError(f"the model has no recurrent layer; expected SimpleRNN, GRU or LSTM layers. "
                            f"Received layers: {[type(l).__name__ for l in model.layers]}.")
    return tuple(recurrent), tuple(head), int(n_features)


def _load_keras(path: Path):
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelFormatError(f"could not load the Keras model {path}: {type(exc).__name__}: {exc}") from None


def load_source(path, seed: int = 0) -> Source:
    """Load a run folder (``run.json``, ``model.keras``, ``series.npz``) or a bare ``.keras`` file.

    A bare ``.keras`` model has no scaler and no data: it is taken to work in its own units, its outputs are named
    ``y0``, ``y1``, ... with horizon 1, and calibration and parity use a seeded random stream.

    Raises:
        BadInputError: the path is neither, run.json or series.npz is missing or corrupt, or the model has
            unsupported layers.
        IncompatibleModelError: run.json was written by a newer statelite.
        ModelFormatError: the Keras model file cannot be loaded.
    """
    path = Path(path)
    if path.is_dir():
        return _load_run(path)
    if path.suffix == ".keras" and path.is_file():
        return _load_bare(path, seed)
    raise BadInputError(
        f"expected a run folder from 'statelite train' (with run.json) or a .keras model file; received {path}"
        + (" (not found)." if not path.exists() else ".")
    )


def _load_run(run_dir: Path) -> Source:
    from statelite.train import load_run  # run.json and series.npz, read and checked by the part that writes them

    info, series = load_run(run_dir)
    model = _load_keras(info.model_path)
    layers, head, n_features = extract_layers(model)
    a, b = info.split["train"][1], info.split["test"][0]
    panel, parity_key, more = None, None, ()
    if info.panel is not None:
        members = info.panel["series"]
        panel = _panel(info.panel, info.raw["scaler"]["kind"])
        parity_key = info.sample[0][0]
        more = tuple(
            (key, s.features[: members[key]["split"]["train"][1]],
             None if s.time is None else s.time[: members[key]["split"]["train"][1]])
            for key, s in info.sample[1:]
        )
    time = series.time
    return Source(
        keras_model=model,
        layers=layers,
        head=head,
        n_features=n_features,
        features=info.features,
        targets=info.targets,
        horizon=info.horizon,
        scaler=Scaler.from_dict(info.raw["scaler"]),
        difference=info.difference,
        time_column=info.time_column,
        warmup_steps=info.burn_in,
        calibration_rows=series.features[:a],
        parity_rows=series.features[b:],
        parity_truth=series.targets[b:],
        origin=str(run_dir),
        residuals=info.raw.get("residuals"),
        sampling=info.raw.get("sampling"),
        calendar=info.calendar,
        panel=panel,
        parity_key=parity_key,
        calibration_times=None if time is None else time[:a],
        parity_times=None if time is None else time[b:],
        more_calibration=more,
    )


def _panel(run_panel: dict, kind: str) -> Panel:
    """A run's ``panel`` section as the metadata's ``Panel`` (checked as a device will read it). Shards have no key
    column; ``run --stream-key`` then names the column, and the metadata records ``series``."""
    try:
        return Panel.from_dict({
            "key_column": run_panel.get("key_column") or "series",
            "scalers": {key: m["scaler"] for key, m in run_panel["series"].items()},
            "residual_units": run_panel.get("residual_units", "target_scale"),
        }, kind)
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"expected a valid panel section in the run's run.json, Received: {exc}") from None


def _load_bare(path: Path, seed: int) -> Source:
    model = _load_keras(path)
    layers, head, n_features = extract_layers(model)
    n_out = int(head[-1].kernel.shape[1]) if head else layers[-1].units
    rng = np.random.default_rng(seed)
    stream = np.cumsum(rng.normal(0, 0.3, (1500, n_features)), axis=0) * 0.1 + rng.normal(0, 1, (1500, n_features))
    ident = Scaler("none", (0.0,) * n_features, (1.0,) * n_features, (0.0,) * n_out, (1.0,) * n_out)
    return Source(
        keras_model=model,
        layers=layers,
        head=head,
        n_features=n_features,
        features=tuple(f"x{i}" for i in range(n_features)),
        targets=tuple(f"y{i}" for i in range(n_out)),
        horizon=1,
        scaler=ident,
        difference=False,
        time_column=None,
        warmup_steps=20,
        calibration_rows=stream[:1000].astype(np.float64),
        parity_rows=stream[1000:].astype(np.float64),
        parity_truth=None,
        origin=str(path),
    )
