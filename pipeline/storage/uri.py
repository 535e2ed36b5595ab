"""Parse store URIs: `s3://bucket/prefix` and `file:///abs` / `file://relative`.

Kept pure so every odd spelling a user may type is unit-testable without I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import StorageError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class StoreURI:
    """A parsed store location: either a local directory or an S3 bucket + key prefix."""

    scheme: str  # "file" | "s3"
    bucket: str = ""
    prefix: str = ""  # S3 key prefix, no leading/trailing slash
    path: Path | None = None  # local root (absolute once resolved)

    def join(self, *parts: str) -> str:
        """The URI of a key under this store (for messages and reports)."""
        tail = "/".join(p.strip("/") for p in parts if p)
        if self.scheme == "file":
            assert self.path is not None
            return (self.path / tail).as_uri() if tail else self.path.as_uri()
        base = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        return f"{base}/{tail}" if tail else base


def parse_uri(uri: str, cwd: Path | None = None) -> StoreURI:
    """`file://store` is relative to `cwd`; `file:///x` is absolute; `s3://b/p` names a bucket."""
    text = uri.strip()
    if text.startswith("s3://"):
        rest = text[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if "@" in bucket:  # never echo it: the part before '@' is a credential
            raise StorageError("storage.uri: credentials in the URI (s3://KEY:SECRET@bucket/…) are not read; "
                               "name the bucket alone and give credentials through AWS_ACCESS_KEY_ID / "
                               "AWS_SECRET_ACCESS_KEY, storage.profile or the instance role")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise StorageError(f"storage.uri {uri!r}: invalid bucket name {bucket!r}")
        return StoreURI("s3", bucket=bucket, prefix=prefix.strip("/"))
    if text.startswith("file://"):
        rest = text[len("file://"):]
        if not rest:
            raise StorageError(f"storage.uri {uri!r}: missing path (e.g. file://store or file:///srv/models)")
        path = Path(rest)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        return StoreURI("file", path=path.resolve())
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise StorageError(f"storage.uri {uri!r}: unsupported scheme {scheme!r} (use s3:// or file://)")
    raise StorageError(f"storage.uri {uri!r}: expected s3://bucket/prefix or file://path")
