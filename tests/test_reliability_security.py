"""Security defaults, each shown by a test:

- model-repo code never runs unless ``trust_remote_code`` is set explicitly;
- YAML (params, judge templates) is read with ``safe_load``: a ``!!python/…`` tag is an error, not code;
- no user-supplied data is unpickled (no pickle / unsafe torch.load / allow_pickle anywhere in src);
- servers the project starts bind to 127.0.0.1 by default (and nothing in the repo binds 0.0.0.0);
- secrets (judge API keys, tracking passwords) come only from the environment and never reach MLflow
  params, tags, the run directory or the logs.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import re
import secrets
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml

from valuedrift import cli, models
from valuedrift.config.load import load_params, parse_params
from valuedrift.config.schema.models import ModelConfig
from valuedrift.core.errors import ConfigError
from valuedrift.core.redaction import REDACTED, install_log_redaction, redact
from valuedrift.core.rundir import RUN_META_FILE
from valuedrift.stance import judges
from valuedrift.tracking import (
    LOCALHOST,
    Tracker,
    TrackingUnavailable,
    check_reachable,
    tracking_server_command,
)
from valuedrift.train.scaffold import flat_params

from .conftest import ROOT, tiny_params_dict

SRC = ROOT / "src" / "valuedrift"


def source_files(*roots: Path, suffixes: tuple[str, ...] = (".py",)) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        out += [root] if root.is_file() else [p for p in root.rglob("*") if p.suffix in suffixes and ".venv" not in p.parts]
    return out


def grep(pattern: str, files: list[Path]) -> list[str]:
    rx = re.compile(pattern)
    return [f"{f.relative_to(ROOT)}:{i}: {line.strip()}" for f in files
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if rx.search(line)]


# -- trust_remote_code --------------------------------------------------------------------------------


def test_trust_remote_code_is_off_by_default():
    for fn in (models.load_model, models.load_tokenizer, judges.build_judge):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn.__name__
    assert ModelConfig().trust_remote_code is False
    assert load_params(ROOT / "params.yaml").model.trust_remote_code is False
    assert grep(r"trust_remote_code\s*=\s*True", source_files(SRC)) == []


def test_model_repo_code_does_not_run_without_trust_remote_code(tiny_model_dir, tmp_path):
    """A model folder that asks for its own code: refused by default; only an explicit opt-in runs it."""
    folder = tmp_path / "custom_model"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "REMOTE_CODE_RAN"
    (folder / "custom_llama.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'valuedrift_custom_llama'\n\n"
        "class CustomModel(LlamaForCausalLM):\n    config_class = CustomConfig\n"
    )
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="valuedrift_custom_llama",
               auto_map={"AutoConfig": "custom_llama.CustomConfig", "AutoModelForCausalLM": "custom_llama.CustomModel"})
    (folder / "config.json").write_text(json.dumps(cfg))

    with pytest.raises(ValueError, match="trust_remote_code"):
        models.load_model(folder, device="cpu")
    assert not marker.exists(), "model-repo code ran without trust_remote_code"

    models.load_model(folder, device="cpu", trust_remote_code=True)  # the opt-in works, so the test can fail
    assert marker.exists()


# -- YAML ---------------------------------------------------------------------------------------------


def test_yaml_python_tags_are_rejected_not_executed(tmp_path):
    marker = tmp_path / "YAML_CODE_RAN"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"seed: {payload}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(params_file)
    assert cli.main(["check-params", "--params", str(params_file)]) == 2

    template = tmp_path / "judge.yaml"
    template.write_text(f"name: {payload}\nuser: '{{question}} {{answer}}'\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        judges.load_template(template, "eval.judges.x.template")
    assert not marker.exists()


def test_yaml_is_only_ever_safe_loaded():
    unsafe = grep(r"yaml\.(load|unsafe_load|full_load|load_all)\(|Loader\s*=|yaml\.(Unsafe|Full)?Loader", source_files(SRC))
    assert unsafe == [], unsafe
    # the one loader of our own (floats as DVC writes them) is a safe loader, and the only one constructed
    from valuedrift.core.yaml12 import Yaml12Loader

    assert issubclass(Yaml12Loader, yaml.SafeLoader) and not issubclass(Yaml12Loader, yaml.FullLoader)
    built = grep(r"Loader\(", source_files(SRC))
    assert {h.split(":")[0] for h in built} == {"src/valuedrift/core/yaml12.py"}, built


# -- pickle -------------------------------------------------------------------------------------------


def test_no_unpickling_in_the_code():
    files = source_files(SRC)
    assert grep(r"\b(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b", files) == []
    assert grep(r"read_pickle|allow_pickle\s*=\s*True", files) == []
    torch_loads = grep(r"torch\.load\(", files)
    assert all("weights_only=True" in hit for hit in torch_loads), torch_loads


# -- servers ------------------------------------------------------------------------------------------


def test_servers_bind_to_loopback_by_default():
    assert inspect.signature(tracking_server_command).parameters["host"].default == LOCALHOST == "127.0.0.1"
    cmd = tracking_server_command("sqlite:///x.db", "artifacts", 5000)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    files = source_files(SRC, ROOT / "tests", ROOT / "benchmarks", suffixes=(".py", ".sh", ".md", ".yaml", ".toml"))
    files += [p for p in (ROOT / "Makefile", ROOT / "MLproject", ROOT / "dvc.yaml", ROOT / "README.md") if p.exists()]
    files = [f for f in files if f.name != Path(__file__).name]
    assert grep(r"0\.0\.0\.0|host\s*=\s*['\"]::['\"]", files) == []
    # every server command line written in the repo names a loopback host
    starts = grep(r"(mlflow['\"]?,?\s*['\"]?(server|ui)\b|llama_cpp\.server|optuna-dashboard|http\.server|uvicorn\.run)", files)
    for hit in starts:
        path = ROOT / hit.split(":", 1)[0]
        text = path.read_text()
        assert "127.0.0.1" in text or "LOCALHOST" in text, f"server started without an explicit loopback host: {hit}"


# -- secrets ------------------------------------------------------------------------------------------


@pytest.fixture()
def judge_secret(monkeypatch) -> str:
    value = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("VALUEDRIFT_TEST_JUDGE_API_KEY", value)
    return value


def openai_judge_params(tmp_path: Path) -> dict:
    p = tiny_params_dict()
    p["eval"]["judges"]["remote"] = {
        "kind": "openai", "model": "smollm2", "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "VALUEDRIFT_TEST_JUDGE_API_KEY", "max_retries": 0, "timeout_s": 2,
        "template": str(ROOT / "data" / "judges" / "stance_judge.yaml"),
    }
    p["eval"]["paper"]["judge"] = "remote"
    return p


def test_api_key_comes_from_the_environment_only(tmp_path, monkeypatch):
    p = openai_judge_params(tmp_path)
    p["eval"]["judges"]["remote"]["api_key"] = "sk-in-params-0123456789"
    with pytest.raises(ConfigError, match="unknown key"):
        parse_params(p)
    p = openai_judge_params(tmp_path)
    monkeypatch.delenv("VALUEDRIFT_TEST_JUDGE_API_KEY", raising=False)
    params = parse_params(p)
    with pytest.raises(ConfigError, match="VALUEDRIFT_TEST_JUDGE_API_KEY is not set"):
        judges.build_judge("remote", params.eval.judges["remote"], "eval.judges.remote")


def test_judge_api_key_never_reaches_mlflow_the_run_dir_or_logs(judge_secret, tmp_path, mlflow_uri, caplog):
    caplog.set_level("DEBUG")
    params = parse_params(openai_judge_params(tmp_path))
    judge = judges.build_judge("remote", params.eval.judges["remote"], "eval.judges.remote")
    assert judge_secret not in repr(judge)
    with pytest.raises(judges.JudgeHTTPError) as e:  # nothing listens on port 9: the error names the URL only
        judge.judge([("Is tea good?", "Yes.")])
    assert judge_secret not in str(e.value)

    run_dir = tmp_path / "run"
    tracker = Tracker(params.tracking, run_dir)
    leaky = {"oops.api_key": judge_secret, "header": f"Bearer {judge_secret}"}
    with tracker.run("secret-test", {"stage": "test", "note": f"key={judge_secret}"}, {**flat_params(params), **leaky}):
        tracker.log_params({"late": judge_secret})
        tracker.set_tags({"late_tag": judge_secret})

    run = mlflow.tracking.MlflowClient(mlflow_uri).get_run(tracker.run_id)
    stored = json.dumps({"params": run.data.params, "tags": run.data.tags})
    assert judge_secret not in stored
    assert run.data.params["eval.judges.remote.api_key_env"] == "VALUEDRIFT_TEST_JUDGE_API_KEY"
    assert run.data.params["oops.api_key"] == REDACTED and run.data.tags["late_tag"] == REDACTED
    db = Path(mlflow_uri.removeprefix("sqlite:///")).read_bytes()
    assert judge_secret.encode() not in db
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert judge_secret not in f.read_text(errors="replace"), f
    assert json.loads((run_dir / RUN_META_FILE).read_text())["params"]["header"] == f"Bearer {REDACTED}"
    assert caplog.records, "nothing was logged, so the next check would be vacuous"
    assert all(judge_secret not in r.getMessage() for r in caplog.records)


def test_log_redaction_filter(judge_secret, monkeypatch):
    stream = io.StringIO()
    logger = logging.getLogger("valuedrift.test.redaction")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        install_log_redaction(logger)
        logger.error("request failed with key %s", judge_secret)
        try:
            raise RuntimeError(f"401 for key {judge_secret}")
        except RuntimeError:
            logger.exception("judge call failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert judge_secret not in text and text.count(REDACTED) == 2, text


def test_tracking_password_is_redacted_from_errors_and_run_metadata(monkeypatch):
    uri = "http://alice:hunter2-pass@127.0.0.1:9"
    with pytest.raises(TrackingUnavailable) as e:
        check_reachable(uri, timeout_s=2)
    assert "hunter2-pass" not in str(e.value) and f"alice:{REDACTED}@" in str(e.value)
    assert redact("postgresql://bob:s3cr3t@db:5432/mlflow") == f"postgresql://bob:{REDACTED}@db:5432/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://carol:pa55word@host/x")
    with pytest.raises(ConfigError) as e2:
        parse_params(tiny_params_dict())
    assert "pa55word" not in str(e2.value)


def test_a_secret_cut_by_the_param_length_limit_is_still_redacted(judge_secret):
    """MLflow params are cut to 500 characters; the cut must come after redaction, or a secret straddling
    character 500 loses its tail, no longer matches, and its head reaches the store."""
    from valuedrift.tracking import MLFLOW_PARAM_CHARS, mlflow_params

    value = "x" * (MLFLOW_PARAM_CHARS - 10) + judge_secret
    stored = mlflow_params({"header": value})["header"]
    assert len(stored) <= MLFLOW_PARAM_CHARS
    assert judge_secret[:10] not in stored
