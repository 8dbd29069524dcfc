"""All of ``params.yaml``: :class:`Params`, one field per section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from valuedrift.config.schema.attribution import AttributeConfig, CounterfactualConfig
from valuedrift.config.schema.data import PrepareDataConfig
from valuedrift.config.schema.evaluation import DriftConfig, EvalConfig, JudgeEvalConfig, JudgeTrainConfig
from valuedrift.config.schema.models import ModelConfig, TrackingConfig
from valuedrift.config.schema.training import POConfig, SFTConfig
from valuedrift.config.schema.tune import TuneConfig
from valuedrift.core.errors import check, check_defined


@dataclass
class Params:
    """All of params.yaml."""

    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    model: ModelConfig = field(default_factory=ModelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    prepare_data: PrepareDataConfig = field(default_factory=PrepareDataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    po: POConfig = field(default_factory=POConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    judge_train: JudgeTrainConfig = field(default_factory=JudgeTrainConfig)
    judge_eval: JudgeEvalConfig = field(default_factory=JudgeEvalConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    attribute: AttributeConfig = field(default_factory=AttributeConfig)
    counterfactual: CounterfactualConfig = field(default_factory=CounterfactualConfig)

    @property
    def probe_seed(self) -> int:
        """Seed of the probe subsets (trace, phase, eval): ``eval.probe_seed``, else the top-level ``seed``."""
        return self.seed if self.eval.probe_seed is None else self.eval.probe_seed

    def validate(self) -> None:
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(bool(self.seeds), "seeds", "must list at least one training seed")
        for i, s in enumerate(self.seeds):
            check(s >= 0, f"seeds[{i}]", f"must be >= 0, got {s}")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", f"must not repeat a seed, got {self.seeds}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                _validate_tree(value, f.name)
        for section in ("sft", "po"):
            mp = getattr(self, section).mixed_precision
            check(mp is None or self.model.dtype != "float16", f"{section}.mixed_precision",
                  f"{mp} autocast is for float32 (or bfloat16) weights; model.dtype float16 trains in fp16 mixed "
                  "precision: set mixed_precision: null")
        for i, name in enumerate(self.sft.corpora):
            check_defined(name, self.prepare_data.corpora, f"sft.corpora[{i}]", "prepare_data.corpora")
        check_defined(self.po.start_from, self.sft.corpora, "po.start_from", "sft.corpora (the SFT runs)")
        for i, name in enumerate(self.judge_eval.judges):
            check_defined(name, self.eval.judges, f"judge_eval.judges[{i}]", "eval.judges")
        for name, pref in self.prepare_data.preference_sets.items():
            if pref.generator in ("hf", "openai"):
                check_defined(pref.lm.judge, self.eval.judges, f"prepare_data.preference_sets.{name}.lm.judge", "eval.judges")
        sources = [(f"prepare_data.corpora.{n}", c.source) for n, c in self.prepare_data.corpora.items()]
        sources += [(f"prepare_data.preference_sets.{n}", s.source) for n, s in self.prepare_data.preference_sets.items()]
        for key, src in sources:
            if src is not None and src.judge:
                check_defined(src.judge, self.eval.judges, f"{key}.source.judge", "eval.judges")
        for i, name in enumerate(self.po.preference_sets):
            check_defined(name, self.prepare_data.preference_sets, f"po.preference_sets[{i}]", "prepare_data.preference_sets")


def _validate_tree(obj: Any, key: str) -> None:
    """Run ``validate`` on a dataclass and every dataclass it holds (also inside dicts)."""
    if hasattr(obj, "validate"):
        obj.validate(key)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate_tree(value, f"{key}.{f.name}")
        elif isinstance(value, dict):
            for k, v in value.items():
                if dataclasses.is_dataclass(v):
                    _validate_tree(v, f"{key}.{f.name}.{k}")
