"""The agent's drain, on real grpcio server processes sharing one port (SO_REUSEPORT, 127.0.0.1):
a replica stopped after the drain loses no request (a plain stop(grace) under the same load
loses a few racing RPCs now and then: CANCELLED / UNAVAILABLE)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

from serving.agent import draining as agent
from tests.support.procs import free_port, stop_process, wait_for

SERVER = textwrap.dedent('''
    import signal, sys, threading
    from concurrent import futures
    import grpc
    port, age = int(sys.argv[1]), int(sys.argv[2])
    echo = grpc.method_handlers_generic_handler(
        "t.Echo", {"Call": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)})
    server = grpc.server(futures.ThreadPoolExecutor(8), options=[
        ("grpc.so_reuseport", 1), ("grpc.max_connection_age_ms", age), ("grpc.max_connection_age_grace_ms", 10000)])
    server.add_generic_rpc_handlers((echo,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()
    server.stop(10).wait()
''')


def _load(port: int, stop: threading.Event, errors: Counter, ok: list[int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        call = ch.unary_unary("/t.Echo/Call")
        while not stop.is_set():
            try:
                call(b"x", timeout=5)
                ok[0] += 1
            except grpc.RpcError as exc:
                errors[exc.code().name] += 1


def test_a_drained_replica_stops_without_failing_a_request(tmp_path: Path):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(script), str(port), "1000"]) for _ in range(2)]
    stop, errors, ok = threading.Event(), Counter(), [0]
    threads = [threading.Thread(target=_load, args=(port, stop, errors, ok), daemon=True) for _ in range(12)]
    try:
        assert wait_for(lambda: len(agent._inet_sockets(port, "0A")) == 2, 20)
        for t in threads:
            t.start()
        time.sleep(1.5)
        note = agent.drain(procs[0].pid, port, 5.0)
        assert note == "closed 1 listener(s); 0 connection(s) left after the drain", note
        assert len(agent._inet_sockets(port, "0A")) == 1  # the sibling still listens
        procs[0].send_signal(signal.SIGTERM)
        procs[0].wait(timeout=20)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for p in procs:
            stop_process(p)
    print(f"\ndrained stop: {ok[0]} ok, errors {dict(errors)}")
    assert ok[0] > 1000 and errors == Counter()
