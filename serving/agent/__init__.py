"""Replica agent: runs inside every swarm replica (shipped as one swarm config object, `bundle.py`).

Why an agent in the replica and not a volume filled by the pipeline: swarm may start a
replica on any node at any time (a killed task, a drained node), long after the
pipeline has exited, so each replica must be able to get its model by itself. The
service spec pins the version *and* the sha256 of the store manifest that was
committed when the rollout started; the agent fetches that manifest, checks its
hash, fetches every file it lists and checks size + sha256, and only then starts the
model server. A replica that cannot prove it has the committed bytes never starts,
so it never binds the shared port and never reports healthy.

One job per module: `s3` (URLs, SigV4, GETs), `manifest` (the store manifest's file list, shared
with `pipeline.storage.manifest`), `fetch` (one version, staged and proven), `status` (the
GetModelStatus codec and call), `healthcheck` (the status file and the health check), `draining`
(leaving the shared port before SIGTERM), `replica` (serve mode), `sidecar` (fetch mode for images
without Python), `cli` (the four modes), `bundle` (the single zip file shipped to the replicas;
pipeline side, not shipped).

Standard library only, because the program runs in images we do not control (the sidecar's fetch
image may be a bare `python:3.12-slim`) and must start fast: no `pipeline` import, no boto3, no
numpy, no TensorFlow (importing the TF Serving protos pulls all of TensorFlow, ≈10 s cold in the
image — far too slow for a health check), so S3 GETs are signed with SigV4 here and
ModelService.GetModelStatus is encoded by hand. Modules import each other relatively (`from .x
import y`) and nothing else outside the standard library — with one named exception: serve mode
asks its own server over gRPC, so `status.version_state` imports `grpc` inside the function (our
serving image has grpcio; the health, fetch and fetched modes never reach that import).
tests/unit/test_agent_stdlib.py keeps it so: it parses every import in serving/agent/ (ast) and
fails on any top-level module that is neither in `sys.stdlib_module_names` nor this package, other
than that one function-local `grpc` import; tests/unit/test_agent_bundle.py runs the built bundle
with `python -I -S` (no site-packages), and importing the bundle imports every module here.
"""

from .common import AgentError, read_optional
from .draining import MIGRATE_REQ, drain, migrates_queued_connections, stop_listening
from .fetch import fetch_version
from .healthcheck import HEALTH_MAX_AGE_S, health, health_verdict, write_health
from .manifest import MANIFEST_FORMAT, MANIFEST_NAME, UnsafePath, check_relpath, parse_manifest
from .replica import serve
from .s3 import EMPTY_SHA, Fetcher, object_url, sigv4_headers, store_key
from .sidecar import STALE_STAGING_S, fetch_all, fetched, prune, version_dirs
from .status import AVAILABLE, END, STATUS_METHOD, parse_status, status_request, version_state

__all__ = [
    "AVAILABLE", "EMPTY_SHA", "END", "HEALTH_MAX_AGE_S", "MANIFEST_FORMAT", "MANIFEST_NAME", "MIGRATE_REQ",
    "STALE_STAGING_S", "STATUS_METHOD", "AgentError", "Fetcher", "UnsafePath", "check_relpath", "drain",
    "fetch_all", "fetch_version", "fetched", "health", "health_verdict", "migrates_queued_connections",
    "object_url", "parse_manifest", "parse_status", "prune", "read_optional", "serve", "sigv4_headers",
    "status_request", "stop_listening", "store_key", "version_dirs", "version_state", "write_health",
]
