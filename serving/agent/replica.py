"""Serve mode: the agent as the replica's main process, wrapping the image's entrypoint.

Why a wrapper: swarm may start a replica on any node at any time, long after the pipeline has
exited, so the replica fetches and proves its own model first, then runs the server as a child
it watches: a version that fails to load stops the server at once (it would otherwise hold the
shared port with nothing loaded), and SIGTERM is forwarded only after the drain.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

from .common import AgentError, read_optional
from .draining import drain, stop_listening
from .fetch import fetch_version
from .healthcheck import write_health
from .status import AVAILABLE, END, version_state


def serve(spec: dict[str, Any], server_args: list[str]) -> int:
    """Fetch + verify, then run the server as a child: forward SIGTERM, and kill it as soon
    as the intended version fails to load (the server would otherwise keep the shared port
    open with nothing loaded, and take a share of new connections)."""
    creds = json.loads(read_optional(spec.get("credentials_file")) or "null")
    started = time.monotonic()
    try:
        path = fetch_version(spec, creds)
    except AgentError as exc:
        print(f"tfrollout-agent: refusing to serve: {exc}", flush=True)
        return 3
    print(f"tfrollout-agent: {path} fetched and verified in {time.monotonic() - started:.2f} s", flush=True)
    child = subprocess.Popen([*spec["exec"], *server_args])
    requested: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        requested.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loaded, last_look = False, 0.0
    while child.poll() is None:
        if requested:
            if loaded and spec.get("port"):
                note = drain(child.pid, int(spec["port"]), float(spec.get("drain_s", 10.0)))
                print(f"tfrollout-agent: stopping: {note}", flush=True)
            child.send_signal(requested[0])
            break
        time.sleep(0.1)
        if loaded and time.monotonic() - last_look < 1.0:
            continue
        last_look = time.monotonic()
        try:
            state, message = version_state(spec, 1.0)
        except Exception as exc:  # noqa: BLE001 - not up yet, or not answering: unhealthy
            state, message = 0, f"status unavailable: {exc}"
        if spec.get("health_file"):
            write_health(spec["health_file"], state, message, time.time())
        if state == END and not loaded:
            # our server keeps running (and listening) after its initial load failed: take it out of
            # the port's group first, then stop it gracefully (a kill would reset its connections)
            print(f"tfrollout-agent: {spec['model']} version {spec['version']} failed to load ({message}); "
                  "stopping the server", flush=True)
            if spec.get("port"):
                try:
                    stop_listening(child.pid, int(spec["port"]))
                except OSError:
                    pass
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            return 4
        loaded = loaded or state == AVAILABLE
    return child.wait()
