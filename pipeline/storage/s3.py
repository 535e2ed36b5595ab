"""S3 store (AWS, MinIO, moto, any S3-compatible endpoint) through boto3.

Uploads go through s3transfer's TransferManager (multipart above the configured
threshold, parts in parallel, many files in flight at once). Every object carries
its sha256 in user metadata (`x-amz-meta-sha256`), which makes resume a HEAD per
file instead of a re-download, and is also sent as an S3 checksum when configured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import ClientError
from s3transfer.subscribers import BaseSubscriber

from pipeline.config import StorageConfig
from pipeline.errors import StorageError
from pipeline.storage.base import ObjectInfo, OnBytes, UploadItem
from pipeline.storage.errors import MissingBucketError, redact, translate
from pipeline.storage.store import Store
from pipeline.storage.uri import StoreURI

T = TypeVar("T")
SHA_META = "sha256"


class _Progress(BaseSubscriber):
    """Forward s3transfer's byte counts (may be negative on a retried part)."""

    def __init__(self, on_bytes: OnBytes) -> None:
        self._on_bytes = on_bytes

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._on_bytes(bytes_transferred)


def botocore_config(cfg: StorageConfig) -> Config:
    """Bounded retries with exponential backoff ("standard" mode) and short connect timeouts."""
    return Config(region_name=cfg.region, s3=s3_options(cfg),
                  retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
                  connect_timeout=cfg.connect_timeout_s, read_timeout=cfg.read_timeout_s,
                  max_pool_connections=max(10, cfg.max_concurrency + 2),
                  request_checksum_calculation="when_required" if cfg.checksum_algorithm == "none"
                  else "when_supported")


def s3_options(cfg: StorageConfig) -> dict[str, Any]:
    """botocore's `s3` options: addressing style, and whether request bodies are SHA256-signed.

    botocore signs bodies only over plain HTTP; over HTTPS a body that carries a checksum goes
    UNSIGNED-PAYLOAD. By default we do the same over HTTP whenever a transport checksum is
    sent: the body is still checked (CRC32/SHA256 header) and its sha256 is verified on pull,
    and one full SHA256 pass over every byte is saved.
    """
    options: dict[str, Any] = {"addressing_style": cfg.addressing_style}
    sign = cfg.sign_payload
    if sign is None and cfg.checksum_algorithm != "none":
        sign = False
    if sign is not None:
        options["payload_signing_enabled"] = sign
    return options


