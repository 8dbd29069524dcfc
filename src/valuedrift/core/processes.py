"""Multi-process training (``accelerate launch`` / ``torchrun``): who does the once-only work.

Every rank runs the same stage code. Only the main process (rank 0) prepares the run directory, opens the
MLflow run, scores stances and writes results; the other ranks wait for it where they must (the run
directory) and otherwise only train. In a single process every helper here is a no-op wrapper.

On CPU, ``accelerate launch --multi_gpu --num_processes 2 … --mixed_precision no`` with ``use_cpu=True`` in
the training arguments runs two gloo ranks (see README, "Multi-process training").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def world_size() -> int:
    """Number of training processes, from the launcher's environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on global rank 0 (and in a plain single-process run)."""
    return int(os.environ.get("RANK", "0")) == 0


def distributed_state(use_cpu: bool) -> Any:
    """accelerate's process state; the same object the Trainer will use (cpu=True → gloo on CPU)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu)


@contextmanager
def main_process_first(use_cpu: bool) -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (a barrier on each side)."""
    if world_size() == 1:
        yield
        return
    with distributed_state(use_cpu).main_process_first():
        yield


def wait_for_everyone(use_cpu: bool) -> None:
    """A barrier across ranks (no-op in a single process)."""
    if world_size() > 1:
        distributed_state(use_cpu).wait_for_everyone()
