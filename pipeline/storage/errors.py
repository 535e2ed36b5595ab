"""Turn boto/botocore exceptions into one-line `StorageError`s with no secrets in them."""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.errors import StorageError
from pipeline.redaction import redact_text

CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "TokenRefreshRequired", "InvalidClientTokenId", "AuthorizationHeaderMalformed",
                    "InvalidSecurity", "UnrecognizedClientException"}
DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403", "AccountProblem"}
MISSING_BUCKET_CODES = {"NoSuchBucket"}


class MissingBucketError(StorageError):
    """The bucket does not exist (a writer may create it with --create-bucket)."""


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`pipeline.redaction.redact_text` on one line (S3 messages may span several)."""
    return " ".join(redact_text(text, secrets).split())


def translate(exc: BaseException, *, action: str, where: str, bucket: str, attempts: int,
              secrets: Iterable[str | None] = ()) -> StorageError:
    """Map an exception raised while talking to S3 to the message a user can act on."""
    from botocore import exceptions as bex

    secrets = list(secrets)
    if isinstance(exc, StorageError):
        return StorageError(redact(str(exc), secrets))
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        detail = str(err.get("Message") or "")
        if code in MISSING_BUCKET_CODES or (code == "404" and action.startswith("checking bucket")):
            return MissingBucketError(f"S3 bucket {bucket!r} does not exist at {where}; create it, or pass "
                                      f"--create-bucket (storage.create_bucket = true)")
        elif code in CREDENTIAL_CODES:
            msg = (f"S3 at {where} rejected the credentials ({code}) while {action}; check "
                   f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or storage.profile")
        elif code in DENIED_CODES:
            msg = (f"access denied to bucket {bucket!r} at {where} while {action} ({code}); "
                   f"check the bucket policy and the IAM permissions of these credentials")
        else:
            msg = f"S3 error while {action} at {where}: {code}{': ' + detail if detail else ''}"
        return StorageError(redact(msg, secrets))
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return StorageError(f"no usable AWS credentials for {where}; set AWS_ACCESS_KEY_ID / "
                            f"AWS_SECRET_ACCESS_KEY, AWS_PROFILE or storage.profile")
    if isinstance(exc, bex.ProfileNotFound):
        return StorageError(redact(f"AWS profile not found ({exc}); fix storage.profile / AWS_PROFILE", secrets))
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError | bex.ConnectionClosedError
                  | bex.ReadTimeoutError | bex.ConnectionError):
        return StorageError(f"cannot reach S3 endpoint {where} while {action} "
                            f"(gave up after {attempts} attempts: {type(exc).__name__})")
    if isinstance(exc, bex.BotoCoreError | OSError):
        return StorageError(redact(f"S3 failure while {action} at {where}: {type(exc).__name__}: {exc}", secrets))
    return StorageError(redact(f"S3 failure while {action} at {where}: {type(exc).__name__}: {exc}", secrets))
