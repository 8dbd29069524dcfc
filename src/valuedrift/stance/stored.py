"""Reusing a stored evaluation: a run's last (phase) evaluation stands in for scoring the same weights
again when it was made with the same scorer settings on the same probes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from valuedrift.core.io import iter_jsonl
from valuedrift.core.rundir import RunDir


def scorer_signature(scorer: Any) -> dict[str, Any]:
    """What makes two stance evaluations comparable: the scorer settings (not the batch size); a scorer
    with its own ``signature()`` (the judged route) says itself."""
    if hasattr(scorer, "signature"):
        return scorer.signature()
    return {"kind": type(scorer).__name__, "temperature": getattr(scorer, "temperature", None),
            "prompt_format": getattr(scorer, "prompt_format", None), "system_prompt": getattr(scorer, "system_prompt", None)}


def final_evaluation(run_dir: Path, signature: dict[str, Any], probe_ids: set[int]) -> tuple[list[dict[str, Any]], dict[str, float]] | None:
    """The per-probe rows and metrics of a run's last checkpoint, if it is a phase evaluation made with
    ``signature`` on exactly ``probe_ids`` (so it can stand in for scoring the same weights again)."""
    run = RunDir(run_dir)
    traj = run.trajectory()
    if not traj["checkpoints"] or traj.get("scorer") != signature:
        return None
    last = traj["checkpoints"][-1]
    table = run.eval_table(last["step"])
    if not last["phase"] or not table.exists():
        return None
    rows = [obj for _, obj in iter_jsonl(table)]
    if {r["probe_id"] for r in rows} != probe_ids:
        return None
    return rows, dict(last.get("metrics", {}))
