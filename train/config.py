"""Every option of ``statelite train`` in one place: ``str`` enums and the frozen ``TrainConfig``.

``TrainConfig.__post_init__`` rejects impossible combinations up front, so a bad option fails in milliseconds with
one clear line instead of after TensorFlow has loaded. ``to_dict``/``from_dict`` give the JSON round trip stored in
``run.json``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from statelite.errors import BadInputError
from statelite.calendar import calendar_columns, check_features
from statelite.options import Cell, Fill, ScalerKind, Strategy  # noqa: F401 (re-exported: the options of train)

BUNDLED_CO2 = "bundled:co2"
MAX_LAYERS = 4


def _enum(kind: type[enum.Enum], name: str, value: Any) -> Any:
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value).lower())
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise BadInputError(f"expected {name} to be one of {choices}, Received: {name}={value!r}") from None


def _names(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    names = tuple(str(v).strip() for v in value)
    if any(not n for n in names):
        raise BadInputError(f"expected non-empty column names, Received: {name}={list(names)}")
    if len(set(names)) != len(names):
        raise BadInputError(f"expected each column once, Received: {name}={list(names)}")
    return names


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What to train, on what, and where to write the run folder.

    ``data=None`` means the bundled Mauna Loa CO2 series; ``TrainConfig.co2(out=...)`` adds the preset that trains
    a good model on it. ``features`` defaults to ``targets``; ``burn_in`` defaults to ``window // 4``. Both are
    resolved here, so ``to_dict`` records what was actually used.

    Raises:
        BadInputError: an option is out of range or contradicts another one.
    """

    out: str
    data: str | None = None
    targets: tuple[str, ...] = ()
    features: tuple[str, ...] | None = None
    time_column: str | None = None
    cell: Cell = Cell.GRU
    units: int = 32
    layers: int = 1
    dropout: float = 0.0
    window: int = 52
    horizon: int = 4
    burn_in: int | None = None
    scaler: ScalerKind = ScalerKind.STANDARD
    fill: Fill = Fill.NONE
    difference: bool = False
    season: int | None = None
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 3e-3
    clipnorm: float | None = 1.0
    patience: int = 6
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    series_column: str | None = None
    calendar: tuple[str, ...] = ()
    strategy: Strategy = Strategy.NONE

    @classmethod
    def co2(cls, **overrides: Any) -> TrainConfig:
        """The preset for the bundled weekly CO2 series; ``overrides`` win (``out`` is required)."""
        preset: dict[str, Any] = {
            "data": None,
            "targets": ("co2",),
            "time_column": "date",
            "fill": Fill.INTERPOLATE,
            "difference": True,
            "season": 52,
        }
        preset.update(overrides)
        return cls(**preset)

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:  # frozen: defaults are resolved once, here
            object.__setattr__(self, name, value)

        if not isinstance(self.out, str) or not self.out:
            raise BadInputError(f"expected an output folder path, Received: out={self.out!r}")
        if self.data is not None and not isinstance(self.data, str):
            set_("data", str(self.data))
        set_("cell", _enum(Cell, "cell", self.cell))
        set_("scaler", _enum(ScalerKind, "scaler", self.scaler))
        set_("fill", _enum(Fill, "fill", self.fill if self.fill is not None else Fill.NONE))
        set_("difference", bool(self.difference))

        targets = _names("targets", self.targets)
        if not targets:
            raise BadInputError(f"expected at least one target column (--target), Received: targets={list(targets)}")
        features = _names("features", self.features) or targets
        set_("targets", targets)
        set_("features", features)
        if self.time_column is not None:
            if not isinstance(self.time_column, str) or not self.time_column:
                raise BadInputError(f"expected a column name, Received: time_column={self.time_column!r}")
            if self.time_column in features + targets:
                raise BadInputError(
                    "expected the time column to be neither a feature nor a target, "
                    f"Received: time_column={self.time_column!r}"
                )
        set_("strategy", _enum(Strategy, "strategy", self.strategy))
        try:
            set_("calendar", check_features(self.calendar))
        except BadInputError as exc:
            raise BadInputError(f"{exc} (--calendar)") from None
        if self.calendar and self.time_column is None:
            raise BadInputError(
                "expected a time column (--time-column) to derive the calendar inputs from, Received: "
                f"calendar={list(self.calendar)} without one"
            )
        clash = sorted(set(calendar_columns(self.calendar)) & set(features + targets))
        if clash:
            raise BadInputError(f"expected data columns not named like calendar inputs, Received: {clash}")
        if self.series_column is not None:
            if not isinstance(self.series_column, str) or not self.series_column.strip():
                raise BadInputError(f"expected a column name, Received: series_column={self.series_column!r}")
            if self.series_column in features + targets + ((self.time_column,) if self.time_column else ()):
                raise BadInputError(
                    "expected the series column to be neither a feature, a target nor the time column, "
                    f"Received: series_column={self.series_column!r}"
                )
        if self.difference:
            missing = [t for t in targets if t not in features]
            if missing:
                raise BadInputError(
                    "expected every target to also be a feature when differencing (the device needs the last "
                    f"value to undo the difference), Received: targets={list(targets)}, features={list(features)}"
                )

        self._int("units", 1)
        self._int("layers", 1, MAX_LAYERS)
        self._int("window", 2)
        self._int("horizon", 1)
        self._int("epochs", 1)
        self._int("batch_size", 1)
        self._int("patience", 1)
        self._int("seed", 0)
        if self.burn_in is None:
            set_("burn_in", self.window // 4)
        self._int("burn_in", 0, self.window - 1)
        if self.season is not None:
            self._int("season", 2)
            if self.season < self.horizon:
                raise BadInputError(
                    "expected season >= horizon (a seasonal-naive forecast may only look back), "
                    f"Received: season={self.season}, horizon={self.horizon}"
                )
        self._float("dropout", 0.0, 1.0, upper_open=True)
        self._float("learning_rate", 0.0, math.inf, lower_open=True)
        if self.clipnorm is not None:
            self._float("clipnorm", 0.0, math.inf, lower_open=True)
        self._float("val_fraction", 0.0, 1.0, lower_open=True, upper_open=True)
        self._float("test_fraction", 0.0, 1.0, lower_open=True, upper_open=True)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise BadInputError(
                "expected val_fraction + test_fraction < 1 (something must be left to train on), "
                f"Received: val_fraction={self.val_fraction}, test_fraction={self.test_fraction}"
            )

    def _int(self, name: str, low: int, high: int | None = None) -> None:
        value = getattr(self, name)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if ok and high is not None:
            ok = value <= high
        if not ok:
            bound = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
            raise BadInputError(f"expected {name} to be {bound}, Received: {name}={value!r}")

    def _float(self, name: str, low: float, high: float, *, lower_open=False, upper_open=False) -> None:
        value = getattr(self, name)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        ok = math.isfinite(number) and not isinstance(value, bool)
        ok = ok and (number > low if lower_open else number >= low)
        ok = ok and (number < high if upper_open else number <= high)
        if not ok:
            interval = f"{'(' if lower_open else '['}{low}, {high}{')' if upper_open else ']'}"
            raise BadInputError(f"expected {name} in {interval}, Received: {name}={value!r}")
        object.__setattr__(self, name, number)

    @property
    def source(self) -> str:
        """The data source as recorded in run.json: the CSV path, or ``bundled:co2``."""
        return BUNDLED_CO2 if self.data is None else self.data

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``TrainConfig.from_dict`` gives back an equal config."""
        d = dataclasses.asdict(self)
        for key, value in d.items():
            if isinstance(value, enum.Enum):
                d[key] = value.value
            elif isinstance(value, tuple):
                d[key] = list(value)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``.

        Raises:
            BadInputError: unknown keys, or values that ``TrainConfig`` rejects.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BadInputError(f"expected TrainConfig keys ({', '.join(sorted(names))}), Received: {unknown}")
        return cls(**d)
