"""The one error type the gateway raises towards clients, in OpenAI's envelope.

Every error a client sees is an `APIError`; `body()` renders OpenAI's
`{"error": {"message", "type", "param", "code"}}` with all four keys present.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson


class APIError(Exception):
    """An error response: HTTP status, OpenAI error type and code, optional headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def payload(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param, code="invalid_request")


def unauthorized(message: str) -> APIError:
    # RFC 6750: a 401 names the scheme, so clients and proxies know what to send.
    return APIError(
        401,
        message,
        code="invalid_api_key",
        headers={"www-authenticate": 'Bearer realm="kubellm", error="invalid_token"'},
    )


def model_not_found(model: str) -> APIError:
    # One message for "does not exist" and "not yours": nothing can be enumerated.
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def request_too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"Request body exceeds the limit of {limit} bytes.",
        code="request_too_large",
    )


def no_backend(model: str) -> APIError:
    return APIError(
        503,
        f"The model `{model}` has no available backend right now.",
        type="server_error",
        code="no_healthy_backend",
    )
