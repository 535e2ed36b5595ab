"""Two Docker engines, each in its own network namespace, joined into one swarm (test helper).

Topology (all created here, all removed again): a bridge on the host with 198.19.250.1/24,
one veth per namespace (198.19.250.11 and .12), one dockerd per namespace with its own
data root, exec root, pid file and unix socket. The namespaces have no route anywhere
else. dockerd is started through `nsenter --net=` (not `ip netns exec`, which remounts
/sys and hides the cgroup v1 mounts: dockerd then exits with "Devices cgroup isn't
mounted"). Every process is stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.storage.conftest import MOTO
from tests.support.procs import free_port, port_open, stop_process, wait_for

SUBNET = "198.19.250"
BRIDGE_IP = f"{SUBNET}.1"
SWARM_POOL = "198.18.192.0/18"  # overlay (ingress) subnets of this swarm, not the private ranges


@dataclass
class Cluster:
    clients: list[Any]
    addresses: list[str]
    store_endpoint: str
    procs: list[subprocess.Popen] = field(default_factory=list)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _engine(sock: str, timeout_s: float = 60.0) -> Any:
    import docker

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = docker.DockerClient(base_url=f"unix://{sock}", version="1.41", timeout=300)
            client.api.trust_env = False
            client.ping()
            return client
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _unmount_under(*roots: Path) -> None:
    """dockerd leaves its netns bind mount (<exec-root>/netns/default) behind: lazily unmount what is left."""
    prefixes = tuple(str(r) + "/" for r in roots)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefixes)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def _stop_dockerd(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def two_engine_swarm(tmp: Path, image: str, source: Any) -> Iterator[Cluster]:
    """A manager and a worker engine in separate namespaces, `image` loaded into both, and a moto
    S3 process on the bridge address (the replicas reach it from their namespaces)."""
    tag = uuid.uuid4().hex[:4]
    bridge = f"tfrb{tag}"
    with ExitStack() as stack:
        _ip("link", "add", bridge, "type", "bridge")
        stack.callback(lambda: subprocess.run(["ip", "link", "del", bridge], capture_output=True))
        _ip("addr", "add", f"{BRIDGE_IP}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        clients, addresses, procs = [], [], []
        saved = tmp / "image.tar"
        with open(saved, "wb") as f:
            for chunk in source.images.get(image).save(named=True):
                f.write(chunk)
        for i in (1, 2):
            ns, host_end, ns_end, address = f"tfr-{tag}-{i}", f"tfrh{tag}{i}", f"tfrc{tag}{i}", f"{SUBNET}.1{i}"
            _ip("netns", "add", ns)
            stack.callback(lambda ns=ns: subprocess.run(["ip", "netns", "del", ns], capture_output=True))
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            stack.callback(lambda h=host_end: subprocess.run(["ip", "link", "del", h], capture_output=True))
            _ip("link", "set", host_end, "master", bridge, "up")
            _ip("link", "set", ns_end, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            # each namespace has its own copy of the setting the README asks of swarm nodes
            subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "sysctl", "-qw", "net.ipv4.tcp_migrate_req=1"],
                           check=True, capture_output=True)
            run = Path(f"/run/tfr-{tag}-{i}")  # short: unix socket paths are limited to 108 bytes
            data = tmp / f"engine{i}"
            run.mkdir(parents=True)
            stack.callback(lambda d=data, r=run: (_unmount_under(d, r), shutil.rmtree(d, ignore_errors=True),
                                                  shutil.rmtree(r, ignore_errors=True)))
            log = open(tmp / f"dockerd{i}.log", "wb")  # noqa: SIM115 - closed by the stack
            stack.callback(log.close)
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns}", "dockerd", "--data-root", str(data), "--exec-root", str(run),
                 "--pidfile", str(run / "dockerd.pid"), "-H", f"unix://{run}/docker.sock", "--bridge=none",
                 "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                 "--default-address-pool", f"base=198.18.{64 * i}.0/18,size=24"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            stack.callback(_stop_dockerd, proc)
            procs.append(proc)
            client = _engine(str(run / "docker.sock"))
            stack.callback(client.close)
            with open(saved, "rb") as f:
                client.images.load(f)
            clients.append(client)
            addresses.append(address)
        saved.unlink()
        manager, worker = clients
        manager.swarm.init(advertise_addr=addresses[0], listen_addr=f"{addresses[0]}:2377",
                           default_addr_pool=[SWARM_POOL], subnet_size=24)
        stack.callback(lambda: manager.swarm.leave(force=True))
        worker.swarm.join(remote_addrs=[f"{addresses[0]}:2377"],
                          join_token=manager.swarm.attrs["JoinTokens"]["Worker"],
                          advertise_addr=addresses[1], listen_addr=f"{addresses[1]}:2377")
        stack.callback(lambda: worker.swarm.leave(force=True))
        assert wait_for(lambda: sum(n.attrs["Status"]["State"] == "ready" for n in manager.nodes.list()) == 2, 60)
        port = free_port()
        moto = subprocess.Popen([str(MOTO), "-H", BRIDGE_IP, "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(stop_process, moto)
        if not wait_for(lambda: port_open(port, BRIDGE_IP), 15):
            raise RuntimeError("moto_server did not start on the bridge address")
        yield Cluster(clients, addresses, f"http://{BRIDGE_IP}:{port}", [*procs, moto])
