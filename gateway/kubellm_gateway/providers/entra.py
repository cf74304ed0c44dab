"""Microsoft Entra ID client-credentials tokens, for Azure inference and Resource Manager.

One `EntraTokenSource` per (tenant, client, secret, scope). Tokens are cached and
refreshed before they expire; concurrent callers share one refresh, and a failed
refresh keeps serving the current token while it is still valid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

log = logging.getLogger(__name__)

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
RESOURCE_MANAGER_SCOPE = "https://management.azure.com/.default"
# Refresh this long before expiry (or at half-life for short-lived tokens).
REFRESH_MARGIN = 300.0
REQUEST_TIMEOUT = 30.0


class EntraError(Exception):
    """The token endpoint refused the credentials or could not be reached."""


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    tenant_id: str
    client_id: str
    client_secret: str
    authority_host: str = "https://login.microsoftonline.com"

    def __repr__(self) -> str:  # never the secret, wherever this object is printed
        return f"ClientCredentials(tenant_id={self.tenant_id!r}, client_id={self.client_id!r})"


class EntraTokenSource:
    def __init__(
        self,
        credentials: ClientCredentials,
        scope: str,
        session: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials = credentials
        self._scope = scope
        self._session = session
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str:
        c = self._credentials
        return f"{c.authority_host.rstrip('/')}/{c.tenant_id}/oauth2/v2.0/token"

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token  # another caller refreshed while this one waited
            try:
                await self._refresh()
            except EntraError:
                if self._token is not None and self._clock() < self._expires_at:
                    log.warning("Entra ID token refresh failed; the current token is still valid")
                    return self._token
                raise
            assert self._token is not None
            return self._token

    async def _refresh(self) -> None:
        c = self._credentials
        form = {
            "grant_type": "client_credentials",
            "client_id": c.client_id,
            "client_secret": c.client_secret,
            "scope": self._scope,
        }
        started = self._clock()
        try:
            async with self._session().post(
                self.url, data=form, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
            ) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EntraError(
                f"Entra ID token endpoint {self.url}: {type(exc).__name__}: {exc}"
            ) from None
        if response.status != 200 or not isinstance(body, dict) or "access_token" not in body:
            detail = (
                body.get("error_description") or body.get("error")
                if isinstance(body, dict)
                else None
            )
            # AADSTS descriptions name the problem (bad secret, unknown client) without echoing it.
            raise EntraError(
                f"Entra ID refused the client credentials: {detail or response.status}"
            )
        lifetime = float(body.get("expires_in", 3600))
        self._token = str(body["access_token"])
        self._expires_at = started + lifetime
        self._refresh_at = started + max(lifetime - REFRESH_MARGIN, lifetime / 2)
