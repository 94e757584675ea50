"""The command line: thin commands that parse, call the core and render. Only cli/ and tui/ import typer/rich/textual."""
