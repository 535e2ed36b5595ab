"""Rollout over a remote engine's transports: ssh:// (paramiko, real sshd) vs tcp:// with mutual TLS.

    python bench/bench_remote_engine.py --out bench/results/remote_engine.json

Both reach the same local engine on 127.0.0.1: TLS through the tests' TLS proxy in front of
the engine's socket (a thread in this process, as a TLS-terminating dockerd would be),
ssh through an OpenSSH server (`docker system dial-stdio` on the "remote" side) with the
user's ~/.ssh/config and known_hosts. Per round and transport (order alternating): first
deploy v1 and update v1 -> v2 (canary -> promote) of the digits demo with the project's
rollout machine, timed; ssh logins counted from sshd's log. Acceptance (issue 21): the
ssh update within 2x the TLS one. Without an engine, the offline image or sshd it writes
{"skipped": why}.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_rollout import demo_versions, docker_image, free_port, one_target  # noqa: E402
from bench.common import parse_out, write_results  # noqa: E402

ROUNDS = 3
ENGINE_VARS = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "HOME")


def over(env: dict[str, str], tmp: Path, dirs: dict[int, Path], image: str) -> dict:
    """one_target('docker') with the engine reached through `env`; the process env restored after."""
    from pipeline.targets.docker import forget_engine_clients

    forget_engine_clients()  # each rollout logs in afresh, as each `tfrollout` process does
    saved = {k: os.environ.get(k) for k in ENGINE_VARS}
    os.environ.update(env)
    try:
        return one_target("docker", tmp, dirs, image)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    out = parse_out(__doc__.splitlines()[0])
    image = docker_image()
    from tests.support.sshd import SSHD

    if image is None or not Path(SSHD).is_file():
        write_results(out, "remote_engine", {"skipped": "needs a Docker engine, the offline image and sshd"})
        return
    from tests.docker.tls_proxy import TLSEngineProxy, make_certs
    from tests.support.sshd import SSHDaemon

    runs: dict[str, list[dict]] = {"tls": [], "ssh": []}
    with tempfile.TemporaryDirectory(prefix="tfr-bench-remote-") as d:
        tmp = Path(d)
        dirs = demo_versions(tmp)
        certs, tls_port = make_certs(tmp / "certs"), free_port()
        with TLSEngineProxy(certs, tls_port), SSHDaemon(tmp / "sshd") as sshd:
            home = sshd.client_home(tmp / "home", "tfr-engine")
            envs = {"tls": {"DOCKER_HOST": f"tcp://127.0.0.1:{tls_port}", "DOCKER_TLS_VERIFY": "1",
                            "DOCKER_CERT_PATH": str(certs)},
                    "ssh": {"DOCKER_HOST": "ssh://tfr-engine", "HOME": str(home), "DOCKER_TLS_VERIFY": ""}}
            for r in range(ROUNDS):
                for kind in (("tls", "ssh") if r % 2 == 0 else ("ssh", "tls")):
                    before = sshd.logins()
                    result = over(envs[kind], tmp / f"{kind}-{r}", dirs, image)
                    result["ssh_logins"] = sshd.logins() - before
                    runs[kind].append(result)
                    print(f"round {r} {kind}: first {result['first_deploy_s']} s, "
                          f"update {result['push_to_promoted_s']} s, logins {result['ssh_logins']}", flush=True)

    def median(kind: str, key: str) -> float:
        return round(statistics.median(run[key] for run in runs[kind]), 3)

    summary = {kind: {"first_deploy_s_median": median(kind, "first_deploy_s"),
                      "update_s_median": median(kind, "push_to_promoted_s")} for kind in runs}
    ratio = summary["ssh"]["update_s_median"] / summary["tls"]["update_s_median"]
    first_ratio = summary["ssh"]["first_deploy_s_median"] / summary["tls"]["first_deploy_s_median"]
    write_results(out, "remote_engine", {
        "rounds": ROUNDS, "runs": runs, "summary": summary,
        "ssh_over_tls_update": round(ratio, 3), "ssh_over_tls_first_deploy": round(first_ratio, 3),
        "ssh_logins_max_per_rollout_process": max(run["ssh_logins"] for run in runs["ssh"]),
        "goal": "ssh update <= 2x tls", "within_goal": ratio <= 2.0,
    })


if __name__ == "__main__":
    main()
