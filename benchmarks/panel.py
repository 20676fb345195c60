"""Many series, one model: is a panel model as good as one model per series, do calendar inputs help, how fast do
1 and 2 worker processes train, and does peak memory stay flat when a sharded panel has 10x the rows?

Four measurements, all on this machine and in one run (ratios come from the same run):

1. **Panel against one model per series** on World Bank fertility rates (statsmodels ``fertility``: countries x
   years 1960-2011, 52 yearly rows each). The countries are written as one CSV each, a folder of shards; one panel
   model (per-series scaling) trains on the folder and one model per series trains on each file, with the same
   options (``statelite.train.train``, in this process). Per series: the test RMSE of each against persistence's
   (and the MAE ratio, a MASE-like figure with out-of-sample persistence as the scale), which approach wins, and
   the total training time of each.
2. **Calendar inputs** on the NAB real-traffic sensors shipped in ``benchmarks/data/nab`` (7 series, about 5
   minutes apart, a daily cycle): the panel with ``--calendar hour,dow`` against the same without it.
3. **Throughput** (windows/s, ``run.json`` ``timing.windows_per_second``) of ``statelite train`` on a sharded synthetic
   panel: one plain process (Keras ``fit``), one ``--strategy multi-worker`` process, and two worker processes on
   localhost (``TF_CONFIG``, free ports), the same global batch. The two workers' weight digests must match.
4. **Peak RSS** of each training process (``os.wait4``'s ``ru_maxrss`` of that child: per worker, not the largest
   child's), and of a fresh process training ``--data folder`` of 1x and of 10x as many shard files of the same
   length for the same number of epochs: issue 12's bar is that 10x the rows stays within 20% of the 1x peak.

    python benchmarks/panel.py                       # the full run (about 8 minutes on 2 cores)
    python benchmarks/panel.py --quick --out /tmp/p  # a few series, 1 epoch (what tests/test_panel_benchmark.py runs)

Writes ``panel.json`` (every figure, versions, machine, date, wall time) and ``panel.md`` to ``--out`` (default
``benchmarks/results``; with ``--quick``, a temporary folder). Needs ``statelite[train,bench]`` (statsmodels carries
the fertility data). Linux: peak RSS comes from ``os.wait4``, in kilobytes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `benchmarks` is then not importable as a package
    sys.path.insert(0, str(ROOT))

from benchmarks.environment import machine_info, source_state, versions  # noqa: E402
from benchmarks.series import NAB_DIR  # noqa: E402

DEFAULT_CACHE = ROOT / ".cache" / "panel-series"
GLOBAL_BATCH = 64  # the synthetic panel's batch, split evenly between the workers
RSS_BAR = 1.20  # issue 12: peak RSS with 10x the rows within 20% of the 1x run's

FERTILITY = {
    "name": "fertility",
    "title": "Total fertility rate (births per woman), one series per country, yearly 1960-2011",
    "package": "statsmodels",
    "loader": "statsmodels.datasets.fertility.load_pandas().data (the 192 rows with all 52 years, a few of them "
    "aggregates such as OED, OECD members)",
    "source": "The World Bank, World Development Indicators, SP.DYN.TFRT.IN (from UN Population Division, national "
    "statistical offices, Eurostat and others), as shipped in statsmodels",
    "licence": "World Bank terms of use (statsmodels' COPYRIGHT note for the dataset); statsmodels itself BSD-3",
}
NAB_TRAFFIC = {
    "name": "nab_traffic",
    "title": "Twin Cities traffic sensors (Minnesota DOT): speed, occupancy and travel time, about every 5 minutes",
    "package": None,
    "loader": "benchmarks/data/nab/realTraffic/*.csv (shipped in the repository)",
    "source": "Numenta Anomaly Benchmark, realTraffic (Lavin and Ahmad 2015)",
    "licence": "MIT (Numenta), benchmarks/data/nab/LICENSE.txt",
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each measurement is; ``--quick`` shrinks everything to a smoke test."""

    fertility_series: int  # countries, spread evenly over the 192 complete ones in code order
    fertility_epochs: int
    nab_series: int
    nab_rows: int | None  # rows per NAB series (None: all)
    nab_epochs: int
    synth_rows: int  # rows per synthetic shard
    synth_shards: int  # shards of the 1x panel (the 10x one has ten times as many)
    throughput_epochs: int
    memory_epochs: int
    window: int  # synthetic panel's window (throughput and memory)


