"""Shared fixtures: a tiny randomly initialised Llama model with its own tokenizer (built here, no
download), a temporary SQLite MLflow store, and tiny params."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
BUNDLED_BASE = ROOT / "models" / "base"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# MLflow telemetry sets/unsets an environment variable from a thread (a race with code that copies os.environ)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# OpenMP threads that busy-wait between parallel regions starve each other on a shared 2-core machine
# (measured at load 4.5: tests/test_scoring_agreement.py 37 s -> 12 s wall); must be set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    texts = []
    import json

    for f in sorted((DATA / "v_prism" / "annotations").glob("*.jsonl"))[:4]:
        for line in f.read_text().splitlines()[:30]:
            r = json.loads(line)
            texts += [r["proposition"], r["support"], r["neutral"], r["oppose"]]
    texts += ["What is your opinion?", "I support it.", "I oppose it.", "It depends."] * 5
    return texts


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer trained on a few data lines."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    hf_tok.chat_template = CHATML
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bundled_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled SmolLM2 as a HF folder: models/base if `dvc repro` made it, else exported once here
    (≈ 30 s), so the integration tests run on a fresh clone too instead of skipping."""
    if (BUNDLED_BASE / "config.json").exists():
        return BUNDLED_BASE
    from valuedrift.models import export_bundled

    return export_bundled("smollm2-135m-instruct", tmp_path_factory.mktemp("bundled") / "base")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite MLflow store, created (schema migrations: ~5-10 s) once per session."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts"))
    return path


def fresh_mlflow_uri(dest_dir: Path, template: Path) -> str:
    """A fresh SQLite tracking store in ``dest_dir``: a copy of the migrated empty store."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, dest_dir / "mlflow.db")
    return f"sqlite:///{dest_dir / 'mlflow.db'}"


@pytest.fixture()
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_db: Path) -> str:
    """A fresh SQLite tracking store for one test (real MLflow, no mocks)."""
    uri = fresh_mlflow_uri(tmp_path, empty_mlflow_db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def tiny_params_dict(model: str = "smollm2-135m-instruct") -> dict:
    """params.yaml with every budget cut to the bone (a few steps, 1 probe per topic)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = copy.deepcopy(p)
    p["model"]["name"] = model
    p["eval"].update(trace_probes_per_topic=1, phase_probes_per_topic=1, bootstrap=200, batch_size=8)
    # padded rows cut at 64 tokens: the tiny tokenizer makes rows of up to 318, which padding-free would train whole
    # (tests/test_padding_free.py trains padding-free)
    p["sft"].update(max_steps=2, eval_every=1, batch_size=2, max_length=64, padding_free=False)
    p["po"].update(max_steps=2, eval_every=1, batch_size=2, max_length=64)
    p["sft"]["corpora"] = [p["po"]["start_from"]]  # one SFT run (the matrix over corpora doubles the cost)
    p["attribute"]["runs"] = [f"sft/{p['po']['start_from']}"]  # not a po run: tests change po.algorithms and preference sets
    for s in p["prepare_data"]["preference_sets"].values():
        s["pairs"] = 8
    p["judge_train"].update(epochs=0.05, max_length=64)  # ≈ 12 steps: a real (weak) classifier judge
    p["eval"]["quick"].update(k=2, max_new_tokens=8, probes_per_topic=1)
    for rl in ("rm_rloo", "rm_grpo"):  # po.batch_size 2 must be a multiple of num_generations
        p["po"]["hparams"][rl]["num_generations"] = 2
    p["eval"]["trace_judged"] = False  # needs a trained judge (models/judge); the tests that trace it turn it on
    return p


@pytest.fixture()
def tiny_params(tmp_path: Path) -> tuple[Path, dict]:
    p = tiny_params_dict()
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path, p


@pytest.fixture()
def one_thread():
    """The tiny model is faster on one thread, and two threads fight other processes for 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
