"""Named chat templates for models that ship none (the Gemma base model): the prompt is a prefix of
prompt + completion (what TRL's prompt/completion SFT needs) and the turn-end token ends generation."""

from __future__ import annotations

from transformers import AutoTokenizer, GenerationConfig

from valuedrift.models import CHAT_TEMPLATES, add_chat_template


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
