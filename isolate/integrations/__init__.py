"""isolate as the sandbox of tools people already use.

- `isolate.integrations.inspect_provider`: the `isolate` sandbox of inspect_ai
  (extra `isolate-sandbox[inspect]`).
- `isolate.integrations.mcp_server`: `isolate mcp`, an MCP server with codex-style
  exec tools (extra `isolate-sandbox[mcp]`).
- `isolate.integrations.pytest_plugin`: the `sandbox` fixture and `--isolate-profile`.

Each imports its tool's package itself; `import isolate` imports none of them.
"""
