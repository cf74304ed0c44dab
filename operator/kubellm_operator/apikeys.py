"""API keys: minting, the Secret that holds one, and when a new key is due.

A key is `sk-kl-` and 32 random bytes (urlsafe base64). It exists in exactly one place, the
Secret `spec.secretName`, owned by the APIKey so that deleting the APIKey deletes the key.
Everything else (status, gateway pods, logs) sees only its SHA-256 and first characters.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubellm_gateway.resources import API_KEY_SECRET_LABEL, API_VERSION

KEY_PREFIX: Final = "sk-kl-"
SECRET_KEY: Final = "apiKey"  # noqa: S105 (a name, not a secret)
ROTATE_ANNOTATION: Final = "kubellm.io/rotate"
SHOWN_CHARACTERS: Final = len(KEY_PREFIX) + 4


def mint() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:SHOWN_CHARACTERS]


@dataclass(frozen=True)
class SecretInfo:
    """What the operator keeps of a Secret: never a value, only what it needs to decide."""

    keys: frozenset[str]
    owner_uids: frozenset[str]
    api_key_hash: str | None  # of the apiKey entry, for Secrets an APIKey owns


def secret_info(body: Mapping[str, Any]) -> SecretInfo:
    meta = body.get("metadata") or {}
    data = body.get("data") or {}
    plain = body.get("stringData") or {}
    owners = frozenset(
        ref.get("uid", "")
        for ref in meta.get("ownerReferences") or []
        if ref.get("kind") == "APIKey" and ref.get("apiVersion") == API_VERSION
    )
    digest = None
    if owners:
        try:
            value = plain.get(SECRET_KEY) or base64.b64decode(data.get(SECRET_KEY, "")).decode()
        except (ValueError, UnicodeDecodeError):
            value = ""
        digest = key_hash(value) if value else None
    return SecretInfo(frozenset(data) | frozenset(plain), owners, digest)


def owner_reference(apikey: Mapping[str, Any]) -> dict[str, Any]:
    meta = apikey["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "APIKey",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def secret_body(apikey: Mapping[str, Any], key: str) -> dict[str, Any]:
    meta = apikey["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": apikey["spec"]["secretName"],
            "namespace": meta["namespace"],
            "labels": {API_KEY_SECRET_LABEL: meta["name"]},
            "ownerReferences": [owner_reference(apikey)],
        },
        "type": "Opaque",
        "data": {SECRET_KEY: base64.b64encode(key.encode()).decode()},
    }


def rotation_requested(apikey: Mapping[str, Any]) -> str | None:
    """The rotate annotation's value if it asks for a key not minted yet."""
    wanted = ((apikey.get("metadata") or {}).get("annotations") or {}).get(ROTATE_ANNOTATION)
    done = (apikey.get("status") or {}).get("rotation")
    return wanted if wanted and wanted != done else None


def why_mint(apikey: Mapping[str, Any], secret: SecretInfo | None) -> str | None:
    """Why a new key is due, for the Event; None while the current key stands."""
    uid = apikey["metadata"].get("uid", "")
    status = apikey.get("status") or {}
    if secret is None:
        return (
            "the Secret does not exist" if not status.get("keyHash") else "the Secret was deleted"
        )
    if uid not in secret.owner_uids:
        return None  # not ours: never overwritten (reported as SecretConflict)
    if rotation_requested(apikey):
        return f"rotation was requested ({ROTATE_ANNOTATION})"
    if secret.api_key_hash is None:
        return f"the Secret has no {SECRET_KEY!r} entry"
    # A different key in our Secret (edited by hand) is reported, not replaced: only an
    # explicit rotation or a missing key may change what clients hold.
    return None
