"""Section ``attribute``: drift attribution of traced runs (``valuedrift attribute``, docs/definitions.md
"Drift attribution").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from valuedrift.core.errors import check
from valuedrift.core.vocab import STANCES

ATTRIBUTION_KINDS: tuple[str, ...] = ("sft", "po")


@dataclass
class AttributeConfig:
    """The ``attribute`` stage: TracIn-CP scores of every training example of each run in ``runs``.

    - ``runs``: run folders under ``runs/`` as ``<kind>/<name>`` (``sft/neutral_heavy``, ``po/dpo-value_gap``);
      one DVC stage entry each (``attribute@<kind>/<name>``);
    - ``probes_per_topic``: probes per (split, topic) of the readout R_{s,split} (the same seeded subsets as
      the tracer's, ``eval.probe_seed``); 0 = every annotated probe;
    - ``last_blocks``: the parameter subset the gradients are restricted to: the last ``last_blocks``
      transformer blocks and the final norm;
    - ``projection_dim``: 0 = exact inner products; k > 0 = both gradients count-sketched to k dimensions
      first (a seeded sparse JL projection, TRAK-style);
    - ``top_k``: examples listed toward / away from each (stance, split);
    - ``batch_size``: training examples per forward and backward pass (per-example gradients from one
      backward, :mod:`valuedrift.attribution.per_example`); 1 = one backward per example.
    """

    runs: list[str] = field(default_factory=lambda: ["sft/neutral_heavy"])
    probes_per_topic: int = 4
    last_blocks: int = 1
    projection_dim: int = 0
    top_k: int = 10
    batch_size: int = 8

    def validate(self, key: str) -> None:
        for i, run in enumerate(self.runs):
            kind, _, name = run.partition("/")
            check(kind in ATTRIBUTION_KINDS and bool(name) and "/" not in name, f"{key}.runs[{i}]",
                  f"must be <kind>/<name> with kind one of {', '.join(ATTRIBUTION_KINDS)} (e.g. sft/neutral_heavy), got {run!r}")
            check(run not in self.runs[:i], f"{key}.runs[{i}]", f"{run!r} is listed twice")
        check(self.probes_per_topic >= 0, f"{key}.probes_per_topic", f"must be >= 0 (0 = all), got {self.probes_per_topic}")
        check(self.last_blocks >= 1, f"{key}.last_blocks", f"must be >= 1, got {self.last_blocks}")
        check(self.projection_dim >= 0, f"{key}.projection_dim", f"must be >= 0 (0 = exact), got {self.projection_dim}")
        check(self.top_k >= 1, f"{key}.top_k", f"must be >= 1, got {self.top_k}")
        check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1 (1 = one backward per example), got {self.batch_size}")


SELECT_SPLITS: tuple[str, ...] = ("dev", "test", "all")
BASELINES: tuple[str, ...] = ("label_matched", "uniform")


@dataclass
class CounterfactualConfig:
    """Section ``counterfactual``: the check of attribution by retraining (the ``counterfactual/`` DVC
    subproject, ``make counterfactual``; docs/definitions.md "Counterfactual retraining").

    - ``run``: the attributed run (an entry of ``attribute.runs``) that is retrained;
    - ``k``: distinct training examples removed (every copy of each), by influence or at random;
    - ``draws``: random removals of k examples (seeds ``seed + d``), the baseline the top-k removal must beat;
    - ``baseline``: how those k are drawn: ``label_matched`` = per label (stance, ``general``…) as many as the
      top-k removal holds, uniformly within the label; ``uniform`` = uniformly from all examples;
    - ``select_split``: the probe split whose readout ranks the examples (``dev``: the held-out ``test``
      topics then measure the effect out of sample);
    - ``stance``: the readout's stance, or ``auto`` = the stance whose readout changed most over the run.
    """

    run: str = "sft/neutral_heavy"
    k: int = 100
    draws: int = 3
    baseline: str = "label_matched"
    select_split: str = "dev"
    stance: str = "auto"

    def validate(self, key: str) -> None:
        kind, _, name = self.run.partition("/")
        check(kind in ATTRIBUTION_KINDS and bool(name), f"{key}.run",
              f"must be <kind>/<name> with kind one of {', '.join(ATTRIBUTION_KINDS)}, got {self.run!r}")
        check(self.k >= 1, f"{key}.k", f"must be >= 1, got {self.k}")
        check(self.draws >= 2, f"{key}.draws", f"must be >= 2 (the random baseline's interval is over draws), got {self.draws}")
        check(self.baseline in BASELINES, f"{key}.baseline", f"must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        check(self.select_split in SELECT_SPLITS, f"{key}.select_split", f"must be one of {', '.join(SELECT_SPLITS)}, got {self.select_split!r}")
        check(self.stance in ("auto", *STANCES), f"{key}.stance", f"must be auto or one of {', '.join(STANCES)}, got {self.stance!r}")
