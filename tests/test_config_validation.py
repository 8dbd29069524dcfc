"""A typo in params.yaml must not cost a training run: every invalid value below is rejected before any
model is loaded, with a message naming the dotted key and what is allowed.

Each case mutates the shipped params.yaml and is checked three ways: ``config.load_params``, the CLI's
``check-params`` (exit 2, message on stderr) and a training stage (``valuedrift sft``: exit 2, nothing
written). One real subprocess shows the stage fails before it even imports torch.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from valuedrift import cli
from valuedrift.config.load import load_params
from valuedrift.core.errors import ConfigError

from .conftest import ROOT

SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())
PREF = "prepare_data.preference_sets.value_gap"
MIX = "prepare_data.corpora.neutral_heavy.mix"
DELETE = object()


def set_path(d: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    if value is DELETE:
        del d[last]
    else:
        d[last] = value


# (case id, dotted path, new value, key the error must name, fragments of the message: allowed values)
CASES: list[tuple[str, str, Any, str, tuple[str, ...]]] = [
    ("negative learning rate", "sft.learning_rate", -1e-4, "sft.learning_rate", ("(0, 1)",)),
    ("learning rate as text", "po.learning_rate", "fast", "po.learning_rate", ("expected a number",)),
    ("gap 1.5", f"{PREF}.gap", 1.5, f"{PREF}.gap", ("[0, 1]",)),
    ("unknown algorithm", "po.algorithms", ["ppo"], "po.algorithms[0]", ("'ppo'", "dpo")),
    ("unknown topic", f"{PREF}.topics", ["astrology"], f"{PREF}.topics[0]", ("astrology", "abortion", "gender")),
    ("missing local model path", "model.name", "./models/no-such-model", "model.name", ("does not exist",)),
    ("missing model path without ./", "model.name", "src/no-such-model", "model.name", ("does not exist",)),
    ("K = 0 (paper route)", "eval.paper.k", 0, "eval.paper.k", (">= 1",)),
    ("eval cadence 0", "sft.eval_every", 0, "sft.eval_every", (">= 1",)),
    ("negative po eval cadence", "po.eval_every", -2, "po.eval_every", (">= 1",)),
    ("negative probe seed", "eval.probe_seed", -1, "eval.probe_seed", ("null or >= 0",)),
    ("po.start_from not an SFT run", "po.start_from", "nowhere", "po.start_from", ("'nowhere'", "neutral_heavy")),
    ("unknown stance (drift)", "drift.stances", ["agree"], "drift.stances[0]", ("support, neutral, oppose",)),
    ("unknown stance (corpus mix)", MIX, {"support": 0.5, "agree": 0.5}, f"{MIX}.agree", ("support, neutral, oppose",)),
    ("unknown target stance", f"{PREF}.target", "agree", f"{PREF}.target", ("support", "reinforce", "reverse")),
    ("mix does not sum to 1", MIX, {"support": 0.5, "neutral": 0.6, "oppose": 0.1}, MIX, ("sum to 1",)),
    ("wrong type: text for int", "sft.max_steps", "many", "sft.max_steps", ("expected an integer",)),
    ("wrong type: float for int", "sft.batch_size", 2.5, "sft.batch_size", ("expected an integer",)),
    ("wrong type: text for bool", "model.trust_remote_code", "yes", "model.trust_remote_code", ("true or false",)),
    ("wrong type: scalar for list", "po.algorithms", "dpo", "po.algorithms", ("expected a list",)),
    ("unknown key (typo)", "sft.learn_rate", 1e-5, "sft.learn_rate", ("unknown key", "learning_rate")),
    ("unknown top-level key", "trainer", {"steps": 3}, "trainer", ("unknown key", "sft", "po")),
    ("unknown dtype", "model.dtype", "float64", "model.dtype", ("float32", "bfloat16", "float16")),
    ("unknown device", "model.device", "tpu", "model.device", ("auto", "cpu", "cuda")),
    ("unknown chat template", "model.chat_template", "vicuna", "model.chat_template", ("chatml", "llama3", "gemma")),
    ("CI level 1.5", "eval.ci", 1.5, "eval.ci", ("(0.5, 1)",)),
    ("unknown split", "eval.splits", ["train"], "eval.splits[0]", ("dev", "test")),
    ("temperature 0", "eval.temperature", 0.0, "eval.temperature", ("> 0",)),
    ("temperature inf", "eval.temperature", float("inf"), "eval.temperature", ("finite",)),
    ("learning rate NaN", "sft.learning_rate", float("nan"), "sft.learning_rate", ("finite",)),
    ("negative seed", "seed", -1, "seed", (">= 0",)),
    ("unknown scheduler", "sft.lr_scheduler", "exponential", "sft.lr_scheduler", ("constant", "cosine")),
    ("negative DPO beta", "po.hparams.dpo.beta", -0.1, "po.hparams.dpo.beta", ("> 0",)),
    ("unknown DPO loss", "po.hparams.dpo.loss_type", ["sigmoid", "magic"], "po.hparams.dpo.loss_type", ("sigmoid", "ipo")),
    ("unknown DPO hyperparameter", "po.hparams.dpo.gamma", 0.5, "po.hparams.dpo.gamma", ("beta",)),
    ("undefined preference set", "po.preference_sets", ["nope"], "po.preference_sets[0]", ("value_gap",)),
    ("undefined SFT corpus", "sft.corpora", ["nope"], "sft.corpora[0]", ("neutral_heavy",)),
    ("empty stance list", "drift.stances", [], "drift.stances", ("support, neutral, oppose",)),
    ("duplicate algorithm", "po.algorithms", ["dpo", "dpo"], "po.algorithms[1]", ("twice",)),
    ("tracking URI scheme", "tracking.uri", "ftp://host/mlflow", "tracking.uri", ("sqlite:///", "http://")),
    ("negative HTTP retries", "tracking.http_retries", -1, "tracking.http_retries", (">= 0",)),
    ("unknown judge kind", "eval.judges.smollm2.kind", "gpt", "eval.judges.smollm2.kind", ("hf", "openai")),
    ("API key value instead of variable name", "eval.judges.smollm2.api_key_env", "sk-live-0123456789abcdef",
     "eval.judges.smollm2.api_key_env", ("NAME of an environment variable",)),
]


def mutated(path: str, value: Any) -> dict[str, Any]:
    p = copy.deepcopy(SHIPPED)
    set_path(p, path, value)
    return p


def write_params(tmp_path: Path, data: Any) -> Path:
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_at_least_twenty_cases_and_the_shipped_file_is_valid():
    assert len(CASES) >= 20
    load_params(ROOT / "params.yaml")


@pytest.mark.parametrize(("case", "path", "value", "key", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_invalid_params_are_rejected_naming_key_and_allowed_values(tmp_path, monkeypatch, capsys, case, path, value, key, allowed):
    monkeypatch.chdir(ROOT)  # relative model paths resolve against the project, as in `dvc repro`
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params_file = write_params(tmp_path, mutated(path, value))

    with pytest.raises(ConfigError) as e:
        load_params(params_file)
    assert e.value.key == key, str(e.value)
    message = str(e.value)
    assert key in message
    for fragment in allowed:
        assert fragment in message, f"{case}: {fragment!r} missing from {message!r}"

    assert cli.main(["check-params", "--params", str(params_file)]) == 2
    assert key in capsys.readouterr().err

    out = tmp_path / "runs"
    assert cli.main(["sft", "--params", str(params_file), "--base-model", str(tmp_path / "model"), "--out", str(out)]) == 2
    assert key in capsys.readouterr().err
    assert not out.exists(), "the stage wrote output despite invalid params"


def test_not_a_mapping_and_bad_yaml_are_rejected(tmp_path):
    params_file = write_params(tmp_path, ["seed", 0])
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(params_file)
    params_file.write_text("seed: 0\nsft: {max_steps: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(params_file)


def test_missing_params_file_exits_2(tmp_path, capsys):
    assert cli.main(["sft", "--params", str(tmp_path / "nope.yaml")]) == 2
    assert "params file not found" in capsys.readouterr().err


def test_training_stage_fails_before_importing_torch(tmp_path):
    """A real process: `valuedrift sft` with a bad value exits 2 without importing torch (so no model)."""
    params_file = write_params(tmp_path, mutated("sft.learning_rate", -1.0))
    code = (
        "import sys; from valuedrift.cli import main; "
        f"rc = main(['sft', '--params', {str(params_file)!r}, '--out', {str(tmp_path / 'runs')!r}]); "
        "print('RESULT', rc, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "RESULT 2 False" in proc.stdout, proc.stdout + proc.stderr
    assert "sft.learning_rate" in proc.stderr and "(0, 1)" in proc.stderr
    assert not (tmp_path / "runs").exists()

    proc = subprocess.run([sys.executable, "-m", "valuedrift.cli", "check-params", "--params", str(params_file)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "sft.learning_rate" in proc.stderr
