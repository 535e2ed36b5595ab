"""The admin API's guards (issue 11, item 3): which reload configs are accepted, where
their base paths may point, and who may call ModelService at all.

* A reload must be a non-empty ModelConfigList that passes every check before any
  model changes (atomic): an empty request would otherwise unload everything.
* Base paths in a reload must lie under an allowed root (--model_base_path_prefix,
  default: the parents of the startup base paths) after normalisation: `..` and, for
  local paths, symlinks are resolved first. A SavedModel is code the server runs, so
  pointing a label at an arbitrary path is arbitrary file read (or worse).
* --admin_token_file: ModelService RPCs need `authorization: Bearer <token>`,
  compared in constant time. PredictionService and the read-only REST API stay open.
See THREAT_MODEL.md for what this does and does not protect against.
"""

from __future__ import annotations

import hmac
import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

import grpc

from .errors import invalid_argument

FLAG = "--model_base_path_prefix"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"
# TF Serving's model_service_impl answers a config without model_config_list with this
UNSUPPORTED_CONFIG = ("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                      "Only ModelConfigList is currently supported")


# What a base path may be besides a local one: the schemes TensorFlow's file systems open. A
# path is a URL only when it *starts* with one of these; anything else is a local path and is
# resolved as one (a directory named `a:` made `<root>/a://b/../..` look like a URL whose `..`
# stayed inside a fake bucket, while the loader opened it locally, outside the root).
URL_SCHEMES = frozenset({"gs", "s3", "hdfs", "viewfs", "az", "ram"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(path: str) -> str | None:
    """The URL scheme a path starts with (lower case), or None for a plain path."""
    match = _SCHEME.match(path)
    return match.group(1).lower() if match else None


def _is_url(path: str) -> bool:
    return scheme_of(path) in URL_SCHEMES


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def normalise(path: str) -> str:
    """Local: absolute, `..` and symlinks resolved. URL: `..`/`.` segments collapsed
    (a `..` that would climb above the bucket is kept, so it matches no root)."""
    if _is_url(path):
        scheme, _, rest = path.partition("://")
        bucket, _, key = rest.partition("/")
        key = posixpath.normpath("/" + key) if key else "/"
        return f"{scheme}://{bucket}{key.rstrip('/') or ''}"
    return os.path.realpath(_local(path))


def parse_roots(text: str) -> list[str]:
    """`--model_base_path_prefix` → normalised roots; relative entries are refused."""
    roots = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not (_is_url(item) or os.path.isabs(_local(item))):
            raise SystemExit(f"{FLAG}: {item!r} is neither an absolute path nor a URL prefix")
        roots.append(normalise(item))
    return roots


def default_roots(base_paths: Iterable[str]) -> list[str]:
    """Without the flag: the parent directory of each startup base path."""
    roots: list[str] = []
    for base in base_paths:
        if not base:
            continue
        if _is_url(base):
            parent = normalise(base).rsplit("/", 1)[0]
            if "://" in parent and parent.split("://", 1)[1]:  # keep at least the bucket
                roots.append(parent)
        elif os.path.isabs(_local(base)):
            roots.append(str(Path(normalise(base)).parent))
    return sorted(set(roots))


def inside(path: str, root: str) -> bool:
    if path == root:
        return True
    return path.startswith(root.rstrip("/") + "/")


class ReloadGuard:
    """Validates a HandleReloadConfigRequest's config completely, before it is applied."""

    def __init__(self, roots: list[str]):
        self.roots = roots

    def check(self, config) -> None:
        if config.WhichOneof("config") != "model_config_list":
            raise invalid_argument(UNSUPPORTED_CONFIG)
        entries = list(config.model_config_list.config)
        if not entries:
            raise invalid_argument(
                "Refusing a ModelConfigList with no models: it would unload every model. "
                "List the models to serve (this server's deviation from TF Serving, which applies it)")
        seen: set[str] = set()
        for c in entries:
            if c.name in seen:
                raise invalid_argument(f"Illegal to list model {c.name} multiple times in config list")
            seen.add(c.name)
            self._check_path(c.name, c.base_path)

    def _check_path(self, name: str, base_path: str) -> None:
        if not base_path:
            raise invalid_argument(f"ModelConfig for model {name} has an empty base_path")
        scheme = scheme_of(base_path)
        if scheme not in (None, "file") and scheme not in URL_SCHEMES:
            raise invalid_argument(
                f"base_path {base_path} of model {name}: scheme {scheme!r} is not one this server opens "
                f"({', '.join(sorted(URL_SCHEMES))}, file:// or an absolute local path)")
        if not (_is_url(base_path) or os.path.isabs(_local(base_path))):
            raise invalid_argument(
                f"Expected model {name} to have an absolute path or URI; got base_path()={base_path}")
        if not self.roots:
            raise invalid_argument(
                f"base_path {base_path} of model {name} refused: no allowed roots "
                f"(start the server with {FLAG}=ROOT[,ROOT...])")
        resolved = normalise(base_path)
        if not any(inside(resolved, root) for root in self.roots):
            raise invalid_argument(
                f"base_path {base_path} of model {name} (resolved: {resolved}) is outside the "
                f"allowed roots {','.join(self.roots)} ({FLAG})")


def read_token(path: str) -> str:
    """The admin token, or exit with one line: an unreadable or empty file fails closed."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"--admin_token_file={path}: cannot read it ({exc.__class__.__name__}: "
                         f"{getattr(exc, 'strerror', None) or exc})") from None
    if not token:
        raise SystemExit(f"--admin_token_file={path}: the file is empty; refusing to start without a token")
    return token


def _unauthenticated(message: str):
    def refuse(_request_iterator, context):
        # a stream handler: gRPC does not read the request before calling it
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
    return grpc.stream_unary_rpc_method_handler(refuse)


_MISSING = _unauthenticated("ModelService requires metadata 'authorization: Bearer <token>' "
                            "(--admin_token_file)")
_WRONG = _unauthenticated("Invalid admin token")


class AdminAuth(grpc.ServerInterceptor):
    """Every ModelService RPC needs the bearer token; other services pass through."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        if not handler_call_details.method.startswith(MODEL_SERVICE):
            return continuation(handler_call_details)
        given = [v for k, v in handler_call_details.invocation_metadata or () if k == "authorization"]
        if not given:
            return _MISSING
        value = given[-1].encode() if isinstance(given[-1], str) else bytes(given[-1])
        if len(given) != 1 or not hmac.compare_digest(value, self._expected):
            return _WRONG
        return continuation(handler_call_details)
