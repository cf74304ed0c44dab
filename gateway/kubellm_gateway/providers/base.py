"""What every provider adapter is: open an upstream exchange for one operation.

An adapter turns a client's OpenAI-shaped request into its backend's request and
hands back an `Exchange` whose payloads are OpenAI-shaped again, so the proxy
pipeline above never knows which backend it talks to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from enum import StrEnum
from typing import Any, ClassVar

from ..resources import LLMProviderSpec

# Headers the gateway sends on to the upstream: x-request-id, and traceparent when traced.
Headers = Mapping[str, str]


class Operation(StrEnum):
    chat = "chat"
    completions = "completions"
    embeddings = "embeddings"
    messages = "messages"  # Anthropic's Messages API


PATHS = {
    Operation.chat: "/chat/completions",
    Operation.completions: "/completions",
    Operation.embeddings: "/embeddings",
}


class FailureReason(StrEnum):
    connect = "connect"
    timeout = "timeout"
    status = "status"
    protocol = "protocol"
    credentials = "credentials"  # the provider's own credentials were refused (Entra ID)


class UpstreamFailure(Exception):
    """An attempt that failed before any byte reached the client."""

    def __init__(
        self,
        reason: FailureReason,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error: dict[str, Any] | None = None,
        final: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.error = error  # the upstream's own error object, when it sent one
        # This backend will answer the same until someone acts (a spend limit reached):
        # never retried, though other backends may still be tried.
        self.final = final

    @property
    def retryable(self) -> bool:
        if self.status is None:
            return True
        return self.status in (408, 429) or self.status >= 500

    @property
    def metric_reason(self) -> str:
        if self.status is None:
            return self.reason.value
        return "429" if self.status == 429 else ("5xx" if self.status >= 500 else "4xx")


class Exchange(ABC):
    """An upstream response that answered with success."""

    @abstractmethod
    async def read(self) -> bytes:
        """The whole JSON body (non-streaming requests)."""

    @abstractmethod
    def batches(self) -> AsyncIterator[list[bytes]]:
        """SSE `data` payloads, batched as they arrive, `[DONE]` included."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the upstream connection (closing it if the body was not read)."""


class Provider(ABC):
    """One LLMProvider resource made live. Shared by every snapshot that routes to it."""

    # The operations `open` takes. Anthropic clients reach a provider without
    # `messages` through translation to chat, in the pipeline.
    operations: ClassVar[frozenset[Operation]] = frozenset(
        {Operation.chat, Operation.completions, Operation.embeddings}
    )

    def __init__(self, name: str, spec: LLMProviderSpec) -> None:
        self.name = name  # namespace/name: the `provider` metric label
        self.spec = spec
        self.inflight = 0
        self.retired = False

    @abstractmethod
    async def open(
        self, op: Operation, body: dict[str, Any], model: str, stream: bool, forward: Headers
    ) -> Exchange:
        """Send the request; return once the upstream answered success (else raise)."""

    async def aclose(self) -> None:  # noqa: B027 - providers without connections keep none
        """Close pooled connections."""

    def __repr__(self) -> str:
        # Never the credentials: providers end up in logs and tracebacks.
        return f"<{type(self).__name__} {self.name}>"
