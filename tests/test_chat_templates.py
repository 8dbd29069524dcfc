"""Named chat templates for models that ship none (base models; ``model.chat_template``): the prompt is a prefix
of prompt + completion (what TRL's prompt/completion SFT needs), the turn-end token ends generation, and a
chat prompt without any template is an error naming the key, never a silent plain-text fallback."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from transformers import AutoTokenizer, GenerationConfig

from valuedrift.core.chat_templates import CHAT_TEMPLATES, END_OF_TURN, chat_template_problem
from valuedrift.core.errors import ConfigError
from valuedrift.models import add_chat_template, load_model, load_tokenizer, write_pointer
from valuedrift.stages import prepare_model
from valuedrift.stance.likelihood import format_prompt

from .conftest import tiny_params_dict


def test_gemma_template_renders_gemma_turns_and_ends_generation_at_end_of_turn(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    gen = GenerationConfig(eos_token_id=tok.eos_token_id)
    add_chat_template(tok, gen, "gemma")
    assert tok.chat_template == CHAT_TEMPLATES["gemma"]
    prompt = [{"role": "user", "content": "Should abortion be legal?"}]
    head = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": "It depends."}], tokenize=False)
    assert head.endswith("<start_of_turn>user\nShould abortion be legal?<end_of_turn>\n<start_of_turn>model\n")
    assert full.startswith(head) and full.endswith("It depends.<end_of_turn>\n")
    with_system = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *prompt], tokenize=False,
                                          add_generation_prompt=True)
    assert "<start_of_turn>user\nBe brief.\n\nShould abortion be legal?<end_of_turn>" in with_system
    assert "system" not in with_system
    end = tok.convert_tokens_to_ids("<end_of_turn>")
    assert gen.eos_token_id == [tok.eos_token_id, end]


@pytest.mark.parametrize("name", sorted(CHAT_TEMPLATES))
def test_every_named_template_renders_the_prompt_as_a_prefix_of_prompt_plus_answer(tiny_model_dir, name):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": [END_OF_TURN[name]]})
    gen = GenerationConfig(eos_token_id=tok.eos_token_id)
    add_chat_template(tok, gen, name)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is a carbon tax fair?"}]
    head = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": "Partly."}], tokenize=False)
    assert full.startswith(head) and "Is a carbon tax fair?" in head and "Partly." not in head
    assert full.rstrip("\n").endswith(f"Partly.{END_OF_TURN[name]}")
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert sorted(eos) == sorted({tok.eos_token_id, tok.convert_tokens_to_ids(END_OF_TURN[name])})


@pytest.fixture()
def templateless_model(tiny_model_dir, tmp_path):
    """The tiny model with its chat template removed: a stand-in for a base model."""
    out = tmp_path / "base"
    shutil.copytree(tiny_model_dir, out)
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    (out / "chat_template.jinja").unlink(missing_ok=True)
    assert not AutoTokenizer.from_pretrained(out).chat_template
    return out


def test_chat_prompts_without_a_template_are_an_error_naming_the_key(templateless_model):
    tok = load_tokenizer(templateless_model)
    with pytest.raises(ConfigError) as e:
        format_prompt(tok, "Should abortion be legal?", "chat")
    assert e.value.key == "model.chat_template" and "eval.prompt_format: plain" in str(e.value)
    assert format_prompt(tok, "Should abortion be legal?", "plain") == "Question: Should abortion be legal?\nAnswer:"


def test_prepare_model_gives_a_base_model_the_configured_template(templateless_model, tmp_path):
    params = tiny_params_dict(str(templateless_model))
    params["model"]["chat_template"] = "chatml"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_model.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "models" / "base")])
    tok = load_tokenizer(tmp_path / "models" / "base")
    assert tok.chat_template == CHAT_TEMPLATES["chatml"]
    assert format_prompt(tok, "Q?", "chat") == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    model = load_model(tmp_path / "models" / "base", device="cpu")
    eos = model.generation_config.eos_token_id
    assert tok.convert_tokens_to_ids("<|im_end|>") in (eos if isinstance(eos, list) else [eos])


def test_a_jinja_file_is_a_chat_template_too(templateless_model, tmp_path):
    path = tmp_path / "turns.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                    "{% if add_generation_prompt %}[assistant] {% endif %}")
    tok = load_tokenizer(write_pointer(str(templateless_model), None, tmp_path / "ptr", str(path)))
    assert format_prompt(tok, "Q?", "chat") == "[user] Q?\n[assistant] "
    assert chat_template_problem(str(path)) is None
    (tmp_path / "empty.txt").write_text("no template here")
    assert "no Jinja template" in str(chat_template_problem(str(tmp_path / "empty.txt")))
