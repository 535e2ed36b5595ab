"""Replica agent: runs inside every swarm replica (shipped as a swarm config object).

Why an agent in the replica and not a volume filled by the pipeline: swarm may start a
replica on any node at any time (a killed task, a drained node), long after the
pipeline has exited, so each replica must be able to get its model by itself. The
service spec pins the version *and* the sha256 of the store manifest that was
committed when the rollout started; the agent fetches that manifest, checks its
hash, fetches every file it lists and checks size + sha256, and only then starts the
model server. A replica that cannot prove it has the committed bytes never starts,
so it never binds the shared port and never reports healthy.

Kept to the standard library plus `grpc` (already in the serving image): no boto3,
no `pipeline` import, no TensorFlow import (importing the TF Serving protos pulls all
of TensorFlow, ≈10 s cold in the image — far too slow for a health check). S3 GETs
are signed with SigV4 here; ModelService.GetModelStatus is encoded by hand.

Draining on SIGTERM (swarm stops a replica: update, rollback, scale-down): a gRPC server
that stops while clients keep sending on their connections races them — an RPC sent
just before the client reads the GOAWAY is answered CANCELLED/UNAVAILABLE (a plain
`stop(grace)` lost 5 of ≈9k requests in a bare grpcio test here, and 6-16 per v1->v2
rollout of 3 replicas). So the agent first takes the server's listening socket out of
the port's SO_REUSEPORT group (a dup of it through `pidfd_getfd`, then
`shutdown(SHUT_RD)`: new connections go to the siblings), waits until the server's
connections are gone (the server runs with `grpc.max_connection_age_ms`, so each
connection gets a graceful GOAWAY within that age and the client reconnects to a
sibling), and only then forwards SIGTERM. `pidfd_getfd` needs CAP_SYS_PTRACE in the
container (the spec adds it); without it the agent logs that and stops at once.

Sidecar mode (`rollout.swarm_fetch = "sidecar"`, for serving images without Python such as the
official tensorflow/serving): the same fetch + verify runs in a separate global service, one task
per node, into a named volume the serving replicas mount read-only (`swarm_spec`, sidecar part).
Each version is staged in a hidden, non-numeric directory private to this process and renamed to
`<model>/<version>` only after every file matched the manifest, so a server polling the directory
never sees half a version, and two fetchers of one node (start-first: old and new task) never mix
their bytes. Versions the spec no longer lists are removed once the listed ones are complete.

    python agent.py serve SPEC -- SERVER ARGS...   fetch, verify, run the server, supervise it
    python agent.py health SPEC                    exit 0 iff the intended version was AVAILABLE just now
    python agent.py fetch FETCHSPEC                fetch + verify every listed version, prune, then idle
    python agent.py fetched FETCHSPEC              exit 0 iff every listed version directory is complete
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

MANIFEST_NAME = "tfrollout.manifest.json"
MANIFEST_FORMAT = "tfrollout.store/1"
AVAILABLE, END = 30, 50
STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
CHUNK = 1024 * 1024
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


class AgentError(Exception):
    """A replica that cannot get (or prove) its model: the container exits non-zero."""


# ----------------------------------------------------------------------------- S3 (pure)
def object_url(store: dict[str, Any], key: str) -> str:
    """Path-style URL on an explicit endpoint (MinIO, moto), else AWS virtual-hosted style."""
    quoted = urllib.parse.quote(key, safe="/~")
    endpoint = (store.get("endpoint") or "").rstrip("/")
    if endpoint and store.get("addressing") != "virtual":
        return f"{endpoint}/{store['bucket']}/{quoted}"
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        return f"{scheme}://{store['bucket']}.{host}/{quoted}"
    return f"https://{store['bucket']}.s3.{store.get('region') or 'us-east-1'}.amazonaws.com/{quoted}"


def store_key(store: dict[str, Any], model: str, version: int, rel: str) -> str:
    prefix = (store.get("prefix") or "").strip("/")
    return "/".join(p for p in (prefix, model, str(version), rel) if p)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(url: str, region: str, creds: dict[str, str], now: datetime.datetime) -> dict[str, str]:
    """Headers that sign a body-less GET for S3 (AWS Signature Version 4)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {"host": parts.netloc, "x-amz-content-sha256": EMPTY_SHA, "x-amz-date": amz_date}
    if creds.get("session_token"):
        headers["x-amz-security-token"] = creds["session_token"]
    names = sorted(headers)
    query = "&".join(sorted(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    canonical = "\n".join(["GET", parts.path or "/", query, *(f"{n}:{headers[n].strip()}" for n in names), "",
                           ";".join(names), EMPTY_SHA])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + creds["secret_key"]).encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds['access_key']}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return headers


