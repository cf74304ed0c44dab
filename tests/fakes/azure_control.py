"""A fake Microsoft Entra ID token endpoint and Azure Resource Manager on 127.0.0.1.

- `POST /{tenant}/oauth2/v2.0/token`: client credentials -> `{access_token, expires_in}`;
  AADSTS-shaped errors for an unknown client or a wrong secret.
- `GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/
  accounts/{account}/deployments?api-version=...`: the account's deployments, `page_size`
  per page with `nextLink`, for bearer tokens issued for the Resource Manager scope.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from tests.support.asgi_server import ThreadedServer, read_all

_TOKEN = re.compile(r"/([^/]+)/oauth2/v2\.0/token")
_DEPLOYMENTS = re.compile(
    r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
    r"Microsoft\.CognitiveServices/accounts/([^/]+)/deployments"
)
MANAGEMENT_SCOPE = "https://management.azure.com/.default"

Message = dict[str, Any]


def deployment(name: str, model: str, version: str = "2024-08-06") -> dict[str, Any]:
    return {
        "id": f"/deployments/{name}",
        "name": name,
        "sku": {"name": "Standard", "capacity": 10},
        "properties": {
            "model": {"format": "OpenAI", "name": model, "version": version},
            "provisioningState": "Succeeded",
        },
    }


class FakeAzureControl:
    def __init__(self, tenant: str, clients: dict[str, str], expires_in: int = 3600) -> None:
        self.tenant = tenant
        self.clients = dict(clients)  # client id -> secret
        self.expires_in = expires_in
        self.issued: list[tuple[str, str]] = []  # (scope, token)
        self.on_issue: Callable[[str, str], None] | None = None
        self.deployments: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.page_size = 2
        self.token_requests = 0
        self.down = False  # answer every request with 503
        self._http = ThreadedServer(self)

    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> FakeAzureControl:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> FakeAzureControl:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __call__(
        self, scope: Message, receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        status, payload = self._answer(scope, await read_all(receive))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(payload)})

    def _answer(self, scope: Message, body: bytes) -> tuple[int, Any]:
        if self.down:
            return 503, {"error": "temporarily_unavailable"}
        path = scope["path"]
        if (match := _TOKEN.fullmatch(path)) and scope["method"] == "POST":
            return self._token(match.group(1), dict(parse_qsl(body.decode())))
        if (match := _DEPLOYMENTS.fullmatch(path)) and scope["method"] == "GET":
            headers = dict(scope["headers"])
            token = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
            if (MANAGEMENT_SCOPE, token) not in self.issued:
                return 401, {
                    "error": {"code": "InvalidAuthenticationToken", "message": "bad token"}
                }
            query = dict(parse_qsl(scope["query_string"].decode()))
            sub, rg, name = match.groups()
            return self._page((sub, rg, name), int(query.get("skip", 0)))
        return 404, {"error": {"code": "NotFound", "message": path}}

    def _token(self, tenant: str, form: dict[str, str]) -> tuple[int, Any]:
        self.token_requests += 1
        if tenant != self.tenant:
            return 400, {
                "error": "invalid_request",
                "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
            }
        if form.get("grant_type") != "client_credentials" or "scope" not in form:
            return 400, {
                "error": "invalid_request",
                "error_description": "AADSTS900144: missing field.",
            }
        client = form.get("client_id", "")
        if client not in self.clients:
            return 400, {
                "error": "unauthorized_client",
                "error_description": f"AADSTS700016: Application '{client}' was not found.",
            }
        if not secrets.compare_digest(self.clients[client], form.get("client_secret", "")):
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
            }
        token = secrets.token_urlsafe(24)
        self.issued.append((form["scope"], token))
        if self.on_issue is not None:
            self.on_issue(form["scope"], token)
        return 200, {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": token}

    def _page(self, account: tuple[str, str, str], skip: int) -> tuple[int, Any]:
        items = self.deployments.get(account, [])
        page = items[skip : skip + self.page_size]
        result: dict[str, Any] = {"value": page}
        if skip + self.page_size < len(items):
            sub, rg, name = account
            result["nextLink"] = (
                f"{self.url}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft."
                f"CognitiveServices/accounts/{name}/deployments?api-version=2024-10-01"
                f"&skip={skip + self.page_size}"
            )
        return 200, result
