"""A run's stance trajectory on disk (``<run>/trajectory.json``), readable without torch or transformers.

Written by :class:`valuedrift.train.tracing.StanceTracer` at every checkpoint; read by the drift and
report stages, which therefore start in a second instead of importing the training stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAJECTORY_FILE = "trajectory.json"


def load_trajectory(run_dir: Path) -> dict[str, Any]:
    """The run's trajectory record; ``{"checkpoints": []}`` when nothing was scored yet."""
    path = Path(run_dir) / TRAJECTORY_FILE
    if path.exists():
        return json.loads(path.read_text())
    return {"checkpoints": []}
