"""The device commands: ``run``, ``verify``, ``bench``, ``inspect``. They parse options and call the library.

Nothing here imports TensorFlow: these run on a Raspberry Pi with numpy and a TFLite interpreter only.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import click

from ..errors import BadInputError, CheckFailed
from ..monitor import DEFAULT_THRESHOLD
from ..options import GapPolicy, choices
from ..stream_watch import DEFAULT_MAX_FILL

_BACKENDS = ("auto", "litert", "tflite-runtime", "tensorflow", "tflm")

_backend_option = click.option(
    "--backend",
    type=click.Choice(_BACKENDS),
    default="auto",
    show_default=True,
    envvar="STATELITE_BACKEND",
    help="TFLite interpreter: auto tries litert, then tflite-runtime, then tensorflow; tflm runs TFLite Micro's "
    "kernels (the [micro] extra).  [env: STATELITE_BACKEND]",
)


def _silence_stdout() -> None:
    # The reader went away: point stdout at /dev/null so Python's flush at exit does not fail with a second error.
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # no file descriptor (e.g. under CliRunner): nothing to flush
        pass


class _Stop(KeyboardInterrupt):
    """SIGTERM (systemd stop, docker stop): end the stream as Ctrl-C does, with the state saved."""


def _on_sigterm(signum, frame):
    raise _Stop()


def _same_file(a: str, b: str) -> bool:
    """``a`` and ``b`` name one file: the same path after symlinks, or (both existing) one inode, as hard links do."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:  # one of them does not exist (yet)
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _refuse_overwrites(model: str, input_path: str, output_path: str, state_path: str | None,
                       alerts_path: str | None = None) -> None:
    """Refuse an --output (or --state, --alerts) that names a file the run needs: writing forecasts over the model or
    the state, or over the input being read, destroys it before anything could warn."""
    guarded = [("the model", model)]
    if alerts_path:
        for what, path in (("the model", model), ("the --input file", input_path), ("the --output file", output_path),
                           ("the --state file", state_path)):
            if path and path != "-" and _same_file(alerts_path, path):
                raise BadInputError(
                    f"--alerts {alerts_path} is {what} ({path}): appending alerts there would damage it. Pass another "
                    f"--alerts file."
                )
    if state_path:
        guarded.append(("the --state file", state_path))
    if input_path != "-":
        guarded.append(("the --input file", input_path))
    if output_path != "-":
        for what, path in guarded:
            if _same_file(output_path, path):
                raise BadInputError(
                    f"--output {output_path} is {what} ({path}): writing forecasts there would destroy it. Pass "
                    f"another --output (or '-' for stdout)."
                )
    if state_path:
        for what, path in guarded[:1] + guarded[2:]:
            if _same_file(state_path, path):
                raise BadInputError(
                    f"--state {state_path} is {what} ({path}): saving the state there would destroy it. Pass another "
                    f"--state file."
                )


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "input_path", default="-", show_default=True, metavar="FILE|-", help="CSV rows to forecast.")
@click.option("--output", "-o", "output_path", default="-", show_default=True, metavar="FILE|-", help="Where forecasts go.")
@click.option("--state", "state_path", metavar="FILE", help="Resume from this state file if it exists; save to it.")
@click.option("--save-every", type=int, default=100, show_default=True, metavar="K", help="Save the state every K rows.")
@click.option("--reset-every", type=int, metavar="N", help="Reset the state to zero every N rows.")
@click.option("--no-header", is_flag=True, help="The input has no header: each row is the features, in model order.")
@click.option(
    "--strict", is_flag=True,
    help="Stop (exit 2) at the first bad row, or the first stream that does not fit a full pool, instead of skipping.",
)
@click.option(
    "--strict-range", is_flag=True,
    help="Stop (exit 2) at the first row outside the model's training range (or clipped by its integer input), "
    "before stepping it, instead of warning once per column and counting.",
)
@click.option(
    "--delimiter", metavar="CHAR",
    help="The input's field delimiter ('tab' or '\\t' for a tab).  [default: comma, semicolon or tab, whichever "
    "the first line has most of]",
)
@click.option("--stream-key", metavar="COL", help="Header column naming each row's stream: many streams in one input.")
@click.option(
    "--max-streams", type=click.IntRange(min=1), metavar="N",
    help="With --stream-key, the most streams at once; rows of further streams are skipped (--strict: exit 2).  "
    "[default: 256 for a batch-1 model (about 180 KiB each), the lanes of a batched one]",
)
@click.option(
    "--intervals", "intervals", multiple=True, metavar="LEVEL",
    help="Add prediction interval columns <target>_t+k_lo/_hi at this level (e.g. 0.9); repeat or comma-separate "
    "for several (the columns then end in the level: _lo90).",
)
@click.option("--anomaly", is_flag=True, help="Add score and anomaly columns: how surprising each row is.")
@click.option(
    "--threshold", type=float, default=None, metavar="S",
    help="Score (-log10 of the row's p-value) from which a row is anomalous.  [default: 4]",
)
@click.option(
    "--substitute", is_flag=True,
    help="Feed the model its own forecast instead of a row flagged anomalous (at most the model's horizon of "
    "rows in a row).",
)
@click.option("--alerts", "alerts_path", metavar="FILE", help="Append one JSON line per anomaly event to FILE.")
@click.option(
    "--gaps", type=click.Choice(choices(GapPolicy)), default=GapPolicy.FILL.value, show_default=True,
    help="At a gap in the time column: fill it with the model's forecasts, reset the state, or ignore it.",
)
@click.option(
    "--max-fill", type=int, default=None, metavar="N",
    help="Longest gap filled, in missing rows; a longer one resets.  [default: 100]",
)
@click.option("--threads", type=int, metavar="T", help="Interpreter threads.  [default: the interpreter's]")
@_backend_option
def run(model, input_path, output_path, state_path, save_every, reset_every, no_header, strict, strict_range,
        delimiter, stream_key, max_streams, intervals, anomaly, threshold, substitute, alerts_path, gaps, max_fill,
        threads, backend):
    """Forecast a CSV stream row by row, carrying the recurrent state.

    Rows are read as they arrive (a file, or stdin with '-'); each forecast line is written and flushed at once.
    With a header row the model's feature columns are picked by name, and its time column, when present, is passed
    through. Output: [time,]row,<target>_t+1..t+H in raw units, where row is the input line number.

    Each line is one row (lines end with \\n or \\r\\n). A bad row is reported on stderr with its line number
    and skipped without touching the state: an empty value, a value that is not a plain decimal number (1_000, 0x10
    and non-ASCII digits are not), NaN or inf, a value the model refuses, the wrong column count, a quote not closed
    on its line, a line over 64 KiB, binary data or text that is not UTF-8. With --state the state is loaded at
    start when the file exists, saved atomically every K rows and at the end, including on Ctrl-C or SIGTERM; a
    state that is not finite is never saved, and a second run on the same --state file stops at start (exit 2).
    --output must not name the model, the state or the input file.

    With --stream-key COL the input holds many streams (COL names each row's stream, e.g. a sensor id; rows of
    different streams may interleave): each row steps only its own stream, and the output gains COL after row. A
    model converted with --batch N runs up to N streams in one StreamPool; a batch-1 model gets one runner (one
    interpreter, about 180 KiB) per stream, at most --max-streams. A stream is added when first seen; when the pool
    is full (or --max-streams are running), a new stream is reported once on stderr and its rows are skipped (the
    others go on), or with --strict the run stops with exit 2. --state then holds every stream's state with its
    key, --reset-every counts each stream's rows, and a stream that stops sending keeps its state.

    Inputs outside the range the model was trained on (the first difference, for a differencing model), or beyond
    where its integer input clips, are counted: the first of each column is reported on stderr with its row, and a
    summary per column follows at the end. With --strict-range the first such row stops the run with exit 2 (the
    state saved is the one from before it). Models converted before ranges were recorded are not checked.

    The input may be comma, semicolon or tab separated (found from its first line, or --delimiter); the output is
    comma-separated CSV, with a time value holding a comma or a quote quoted.

    --intervals and --anomaly use the residual calibration the model carries (models converted from a run folder
    by this statelite): interval columns adapt online to the errors observed, the score is -log10 of the row's
    p-value against the forecasts made for it, and consecutive anomalous rows form one event (--alerts). With a time
    column and a model that records its sampling, each gap is reported with its rows and filled, reset or ignored
    (--gaps); times going backwards or repeated are reported. With --state the monitor and the gap tracker are saved
    with the state, so a restart goes on where it stopped.
    """
    from ..state_file import hold_state_lock
    from ..stream import StreamConfig

    if delimiter is not None and delimiter.lower() in ("tab", "\\t"):
        delimiter = "\t"
    levels = []
    for text in intervals:
        for part in text.split(","):
            try:
                levels.append(float(part))
            except ValueError:
                raise BadInputError(f"--intervals expects levels between 0 and 1 (e.g. 0.9); received {part!r}.") from None
    if alerts_path and not (anomaly or substitute):
        anomaly = True  # an alerts file needs the scores
    config = StreamConfig(
        state_path, save_every, reset_every, header=not no_header, strict=strict, stream_key=stream_key,
        strict_range=strict_range, delimiter=delimiter, max_streams=max_streams, intervals=tuple(levels),
        anomaly=anomaly, threshold=DEFAULT_THRESHOLD if threshold is None else threshold, substitute=substitute,
        gaps=gaps, max_fill=DEFAULT_MAX_FILL if max_fill is None else max_fill,
    )
    _refuse_overwrites(model, input_path, output_path, state_path, alerts_path)
    # One writer per state file, from loading it to the last save; taken before anything is opened for writing, so
    # a second run on the same state stops at once (one line, exit 2) and leaves its --output alone.
    with hold_state_lock(state_path):
        _run(model, input_path, output_path, state_path, stream_key, threads, backend, config, alerts_path)


