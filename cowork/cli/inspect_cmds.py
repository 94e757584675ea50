"""Commands: inspect_cmds (filled in by its owner)."""
from cowork.cli.app import app  # noqa: F401