FULL = Sizes(fertility_series=32, fertility_epochs=30, nab_series=7, nab_rows=None, nab_epochs=12,
             synth_rows=3000, synth_shards=8, throughput_epochs=3, memory_epochs=1, window=48)
QUICK = Sizes(fertility_series=3, fertility_epochs=1, nab_series=2, nab_rows=500, nab_epochs=1,
              synth_rows=300, synth_shards=2, throughput_epochs=2, memory_epochs=2, window=24)


def log(msg: str) -> None:
    print(msg, flush=True)


def _fmt(v, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


# -- data ------------------------------------------------------------------------------------------------------------


def fertility_shards(cache: Path, count: int) -> tuple[Path, list[str]]:
    """Write ``count`` countries' fertility rates as ``cache/fertility/<ISO3>.csv`` (year, fertility); return the
    folder and the keys. Countries with all 52 years only; every k-th of them in code order, so the choice spans
    the alphabet (and so the continents) rather than its start."""
    from statsmodels.datasets import fertility

    df = fertility.load_pandas().data
    years = [str(y) for y in range(1960, 2012)]
    df = df[df[years].notna().all(axis=1)].sort_values("Country Code")
    step = max(1, len(df) // count)
    df = df.iloc[::step].iloc[:count]
    folder = cache / f"fertility_{count}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for _, row in df.iterrows():
        with (folder / f"{row['Country Code']}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["year", "fertility"])
            w.writerows([f"{y}-01-01", repr(float(row[y]))] for y in years)
    return folder, list(df["Country Code"])


def nab_shards(cache: Path, count: int, rows: int | None) -> tuple[Path, list[str]]:
    """Copy the first ``count`` NAB realTraffic series (by name), the first ``rows`` rows of each, into a folder."""
    paths = sorted((NAB_DIR / "realTraffic").glob("*.csv"))[:count]
    folder = cache / f"nab_traffic_{count}_{rows or 'all'}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for p in paths:
        lines = p.read_text().splitlines()
        (folder / p.name).write_text("\n".join(lines[: (rows + 1) if rows else None]) + "\n")
    return folder, [p.stem for p in paths]


def synthetic_shards(folder: Path, shards: int, rows: int, seed: int = 0) -> Path:
    """``shards`` CSVs of ``rows`` 5-minute readings each: a daily cycle, an AR(1) wander and noise, each shard
    with its own level, scale and phase (seeded: the 10x panel's first shards are the 1x panel's)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    start = np.datetime64("2024-01-01T00:00")
    stamps = [str(start + np.timedelta64(5 * i, "m")).replace("T", " ") for i in range(rows)]
    for k in range(shards):
        rng = np.random.default_rng([seed, k])
        t = np.arange(rows)
        wander = np.zeros(rows)
        shocks = rng.normal(0, 0.3, rows)
        for i in range(1, rows):
            wander[i] = 0.98 * wander[i - 1] + shocks[i]
        daily = np.sin(2 * np.pi * (t / 288 + rng.uniform()))
        values = rng.uniform(10, 100) + rng.uniform(1, 20) * (daily + 0.3 * wander + rng.normal(0, 0.1, rows))
        with (folder / f"sensor_{k:04d}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value"])
            w.writerows([s, f"{v:.4f}"] for s, v in zip(stamps, values))
    return folder


# -- 1 and 2: accuracy in this process -------------------------------------------------------------------------------


def _relative(test: dict) -> dict:
    s, p = test["streaming"], test["persistence"]
    return {
        "positions": test["positions"],
        "rmse": s["rmse"],
        "persistence_rmse": p["rmse"],
        "rmse_ratio": s["rmse"] / p["rmse"] if p["rmse"] > 0 else None,
        "mae_ratio": s["mae"] / p["mae"] if p["mae"] > 0 else None,
    }


def _summary(per_series: dict) -> dict:
    rmse = [v["rmse_ratio"] for v in per_series.values() if v["rmse_ratio"] is not None]
    mae = [v["mae_ratio"] for v in per_series.values() if v["mae_ratio"] is not None]
    return {
        "mean_rmse_ratio": float(np.mean(rmse)) if rmse else None,
        "median_rmse_ratio": float(np.median(rmse)) if rmse else None,
        "geomean_rmse_ratio": float(np.exp(np.mean(np.log(rmse)))) if rmse and min(rmse) > 0 else None,
        "mean_mae_ratio": float(np.mean(mae)) if mae else None,
        "beats_persistence": int(sum(r < 1 for r in rmse)),
        "series": len(per_series),
    }


def _config(**kw):
    from statelite.train import TrainConfig

    return TrainConfig(**kw)


def panel_vs_per_series(folder: Path, keys: list[str], options: dict, work: Path) -> dict:
    """One panel model on the folder, one model per file, the same options; per-series figures and times."""
    from statelite.train import train

    t0 = time.perf_counter()
    result = train(_config(out=str(work / "fertility_panel"), data=str(folder), **options), log=None)
    panel = {
        "seconds": round(time.perf_counter() - t0, 2),
        "fit_seconds": round(result.fit_seconds, 2),
        "epochs_run": result.metrics["epochs_run"],
        "series": {k: _relative(result.metrics["series"][k]) for k in keys},
    }
    log(f"  panel of {len(keys)}: {panel['seconds']:.1f} s ({panel['epochs_run']} epochs)")
    single: dict = {"seconds": 0.0, "fit_seconds": 0.0, "epochs_run": [], "series": {}}
    for key in keys:
        t0 = time.perf_counter()
        r = train(_config(out=str(work / f"fertility_{key}"), data=str(folder / f"{key}.csv"), **options), log=None)
        single["seconds"] += time.perf_counter() - t0
        single["fit_seconds"] += r.fit_seconds
        single["epochs_run"].append(r.metrics["epochs_run"])
        single["series"][key] = _relative(r.metrics["test"])
    single["seconds"], single["fit_seconds"] = round(single["seconds"], 2), round(single["fit_seconds"], 2)
    log(f"  {len(keys)} models, one per series: {single['seconds']:.1f} s")
    panel["summary"], single["summary"] = _summary(panel["series"]), _summary(single["series"])
    wins = sum(panel["series"][k]["rmse"] < single["series"][k]["rmse"] for k in keys)
    return {
        "options": options,
        "keys": keys,
        "panel": panel,
        "per_series": single,
        "panel_wins": int(wins),
        "per_series_wins": len(keys) - int(wins),
        "time_ratio_panel_to_per_series": round(panel["seconds"] / single["seconds"], 4) if single["seconds"] else None,
    }


def calendar_effect(folder: Path, keys: list[str], options: dict, calendar: tuple[str, ...], work: Path) -> dict:
    """The same panel with and without calendar inputs."""
    from statelite.train import train

    runs = {}
    for label, cal in (("without", ()), ("with", calendar)):
        t0 = time.perf_counter()
        r = train(_config(out=str(work / f"nab_{label}"), data=str(folder), calendar=cal, **options), log=None)
        per = {k: _relative(r.metrics["series"][k]) for k in keys}
        runs[label] = {
            "calendar": list(cal),
            "seconds": round(time.perf_counter() - t0, 2),
            "epochs_run": r.metrics["epochs_run"],
            "series": per,
            "summary": _summary(per),
        }
        mean = _fmt(runs[label]["summary"]["mean_rmse_ratio"])
        log(f"  calendar {list(cal) or 'none'}: mean RMSE / persistence {mean}"
            f" ({runs[label]['seconds']:.1f} s)")
    wins = sum(runs["with"]["series"][k]["rmse"] < runs["without"]["series"][k]["rmse"] for k in keys)
    return {"options": options, "keys": keys, **runs, "calendar_wins": int(wins), "series": len(keys)}


# -- 3 and 4: processes ----------------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """``n`` ports free on localhost now (bound then released; the workers bind them a few seconds later)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(tf_config: dict | None = None) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _train_command(data: Path, out: Path, sizes: Sizes, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "statelite", "train", str(data), "--target", "value", "--time-column", "timestamp",
            "--window", str(sizes.window), "--horizon", "4", "--units", "32", "--batch-size", str(GLOBAL_BATCH),
            "--epochs", str(epochs), "--patience", str(epochs + 1), "--seed", "0", "--out", str(out), *extra]


def run_processes(commands: list[tuple[list[str], dict]], logs: Path, name: str) -> list[dict]:
    """Start every command at once, wait for each with ``os.wait4`` and return per process: exit code, wall
    seconds, peak RSS (MiB, that process alone) and the log's text."""
    logs.mkdir(parents=True, exist_ok=True)
    started, procs = time.perf_counter(), []
    for i, (cmd, env) in enumerate(commands):
        out = (logs / f"{name}_{i}.log").open("w")
        procs.append((subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT), out))
    results = []
    for p, out in procs:
        _, status, usage = os.wait4(p.pid, 0)  # reaps this child only: its own ru_maxrss
        p.returncode = os.waitstatus_to_exitcode(status)
        out.close()
        results.append({
            "returncode": p.returncode,
            "seconds": round(time.perf_counter() - started, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
            "log": Path(out.name).read_text(),
        })
    for r, (cmd, _) in zip(results, commands):
        if r["returncode"] != 0:
            raise RuntimeError(f"{name}: exit {r['returncode']} from {' '.join(cmd)}\n{r['log'][-3000:]}")
    return results


EPOCH = re.compile(r"^epoch +\d+/\d+ .* (\d+\.\d)s", re.M)


def _throughput(run_dir: Path, chief_log: str) -> dict:
    """The chief's ``run.json`` throughput and timing, and its epoch times (from its progress lines): the first
    epoch carries the one-off costs (tracing, the workers' first collective), later ones are the steady state."""
    run = json.loads((run_dir / "run.json").read_text())
    t = run["metrics"]["throughput"]
    epochs = [float(v) for v in EPOCH.findall(chief_log)]
    per_epoch = t["windows"] / max(1, run["metrics"]["epochs_run"])
    later = epochs[1:]
    steps = -(-per_epoch // GLOBAL_BATCH)
    return {
        **t, "windows_per_second": run["timing"]["windows_per_second"],
        "fit_seconds": run["timing"]["fit_seconds"], "total_seconds": run["timing"]["total_seconds"],
        "epochs_run": run["metrics"]["epochs_run"], "epoch_seconds": epochs,
        "steady_windows_per_second": round(per_epoch / float(np.median(later)), 1) if later else None,
        "steady_ms_per_step": round(1000 * float(np.median(later)) / steps, 1) if later else None,
    }


DIGEST = re.compile(r"worker (\d+)/(\d+)[^\n]*weights sha256 ([0-9a-f]{64})")


def throughput(data: Path, sizes: Sizes, work: Path) -> dict:
    """Windows/s of one plain process, one multi-worker process and two multi-worker processes, the same panel,
    global batch and epochs; the digests each worker printed."""
    epochs = sizes.throughput_epochs
    rows = []
    # one plain process: Keras fit, TensorFlow's default strategy
    [r] = run_processes([(_train_command(data, work / "tp_single", sizes, epochs), _env())], work / "logs", "tp_single")
    rows.append({"label": "1 process, --strategy none", "workers": 1, "strategy": "none",
                 **_throughput(work / "tp_single", r["log"]), "processes": [_proc(r)]})
    for count in (1, 2):
        ports = free_ports(count)
        cluster = {"worker": [f"localhost:{p}" for p in ports]}
        label = f"tp_mw{count}"
        commands = [
            (_train_command(data, work / f"{label}_{i}", sizes, epochs, "--strategy", "multi-worker"),
             _env({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            for i in range(count)
        ]
        procs = run_processes(commands, work / "logs", label)
        digests = {}
        for p in procs:
            for m in DIGEST.finditer(p["log"]):
                digests[int(m.group(1))] = m.group(3)
        rows.append({
            "label": f"{count} worker process{'es' if count > 1 else ''}, --strategy multi-worker",
            "workers": count, "strategy": "multi-worker", **_throughput(work / f"{label}_0", procs[0]["log"]),
            "processes": [_proc(p) for p in procs],
            "digests": [digests.get(i) for i in range(count)],
            "digests_match": len(digests) == count and len(set(digests.values())) == 1,
        })
        log(f"  {rows[-1]['label']}: {rows[-1]['windows_per_second']} windows/s, digests match "
            f"{rows[-1]['digests_match']}")
    log(f"  1 process, --strategy none: {rows[0]['windows_per_second']} windows/s")

    def ratio(key, a, b):
        x, y = rows[a][key], rows[b][key]
        return round(x / y, 4) if x and y else None

    return {
        "epochs": epochs,
        "global_batch": GLOBAL_BATCH,
        "rows": rows,
        "ratio_2_workers_to_1_worker": ratio("windows_per_second", 2, 1),
        "ratio_2_workers_to_plain": ratio("windows_per_second", 2, 0),
        "ratio_1_worker_to_plain": ratio("windows_per_second", 1, 0),
        "steady_ratio_2_workers_to_1_worker": ratio("steady_windows_per_second", 2, 1),
        "steady_ratio_2_workers_to_plain": ratio("steady_windows_per_second", 2, 0),
        "digests_match": rows[2]["digests_match"],
    }


def _proc(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "log"}


def memory(cache: Path, sizes: Sizes, work: Path, plain: tuple[Path, dict] | None = None) -> dict:
    """Peak RSS of a fresh process training a folder of N shards and of 10 N shards of the same length, one after
    the other. ``plain``: the run folder and process of the throughput's plain run, which is the 1x run when it
    trained as many epochs (the quick run saves a process so)."""
    runs = []
    for factor in (1, 10):
        shards = sizes.synth_shards * factor
        folder = synthetic_shards(cache / f"synthetic_{shards}x{sizes.synth_rows}", shards, sizes.synth_rows)
        out = work / f"mem_{factor}x"
        if factor == 1 and plain is not None:
            out, r = plain
        else:
            [r] = run_processes([(_train_command(folder, out, sizes, sizes.memory_epochs), _env())], work / "logs",
                                f"mem_{factor}x")
        t = _throughput(out, r["log"])
        runs.append({"factor": factor, "shards": shards, "rows": shards * sizes.synth_rows,
                     "peak_rss_mib": r["peak_rss_mib"], "seconds": r["seconds"], "windows": t["windows"],
                     "fit_seconds": t["fit_seconds"]})
        log(f"  {shards} shards x {sizes.synth_rows} rows: peak RSS {r['peak_rss_mib']:.0f} MiB ({r['seconds']:.0f} s)")
    ratio = runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    return {"epochs": sizes.memory_epochs, "runs": runs, "ratio_10x_to_1x": round(ratio, 4), "bar": RSS_BAR,
            "met": ratio <= RSS_BAR}


# -- report ----------------------------------------------------------------------------------------------------------


def write_markdown(results: dict, path: Path) -> None:
    m, cfg = results["machine"], results["config"]
    L = [
        "# Panels: one model for many series, calendar inputs, workers and memory",
        "",
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; wall time {results['elapsed_s']:.0f} s; source {results['source']}  ",
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['machine']}), load average {m['load_average_at_start']} at "
        f"start, {m.get('load_average_at_end')} at end (a shared machine: other work may run beside)  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
        "",
        "*Ratio to persistence* is a model's streaming test RMSE (state from zero at the test split's start, never "
        "reset) over persistence's at the same positions, per series; below 1 beats persistence. *MAE ratio* is the "
        "same with the MAE, a MASE-like figure whose scale is persistence's out-of-sample error.",
        "",
    ]
    pv = results.get("panel_vs_per_series")
    if pv:
        o, p, s = pv["options"], pv["panel"], pv["per_series"]
        L += [
            "## Panel against one model per series (World Bank fertility)",
            "",
            f"{len(pv['keys'])} countries, each 52 yearly rows (1960-2011), split "
            f"{1 - o['val_fraction'] - o['test_fraction']:.0%}"
            f" / {o['val_fraction']:.0%} / {o['test_fraction']:.0%}; every model a 1x{o['units']} GRU, window "
            f"{o['window']}, horizon {o['horizon']}, differenced, at most {o['epochs']} epochs (patience "
            f"{o['patience']}), batch {o['batch_size']}, seed {o['seed']}. The panel scales each series on its own.",
            "",
            "| approach | mean ratio to persistence | median | geometric mean | mean MAE ratio | beats persistence | "
            "wins against the other | training time (fit) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, d, wins in (("one panel model", p, pv["panel_wins"]),
                               (f"{len(pv['keys'])} models, one per series", s, pv["per_series_wins"])):
            u = d["summary"]
            L.append(
                f"| {label} | {_fmt(u['mean_rmse_ratio'])} | {_fmt(u['median_rmse_ratio'])} | "
                f"{_fmt(u['geomean_rmse_ratio'])} | {_fmt(u['mean_mae_ratio'])} | "
                f"{u['beats_persistence']}/{u['series']}"
                f" | {wins}/{len(pv['keys'])} | {d['seconds']:.1f} s ({d['fit_seconds']:.1f} s) |"
            )
        L += [
            "",
            f"Training time, panel / per-series models: {_fmt(pv['time_ratio_panel_to_per_series'])}.",
            "",
            "| country | test positions | persistence RMSE | panel RMSE | panel ratio | per-series RMSE | "
            "per-series ratio | better |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for k in pv["keys"]:
            a, b = p["series"][k], s["series"][k]
            L.append(
                f"| {k} | {a['positions']} | {a['persistence_rmse']:.4f} | {a['rmse']:.4f} | {_fmt(a['rmse_ratio'])} | "
                f"{b['rmse']:.4f} | {_fmt(b['rmse_ratio'])} | {'panel' if a['rmse'] < b['rmse'] else 'per-series'} |"
            )
        L.append("")
    ce = results.get("calendar")
    if ce:
        o = ce["options"]
        L += [
            "## Calendar inputs on daily-cycle sensors (NAB real traffic)",
            "",
            f"{ce['series']} series as a folder of shards; a 1x{o['units']} GRU, window {o['window']}, horizon "
            f"{o['horizon']}, at most {o['epochs']} epochs (patience {o['patience']}), batch {o['batch_size']}, seed "
            f"{o['seed']}; the same panel with `--calendar {','.join(ce['with']['calendar'])}` and without. About a "
            "week "
            "of readings per sensor: the day of the week is seen once or twice in training.",
            "",
            "| inputs | mean ratio to persistence | median | mean MAE ratio | beats persistence | "
            "wins against the other | time |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label in ("without", "with"):
            d, u = ce[label], ce[label]["summary"]
            wins = ce["calendar_wins"] if label == "with" else ce["series"] - ce["calendar_wins"]
            L.append(
                f"| {'calendar ' + ','.join(d['calendar']) if d['calendar'] else 'values only'} | "
                f"{_fmt(u['mean_rmse_ratio'])} | {_fmt(u['median_rmse_ratio'])} | {_fmt(u['mean_mae_ratio'])} | "
                f"{u['beats_persistence']}/{u['series']} | {wins}/{ce['series']} | {d['seconds']:.1f} s |"
            )
        L += ["", "| series | test positions | persistence RMSE | ratio without | ratio with |",
              "| --- | --- | --- | --- | --- |"]
        for k in ce["keys"]:
            a, b = ce["without"]["series"][k], ce["with"]["series"][k]
            L.append(f"| {k} | {a['positions']} | {a['persistence_rmse']:.4g} | {_fmt(a['rmse_ratio'])} | "
                     f"{_fmt(b['rmse_ratio'])} |")
        L.append("")
    tp = results["throughput"]
    syn = cfg["synthetic"]
    L += [
        "## Training throughput: 1 and 2 worker processes",
        "",
        f"A synthetic panel of {syn['shards']} shards x {syn['rows']:,} rows (5-minute readings, a daily cycle), "
        f"`--data folder`, a 1x32 GRU, window {syn['window']}, horizon 4, global batch {tp['global_batch']} (each of "
        f"two workers takes {tp['global_batch'] // 2}), {tp['epochs']} epochs, each configuration in fresh processes; "
        "the workers on localhost with `TF_CONFIG`, free ports. *Windows/s* is the chief's `run.json` "
        "`timing.windows_per_second`: training windows over the whole fit time (validation included, and the first epoch's "
        "one-off costs: tracing, the workers' first collective ops). *Steady* is an epoch's windows over the median "
        "time of the epochs after the first (the chief's progress lines), and *ms/step* that time per global batch. "
        "Each process's peak RSS is its own (`os.wait4`).",
        "",
        "| configuration | windows/s | steady windows/s | ms/step (steady) | epoch times s | process wall s | "
        "peak RSS per process (MiB) | weights digest |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in tp["rows"]:
        digest = "-"
        if r.get("digests"):
            short = ", ".join((d or "missing")[:12] for d in r["digests"])
            digest = ("match: " if r["digests_match"] else "DIFFER: ") + short
        walls = ", ".join(f"{p['seconds']:.0f}" for p in r["processes"])
        rss = ", ".join(f"{p['peak_rss_mib']:.0f}" for p in r["processes"])
        epochs = ", ".join(f"{e:.1f}" for e in r["epoch_seconds"])
        L.append(
            f"| {r['label']} | {r['windows_per_second']:.0f} | {_fmt(r['steady_windows_per_second'], '.0f')} | "
            f"{_fmt(r['steady_ms_per_step'], '.1f')} | {epochs} | {walls} | {rss} | {digest} |"
        )
    L += [
        "",
        f"2 workers / 1 worker: **{_fmt(tp['ratio_2_workers_to_1_worker'])}x** over the whole fit, "
        f"{_fmt(tp['steady_ratio_2_workers_to_1_worker'])}x steady; 2 workers / plain process: "
        f"{_fmt(tp['ratio_2_workers_to_plain'])}x ({_fmt(tp['steady_ratio_2_workers_to_plain'])}x steady); 1 "
        f"multi-worker process / plain: {_fmt(tp['ratio_1_worker_to_plain'])}x. On {m['cores']} shared cores two "
        "workers compete for the cores one process already uses (TensorFlow's thread pools span every core), and every "
        "step adds all-reduces over localhost gRPC (the global batch's weight sum, the gradients, the loss): this "
        "measures the engine's overhead on one small machine, not what separate machines would gain.",
        "",
    ]
    mem = results["memory"]
    L += [
        "## Peak memory with 10x the rows",
        "",
        f"A fresh `statelite train --data folder` process per size, the same shard length ({syn['rows']:,} rows) and "
        f"options as above, {mem['epochs']} epoch(s); peak RSS of that process. Issue 12's bar: 10x the rows within "
        f"{RSS_BAR - 1:.0%} of the 1x peak.",
        "",
        "| shards | rows | training windows | peak RSS (MiB) | wall s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in mem["runs"]:
        L.append(f"| {r['shards']} | {r['rows']:,} | {r['windows']:,} | {r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |")
    small, big = mem["runs"]
    L += [
        "",
        f"10x / 1x peak RSS: **{mem['ratio_10x_to_1x']:.3f}** ({'met' if mem['met'] else 'NOT met'}: bar "
        f"{RSS_BAR:.2f}); {big['peak_rss_mib'] - small['peak_rss_mib']:+.0f} MiB. With shards the trainer reads "
        "a few series at a time for the training windows, and one series at a time for the validation loss, the "
        "test figures and the interval calibration (train/trainer.py at the source commit above).",
        "",
        "## Data",
        "",
        "| data set | what | package: loader | source | licence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for d in results["datasets"]:
        L.append(f"| {d['name']} | {d['title']} | {d['package'] or '-'}: `{d['loader']}` | {d['source']} | "
                 f"{d['licence']} |")
    L.append("| synthetic | daily sine + AR(1) wander + noise, seeded, per-shard level, scale and phase | - "
             "(written by `panel.py`) | - | - |")
    path.write_text("\n".join(L) + "\n")


# -- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a few series, 1 epoch, small shards (the test's run)")
    ap.add_argument("--out", default=None, help="where panel.md and panel.json go (default benchmarks/results; with "
                    "--quick a temporary folder)")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out: accuracy, calendar")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the data's CSV shards are written")
    ap.add_argument("--work", default=None, help="keep run folders and logs here (default: a temporary folder)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    started = time.time()
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    command = " ".join(["python", "benchmarks/panel.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="statelite_panel_")) if args.quick else ROOT / "benchmarks" / "results"
    )
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) / ("quick" if args.quick else "full")
    own_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="statelite_panel_work_")) if own_work else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(("statelite", "numpy", "tensorflow", "keras", "statsmodels", "pyarrow")),
        "source": source_state(),
        "config": {"quick": args.quick, "sizes": dataclasses.asdict(sizes),
                   "synthetic": {"shards": sizes.synth_shards, "rows": sizes.synth_rows, "window": sizes.window}},
        "datasets": [],
    }
    try:
        # Processes first: this one has not imported TensorFlow yet, so it holds no thread pools beside them.
        log("throughput: 1 plain process, 1 and 2 worker processes")
        data = synthetic_shards(cache / f"synthetic_{sizes.synth_shards}x{sizes.synth_rows}", sizes.synth_shards,
                                sizes.synth_rows)
        results["throughput"] = throughput(data, sizes, work)
        log("memory: 1x and 10x shards")
        same = sizes.memory_epochs == sizes.throughput_epochs
        plain = None
        if same:  # the plain throughput run is the 1x run: its log holds the epoch lines
            proc = results["throughput"]["rows"][0]["processes"][0]
            plain = (work / "tp_single", {**proc, "log": (work / "logs" / "tp_single_0.log").read_text()})
        results["memory"] = memory(cache, sizes, work, plain)

        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        if "accuracy" not in skip:
            log("fertility: one panel model against one model per series")
            folder, keys = fertility_shards(cache, sizes.fertility_series)
            options = dict(targets=("fertility",), time_column="year", window=6, horizon=1, difference=True,
                           val_fraction=0.2, test_fraction=0.3, units=16, epochs=sizes.fertility_epochs, patience=5,
                           batch_size=32, seed=0)
            results["panel_vs_per_series"] = panel_vs_per_series(folder, keys, options, work)
            results["datasets"].append(FERTILITY)
        if "calendar" not in skip and NAB_DIR.is_dir():
            log("NAB traffic: calendar inputs against none")
            folder, keys = nab_shards(cache, sizes.nab_series, sizes.nab_rows)
            window = 48 if not args.quick else 24
            options = dict(targets=("value",), time_column="timestamp", window=window, horizon=6, units=32,
                           epochs=sizes.nab_epochs, patience=4, batch_size=64, seed=0)
            results["calendar"] = calendar_effect(folder, keys, options, ("hour", "dow"), work)
            results["datasets"].append(NAB_TRAFFIC)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["elapsed_s"] = round(time.time() - started, 1)
    (out / "panel.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, out / "panel.md")
    log(f"wrote {out / 'panel.md'} and {out / 'panel.json'} ({results['elapsed_s']:.0f} s)")
    tp, mem = results["throughput"], results["memory"]
    log(f"  2 workers / 1 worker {tp['ratio_2_workers_to_1_worker']}x, digests match {tp['digests_match']}; "
        f"peak RSS 10x / 1x {mem['ratio_10x_to_1x']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
