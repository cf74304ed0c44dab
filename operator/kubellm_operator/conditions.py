"""Conditions: what the operator concludes about an object, and how status records it.

Every kind gets the same three condition types (and LLMProviders that discover Azure
deployments a fourth, Discovered). A verdict is computed from scratch on each
reconciliation (pure data in, pure data out); `merge` keeps lastTransitionTime stable while
a condition's status holds, and `transitions` tells which changes deserve an Event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

ACCEPTED: Final = "Accepted"
RESOLVED_REFS: Final = "ResolvedRefs"
READY: Final = "Ready"
# Only on LLMProviders with spec.azure.discovery: how the last listing of deployments went.
DISCOVERED: Final = "Discovered"
TYPES: Final = (ACCEPTED, RESOLVED_REFS, READY, DISCOVERED)
# The API server's (and the status model's) bound on a condition message.
MAX_MESSAGE: Final = 32768

# Reasons. True conditions carry their type's name as the reason, as Gateway API does.
INVALID_SPEC: Final = "InvalidSpec"
DUPLICATE_MODEL: Final = "DuplicateModel"
DUPLICATE_ALIAS: Final = "DuplicateAlias"
PROVIDER_NOT_FOUND: Final = "ProviderNotFound"
PROVIDER_NOT_READY: Final = "ProviderNotReady"
SECRET_NOT_FOUND: Final = "SecretNotFound"  # noqa: S105
SECRET_KEY_MISSING: Final = "SecretKeyMissing"  # noqa: S105
SECRET_CONFLICT: Final = "SecretConflict"  # noqa: S105
API_KEY_NOT_FOUND: Final = "APIKeyNotFound"
EXPIRED: Final = "Expired"
DISABLED: Final = "Disabled"
CREDENTIALS_REJECTED: Final = "CredentialsRejected"
DISCOVERY_FAILED: Final = "DiscoveryFailed"
PENDING: Final = "Pending"

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Verdict:
    """One condition as concluded: status, reason and a message for people."""

    status: Status
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "True"


def holds(type_: str, message: str) -> Verdict:
    return Verdict("True", type_, message)


def fails(reason: str, message: str) -> Verdict:
    return Verdict("False", reason, message)


def unknown(reason: str, message: str) -> Verdict:
    return Verdict("Unknown", reason, message)


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    previous: Sequence[Mapping[str, Any]],
    verdicts: Mapping[str, Verdict],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """The conditions to write: one per verdict, in TYPES order."""
    before = {c.get("type"): c for c in previous}
    merged = []
    for type_ in (t for t in TYPES if t in verdicts):
        verdict = verdicts[type_]
        old = before.get(type_)
        unchanged = old is not None and old.get("status") == verdict.status
        merged.append(
            {
                "type": type_,
                "status": verdict.status,
                "reason": verdict.reason,
                "message": verdict.message[:MAX_MESSAGE],
                "lastTransitionTime": (
                    old.get("lastTransitionTime") if unchanged and old else timestamp(now)
                ),
                "observedGeneration": generation,
            }
        )
    return merged


def same(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    """Equal as far as a reader cares (lastTransitionTime aside)."""

    def strip(conditions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]

    return strip(a) == strip(b)


def transitions(
    previous: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions whose status or reason changed: each is worth an Event. A first
    evaluation is one Event, about Ready, rather than one per condition."""
    if not previous:
        return [c for c in current if c["type"] == READY]
    before = {c.get("type"): (c.get("status"), c.get("reason")) for c in previous}
    return [c for c in current if before.get(c["type"]) != (c["status"], c["reason"])]
