"""``statelite convert`` and ``statelite quickstart``: workstation commands that need TensorFlow (imported inside)."""

from __future__ import annotations

from pathlib import Path

import click

from ..options import IO, Quant, Target, choices
from ..progress import TerminalProgress
from ._common import quiet_tensorflow



@click.command()
@click.argument("model", type=click.Path())
@click.option("--quant", type=click.Choice(choices(Quant)), default=Quant.FLOAT32.value, show_default=True,
              help="Quantization mode; auto keeps int8 when it holds its tolerance, else the smallest of int16x8 and "
                   "dynamic that does.")
@click.option("--io", type=click.Choice(choices(IO)), default=IO.FLOAT.value, show_default=True,
              help="Input/output dtype; int8 (with --quant int8) for integer-only targets.")
@click.option("--batch", type=int, default=1, show_default=True, help="Independent streams stepped per call.")
@click.option("--chunk", type=int, default=1, show_default=True,
              help="Also write a signature taking K time steps per call (for replaying recorded data).")
@click.option("--target", type=click.Choice(choices(Target)), default=Target.LITERT.value, show_default=True,
              help="Interpreter the file must load on; tflite-runtime-2.14 checks operator versions.")
@click.option("--calibration-steps", type=int, default=None, metavar="N",
              help="Calibrate int8/int16x8 on at most N steps of the training split [default: all of it].")
@click.option("--calibration-headroom", type=float, default=None, metavar="K",
              help="Calibrate int8/int16x8 ranges K times as wide as the training split's [default: int8 1, "
                   "int16x8 4].")
@click.option("--golden-steps", type=int, default=200, show_default=True, help="Test-split steps in the golden trace.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="MODEL.tflite", help="File to write.")
@click.option("--quiet", "-q", is_flag=True,
              help="Print only the result line: no progress, no steps, no parity table (a failure still says why).")
def convert(model, quant, io, batch, chunk, target, calibration_steps, calibration_headroom, golden_steps, out, quiet):
    """Convert a run folder (or a .keras model) to a one-step TFLite graph with named state.

    Prints the parity table of the .tflite against the Keras model over the whole test split (exit 1 when it is
    outside the mode's tolerance) and writes MODEL.golden.npz beside the model for 'statelite verify'. On a
    terminal, one line shows how far the long steps are (calibration, the converter, parity).
    """
    quiet_tensorflow()
    from statelite.convert import ConvertConfig
    from statelite.convert import convert as run_convert

    config = ConvertConfig(quant=quant, io=io, batch=batch, chunk=chunk, target=target,
                           calibration_steps=calibration_steps, calibration_headroom=calibration_headroom,
                           golden_steps=golden_steps)
    with TerminalProgress(enabled=not quiet) as progress:
        result = run_convert(model, out, config, log=None if quiet else progress.wrap(click.echo),
                             progress=progress.reporter)
    if quiet:
        p = result.parity
        click.echo(f"wrote {result.path} ({result.path.stat().st_size:,} bytes, {result.metadata.quant}) and "
                   f"{result.golden_path}: parity {'PASS' if result.passed else 'FAIL'}, max abs {p['max_abs_norm']:.3g} "
                   f"normalised")


@click.command()
@click.option("--out", default="quickstart", show_default=True, type=click.Path(file_okay=False), help="Folder to fill.")
@click.option("--epochs", type=int, help="Override the preset's most epochs (a smaller number runs faster).")
def quickstart(out, epochs):
    """Train on the bundled CO2 data, convert (float32, int8), verify and bench both, and print a summary."""
    quiet_tensorflow()
    with TerminalProgress() as progress:
        _quickstart(Path(out), epochs, progress.reporter, progress.wrap(click.echo))


def _quickstart(out: Path, epochs, progress, echo) -> None:
    from statelite.convert import ConvertConfig
    from statelite.convert import convert as run_convert
    from statelite.train import TrainConfig
    from statelite.train import train as run_training
    from statelite.verify import verify

    echo(f"== train (bundled Mauna Loa CO2) -> {out / 'run'}")
    overrides = {"epochs": epochs} if epochs else {}
    result = run_training(TrainConfig.co2(out=str(out / "run"), **overrides), log=echo, progress=progress)
    test = result.metrics["test"]
    rows = []
    for quant in ("float32", "int8"):
        path = out / f"co2_{quant}.tflite"
        echo(f"== convert {quant} -> {path}")
        conv = run_convert(out / "run", path, ConvertConfig(quant=quant), log=echo, progress=progress)
        echo(f"== verify {path}")
        report = verify(path)
        echo(report.format())
        echo(f"== bench {path} (in a separate process without TensorFlow, as on a device)")
        b = _device_bench(path)
        echo(b.format())
        rows.append((quant, conv, report, b))
    echo("\nsummary (test split, raw units: ppm CO2)")
    echo(f"  keras   windowed RMSE {test['windowed']['rmse']:.4f}  streaming RMSE {test['streaming']['rmse']:.4f}  "
               f"persistence RMSE {test['persistence']['rmse']:.4f}")
    coverage = test.get("coverage")
    if coverage:
        shares = ", ".join(f"{float(level):.0%}: {v:.1%}" for level, v in coverage["adaptive"].items())
        echo(f"  prediction interval coverage {shares} (statelite run --intervals 0.9 --anomaly adds them)")
    header = (f"  {'model':<8} {'size':>8} {'forecast RMSE':>14} {'max abs vs keras':>17} {'verify':>7} "
              f"{'median us/step':>15} {'device RSS':>11}")
    echo(header)
    for quant, conv, report, b in rows:
        rss = f"{b.peak_rss_kib / 1024:.1f} MiB" if b.peak_rss_kib is not None else "unknown"
        echo(
            f"  {quant:<8} {conv.path.stat().st_size:>8} {conv.parity.get('forecast_rmse_tflite', float('nan')):>14.4f} "
            f"{conv.parity['max_abs']:>17.3g} {'PASS' if report.passed else 'FAIL':>7} {b.median_us:>15.1f} {rss:>11}"
        )
    echo("  (device RSS: the peak memory of the bench process, which loads statelite and the interpreter only)")
    echo(f"artifacts in {out}/")


def _device_bench(path: Path):
    """``statelite bench`` on ``path`` in a fresh Python without TensorFlow: what a device process costs.

    quickstart has TensorFlow loaded (hundreds of MiB), so a bench in its own process would report that memory.
    """
    import json
    import subprocess
    import sys

    from statelite.bench import BenchReport

    cmd = [sys.executable, "-m", "statelite.cli", "bench", str(path), "--steps", "2000", "--warmup", "200", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise click.ClickException(f"bench of {path} in a separate process failed (exit {done.returncode}): {last}")
    report = BenchReport.from_dict(json.loads(done.stdout))
    if report.tensorflow_loaded:  # a sitecustomize or a plugin that imports TensorFlow: say so rather than mislead
        click.echo("note: TensorFlow was loaded in the bench process too", err=True)
    return report


COMMANDS = [convert, quickstart]
