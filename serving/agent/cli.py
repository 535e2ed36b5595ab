"""tfrollout replica agent (serving.agent): fetch + verify a model version, serve it, answer health checks.

    python agent.pyz serve SPEC -- SERVER ARGS...   fetch, verify, run the server, supervise it
    python agent.pyz health SPEC                    exit 0 iff the intended version was AVAILABLE just now
    python agent.pyz fetch FETCHSPEC                fetch + verify every listed version, prune, then idle
    python agent.pyz fetched FETCHSPEC              exit 0 iff every listed version directory is complete
"""

from __future__ import annotations

import json
import sys

from .healthcheck import health
from .replica import serve
from .sidecar import fetch_all, fetched


def main(argv: list[str]) -> int:
    """Dispatch one mode on its JSON spec file; anything else prints the usage above (exit 2)."""
    if len(argv) < 2 or argv[0] not in ("serve", "health", "fetch", "fetched"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    if argv[0] == "health":
        return health(spec)
    if argv[0] == "fetch":
        return fetch_all(spec)
    if argv[0] == "fetched":
        return fetched(spec)
    rest = argv[2:]
    return serve(spec, rest[1:] if rest[:1] == ["--"] else rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
