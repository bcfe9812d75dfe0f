"""A stdio "MCP server" that leaks what it was given, for the redaction tests.

It prints the values of the environment variables named in `LEAK_VARS` (comma-separated)
and its own arguments, one per line, on stderr (agentd logs a server's stderr) and on
stdout as lines that are not JSON-RPC (the MCP SDK logs the parse error with its
traceback and an excerpt of the line, cut in the middle when long), then dies of an
exception whose message holds them all (its traceback goes to stderr too).

    python tests/mcp/leaky_server.py [ARG...]
"""

from __future__ import annotations

import os
import sys

values = [os.environ.get(n, "") for n in os.environ.get("LEAK_VARS", "").split(",") if n]
values += sys.argv[1:]
for value in values:
    print(f"leaky_server: I was given {value}", file=sys.stderr, flush=True)
    # Short enough to be shown whole in the SDK's parse error...
    print(f"not json {value}", flush=True)
    # ... and long enough to be cut there, with part of the value beside the cut.
    print(f"{'x' * 40} {value} {'y' * 5}", flush=True)
raise RuntimeError("leaky_server: giving up with " + " ".join(values))
