"""The LLM roles' client (judge and task writer: any OpenAI-compatible endpoint, or the local model, behind a
request cache) and task synthesis."""
