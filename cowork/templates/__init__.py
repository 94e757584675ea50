"""Package data: the starter team that `cowork init` writes (cowork.toml, roles/, handoffs/README.md)."""
