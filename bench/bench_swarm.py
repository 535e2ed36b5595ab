"""Swarm target: rollout time v1 -> v2 and throughput through 1 vs 3 replicas (issue 14).

    python bench/bench_swarm.py --out bench/results/swarm.json

Needs a reachable Docker engine that is not in a swarm yet and the offline image
(`make serving-image`); without them it writes {"skipped": why} and exits 0. It creates
a one-node swarm on 127.0.0.1 (left again at the end), a moto S3 process holding two tiny
versions, and per replica count: first deploy v1, 16 clients (one connection each) for
`LOAD_S` through the shared port, then v1 -> v2 (start-first, canary check skipped) while
the same load runs. On 2 cores the CPU is the limit, not the replica count: expect a
throughput ratio near 1, not 3.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import parse_out, write_results  # noqa: E402

LOAD_S = 15.0
CLIENTS = 16
IMAGE = "tfrollout/model-server:tf2.21.0"


def engine() -> Any:
    import docker

    client = docker.from_env(version="1.41", timeout=120)
    client.api.trust_env = False
    client.ping()
    return client


def run(client: Any, tmp: Path) -> dict[str, Any]:
    from pipeline.config import StorageConfig, build_config
    from pipeline.rollout.swarm_run import swarm_engine
    from pipeline.storage import open_store
    from pipeline.storage.publish import push_version
    from pipeline.targets.swarm import SwarmTarget
    from tests.rollout.models import MODEL, build_versions
    from tests.rollout.test_local_target import inputs
    from tests.storage.conftest import DUMMY_KEY, DUMMY_SECRET, MotoServer
    from tests.support.procs import free_port
    from tests.swarm.load import FleetLoad

    env = {"AWS_ACCESS_KEY_ID": DUMMY_KEY, "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    moto = MotoServer(free_port(), {**os.environ}).start()
    try:
        versions = build_versions(tmp / "versions")
        storage = {"uri": "s3://tfr-bench/models", "endpoint_url": moto.endpoint, "create_bucket": True}
        store = open_store(StorageConfig(**storage))
        for v in (1, 2):
            push_version(store, versions.dirs[v], MODEL, v, create=True)
        x = inputs(versions)
        rows = []
        for replicas in (1, 3):
            port = free_port()
            cfg = build_config({"storage": storage, "rollout": {
                "target": "swarm", "image": IMAGE, "grpc_port": port, "replicas": replicas,
                "service_name": f"tfr-bench{replicas}", "swarm_monitor_s": 3.0, "swarm_health_interval_s": 1.0}})
            target = SwarmTarget(cfg.rollout, client)
            try:
                first = swarm_engine(cfg, target).rollout(MODEL, 1)
                with FleetLoad(f"127.0.0.1:{port}", MODEL, "stable", x, clients=CLIENTS) as steady:
                    time.sleep(LOAD_S)
                with FleetLoad(f"127.0.0.1:{port}", MODEL, "stable", x, clients=CLIENTS) as during:
                    update = swarm_engine(cfg, target).rollout(MODEL, 2)
                rows.append({"replicas": replicas, "first_deploy_s": first.duration_s,
                             "rollout_v1_v2_s": update.duration_s,
                             "rollout_requests": during.requests, "rollout_failed": sum(during.errors.values()),
                             "rollout_first_error": during.first_error,
                             "steady_requests_per_s": round(steady.requests / LOAD_S, 1),
                             "steady_failed": sum(steady.errors.values()),
                             "final_versions": sorted(r["version"] for r in target.replicas(MODEL))})
                print(rows[-1], flush=True)
            finally:
                target.purge()
        one, three = rows
        return {"clients": CLIENTS, "load_s": LOAD_S, "cpus": os.cpu_count(), "runs": rows,
                "throughput_ratio_3_vs_1": round(three["steady_requests_per_s"] / one["steady_requests_per_s"], 2),
                "note": "one node, replicas share the gRPC port (SO_REUSEPORT); the client load runs on the "
                        "same 2 cores, so the CPU, not the replica count, bounds throughput"}
    finally:
        moto.stop()


def main() -> None:
    out = parse_out(__doc__ or "")
    try:
        client = engine()
        if (client.info().get("Swarm") or {}).get("LocalNodeState") == "active":
            raise RuntimeError("the engine is already in a swarm (leave it first)")
        client.images.get(IMAGE)
    except Exception as exc:  # noqa: BLE001 - no engine / image: a recorded skip, not a failure
        write_results(out, "swarm", {"skipped": f"{type(exc).__name__}: {exc}"})
        return
    client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377",
                      default_addr_pool=["198.19.0.0/16"], subnet_size=24)
    try:
        with tempfile.TemporaryDirectory(prefix="tfr-bench-swarm-") as tmp:
            results = run(client, Path(tmp))
    finally:
        client.swarm.leave(force=True)
    write_results(out, "swarm", results)


if __name__ == "__main__":
    main()
