"""The child process in which grep runs a pattern only Python's `re` understands.

Python's `re` can backtrack for ever and holds the GIL while it does, so such a pattern
never runs in the daemon: `search.py` starts this module in a child process, reads the
matches it streams, and kills it on abort or when the time budget is spent. The search
itself is the daemon's (`search.run_grep`: the same confined walk, limits and output),
with `re` as the matcher.

Protocol: one JSON request on stdin, `{"args", "root", "timeoutS", "deadline"}` (the
deadline in wall-clock seconds); on stdout one JSON
object per line: `{"file", "line"}` for each match as it is found, then `{"done": {...}}`
with the counts, or `{"error": message}` for a tool error.
"""

from __future__ import annotations

import json
import math
import re
import resource
import sys
import time
from typing import Any

from agentd.tools.patterns import PythonLines
from agentd.tools.search import CHILD_GRACE_S, SearchLimits, run_grep
from agentd.tools.spec import ToolError
from agentd.tools.workspace import Workspace


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    args: dict[str, Any] = request["args"]
    timeout_s = float(request["timeoutS"])
    # If the daemon dies before it can kill this process, the CPU limit still does.
    cpu_s = math.ceil(timeout_s + CHILD_GRACE_S) + 5
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or hard > cpu_s:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, hard))
    try:
        matcher = PythonLines(re.compile(args["pattern"], re.MULTILINE))
        found = run_grep(
            args,
            Workspace(request["root"]),
            matcher,
            SearchLimits(timeout_s, remaining_s=float(request["deadline"]) - time.time()),
            on_line=lambda display, line: _emit({"file": display, "line": line}),
        )
    except ToolError as exc:
        _emit({"error": exc.message})
        return
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _emit({"error": f"grep failed: {exc.strerror or exc}{where}."})
        return
    _emit(
        {
            "done": {
                "capped": found.capped,
                "skippedLarge": found.skipped_large,
                "timedOut": found.limits.timed_out,
                "tooDeep": found.limits.too_deep,
            }
        }
    )
