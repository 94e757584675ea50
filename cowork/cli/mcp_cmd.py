"""Commands: cowork mcp serve (filled in by its owner)."""
from cowork.cli.app import app  # noqa: F401
