"""Training data as tables: what a training run logs as its MLflow dataset input, and what the data stages
digest so a run's input can be traced back to the rows and the source they were built from.

The same table gives the same MLflow digest (``mlflow.data.from_pandas(df).digest``: a hash of the string
and number columns and the row count), so the digest a data stage writes beside the data equals the one
the training run logs for it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

PAIR_KEYS = ("prompt", "chosen", "rejected")


def corpus_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """An SFT corpus: prompt (first message), completion, kind, stance."""
    return pd.DataFrame(
        {"prompt": [r["prompt"][0]["content"] for r in rows], "completion": [r["completion"][0]["content"] for r in rows],
         "kind": [r.get("kind") for r in rows], "stance": [r.get("stance") for r in rows]}
    )


def pairs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A preference set: prompt, chosen, rejected (last message of each) and their stances."""
    return pd.DataFrame(
        [{**{k: r[k][-1]["content"] for k in PAIR_KEYS}, "chosen_stance": r.get("chosen_stance"),
          "rejected_stance": r.get("rejected_stance")} for r in rows]
    )


def frame_digest(df: pd.DataFrame) -> str:
    """MLflow's dataset digest of a table, the one ``mlflow.data.from_pandas(df).digest`` gives and a run
    that logs ``df`` as its input shows (mlflow.data.digest_utils; computed here without opening a run)."""
    from mlflow.data.digest_utils import compute_pandas_digest

    return str(compute_pandas_digest(df))
