"""Reading an upstream's failure: how long it asks us to wait, and its own error object."""

import email.utils
import time
from typing import Any

import pytest

from kubellm_gateway.providers.http import retry_after_seconds, upstream_error_object


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": " 3 "}, 3.0),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "-10"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # garbage ms: fall back
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
    ],
)
def test_retry_after_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


@pytest.mark.parametrize("value", ["soon", "", "5s", "tomorrow at noon", "nan", "inf", "Infinity"])
def test_retry_after_garbage_is_none(value: str) -> None:
    assert retry_after_seconds({"retry-after": value}) is None


def test_retry_after_huge_ms_is_not_infinite() -> None:
    result = retry_after_seconds({"retry-after-ms": "1e400"})
    assert result is None or result < float("inf")


def test_retry_after_http_date_in_the_future() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    result = retry_after_seconds({"retry-after": when})
    assert result is not None
    assert 28 <= result <= 30


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b'{"error":{"message":"slow down","type":"rate_limit_error","code":"rl"}}',
            {"message": "slow down", "type": "rate_limit_error", "code": "rl"},
        ),
        (b'{"error":"model overloaded"}', {"message": "model overloaded"}),
        (b'{"detail":"not found"}', None),
        (b'{"error":null}', None),
        (b'{"error":42}', None),
        (b'["error"]', None),
        (b"null", None),
        (b"<html>502 Bad Gateway</html>", None),
        (b"", None),
        (b"\xff\xfe", None),
    ],
)
def test_upstream_error_object(body: bytes, error: dict[str, Any] | None) -> None:
    assert upstream_error_object(body) == error
