"""The Textual mission control (`cowork mc`). Only this package, cowork/cli and the MCP server import textual."""
