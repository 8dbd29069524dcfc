"""``valuedrift tracking-server``: a local MLflow tracking server for the project's runs.

Runs ``mlflow server`` with the SQLite store ``mlflow.db`` and artifacts under ``mlartifacts/``, bound to
127.0.0.1 (reachable from this machine only). Point the stages at it with
``export MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``. Binding to another interface exposes the
unauthenticated server to the network: it needs ``--host`` explicitly and logs a warning.
"""

from __future__ import annotations

import logging
import subprocess

from valuedrift.stages.args import check_flags, check_output_file, stage_parser
from valuedrift.tracking import LOCALHOST, tracking_server_command

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("tracking-server", __doc__, with_params=False, raw_doc=True)
    ap.add_argument("--host", default=LOCALHOST, help=f"interface to bind (default {LOCALHOST})")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--backend-store-uri", default="sqlite:///mlflow.db")
    ap.add_argument("--artifacts", default="mlartifacts", help="artifact folder")
    a = ap.parse_args(argv)
    if a.backend_store_uri.startswith("sqlite:///"):
        check_output_file("backend-store-uri", a.backend_store_uri[len("sqlite:///"):])
    check_flags(a, {}, ["artifacts"])
    if a.host not in (LOCALHOST, "localhost", "::1"):
        log.warning("binding the MLflow server to %s: it has no authentication and is reachable from the network", a.host)
    cmd = tracking_server_command(a.backend_store_uri, a.artifacts, a.port, a.host)
    log.info("MLflow tracking server on http://%s:%d (Ctrl-C stops it)", a.host, a.port)
    raise SystemExit(subprocess.call(cmd))
