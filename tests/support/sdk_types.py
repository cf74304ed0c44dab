"""Checking a JSON value against an official SDK's request types (TypedDicts).

pydantic validates TypedDicts, but lazily for `Iterable` fields and silently dropping keys
the types do not name; here the lazy parts are run and the result compared with the input,
so an unknown field, a misspelt block type or a coerced value is reported with its path.
"""

from __future__ import annotations

import collections.abc
from typing import Any

import pydantic


class _Invalid(Exception):
    """A validation error inside a lazily validated list, with the list's path."""

    def __init__(self, path: str, error: pydantic.ValidationError) -> None:
        super().__init__(path)
        self.path = path
        self.error = error


def _materialized(value: Any, path: str = "") -> Any:
    """A validated value with pydantic's lazy iterators run (which validates their items)."""
    if isinstance(value, dict):
        return {k: _materialized(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_materialized(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, collections.abc.Iterator):
        items: list[Any] = []
        while True:
            try:
                item = next(value)
            except StopIteration:
                return items
            except pydantic.ValidationError as exc:
                raise _Invalid(path, exc) from None
            items.append(_materialized(item, f"{path}[{len(items)}]"))
    return value


def _differences(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Where validation lost or changed something: fields the types do not describe."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        out = [f"{path}.{k}".lstrip(".") + " is not a known field" for k in sent.keys() - kept]
        for key in sent.keys() & kept.keys():
            out += _differences(sent[key], kept[key], f"{path}.{key}")
        return out
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        return [
            difference
            for i, (a, b) in enumerate(zip(sent, kept, strict=True))
            for difference in _differences(a, b, f"{path}[{i}]")
        ]
    return [] if sent == kept else [f"{path.lstrip('.')}: {sent!r} became {kept!r}"]


def problems(adapter: pydantic.TypeAdapter[Any], value: Any) -> list[str]:
    """Why `adapter`'s type refuses `value` (strictly: no coercion, no unknown keys)."""
    try:
        kept = _materialized(adapter.validate_python(value, strict=True))
    except pydantic.ValidationError as exc:
        return _messages("", exc)
    except _Invalid as invalid:
        return _messages(invalid.path.lstrip("."), invalid.error)
    return _differences(value, kept)


def _messages(path: str, error: pydantic.ValidationError) -> list[str]:
    # A union reports every member's complaint; the first few say enough.
    return [
        f"{path}{''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in e['loc'])}"
        f": {e['msg']}".lstrip(".")
        for e in error.errors()[:3]
    ]