def check_relpath(path: str) -> str:
    """A manifest path must stay inside the version directory."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise AgentError(f"manifest lists an unsafe path {path!r}")
    return path


def parse_manifest(data: bytes, model: str, version: int) -> list[tuple[str, int, str]]:
    """[(path, size, sha256)] of a store manifest that names this model and version."""
    try:
        raw = json.loads(data)
        if raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown format {raw.get('format')!r}")
        if raw["model_name"] != model or int(raw["version"]) != version:
            raise ValueError(f"it describes {raw['model_name']} version {raw['version']}")
        files = [(check_relpath(str(f["path"])), int(f["size"]), str(f["sha256"])) for f in raw["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise AgentError(f"unreadable store manifest for {model} version {version}: {exc}") from None
    if not files:
        raise AgentError(f"store manifest for {model} version {version} lists no files")
    return files


# ----------------------------------------------------------------------------- S3 (I/O)
class Fetcher:
    """GETs objects of one store, signed when credentials are given, with a few retries."""

    def __init__(self, store: dict[str, Any], creds: dict[str, str] | None, attempts: int = 5) -> None:
        self.store, self.creds, self.attempts = store, creds, attempts

    def _open(self, key: str) -> Any:
        url = object_url(self.store, key)
        for attempt in range(1, self.attempts + 1):
            headers = {}
            if self.creds:
                now = datetime.datetime.now(datetime.UTC)
                headers = sigv4_headers(url, self.store.get("region") or "us-east-1", self.creds, now)
                headers.pop("host")
            try:
                return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == self.attempts:
                    raise AgentError(f"GET {key}: HTTP {exc.code} {exc.reason}") from None
            except OSError as exc:
                if attempt == self.attempts:
                    raise AgentError(f"GET {key}: {exc}") from None
            time.sleep(min(0.25 * 2 ** attempt, 4.0))
        raise AgentError(f"GET {key}: no attempts left")

    def read(self, key: str) -> bytes:
        with self._open(key) as resp:
            return bytes(resp.read())

    def download(self, key: str, dest: str, size: int, sha256: str) -> None:
        digest, got = hashlib.sha256(), 0
        with self._open(key) as resp, open(dest, "wb") as out:
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                got += len(chunk)
                out.write(chunk)
        if got != size or digest.hexdigest() != sha256:
            raise AgentError(f"{key}: got {got} bytes sha256 {digest.hexdigest()[:16]}…, the manifest says "
                             f"{size} bytes sha256 {sha256[:16]}…")


def fetch_version(spec: dict[str, Any], creds: dict[str, str] | None) -> str:
    """Download the pinned version into <models_dir>/<model>/<version>, every byte verified."""
    model, version, store = spec["model"], int(spec["version"]), spec["store"]
    final = os.path.join(spec["models_dir"], model, str(version))
    if os.path.isdir(final):
        return final
    fetcher = Fetcher(store, creds)
    data = fetcher.read(store_key(store, model, version, MANIFEST_NAME))
    want = spec.get("manifest_sha256")
    if want and hashlib.sha256(data).hexdigest() != want:
        raise AgentError(f"store manifest of {model} version {version} changed since the rollout was planned "
                         f"(sha256 {hashlib.sha256(data).hexdigest()[:16]}… != {want[:16]}…)")
    # private to this process: a shared volume may have two fetchers of one version at once
    staging = os.path.join(spec["models_dir"], model, f".{version}.partial-{os.uname().nodename}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for rel, size, sha in parse_manifest(data, model, version):
            dest = os.path.join(staging, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            fetcher.download(store_key(store, model, version, rel), dest, size, sha)
        try:
            os.rename(staging, final)  # TF Serving never sees half a version
        except OSError:
            if not os.path.isdir(final):  # else another fetcher renamed its verified copy first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- protobuf (pure)
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def status_request(model: str, version: int) -> bytes:
    """GetModelStatusRequest{model_spec{name, version{value}}} on the wire."""
    version_msg = _varint(1 << 3) + _varint(version)  # Int64Value.value
    spec = _field(1, model.encode()) + _field(2, version_msg)
    return _field(1, spec)


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            out.append((number, value))
        elif wire == 2:
            n, i = _read_varint(data, i)
            out.append((number, data[i:i + n]))
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def parse_status(data: bytes) -> dict[int, tuple[int, str]]:
    """GetModelStatusResponse -> {version: (state number, error message)}."""
    rows: dict[int, tuple[int, str]] = {}
    for number, value in _fields(data):
        if number != 1 or not isinstance(value, bytes):
            continue
        version, state, message = 0, 0, ""
        for n, v in _fields(value):
            if n == 1 and isinstance(v, int):
                version = v
            elif n == 2 and isinstance(v, int):
                state = v
            elif n == 3 and isinstance(v, bytes):
                message = next((m.decode(errors="replace") for k, m in _fields(v)
                                if k == 2 and isinstance(m, bytes)), "")
        rows[version] = (state, message)
    return rows


# ----------------------------------------------------------------------------- status (I/O)
def version_state(spec: dict[str, Any], timeout_s: float) -> tuple[int, str]:
    """(state, error) of the intended version, asked over this replica's own UNIX socket
    (the TCP port is shared by every replica on the node, so it could answer for another one)."""
    import grpc

    token = _read(spec.get("token_file"))
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(f"unix:{spec['socket']}") as channel:
        call = channel.unary_unary(STATUS_METHOD)
        reply = call(status_request(spec["model"], int(spec["version"])), timeout=timeout_s, metadata=metadata)
    return parse_status(reply).get(int(spec["version"]), (0, "not reported"))


def _read(path: str | None) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip() or None


HEALTH_MAX_AGE_S = 5.0


def write_health(path: str, state: int, message: str, now: float) -> None:
    """The agent's last look at its own server, replaced atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"state": state, "message": message, "at": now}, f)
    os.replace(tmp, path)


