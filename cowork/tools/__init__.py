"""Tools an agent calls, all through one gateway (cowork.tools.gateway.Gateway)."""
