"""Shared pieces of the reliability tests: tiny training params, a real MLflow server process, waiting."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from valuedrift.tracking import tracking_server_command

from .conftest import ROOT, tiny_params_dict

CORPUS = "neutral_heavy"


def reliability_params(model_dir: Path, max_steps: int = 2, **tracking: Any) -> dict[str, Any]:
    """Tiny SFT: ``max_steps`` steps with an evaluation + checkpoint after every step, 1 probe per topic."""
    p = tiny_params_dict(model=str(model_dir))
    p["eval"].update(bootstrap=100, batch_size=64, capability_rows=0)
    p["sft"].update(max_steps=max_steps, eval_every=1, corpora=[CORPUS])
    p["po"]["start_from"] = CORPUS
    p["tracking"].update(check_timeout_s=5, http_retries=0, http_timeout_s=10, **tracking)
    return p


def write_params(path: Path, params: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def prepare_processed(params_file: Path, out: Path) -> Path:
    from valuedrift.stages import prepare_data

    prepare_data.main(["--params", str(params_file), "--data", str(ROOT / "data"), "--out", str(out)])
    return out


def sft_args(params_file: Path, model_dir: Path, processed: Path, out: Path) -> list[str]:
    return ["sft", "--params", str(params_file), "--base-model", str(model_dir), "--processed", str(processed),
            "--out", str(out), "--corpus", CORPUS]


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if not alive():
            raise AssertionError(f"process ended before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    """A port that was free a moment ago (another process may take it before it is used: see closed_port
    for a port nothing can listen on, and MLflowServer.start, which retries on another port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for as long as the block runs: bound by this socket
    and not listening, so no other process can start listening on it in the meantime."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp[6]) with a socket LISTENing on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:
                out.add(addr)
    return out


class MLflowServer:
    """A real ``mlflow server`` (the project's command line) on 127.0.0.1 with a SQLite store in ``root``, or
    the ``backend`` store URI given (e.g. a PostgreSQL database)."""

    def __init__(self, root: Path, port: int | None = None, empty_store: Path | None = None, backend: str | None = None):
        self.backend = backend
        self.root, self.port = Path(root), port or free_port()
        self.port_picked, self.started = port is None, False
        self.proc: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        if empty_store is not None and not (self.root / "mlflow.db").exists():
            shutil.copy(empty_store, self.root / "mlflow.db")  # skips the schema migrations at first start

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240) -> MLflowServer:
        # the first start on a port picked by free_port() moves to another port if the server dies while
        # starting (another process took the port in between); a restart keeps its port (clients know it)
        tries = 3 if (self.port_picked and not self.started) else 1
        for attempt in range(tries):
            store = self.backend or f"sqlite:///{self.root / 'mlflow.db'}"
            cmd = tracking_server_command(store, self.root / "artifacts", self.port)
            log = (self.root / "server.log").open("a")
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
            )
            try:
                wait_for(self.healthy, timeout_s, f"mlflow server on port {self.port}", alive=self.running)
                break
            except AssertionError:
                if self.proc.poll() is None or attempt == tries - 1:
                    raise
                self.port = free_port()
        self.started = True
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server and its workers (the whole process group it leads)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
