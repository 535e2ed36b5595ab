"""Rollout timings for the demo model: push -> canary AVAILABLE -> promoted (goal <= 15 s on 2 cores).

    python bench/bench_rollout.py --out bench/results/rollout.json

The demo source model (digits, trained briefly) is exported twice (v1, v2) with the
project's exporter into a file:// store. For each target (local always; docker when an
engine and the offline image are there): first deploy v1 (not timed as the goal), then
time push v2 -> rollout v2 with canary verification -> promoted. Servers/containers are
stopped and removed afterwards.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import parse_out, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_versions(tmp: Path) -> dict[int, Path]:
    import keras
    import numpy as np

    from pipeline.model.demo import train_source_model
    from pipeline.model.exporter import ExportSpec, export_model
    from pipeline.progress import Reporter

    path = tmp / "source.keras"
    train_source_model(path, epochs=2, seed=0, reporter=Reporter(quiet=True))
    model = keras.models.load_model(path)
    x = np.random.default_rng(0).random((64, *model.input_shape[1:]), dtype=np.float32)
    out = {}
    for v in (1, 2):
        spec = ExportSpec(root=tmp / "exports", model_name="digits", version=v, input_name="inputs",
                          output_name="probabilities", warmup_records=8, golden_size=64, parity_atol=1e-5)
        out[v] = export_model(model, spec, x, {"run_id": "bench"}).version_dir
    return out


def one_target(kind: str, tmp: Path, dirs: dict[int, Path], image: str | None) -> dict:
    from pipeline.config import build_config
    from pipeline.rollout.session import committed_versions, open_session
    from pipeline.storage import open_store
    from pipeline.storage.publish import push_version

    port = free_port()
    tag = f"{kind}-{int(time.time())}"
    rollout = {"target": kind, "grpc_port": port, "rest_port": free_port() if kind == "docker" else 0,
               "local_dir": str(tmp / f"serving-{kind}")}
    if kind == "docker":
        rollout.update(image=image, pull_image=False, container_name=f"tfr-bench-{tag}", volume=f"tfr-bench-{tag}")
    cfg = build_config({"storage": {"uri": f"file://{tmp / f'store-{kind}'}"}, "rollout": rollout,
                        "verify": {"endpoint": f"127.0.0.1:{port}"}, "run": {"workdir": str(tmp / f"work-{kind}")}})
    store = open_store(cfg.storage)
    push_version(store, dirs[1], "digits", 1, create=True)
    session = None
    try:
        def run(version: int):
            nonlocal session
            st, _ = committed_versions(cfg, "digits")
            session = open_session(cfg, "digits", store=st,
                                   golden=dirs[version] / "assets.extra" / "tfrollout_golden.npz")
            try:
                return session.machine.rollout("digits", version)
            finally:
                session.close()

        t0 = time.perf_counter()
        first = run(1)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        push_version(store, dirs[2], "digits", 2, create=True)
        push_s = time.perf_counter() - t0
        second = run(2)
        total = time.perf_counter() - t0
        t = second.timings_s
        return {"first_deploy_s": round(first_s, 3), "first_deploy_timings_s": first.timings_s,
                "push_s": round(push_s, 3),
                "push_to_canary_available_s": round(push_s + t["canary_available"], 3),
                "push_to_promoted_s": round(total, 3), "rollout_timings_s": t,
                "goal_s": GOAL_S, "within_goal": total <= GOAL_S}
    finally:
        if session is not None:
            if kind == "docker":
                session.target.destroy(volume=True)
            else:
                session.target.stop()


def docker_image() -> str | None:
    try:
        import docker

        client = docker.from_env()
        client.api.trust_env = False
        client.ping()
    except Exception:  # noqa: BLE001 - no engine: docker part skipped
        return None
    tag = subprocess.run(["bash", str(ROOT / "infra/serving-image/build.sh"), "--print-tag"],
                         capture_output=True, text=True).stdout.strip()
    try:
        client.images.get(tag)
    except Exception:  # noqa: BLE001
        return None
    return tag


def main() -> None:
    out = parse_out(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="tfr-bench-rollout-") as d:
        tmp = Path(d)
        dirs = demo_versions(tmp)
        results = {"model": "digits demo (source model, exported twice)", "targets": {}}
        results["targets"]["local"] = one_target("local", tmp, dirs, None)
        image = docker_image()
        results["targets"]["docker"] = (one_target("docker", tmp, dirs, image) if image
                                        else {"skipped": "no Docker engine or offline image"})
    write_results(out, "rollout", results)


if __name__ == "__main__":
    main()
