"""S3 GETs for the replicas, signed here with SigV4: no boto3 in a serving image, and none needed
for a handful of body-less GETs. The URL and signature parts are pure (checked against botocore)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .common import AgentError

CHUNK = 1024 * 1024
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


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
        """Stream `key` into `dest`; AgentError unless it has exactly the manifest's size and sha256."""
        digest, got = hashlib.sha256(), 0
        with self._open(key) as resp, open(dest, "wb") as out:
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                got += len(chunk)
                out.write(chunk)
        if got != size or digest.hexdigest() != sha256:
            raise AgentError(f"{key}: got {got} bytes sha256 {digest.hexdigest()[:16]}…, the manifest says "
                             f"{size} bytes sha256 {sha256[:16]}…")
