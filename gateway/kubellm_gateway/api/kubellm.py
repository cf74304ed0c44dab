"""kubellm's own API: `GET /kubellm/v1/whoami`.

Tells a caller who the gateway thinks it is, which models it may use and where
it stands against each limit. It shows only the caller's own principal and usage,
and never key material: an API key appears by its resource name.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..asgi import json_response
from ..auth import authenticate
from ..limits import Limit, Limiter
from ..routing import Principal, Snapshot
from ..runtime import Runtime

if TYPE_CHECKING:
    from ..auth.oidc import OIDCVerifier


def _iso(timestamp: float) -> str:
    # Rounded, not truncated: now + resets_in lands a float hair before a window's end,
    # and a day window must read 00:00:00, not 23:59:59.
    moment = datetime.fromtimestamp(round(timestamp), UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _amount(limit: Limit, value: float) -> float | int:
    # Requests and tokens are whole: a rolling count drains continuously, show what is used.
    return round(value, 6) if limit.counts_cost else math.ceil(value - 1e-9)


async def whoami(snapshot: Snapshot, principal: Principal, limiter: Limiter) -> dict[str, Any]:
    """The whoami document for `principal`."""
    now = limiter.now()
    limiting = limiter.limiting(snapshot, principal)
    rules = [(models, rule) for models, policy_rules in limiting for rule in policy_rules]
    # One backend call for all; None when its backend is unreachable right now.
    usages = await limiter.usage(principal.user, [rule for _, rule in rules])
    limits: list[dict[str, Any]] = []
    for i, (models, rule) in enumerate(rules):
        entry: dict[str, Any] = {
            "policy": rule.policy,
            "models": sorted(models),
            "limit": rule.limit.value,
            "value": _amount(rule.limit, rule.amount),
            "used": None,
            "remaining": None,
            "resets_at": None,
        }
        if usages is not None:
            used = _amount(rule.limit, usages[i].used)
            entry.update(
                used=used,
                remaining=_amount(rule.limit, max(0.0, rule.amount - used)),
                resets_at=_iso(now + usages[i].resets_in),
            )
        limits.append(entry)
    return {
        "object": "kubellm.whoami",
        "user": principal.user,
        "groups": sorted(principal.groups),
        "auth": principal.auth,
        "api_key": principal.api_key,  # the APIKey's namespace/name, never the key
        "models": [m.id for m in snapshot.listed(principal)],
        "limits": limits,
    }


def router(runtime: Runtime, verifier: OIDCVerifier | None, limiter: Limiter) -> APIRouter:
    api = APIRouter()

    @api.get("/kubellm/v1/whoami")
    async def get_whoami(request: Request) -> Response:
        snapshot = runtime.snapshot
        principal = await authenticate(request.scope, snapshot, verifier)
        return json_response(await whoami(snapshot, principal, limiter))

    return api
