"""The policy model: the one loader (train, eval, serve, judge), checkpoint contents, chat-template glue,
Qwen2-VL image inputs, and what the rest of the package reads off a (peft-wrapped) Hugging Face model."""