def health_verdict(record: dict[str, Any] | None, now: float, max_age_s: float = HEALTH_MAX_AGE_S
                   ) -> tuple[bool, str]:
    """Healthy iff the agent saw the intended version AVAILABLE within `max_age_s` (pure)."""
    if record is None:
        return False, "no status yet"
    age = now - float(record.get("at", 0.0))
    if age > max_age_s:
        return False, f"last status is {age:.1f} s old"
    if record.get("state") != AVAILABLE:
        return False, f"state {record.get('state')} {record.get('message', '')}".rstrip()
    return True, "AVAILABLE"


def health(spec: dict[str, Any]) -> int:
    """The swarm health check. It reads the agent's status file (written every second from the
    server's own GetModelStatus) instead of asking the server itself: that costs a bare Python
    start (≈20 ms) instead of a grpc import (≈0.3 s CPU) per check and replica."""
    try:
        with open(spec["health_file"], encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError, KeyError):
        record = None
    ok, why = health_verdict(record, time.time())
    print(f"{'healthy' if ok else 'unhealthy'}: {spec['model']} version {spec['version']}: {why}")
    return 0 if ok else 1


# ----------------------------------------------------------------------------- drain (I/O)
PIDFD_GETFD = 438  # the same number on every Linux architecture with the unified syscall table


def _inet_sockets(port: int, state: str) -> set[str]:
    """Inodes of TCP sockets on local `port` in `state` ("0A" LISTEN, "01" ESTABLISHED)."""
    out: set[str] = set()
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[1].endswith(suffix) and cols[3] == state:
                out.add(cols[9])
    return out


def _fds_of(pid: int, inodes: set[str]) -> list[int]:
    fds = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            fds.append(int(name))
    return fds


