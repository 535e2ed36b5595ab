"""One secret masking for every output: error lines, `--json`, run records, progress notes,
`config check` (pure).

What is masked: the password part of a URL's user-info (`s3://KEY:SECRET@bucket` ->
`s3://KEY:***@bucket`; a user name alone stays, it is what a reader needs to debug),
`secret=…`-style pairs (signed URLs, botocore messages), and the values of credential
environment variables wherever they appear.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

_USERINFO_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@\s:]*):[^/@\s]*@", re.I)
_SECRETISH = re.compile(r"(?i)(aws_secret_access_key|aws_session_token|secret|password|passwd|token|signature|"
                        r"x-amz-security-token|x-amz-credential|credential)=([^\s&,;\"']+)")
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "TFROLLOUT_STORAGE__SECRET_ACCESS_KEY",
              "TFROLLOUT_STORAGE__SESSION_TOKEN")
MASK = "***"


def known_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """Credential values from the environment (long enough not to mask ordinary words)."""
    env = os.environ if environ is None else environ
    return [value for key in SECRET_ENV if len(value := env.get(key, "")) >= 8]


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with URL passwords, `secret=…` pairs and the given / environment credentials masked."""
    text = _USERINFO_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    text = _SECRETISH.sub(rf"\1={MASK}", text)
    for secret in [*secrets, *known_secrets()]:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def redacted(data: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A JSON-like structure with every string passed through `redact_text`."""
    secrets = list(secrets)
    if isinstance(data, dict):
        return {key: redacted(value, secrets) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redacted(value, secrets) for value in data]
    return redact_text(data, secrets) if isinstance(data, str) else data
