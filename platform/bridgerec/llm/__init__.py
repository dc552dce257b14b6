"""LLM layer: backbones, tokenizer and entity tokens, LoRA, prompts, engines, text encoder."""

__all__: list[str] = []
