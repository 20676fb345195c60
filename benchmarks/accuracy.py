"""Does the device's TFLite model forecast as well as the workstation's Keras model, on many public real series?

For every series of ``benchmarks/series.py`` (public data shipped on PyPI: statelite, statsmodels, pmdarima) and
every cell (GRU, LSTM, SimpleRNN) one small model is trained with the library API (``statelite.train.train``,
seeded), then converted in every quantization mode (``statelite.convert.convert`` with ``check_parity=False``, so a
failure is recorded rather than raised). Each conversion's parity figures are kept: the error against Keras
(normalised), and the forecast RMSE against the truth of the Keras float model and of the TFLite model over the
whole test split, stepped once and never reset. The report counts, per mode, the conversions that pass parity and
those whose forecast RMSE is within 3% of the float model's (TFLite / Keras <= 1.03), and sets each model against
persistence.

    python benchmarks/accuracy.py                       # every series x gru, lstm, simplernn x every mode
    python benchmarks/accuracy.py --quick --out /tmp/a  # 2 small series, 1 cell, 2 modes, 2 epochs (the test's run)
    python benchmarks/accuracy.py --series taylor,msft_ohlcv --cells lstm --modes int8,auto

Writes ``accuracy.json`` (every figure, versions, machine, date, wall time) and ``accuracy.md`` to ``--out``
(default ``benchmarks/results``; with ``--quick``, a temporary folder). Needs ``statelite[train,bench]`` (the
series live in statsmodels and pmdarima); a series whose package is missing is listed as unavailable.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `benchmarks` is then not importable as a package
    sys.path.insert(0, str(ROOT))

from benchmarks.environment import machine_info, source_state, versions  # noqa: E402
from benchmarks.series import CATALOGUE, DEFAULT_CACHE, by_name  # noqa: E402

CELLS = ("gru", "lstm", "simplernn")
BASE_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
WITHIN = 1.03  # forecast RMSE TFLite / Keras: the README's int8 promise, applied to every mode
QUICK_SERIES = ("co2", "macrodata")
QUICK_ROWS = {"co2": 600}  # the bundled series truncated: the quick run is a smoke test of the pipeline


def log(msg: str) -> None:
    print(msg, flush=True)


def available_modes() -> list[str]:
    """The converter's modes in report order; ``auto`` only when this statelite has it."""
    from statelite.convert import Quant

    values = [q.value for q in Quant]
    return [m for m in BASE_MODES if m in values] + (["auto"] if "auto" in values else [])


def int8_sized_mode(modes: list[str]) -> str | None:
    """The mode that stands for "an int8-sized model": ``auto`` when present (it picks the smallest mode that
    passes), else ``int8``."""
    return "auto" if "auto" in modes else ("int8" if "int8" in modes else None)


# -- environment -----------------------------------------------------------------------------------------------------


# -- one series x cell -----------------------------------------------------------------------------------------------


