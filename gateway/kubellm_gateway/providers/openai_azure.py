"""OpenAI clients to Azure OpenAI: deployment URLs, `api-key`, stream normalisation."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import orjson

from ..resources import LLMProviderSpec
from .base import PATHS, Exchange, FailureReason, Headers, Operation, UpstreamFailure
from .entra import COGNITIVE_SERVICES_SCOPE, ClientCredentials, EntraError, EntraTokenSource
from .http import EventFilter, HTTPProvider
from .openai_openai import with_usage_requested

DEFAULT_API_VERSION = "2024-10-21"
_EMPTY_CHOICES = re.compile(rb'"choices":\s*\[\s*\]')


class AzureStreamNormalizer:
    """Drops Azure's choice-less filter chunks, keeping their filter results.

    Azure opens streams with `{"id":"","choices":[],"prompt_filter_results":[...]}`
    and may send more choice-less chunks; clients that read `choices[0]` crash on
    them. Their `prompt_filter_results` move onto the next chunk that has choices.
    The usage chunk (choice-less by design) passes.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: list[Any] = []

    def __call__(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for payload in events:
            if _EMPTY_CHOICES.search(payload):
                chunk = orjson.loads(payload)
                if chunk.get("usage") is None:
                    self._pending.extend(chunk.get("prompt_filter_results") or ())
                    continue
            elif self._pending and payload != b"[DONE]":
                chunk = orjson.loads(payload)
                chunk["prompt_filter_results"] = self._pending
                self._pending = []
                out.append(orjson.dumps(chunk))
                continue
            out.append(payload)
        return out


class AzureOpenAIProvider(HTTPProvider):
    """`api-key` auth, or Entra ID bearer tokens when the spec has `azure.entraID`."""

    def __init__(self, name: str, spec: LLMProviderSpec, secret: str | None) -> None:
        entra = spec.azure.entraID if spec.azure is not None else None
        super().__init__(name, spec, None if entra is not None else secret)
        self._entra: EntraTokenSource | None = None
        if entra is not None:
            credentials = ClientCredentials(
                entra.tenantID, entra.clientID, secret or "", entra.authorityHost
            )
            self._entra = EntraTokenSource(credentials, COGNITIVE_SERVICES_SCOPE, self.session)

    async def open(
        self, op: Operation, body: dict[str, Any], model: str, stream: bool, forward: Headers
    ) -> Exchange:
        if self._entra is not None:
            try:
                token = await self._entra.token()
            except EntraError as exc:
                raise UpstreamFailure(FailureReason.credentials, str(exc)) from None
            forward = {**forward, "authorization": f"Bearer {token}"}
        return await super().open(op, body, model, stream, forward)

    def url(self, op: Operation, model: str) -> str:
        azure = self.spec.azure
        version = azure.apiVersion if azure is not None else DEFAULT_API_VERSION
        return (
            f"{self.spec.base_url}/openai/deployments/{quote(model, safe='')}{PATHS[op]}"
            f"?api-version={quote(version, safe='')}"
        )

    def headers(self, forward: Headers) -> dict[str, str]:
        headers = {"content-type": "application/json", **forward}
        if self._api_key:  # None with Entra ID: open() put the bearer token in `forward`
            headers["api-key"] = self._api_key
        return headers

    def payload(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> bytes:
        # Azure routes on the deployment in the URL; `model` in the body is ignored there.
        return orjson.dumps(with_usage_requested(body, model, stream))

    def event_filter(self) -> EventFilter:
        return AzureStreamNormalizer()
