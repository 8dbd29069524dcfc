"""Hold a training run at a chosen step until the test says go: the test *creates* the moment it checks
("killed in the middle of a trial", "server died during training") instead of racing the trainer for it.

Test code only; nothing in ``src/`` knows about it. It wraps ``transformers.Trainer.__init__`` (SFT, DPO, …
and TRL's RL trainers all call it) to add one callback that, when the trainer is about to start the step
after ``step`` optimizer steps (everything for step ``step`` — evaluation, checkpoint, stance record,
MLflow logging — is done by then):

1. writes ``<dir>/held`` (JSON: pid, output_dir, step), then
2. waits until ``<dir>/release`` exists (or the test kills the process), then trains on.

It holds at most once per process, and only a trainer whose ``output_dir`` contains ``match`` (when set).

- In a subprocess: run ``python -m tests.training_hold <valuedrift args>`` (from the repository root)
  instead of ``python -m valuedrift.cli <args>``, with the environment from ``Hold.env()``:
  ``VALUEDRIFT_TEST_HOLD_DIR`` (enables it), ``VALUEDRIFT_TEST_HOLD_STEP``, ``VALUEDRIFT_TEST_HOLD_MATCH``.
- In the test process: ``Hold.install(monkeypatch)`` (undone with the monkeypatch).

A hold that nobody releases gives up after ``VALUEDRIFT_TEST_HOLD_TIMEOUT_S`` (default 900 s) with an
error, so a failed test cannot leave a worker blocked forever.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_DIR = "VALUEDRIFT_TEST_HOLD_DIR"
ENV_STEP = "VALUEDRIFT_TEST_HOLD_STEP"
ENV_MATCH = "VALUEDRIFT_TEST_HOLD_MATCH"
ENV_TIMEOUT = "VALUEDRIFT_TEST_HOLD_TIMEOUT_S"


@dataclass
class Hold:
    dir: Path
    step: int = 1
    match: str = ""
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def held_file(self) -> Path:
        return self.dir / "held"

    @property
    def release_file(self) -> Path:
        return self.dir / "release"

    def is_held(self) -> bool:
        return self.held_file.exists()

    def info(self) -> dict[str, Any]:
        return json.loads(self.held_file.read_text())

    def release(self) -> None:
        self.release_file.touch()

    def env(self) -> dict[str, str]:
        return {
            ENV_DIR: str(self.dir),
            ENV_STEP: str(self.step),
            ENV_MATCH: self.match,
            ENV_TIMEOUT: str(self.timeout_s),
        }

    @classmethod
    def from_env(cls) -> Hold | None:
        if not os.environ.get(ENV_DIR):
            return None
        return cls(
            Path(os.environ[ENV_DIR]),
            int(os.environ.get(ENV_STEP, "1")),
            os.environ.get(ENV_MATCH, ""),
            float(os.environ.get(ENV_TIMEOUT, "900")),
        )

    def install(self, monkeypatch: Any = None) -> None:
        """Make every ``transformers.Trainer`` built from now on carry the hold callback (``monkeypatch``:
        a pytest MonkeyPatch to undo it with; None: for the rest of the process)."""
        from transformers import Trainer

        hold, original, done = self, Trainer.__init__, threading.Event()

        def __init__(trainer: Any, *args: Any, **kwargs: Any) -> None:
            original(trainer, *args, **kwargs)
            trainer.add_callback(_callback(hold, done))

        if monkeypatch is None:
            Trainer.__init__ = __init__
        else:
            monkeypatch.setattr(Trainer, "__init__", __init__)

    def wait(self, done: threading.Event, output_dir: str, step: int) -> None:
        done.set()
        tmp = self.held_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "output_dir": output_dir, "step": step}))
        tmp.replace(self.held_file)  # appears complete
        deadline = time.monotonic() + self.timeout_s
        while not self.release_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"training hold in {self.dir} was never released ({self.timeout_s:.0f} s)")
            time.sleep(0.05)


def _callback(hold: Hold, done: threading.Event) -> Any:
    from transformers import TrainerCallback

    class HoldAtStep(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not done.is_set() and state.global_step == hold.step and hold.match in str(args.output_dir):
                hold.wait(done, str(args.output_dir), state.global_step)

    return HoldAtStep()


def main(argv: list[str]) -> int:
    # valuedrift.cli first: it sets environment variables that must be in place before torch loads
    from valuedrift import cli

    hold = Hold.from_env()
    if hold is not None:
        hold.install()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
