"""The Docker engine connection: unix://, tcp:// (TLS) or ssh:// from config or the DOCKER_*
environment, one cached client per engine per process.

Apart from the Docker target because the swarm target drives the same engines with the
same cached client, and because the settings, the ssh port and the hints are pure and
tested without an engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import RolloutConfig
from pipeline.errors import RolloutError

API_VERSION = "1.41"


def engine_settings(cfg: RolloutConfig, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """base_url + TLS files from config, else DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH (pure)."""
    env = os.environ if environ is None else environ
    base_url = cfg.docker_host or env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    verify = cfg.tls_verify if cfg.tls_verify is not None else env.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
    cert_dir = cfg.cert_path or (Path(env["DOCKER_CERT_PATH"]) if env.get("DOCKER_CERT_PATH") else
                                 Path.home() / ".docker")
    tls = None
    if base_url.startswith("tcp://") and verify:
        tls = {"ca": str(Path(cert_dir) / "ca.pem"), "cert": str(Path(cert_dir) / "cert.pem"),
               "key": str(Path(cert_dir) / "key.pem")}
    return {"base_url": base_url, "tls": tls}


def unreachable_hint(base_url: str, tls: bool, error: str) -> str:
    """What to do about a failed engine connection, when the error says enough to tell (pure)."""
    if base_url.startswith("ssh://"):
        if "not found in known_hosts" in error:
            return (" — the host key is unknown and is never accepted automatically: check its fingerprint, "
                    "then add it to ~/.ssh/known_hosts (ssh-keyscan -p PORT HOST)")
        if "Authentication failed" in error or "No authentication methods" in error:
            return (" — no key was accepted: load it into ssh-agent or name it as IdentityFile for this host "
                    "in ~/.ssh/config")
        if "docker" in error and ("not found" in error or "No such file" in error):
            return " — the remote user cannot run `docker system dial-stdio` (docker CLI on its PATH)"
    if base_url.startswith("tcp://") and not tls and (
            "HTTPS server" in error or "RemoteDisconnected" in error or "Connection aborted" in error):
        return (" — if this port speaks TLS (2376), set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH "
                "(or rollout.tls_verify / rollout.cert_path)")
    return ""


def ssh_url_with_config_port(base_url: str, ssh_config: str) -> str:
    """`ssh://alias` with the Port that ssh_config (the text of ~/.ssh/config) gives the alias.

    The docker SDK writes ":22" into every ssh:// URL without a port before it reads
    ~/.ssh/config, so a `Port` there would never apply (with paramiko or the ssh binary);
    an explicit port in the URL wins, as with ssh itself.
    """
    from urllib.parse import urlsplit

    import paramiko

    parts = urlsplit(base_url)
    if parts.scheme != "ssh" or parts.port is not None or not parts.hostname:
        return base_url
    port = paramiko.SSHConfig.from_text(ssh_config).lookup(parts.hostname).get("port")
    if not port or port == "22":
        return base_url
    return f"ssh://{parts.netloc}:{port}{parts.path}"


_CLIENTS: dict[tuple[str, str, str], Any] = {}


def _still_connected(client: Any) -> bool:
    """A cached client is reused while its ssh session (if any) is up; requests reconnects plain sockets."""
    adapter = client.api.adapters.get("http+docker://ssh")
    ssh = getattr(adapter, "ssh_client", None)
    if ssh is None:
        return True
    transport = ssh.get_transport()
    return transport is not None and transport.is_active()


def engine_client(cfg: RolloutConfig) -> Any:
    """A DockerClient for unix://, tcp:// (TLS) or ssh:// engines; RolloutError when unreachable.

    One client per engine per process: over ssh:// with paramiko a client is one login, and
    every call after it is a channel on that session (a deploy talks to the engine from
    several stages; a login per stage or per connection costs seconds and sshd's
    MaxStartups). A cached client whose ssh session dropped is replaced.
    """
    import docker

    settings = engine_settings(cfg)
    base_url = settings["base_url"]
    ssh_config = Path.home() / ".ssh" / "config"
    if base_url.startswith("ssh://") and ssh_config.is_file():
        base_url = ssh_url_with_config_port(base_url, ssh_config.read_text(errors="replace"))
    key = (base_url, json.dumps(settings["tls"], sort_keys=True), cfg.ssh_transport)
    cached = _CLIENTS.get(key)
    if cached is not None and _still_connected(cached):
        return cached
    tls = None
    if settings["tls"]:
        t = settings["tls"]
        for f in t.values():
            if not Path(f).is_file():
                raise RolloutError(f"Docker TLS file missing: {f} (set DOCKER_CERT_PATH or rollout.cert_path)")
        tls = docker.tls.TLSConfig(client_cert=(t["cert"], t["key"]), ca_cert=t["ca"], verify=t["ca"])
    try:
        # A fixed API version: "auto" would call the engine inside the constructor, before
        # trust_env can be turned off (1.41 = engine 20.10; newer engines accept it).
        client = docker.DockerClient(base_url=base_url, tls=tls, timeout=120, version=API_VERSION,
                                     use_ssh_client=base_url.startswith("ssh://") and cfg.ssh_transport == "openssh")
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would replace our CA for every request: ignore the env.
        client.api.trust_env = False
        _share_one_ssh_pool(client)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - docker/requests/ssh errors: one clear line
        error = f"{type(exc).__name__}: {exc}"
        raise RolloutError(f"Docker engine at {base_url} unreachable: {error}"
                           f"{unreachable_hint(base_url, tls is not None, error)}") from None
    stale = _CLIENTS.pop(key, None)
    if stale is not None:
        _close_quietly(stale)
    _CLIENTS[key] = client
    return client


def _share_one_ssh_pool(client: Any) -> None:
    """Reuse ssh channels across API paths, and keep the session alive.

    The SDK's paramiko adapter keys its connection pools by the full request URL and keeps
    one pool: every call to a different path closes the last pool's channel and opens a
    new one, which runs `docker system dial-stdio` on the remote side again (≈ 0.1-0.3 s
    each; docker/docker-py#2966). The URL only ever selects a pool there, so all calls
    share one.
    """
    adapter = client.api.adapters.get("http+docker://ssh")
    ssh = getattr(adapter, "ssh_client", None)
    if ssh is None:  # the ssh binary (rollout.ssh_transport = "openssh"): a process per connection anyway
        return
    pooled = adapter.get_connection
    adapter.get_connection = lambda url, proxies=None: pooled("http+docker://ssh/", proxies)
    transport = ssh.get_transport()
    if transport is not None:
        transport.set_keepalive(30)  # NAT and firewalls drop idle sessions during long trainings


def forget_engine_clients() -> None:
    """Close every cached engine client: the next call logs in again, as a new process would."""
    while _CLIENTS:
        _close_quietly(_CLIENTS.popitem()[1])


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001,S110 - a dead session's close may fail; nothing is left to release
        pass


def created_unless_taken(create: Callable[[], Any]) -> bool:
    """Run `create()` for an object with an engine-unique name: True once made, False when the
    name is taken (HTTP 409) — how the rollout locks are taken; any other refusal is an error."""
    import docker

    try:
        create()
        return True
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise RolloutError(f"cannot take the rollout lock: {exc.explanation or exc}") from None
        return False