def stop_listening(pid: int, port: int) -> int:
    """Take `pid`'s listeners on `port` out of the SO_REUSEPORT group; how many were closed."""
    import ctypes
    import socket

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    closed = 0
    try:
        for fd in _fds_of(pid, _inet_sockets(port, "0A")):
            dup = libc.syscall(PIDFD_GETFD, pidfd, fd, 0)
            if dup < 0:
                raise OSError(ctypes.get_errno(), f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
            with socket.socket(fileno=dup) as sock:
                sock.shutdown(socket.SHUT_RD)  # a listener leaves the group; its own accept loop just ends
            closed += 1
    finally:
        os.close(pidfd)
    return closed


MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def migrates_queued_connections(path: str = MIGRATE_REQ) -> bool | None:
    """net.ipv4.tcp_migrate_req (Linux >= 5.14) of this network namespace: when 1, connections
    the kernel already queued on a listener that leaves its SO_REUSEPORT group move to a
    sibling; when 0 they are reset (a client then sees UNAVAILABLE until it reconnects).
    None: the kernel has no such setting."""
    try:
        with open(path) as f:
            return f.read().strip() == "1"
    except OSError:
        return None


def drain(pid: int, port: int, timeout_s: float) -> str:
    """Stop new connections to this replica, then wait for its connections to be GOAWAY'd away."""
    migrate = migrates_queued_connections()
    try:
        closed = stop_listening(pid, port)
    except OSError as exc:
        return f"no drain ({exc}; the container needs CAP_SYS_PTRACE for pidfd_getfd)"
    deadline = time.monotonic() + timeout_s
    left = _fds_of(pid, _inet_sockets(port, "01"))
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _fds_of(pid, _inet_sockets(port, "01"))
    warning = "" if migrate else ("; net.ipv4.tcp_migrate_req is not 1 on this host: connections queued at "
                                  "the listener were reset, not moved to a sibling")
    return f"closed {closed} listener(s); {len(left)} connection(s) left after the drain{warning}"


def serve(spec: dict[str, Any], server_args: list[str]) -> int:
    """Fetch + verify, then run the server as a child: forward SIGTERM, and kill it as soon
    as the intended version fails to load (the server would otherwise keep the shared port
    open with nothing loaded, and take a share of new connections)."""
    creds = json.loads(_read(spec.get("credentials_file")) or "null")
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


# ----------------------------------------------------------------------------- sidecar fetch (I/O)
STALE_STAGING_S = 3600.0


def version_dirs(spec: dict[str, Any]) -> list[str]:
    """The complete-version directories a fetch spec wants (pure)."""
    return [os.path.join(spec["models_dir"], spec["model"], str(int(v["version"]))) for v in spec["versions"]]


def prune(model_dir: str, keep: set[int], now: float, stale_s: float = STALE_STAGING_S) -> list[str]:
    """Remove version directories not in `keep`, and staging directories a crashed fetcher left
    (older than `stale_s`: a live fetcher's are younger). Returns the names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(model_dir)
    except FileNotFoundError:
        return removed
    for name in sorted(names):
        path = os.path.join(model_dir, name)
        if name.isdigit() and int(name) not in keep:
            pass
        elif name.startswith(".") and ".partial" in name and now - os.path.getmtime(path) > stale_s:
            pass
        else:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
    return removed


def fetch_all(spec: dict[str, Any]) -> int:
    """The fetch service: every listed version fetched + verified into the volume, the rest pruned,
    then idle until stopped (files stay). Exits 3 on a version that cannot be proven: the task fails,
    so swarm rolls the fetch service back and the rollout never touches the serving service."""
    creds = json.loads(_read(spec.get("credentials_file")) or "null")
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    started = time.monotonic()
    for entry in spec["versions"]:
        one = {"model": spec["model"], "version": int(entry["version"]), "store": spec["store"],
               "models_dir": spec["models_dir"], "manifest_sha256": entry.get("manifest_sha256")}
        try:
            path = fetch_version(one, creds)
        except AgentError as exc:
            print(f"tfrollout-fetch: refusing to fetch: {exc}", flush=True)
            return 3
        print(f"tfrollout-fetch: {path} present and verified ({time.monotonic() - started:.2f} s)", flush=True)
    keep = {int(v["version"]) for v in spec["versions"]}
    removed = prune(os.path.join(spec["models_dir"], spec["model"]), keep, time.time())
    if removed:
        print(f"tfrollout-fetch: removed {', '.join(removed)}", flush=True)
    while not stop:
        time.sleep(0.5)
    return 0


def fetched(spec: dict[str, Any]) -> int:
    """The fetch service's health check: every listed version directory is there (they appear by rename)."""
    missing = [d for d in version_dirs(spec) if not os.path.isdir(d)]
    print(f"unhealthy: missing {', '.join(missing)}" if missing else "healthy: every version present")
    return 1 if missing else 0


def main(argv: list[str]) -> int:
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