def _ratio(parity: dict) -> float | None:
    k, t = parity.get("forecast_rmse_keras"), parity.get("forecast_rmse_tflite")
    if k is None or t is None or not np.isfinite(k) or not np.isfinite(t):
        return None
    return float(t / max(k, 1e-12))


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def train_one(series, cell: str, csv: Path, work: Path, args) -> dict:
    """Train one model; return its figures (or the error) and the run folder."""
    from statelite.train import TrainConfig, train

    config = TrainConfig(
        out=str(work / f"{series.name}_{cell}"),
        data=str(csv),
        targets=series.targets,
        features=series.features,
        time_column=series.time_column,
        cell=cell,
        units=args.units,
        layers=1,
        window=series.window,
        horizon=series.horizon,
        difference=series.difference,
        season=series.season,
        fill="interpolate",  # only co2 has gaps; a no-op elsewhere
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    result = train(config, log=None)
    test = result.metrics["test"]
    streaming, persistence = test["streaming"]["rmse"], test["persistence"]["rmse"]
    return {
        "run_dir": str(result.run_dir),
        "config": config.to_dict(),
        "seconds": round(time.perf_counter() - t0, 2),
        "epochs_run": result.metrics["epochs_run"],
        "best_epoch": result.metrics["best_epoch"],
        "best_val_loss": result.metrics["best_val_loss"],
        "test_positions": test["positions"],
        "streaming_rmse": streaming,
        "windowed_rmse": test["windowed"]["rmse"],
        "persistence_rmse": persistence,
        "seasonal_naive_rmse": (test.get("seasonal_naive") or {}).get("rmse"),
        "streaming_over_persistence": streaming / persistence if persistence > 0 else None,
    }


def convert_one(run_dir: Path, mode: str, out: Path, args) -> dict:
    """Convert in one mode without enforcing parity; return the figures, or the error when conversion fails."""
    from statelite.convert import ConvertConfig, convert

    t0 = time.perf_counter()
    row: dict = {"mode": mode}
    try:
        result = convert(
            run_dir, out, ConvertConfig(quant=mode, calibration_steps=args.calibration_steps, check_parity=False),
            log=None,
        )
    except Exception as exc:  # noqa: BLE001 (a mode that cannot convert is a result to report, not a crash)
        row.update(error=_error(exc), passed=False, seconds=round(time.perf_counter() - t0, 2))
        return row
    parity = {k: v for k, v in result.parity.items() if k != "chunk"}
    row.update(
        chosen_quant=getattr(result.metadata, "quant", None),
        passed=bool(result.passed),
        violations=list(result.violations),
        bytes=Path(result.path).stat().st_size,
        ratio=_ratio(parity),
        parity=parity,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return row


def bench_series(series, args, work: Path, cache: Path) -> list[dict]:
    """Every cell and mode of one series; its CSV is written once."""
    csv = series.csv(cache, QUICK_ROWS.get(series.name) if args.quick else None)
    runs = []
    for cell in args.cells:
        run: dict = {"series": series.name, "cell": cell, "conversions": []}
        try:
            run["train"] = train_one(series, cell, csv, work, args)
        except Exception as exc:  # noqa: BLE001 (recorded: the rest of the grid still runs)
            run["train"] = {"error": _error(exc)}
            log(f"  {series.name} {cell}: training failed: {run['train']['error']}")
            runs.append(run)
            continue
        t = run["train"]
        log(
            f"  {series.name} {cell}: trained {t['epochs_run']} epochs in {t['seconds']:.1f} s, streaming RMSE "
            f"{t['streaming_rmse']:.4g} (persistence {t['persistence_rmse']:.4g})"
        )
        for mode in args.modes:
            c = convert_one(Path(t["run_dir"]), mode, work / f"{series.name}_{cell}_{mode}.tflite", args)
            run["conversions"].append(c)
            if "error" in c:
                log(f"    {mode:8s} FAILED to convert: {c['error']}")
            else:
                chosen = f" -> {c['chosen_quant']}" if mode == "auto" else ""
                log(
                    f"    {mode:8s}{chosen} parity {'pass' if c['passed'] else 'FAIL'}, RMSE TFLite/Keras "
                    f"{_fmt(c['ratio'], '.4f')}, {c['bytes']:,} bytes ({c['seconds']:.1f} s)"
                )
        runs.append(run)
    return runs


# -- summary and report ----------------------------------------------------------------------------------------------


def _fmt(v, spec: str = ".3g") -> str:
    return "n/a" if v is None else format(v, spec)


def summarize(runs: list[dict], modes: list[str]) -> list[dict]:
    """Per mode: conversions, parity passes, ratio <= 1.03, median and worst ratio (and where)."""
    rows = []
    for mode in modes:
        convs = [(r, c) for r in runs for c in r["conversions"] if c["mode"] == mode]
        ratios = [(c["ratio"], f"{r['series']} {r['cell']}") for r, c in convs if c.get("ratio") is not None]
        worst = max(ratios, default=None)
        rows.append({
            "mode": mode,
            "conversions": len(convs),
            "errors": sum("error" in c for _, c in convs),
            "parity_passed": sum(bool(c.get("passed")) for _, c in convs),
            "within_3pct": sum(v <= WITHIN for v, _ in ratios),
            "median_ratio": float(np.median([v for v, _ in ratios])) if ratios else None,
            "worst_ratio": worst[0] if worst else None,
            "worst_run": worst[1] if worst else None,
            "chosen": _count([c["chosen_quant"] for _, c in convs if c.get("chosen_quant")]) if mode == "auto" else None,
        })
    return rows


def _count(values: list[str]) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def write_markdown(results: dict, path: Path) -> None:
    runs, modes, summary = results["runs"], results["config"]["modes"], results["summary"]
    trained = [r for r in runs if "error" not in r["train"]]
    L = [
        "# Accuracy: TFLite against Keras on public real series",
        "",
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; wall time {results['elapsed_s']:.0f} s; source {results['source']}  ",
        f"Machine: {results['machine']['cpu']} ({results['machine']['cores']} cores, {results['machine']['machine']}), "
        f"load average {results['machine']['load_average_at_start']} at start, "
        f"{results['machine'].get('load_average_at_end')} at end  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
        "",
        (f"Each series x cell trains one 1x{results['config']['units']} model (at most {results['config']['epochs']} "
         f"epochs, patience {results['config']['patience']}, seed {results['config']['seed']}); each mode converts it "
         "and steps the `.tflite` over the whole test split, never reset, beside the Keras float model. *Ratio* is "
         "the forecast RMSE against the truth, TFLite / Keras (1 = as good as the float model; below 1 is luck). "
         f"*Within 3%*: ratio <= {WITHIN}. *Parity* is the converter's own check (normalised error against Keras "
         "within the mode's tolerance, and for int8 also the 3% forecast rule)."),
        "",
        "## Summary",
        "",
        f"{len(trained)} models ({len({r['series'] for r in trained})} series x {len(results['config']['cells'])} "
        f"cells), {sum(len(r['conversions']) for r in runs)} conversions.",
        "",
        "| mode | conversions | parity passed | within 3% of float | median ratio | worst ratio (run) | failed to convert |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        chosen = ""
        if s["chosen"]:
            chosen = " (chose " + ", ".join(f"{k} {v}x" for k, v in sorted(s["chosen"].items())) + ")"
        L.append(
            f"| {s['mode']}{chosen} | {s['conversions']} | {s['parity_passed']}/{s['conversions']} | "
            f"{s['within_3pct']}/{s['conversions']} | {_fmt(s['median_ratio'], '.4f')} | "
            f"{_fmt(s['worst_ratio'], '.4f')} ({s['worst_run'] or '-'}) | {s['errors']} |"
        )
    sized = results.get("int8_sized_mode")
    if sized:
        s = next(x for x in summary if x["mode"] == sized)
        L += [
            "",
            (f"**int8-sized models** ({sized}{', which picks a small mode that passes' if sized == 'auto' else ''}): "
             f"parity passed {s['parity_passed']}/{s['conversions']}, within 3% of the float model "
             f"{s['within_3pct']}/{s['conversions']}."),
        ]
    beats = [r for r in trained if (r["train"]["streaming_over_persistence"] or 9) < 1]
    L += [
        "",
        f"Model against persistence (streaming RMSE / persistence RMSE < 1): {len(beats)}/{len(trained)} models.",
    ]
    if results["unavailable"]:
        L += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in results["unavailable"].items()) + "."]

    L += [
        "",
        "## Series",
        "",
        "| series | what | rows | frequency | features -> targets | window / horizon / differenced / season | package: loader | source | licence |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in results["series"]:
        L.append(
            f"| {s['name']} | {s['title']} | {_fmt(s.get('rows'), ',')} | {s['frequency']} | "
            f"{', '.join(s['features'])} -> {', '.join(s['targets'])} | {s['window']} / {s['horizon']} / "
            f"{'yes' if s['difference'] else 'no'} / {s['season'] or '-'} | {s['package'] or '-'}: `{s['loader']}` | "
            f"{s['source']} | {s['licence']} |"
        )
    L += [
        "",
        "## Forecast RMSE, TFLite / Keras",
        "",
        "Per run and mode; `(fail)`: the converter's parity check failed; `error`: the mode did not convert.",
        "",
        "| series | cell | " + " | ".join(modes) + " |",
        "| --- | --- | " + " | ".join("---" for _ in modes) + " |",
    ]
    for r in trained:
        cells = []
        for mode in modes:
            c = next((c for c in r["conversions"] if c["mode"] == mode), None)
            if c is None:
                cells.append("-")
            elif "error" in c:
                cells.append("error")
            else:
                text = _fmt(c["ratio"], ".4f") + ("" if c["passed"] else " (fail)")
                if mode == "auto" and c.get("chosen_quant"):
                    text += f" [{c['chosen_quant']}]"
                cells.append(text)
        L.append(f"| {r['series']} | {r['cell']} | " + " | ".join(cells) + " |")
    L += [
        "",
        "## Model against persistence",
        "",
        "Test split, raw units, averaged over the horizon: `statelite.train`'s own figures.",
        "",
        "| series | cell | epochs (best) | train s | streaming RMSE | windowed RMSE | persistence RMSE | streaming / persistence | seasonal naive RMSE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        t = r["train"]
        if "error" in t:
            L.append(f"| {r['series']} | {r['cell']} | training failed: {t['error']} | | | | | | |")
            continue
        L.append(
            f"| {r['series']} | {r['cell']} | {t['epochs_run']} ({t['best_epoch']}) | {t['seconds']:.1f} | "
            f"{t['streaming_rmse']:.4g} | {t['windowed_rmse']:.4g} | {t['persistence_rmse']:.4g} | "
            f"{_fmt(t['streaming_over_persistence'], '.3f')} | {_fmt(t['seasonal_naive_rmse'], '.4g')} |"
        )
    L += [
        "",
        "## Parity details",
        "",
        "Normalised errors against Keras (divided by the target's scale); forecast RMSE against the truth, raw units.",
        "",
        "| series | cell | mode | bytes | max abs (norm) | RMSE (norm) | forecast RMSE Keras | forecast RMSE TFLite | ratio | parity | convert s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in trained:
        for c in r["conversions"]:
            mode = c["mode"] + (f" -> {c['chosen_quant']}" if c["mode"] == "auto" and c.get("chosen_quant") else "")
            if "error" in c:
                blank = "| " * 6
                L.append(f"| {r['series']} | {r['cell']} | {mode} {blank}| error: {c['error']} | {c['seconds']:.1f} |")
                continue
            p = c["parity"]
            verdict = "pass" if c["passed"] else "FAIL: " + "; ".join(c["violations"])
            L.append(
                f"| {r['series']} | {r['cell']} | {mode} | {c['bytes']:,} | {_fmt(p.get('max_abs_norm'), '.2g')} | "
                f"{_fmt(p.get('rmse_norm'), '.2g')} | {_fmt(p.get('forecast_rmse_keras'), '.4g')} | "
                f"{_fmt(p.get('forecast_rmse_tflite'), '.4g')} | {_fmt(c['ratio'], '.4f')} | {verdict} | "
                f"{c['seconds']:.1f} |"
            )
    path.write_text("\n".join(L) + "\n")


# -- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true",
                    help=f"{' and '.join(QUICK_SERIES)} (co2 truncated), gru, float32 and int8, 2 epochs, 8 units")
    ap.add_argument("--series", default=None, help="comma-separated series names (default: every available one)")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated: gru, lstm, simplernn")
    ap.add_argument("--modes", default=None, help="comma-separated quant modes (default: every mode, auto if present)")
    ap.add_argument("--out", default=None, help="where accuracy.md and accuracy.json go (default benchmarks/results; "
                    "with --quick a temporary folder)")
    ap.add_argument("--units", type=int, default=32, help="units of the one recurrent layer")
    ap.add_argument("--epochs", type=int, default=20, help="epoch cap per model (early stopping may end sooner)")
    ap.add_argument("--patience", type=int, default=4, help="early-stopping patience, epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration-steps", type=int, default=None,
                    help="cap on int8/int16x8 calibration steps (default: the converter's, the whole training split)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the series' CSVs are written (reused)")
    ap.add_argument("--work", default=None, help="keep run folders and models here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.quick:
        args.series = args.series or ",".join(QUICK_SERIES)
        args.cells = "gru" if args.cells == ",".join(CELLS) else args.cells
        args.modes = args.modes or "float32,int8"
        args.epochs, args.units, args.calibration_steps = 2, 8, 100
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in args.cells if c not in CELLS]
    if bad:
        ap.error(f"expected cells among {', '.join(CELLS)}, Received: {', '.join(bad)}")
    names = [s.strip() for s in args.series.split(",") if s.strip()] if args.series else None
    try:
        args.series = [by_name(n) for n in names] if names else list(CATALOGUE)
    except KeyError as exc:
        ap.error(exc.args[0])
    all_modes = available_modes()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else all_modes
    bad = [m for m in args.modes if m not in all_modes]
    if bad:
        ap.error(f"expected modes among {', '.join(all_modes)}, Received: {', '.join(bad)}")
    return args


def main(argv=None) -> int:
    started = time.time()
    args = parse_args(argv)
    command = " ".join(["python", "benchmarks/accuracy.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="statelite_accuracy_")) if args.quick else ROOT / "benchmarks" / "results"
    )
    out.mkdir(parents=True, exist_ok=True)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    # TensorFlow's converter calibrates with its own deprecated interpreter: its warning is noise here.
    warnings.filterwarnings("ignore", message=r"[\s\S]*tf.lite.Interpreter is deprecated")

    chosen, unavailable = [], {}
    for s in args.series:
        why = s.unavailable()
        if why:
            unavailable[s.name] = why
        else:
            chosen.append(s)
    own_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="statelite_accuracy_work_")) if own_work else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(("statelite", "numpy", "ai-edge-litert", "tensorflow", "keras", "statsmodels", "pmdarima", "pandas")),
        "source": source_state(),
        "config": {
            "quick": args.quick, "cells": args.cells, "modes": args.modes, "units": args.units, "layers": 1,
            "epochs": args.epochs, "patience": args.patience, "seed": args.seed,
            "calibration_steps": args.calibration_steps, "within": WITHIN,
            "rows_cap": QUICK_ROWS if args.quick else {},
        },
        "int8_sized_mode": int8_sized_mode(args.modes),
        "unavailable": unavailable,
        "series": [],
        "runs": [],
    }
    log(f"{len(chosen)} series x {len(args.cells)} cells x {len(args.modes)} modes; models in {work}")
    for name, why in unavailable.items():
        log(f"  skipping {name}: {why}")
    try:
        for s in chosen:
            t0 = time.perf_counter()
            log(f"{s.name}")
            runs = bench_series(s, args, work, Path(args.cache))
            entry = s.catalogue_row()
            csv = s.csv(Path(args.cache), QUICK_ROWS.get(s.name) if args.quick else None)
            entry["rows"] = sum(1 for _ in csv.open()) - 1
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            results["series"].append(entry)
            results["runs"] += runs
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    if own_work:
        for r in results["runs"]:
            r["train"].pop("run_dir", None)  # a temporary folder: meaningless once the run is over
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["elapsed_s"] = round(time.time() - started, 1)
    results["summary"] = summarize(results["runs"], args.modes)
    (out / "accuracy.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, out / "accuracy.md")
    log(f"wrote {out / 'accuracy.md'} and {out / 'accuracy.json'} ({results['elapsed_s']:.0f} s)")
    for s in results["summary"]:
        log(f"  {s['mode']:8s} parity {s['parity_passed']}/{s['conversions']}, within 3% {s['within_3pct']}/"
            f"{s['conversions']}, worst ratio {_fmt(s['worst_ratio'], '.4f')} ({s['worst_run'] or '-'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
