"""API-key authentication: `Authorization: Bearer <key>`, Azure-style `api-key: <key>` or
Anthropic-style `x-api-key: <key>`."""

from __future__ import annotations

import hashlib
import hmac
import time

from ..asgi import Scope
from ..errors import APIError, unauthorized
from ..routing import Principal, Snapshot


def presented_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return str(token.strip().decode("latin-1"))
            return None
        if name in (b"api-key", b"x-api-key") and value.strip():
            return str(value.strip().decode("latin-1"))
    return None


def authenticate(scope: Scope, snapshot: Snapshot) -> Principal:
    key = presented_key(scope)
    if key is None:
        raise unauthorized(
            "Missing API key: send `Authorization: Bearer <key>` "
            "(or `api-key: <key>`, or `x-api-key: <key>`)."
        )
    digest = hashlib.sha256(key.encode("latin-1")).digest()
    entry = snapshot.keys.get(digest)
    # The lookup is by digest, so it reveals nothing about the key; the explicit
    # constant-time comparison keeps that true whatever the table becomes.
    if entry is None or not hmac.compare_digest(entry.digest, digest):
        raise invalid_key()
    if entry.disabled or (entry.expires_at is not None and time.time() >= entry.expires_at):
        raise invalid_key()
    return entry.principal


def invalid_key() -> APIError:
    # One answer for unknown, disabled and expired keys: nothing to probe.
    return unauthorized("Incorrect, expired or disabled API key.")
