"""Pipeline figures: the default ``dvc repro`` from scratch (wall time, CPU time, peak RSS, per-run MLflow
durations and evaluation share), then a no-op ``dvc repro``; written as JSON.

    PATH=.venv/bin:$PATH .venv/bin/python benchmarks/bench_pipeline.py --from-scratch \
        --out benchmarks/results/pipeline.json

``--from-scratch`` deletes the pipeline's outputs first (models/, runs/, processed/, the MLflow store,
metrics/, plots/, reports/, dvc.lock) and runs ``dvc repro --no-run-cache``, so nothing is restored from
DVC's run cache: what a fresh clone does. ``--parse-log FILE`` instead reads the ``/usr/bin/time -v``
section of a saved ``dvc repro`` log (for runs made before this script existed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OUTPUTS = ["models", "runs", "processed", "mlflow.db", "mlruns", ".valuedrift", "metrics", "plots", "reports", "dvc.lock"]
TIME_FIELDS = {
    "wall_s": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)",
    "user_s": r"User time \(seconds\): (\S+)",
    "system_s": r"System time \(seconds\): (\S+)",
    "peak_rss_kb": r"Maximum resident set size \(kbytes\): (\S+)",
}


def parse_time_v(text: str) -> dict[str, float]:
    """The fields of GNU ``time -v`` output; wall clock ``[h:]mm:ss.ss`` → seconds."""
    out: dict[str, float] = {}
    for key, pattern in TIME_FIELDS.items():
        m = re.search(pattern, text)
        if m is None:
            raise SystemExit(f"no {pattern!r} in the time -v output")
        if key == "wall_s":
            out[key] = sum(float(part) * 60**i for i, part in enumerate(reversed(m[1].split(":"))))
        else:
            out[key] = float(m[1])
    return out


def mlflow_runs(db: Path) -> list[dict[str, Any]]:
    """Runs of the newest pipeline id in the SQLite store: name, MLflow duration, and the ``time/…`` metrics a
    training run logs at its end (``run_seconds``, ``eval_seconds``, ``train_seconds``, ``eval_share`` =
    eval ÷ train; :func:`valuedrift.train.scaffold.run_timing`). The MLflow duration (end − start) also
    counts later stages that log into the run (attribution), so no share is derived from it: ``eval_share`` is
    None for runs that did not log ``time/eval_share`` (made before 649583b)."""
    con = sqlite3.connect(db)
    newest = con.execute(
        "select t.value from tags t join runs r on r.run_uuid = t.run_uuid where t.key = 'pipeline_id' "
        "order by r.start_time desc limit 1").fetchone()
    if newest is None:
        return []
    rows = con.execute(
        "select r.run_uuid, r.name, (r.end_time - r.start_time) / 1000.0 "
        "from runs r join tags t on t.run_uuid = r.run_uuid where t.key = 'pipeline_id' and t.value = ? "
        "order by r.start_time", (newest[0],)).fetchall()
    out = []
    for uuid, name, duration in rows:
        m = dict(con.execute("select key, max(value) from metrics where run_uuid = ? and key like 'time/%' group by key",
                             (uuid,)).fetchall())
        out.append({"run": name, "duration_s": duration, "run_s": m.get("time/run_seconds"), "eval_s": m.get("time/eval_seconds"),
                    "train_s": m.get("time/train_seconds"), "eval_share": m.get("time/eval_share"),
                    "eval_s_by_route": {k.removeprefix("time/eval_seconds/"): v for k, v in m.items()
                                        if k.startswith("time/eval_seconds/")} or None})
    return out


def timed(cmd: list[str]) -> tuple[dict[str, float], str]:
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{' '.join(cmd)} failed with status {proc.returncode}")
    return parse_time_v(proc.stderr), proc.stdout + proc.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-scratch", action="store_true", help="delete the pipeline outputs first (see above)")
    ap.add_argument("--parse-log", help="read a saved `time -v dvc repro` log instead of running")
    ap.add_argument("--git", help="with --parse-log: the commit the logged run was made at")
    ap.add_argument("--mlflow-db", help="with --parse-log: the logged run's SQLite MLflow store (adds its runs' time/… metrics)")
    ap.add_argument("--label", default="", help="free text stored with the figures (e.g. the params that differ)")
    ap.add_argument("--out", default="benchmarks/results/pipeline.json")
    a = ap.parse_args(argv)
    if not a.parse_log and (a.git or a.mlflow_db):
        ap.error("--git and --mlflow-db go with --parse-log (a live run records its own commit and store)")
    commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True).stdout.strip()
    record: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git": commit,
                              "label": a.label, "loadavg_before": os.getloadavg()}
    if a.parse_log:
        record.update(git=a.git, source=a.parse_log, loadavg_before=None,
                      repro=parse_time_v(Path(a.parse_log).read_text(errors="replace")))
        if a.mlflow_db:
            record["mlflow_runs"] = mlflow_runs(Path(a.mlflow_db))
    else:
        if shutil.which("dvc") is None:
            raise SystemExit("dvc is not on PATH: run with PATH=.venv/bin:$PATH")
        if a.from_scratch:
            for name in OUTPUTS:
                path = Path(name)
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        cmd = ["dvc", "repro", "--no-run-cache"] if a.from_scratch else ["dvc", "repro"]
        record["command"] = " ".join(cmd)
        record["repro"], _ = timed(cmd)
        record["mlflow_runs"] = mlflow_runs(Path("mlflow.db")) if Path("mlflow.db").exists() else []
        noop, log = timed(["dvc", "repro"])
        record["noop_repro"] = {"wall_s": noop["wall_s"], "up_to_date": "Data and pipelines are up to date" in log}
    out = Path(a.out)
    history = json.loads(out.read_text()) if out.exists() else []
    history.append(record)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(history, indent=2) + "\n")
    r = record["repro"]
    print(f"dvc repro: {r['wall_s'] / 60:.2f} min wall, {r['user_s']:.0f} + {r['system_s']:.0f} s CPU, "
          f"peak RSS {r['peak_rss_kb'] / 2**20:.2f} GiB; appended to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