def _run(model, input_path, output_path, state_path, stream_key, threads, backend, config, alerts_path=None) -> None:
    """``run`` once its options are checked and the state file's lock is held."""
    from ..metadata import read_metadata
    from ..pool import StreamPool
    from ..runner import StatefulRunner
    from ..stream import run_stream

    new_runner = None
    if stream_key is not None and read_metadata(model).batch > 1:
        runner = StreamPool(model, backend=backend, num_threads=threads)
    else:
        runner = StatefulRunner(model, backend=backend, num_threads=threads)

        def new_runner():  # the runner of each further stream, with the same options
            return StatefulRunner(model, backend=backend, num_threads=threads)
    # Bytes, decoded line by line: a line that is not UTF-8 is one bad row, not a run stopped or a row altered.
    if input_path == "-":
        source, source_name = getattr(sys.stdin, "buffer", sys.stdin), "stdin"
    else:
        try:
            source = open(input_path, "rb")
        except OSError as exc:
            raise BadInputError(f"cannot read the input {input_path}: {exc.strerror or exc}.") from None
        source_name = input_path
    try:
        if output_path == "-":
            sink = sys.stdout
            try:  # a time value passed through may be any UTF-8 text, whatever the locale's encoding
                sink.reconfigure(encoding="utf-8")
            except (AttributeError, ValueError, OSError):
                pass
        else:
            sink = open(output_path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        if source is not sys.stdin and source_name != "stdin":
            source.close()
        raise BadInputError(f"cannot write the output {output_path}: {exc.strerror or exc}.") from None
    alerts = None
    if alerts_path:
        try:  # appended: a device restarted keeps the events of its earlier runs
            alerts = open(alerts_path, "a", encoding="utf-8")
        except OSError as exc:
            raise BadInputError(f"cannot write the alerts file {alerts_path}: {exc.strerror or exc}.") from None
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass
    try:
        result = run_stream(
            runner, source, sink, config, errors=sys.stderr, source_name=source_name, new_runner=new_runner,
            alerts=alerts,
        )
    finally:
        if alerts is not None:
            alerts.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if source_name != "stdin":
            source.close()
        if sink is not sys.stdout:
            try:
                sink.close()
            except BrokenPipeError:
                pass
            except OSError as exc:  # a full disk shows at the last flush
                raise BadInputError(f"cannot write the output {output_path}: {exc.strerror or exc}.") from None
    if result.output_closed:
        if sink is sys.stdout:
            _silence_stdout()
        return
    parts = [f"{result.rows} rows forecast" + (f" for {result.streams} streams" if stream_key is not None else "")]
    if result.skipped:
        parts.append(f"{result.skipped} bad rows skipped")
    if result.refused:
        full = "pool full" if isinstance(runner, StreamPool) and result.capacity == runner.capacity else "--max-streams"
        parts.append(
            f"{result.refused} rows of {result.refused_streams} streams skipped ({full}: {result.capacity} streams)"
        )
    report = result.range_report
    if report is not None and report.any:
        parts.append(
            f"{report.outside_training} rows outside the training range"
            + (f", {report.clipped} clipped" if report.clipped else "")
        )
    if state_path and result.not_saved:
        parts.append(f"state NOT saved (not finite): {state_path} keeps the last finite state")
    elif state_path:
        parts.append(("resumed from and " if result.resumed else "") + f"state saved to {state_path}")
    if result.interrupted:
        parts.insert(0, "stopped")
    click.echo("statelite run: " + ", ".join(parts), err=True)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--golden", metavar="FILE", help="Golden trace.  [default: <stem>.golden.npz beside MODEL]")
@click.option("--junit", metavar="FILE", help="Also write the result as JUnit XML (for CI and fleet dashboards).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_backend_option
def verify(model, golden, junit, as_json, backend):
    """Check the model's accuracy on this device against its golden trace.

    Steps a fresh runner through the golden inputs written at conversion, never resetting, and compares every
    forecast with the Keras model's. Exit 0 when within the stored tolerances, 1 when not, 2 when the model or
    golden file cannot be used.
    """
    from ..verify import verify as run_verify
    from ..verify import write_junit

    report = run_verify(model, golden, backend=backend)
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.format())
    if junit:
        write_junit(report, junit)
    if not report.passed:
        raise CheckFailed(f"verify failed for {model}: " + "; ".join(report.problems) + ".")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--steps", type=int, default=1000, show_default=True, help="Timed steps.")
@click.option("--warmup", type=int, default=100, show_default=True, help="Untimed steps first.")
@click.option("--threads", type=int, metavar="T", help="Interpreter threads.  [default: the interpreter's]")
@click.option(
    "--streams", type=int, metavar="N",
    help="Streams stepped each tick: N lanes of one StreamPool (batched model; default its batch), or N separate "
    "runners round-robin (batch-1 model; default one runner, per step).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_backend_option
def bench(model, steps, warmup, threads, streams, as_json, backend):
    """Time one step of the model: median, p90 and p99 microseconds, steps/s, peak memory.

    With many streams (--streams N, or any model converted with --batch) each tick steps every stream once and is
    timed as one: a batched model steps N lanes of one StreamPool in one invoke, a batch-1 model N separate runners
    one after another, so the two can be compared. Throughput is stream steps per second (streams x ticks/s).
    """
    from ..bench import bench as run_bench

    report = run_bench(model, steps=steps, warmup=warmup, threads=threads, backend=backend, streams=streams)
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.format())


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def inspect(model, as_json):
    """Show a model's signature, state pairs, operators with versions, metadata and parity results."""
    from ..inspection import format_inspection, inspect_model

    d = inspect_model(model)
    click.echo(json.dumps(d, indent=1) if as_json else format_inspection(d))


COMMANDS = [run, verify, bench, inspect]