class S3Store(Store):
    """One bucket + key prefix."""

    def __init__(self, location: StoreURI, cfg: StorageConfig, client: Any | None = None) -> None:
        self.location = location
        self.cfg = cfg
        self.bucket = location.bucket
        self.where = redact(cfg.endpoint_url) if cfg.endpoint_url else f"AWS S3 ({cfg.region or 'default region'})"
        self._secrets: list[str | None] = []
        self.client = client or self._make_client()
        self.transfer = TransferConfig(multipart_threshold=cfg.multipart_threshold,
                                       multipart_chunksize=cfg.multipart_chunksize,
                                       max_concurrency=cfg.max_concurrency, use_threads=True)

    def _make_client(self) -> Any:
        try:
            session = boto3.Session(profile_name=self.cfg.profile) if self.cfg.profile else boto3.Session()
            creds = session.get_credentials()
            if creds is not None:
                frozen = creds.get_frozen_credentials()
                self._secrets = [frozen.access_key, frozen.secret_key, frozen.token]
            region = self.cfg.region or session.region_name or "us-east-1"
            self.region = region
            return session.client("s3", endpoint_url=self.cfg.endpoint_url, region_name=region,
                                  config=botocore_config(self.cfg))
        except Exception as exc:  # noqa: BLE001 - profile/endpoint errors become one line
            raise self._err(exc, "creating the S3 client") from None

    def _err(self, exc: BaseException, action: str) -> StorageError:
        return translate(exc, action=action, where=self.where, bucket=self.bucket,
                         attempts=self.cfg.max_attempts, secrets=self._secrets)

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated to one line, secrets removed
            raise self._err(exc, action) from None

    def _key(self, key: str) -> str:
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.location.prefix) + 1:] if self.location.prefix else full

    # ---------------------------------------------------------------- primitives
    def ensure_ready(self, *, create: bool) -> None:
        try:
            self._call(f"checking bucket {self.bucket!r}",
                       lambda: self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1))
            return
        except MissingBucketError:
            if not create:
                raise
        region = getattr(self, "region", "us-east-1")
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self._call(f"creating bucket {self.bucket!r}", lambda: self.client.create_bucket(**kwargs))

    def list_objects(self, prefix: str = "") -> dict[str, ObjectInfo]:
        def go() -> dict[str, ObjectInfo]:
            out: dict[str, ObjectInfo] = {}
            full_prefix = (f"{self.location.prefix}/" if self.location.prefix else "") + prefix
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    rel = self._rel(obj["Key"])
                    out[rel] = ObjectInfo(rel, int(obj["Size"]), obj["LastModified"].timestamp(),
                                          token=obj.get("ETag"))
            return out

        return self._call(f"listing {self.location.join(prefix)}", go)

    def list_for_write(self, prefix: str, *, create: bool) -> dict[str, ObjectInfo]:
        """One LIST answers both "does the bucket exist" and "what is already there"."""
        try:
            return self.list_objects(prefix)
        except MissingBucketError:
            if not create:
                raise
        self.ensure_ready(create=True)
        return {}

    def sha256_of(self, key: str) -> str | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise self._err(exc, f"reading {self.location.join(key)}") from None
        except Exception as exc:  # noqa: BLE001
            raise self._err(exc, f"reading {self.location.join(key)}") from None
        return head.get("Metadata", {}).get(SHA_META)

    def upload(self, batches: Sequence[Sequence[UploadItem]], on_bytes: OnBytes) -> None:
        """A batch's items all in flight at once, batches in order, one transfer manager
        (its thread pools are started once); the first failure cancels the rest."""
        extra_base: dict[str, Any] = {}
        if self.cfg.checksum_algorithm != "none":
            extra_base["ChecksumAlgorithm"] = self.cfg.checksum_algorithm
        try:
            # The context manager cancels in-flight parts when one fails (and aborts their
            # multipart uploads); `shutdown(cancel=True)` is broken in s3transfer 0.19.
            with create_transfer_manager(self.client, self.transfer) as manager:
                for batch in batches:
                    futures = [manager.upload(str(item.local), self.bucket, self._key(item.key),
                                              extra_args={**extra_base, "Metadata": {SHA_META: item.sha256}},
                                              subscribers=[_Progress(on_bytes)]) for item in batch]
                    for future in futures:
                        future.result()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one line, secrets removed
            raise self._err(exc, "uploading") from None

    def download(self, items: Sequence[tuple[str, Path]], on_bytes: OnBytes) -> None:
        """Every file in flight at once (ranged GETs for large ones); the first failure cancels the rest."""
        waiting_for = ""  # names the failed object in the error
        try:
            with create_transfer_manager(self.client, self.transfer) as manager:
                futures = [(key, manager.download(self.bucket, self._key(key), str(dest),
                                                  subscribers=[_Progress(on_bytes)])) for key, dest in items]
                for key, future in futures:
                    waiting_for = key
                    future.result()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._err(exc, f"downloading {self.location.join(waiting_for)}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(f"writing {self.location.join(key)}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType="application/json"))

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        def go() -> tuple[bytes, str] | None:
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in {"NoSuchKey", "404"}:
                    return None
                raise
            return resp["Body"].read(), str(resp["ETag"])
        return self._call(f"reading {self.location.join(key)}", go)

    def replace_if(self, key: str, data: bytes, token: str) -> str | None:
        return self._conditional_put(key, data, IfMatch=token)

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> str | None:
        """PUT with If-None-Match / If-Match (S3 conditional writes; MinIO and moto have them too)."""
        def go() -> str | None:
            try:
                resp = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                              ContentType="application/json", **condition)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code"))
                if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}:
                    return None  # someone else's write won
                if code in {"NotImplemented", "501"}:
                    raise StorageError(f"{self.where} does not support conditional writes ({code}), which the "
                                       f"push lock needs; upgrade the store or set storage.push_lock = false"
                                       ) from None
                raise
            return str(resp["ETag"])
        return self._call(f"writing {self.location.join(key)}", go)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            resp = self._call("deleting objects", partial(
                self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}))
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise StorageError(f"deleting {first.get('Key')} at {self.where} failed: {first.get('Code')}")

    def abort_stale_uploads(self, older_than: float, keep_prefixes: Sequence[str] = ()) -> int:
        keep = tuple(self._key(p) for p in keep_prefixes)

        def go() -> int:
            aborted = 0
            prefix = f"{self.location.prefix}/" if self.location.prefix else ""
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                 Prefix=prefix)
            for page in pages:
                for up in page.get("Uploads", []):
                    if up["Initiated"].timestamp() < older_than and not up["Key"].startswith(keep):
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"],
                                                           UploadId=up["UploadId"])
                        aborted += 1
            return aborted

        return self._call("aborting stale multipart uploads", go)
