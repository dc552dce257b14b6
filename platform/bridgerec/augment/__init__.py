"""Ray Data augmentation stages that call the LLM engines and the text encoder."""

__all__: list[str] = []
