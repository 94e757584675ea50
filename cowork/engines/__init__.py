"""Engines: the built-in llm agent loop, the command engine for external agent CLIs, and the model call."""
