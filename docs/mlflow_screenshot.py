"""Screenshot the real MLflow UI comparing the runs of one `dvc repro` (one pipeline id), for the README.

    .venv/bin/python docs/mlflow_screenshot.py            # needs Debian's chromium (apt-get install chromium)

Starts `mlflow ui` on 127.0.0.1 against the project's store, finds the newest pipeline id, and saves
docs/mlflow_compare.png (the compare-runs view of that pipeline's sft/po runs), docs/mlflow_runs.png
(the runs table filtered on the pipeline id, ranked by drift) and docs/mlflow_models.png (every traced
checkpoint as a logged model with its stance metrics).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]
SORT_METRIC = "judged/drift/all/oppose/magnitude"  # each run's drift of oppose (the value-gap target) at its end
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1700,1000", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shoot(url: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([shutil.which("chromium") or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=120)


def main() -> None:
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("valuedrift")
    runs = [r for r in client.search_runs([exp.experiment_id], order_by=["start_time DESC"])
            if r.data.tags.get("stage") in ("sft", "po")]
    pid = runs[0].data.tags["pipeline_id"]
    ids = [r.info.run_id for r in runs if r.data.tags.get("pipeline_id") == pid]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        q = urllib.parse.quote(json.dumps(ids))
        shoot(f"{base}/#/compare-runs?runs={q}&experiments={urllib.parse.quote(json.dumps([exp.experiment_id]))}",
              ROOT / "docs" / "mlflow_compare.png")
        flt = urllib.parse.quote(f"tags.pipeline_id = '{pid}'")
        order = urllib.parse.quote(f"metrics.`{SORT_METRIC}`")  # the runs ranked by their own drift
        shoot(f"{base}/#/experiments/{exp.experiment_id}/runs?searchFilter={flt}&orderByKey={order}&orderByAsc=false",
              ROOT / "docs" / "mlflow_runs.png")
        shoot(f"{base}/#/experiments/{exp.experiment_id}/models", ROOT / "docs" / "mlflow_models.png")
        print(f"pipeline {pid}: {len(ids)} runs; wrote docs/mlflow_compare.png, docs/mlflow_runs.png, docs/mlflow_models.png")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
