"""Named chat templates (Jinja, as tokenizers store them) for models that ship none, e.g. base models.

``model.chat_template`` is one of these names or a path to a Jinja file; :func:`resolve_chat_template`
turns it into the template text and the token that ends an assistant turn (added to the generation
config's ``eos_token_id`` so that sampled answers stop there).

Every template renders a prompt as a prefix of prompt + completion (what TRL's prompt/completion SFT
needs) and ends every turn with an end-of-turn token.

- ``gemma``: Gemma 3's turn format; a system message is folded into the first user turn (Gemma has no
  system role).
- ``chatml``: ``<|im_start|>role\\n…<|im_end|>`` (Qwen, SmolLM2).
- ``llama3``: ``<|start_header_id|>role<|end_header_id|>\\n\\n…<|eot_id|>`` (Llama 3.x).
"""

from __future__ import annotations

from pathlib import Path

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
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}"
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
}
END_OF_TURN: dict[str, str] = {"gemma": "<end_of_turn>", "chatml": "<|im_end|>", "llama3": "<|eot_id|>"}


def chat_template_problem(spec: str) -> str | None:
    """Why ``spec`` names no chat template (None if it does): a known name or an existing file."""
    if spec in CHAT_TEMPLATES:
        return None
    path = Path(spec).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        return None if "{{" in text or "{%" in text else f"file {spec!r} holds no Jinja template"
    return f"{spec!r} is neither a named template ({', '.join(CHAT_TEMPLATES)}) nor an existing Jinja file"


def resolve_chat_template(spec: str) -> tuple[str, str | None]:
    """``(template text, end-of-turn token or None)`` for a name of :data:`CHAT_TEMPLATES` or a file."""
    if spec in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[spec], END_OF_TURN.get(spec)
    return Path(spec).expanduser().read_text(encoding="utf-8"), None
