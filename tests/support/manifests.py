"""Builders for the manifests tests feed the gateway (dicts, dumped as YAML)."""

from __future__ import annotations

from typing import Any

import yaml

KUBELLM = "kubellm.io/v1alpha1"


def dump(*objects: dict[str, Any] | list[dict[str, Any]]) -> str:
    flat: list[dict[str, Any]] = []
    for obj in objects:
        flat.extend(obj if isinstance(obj, list) else [obj])
    return yaml.safe_dump_all(flat, sort_keys=False)


def _meta(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return meta


def secret(name: str, **values: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(name), "stringData": values}


def provider(name: str, type: str = "OpenAI", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": KUBELLM,
        "kind": "LLMProvider",
        "metadata": _meta(name),
        "spec": {"type": type, **spec},
    }


def openai_provider(name: str, base_url: str, key: str, **spec: Any) -> list[dict[str, Any]]:
    """An OpenAI-type provider and the Secret holding its upstream key."""
    ref = {"name": f"{name}-upstream", "key": "apiKey"}
    return [
        secret(f"{name}-upstream", apiKey=key),
        provider(name, "OpenAI", baseURL=base_url, apiKeySecretRef=ref, **spec),
    ]


def anthropic_provider(name: str, base_url: str, key: str, **spec: Any) -> list[dict[str, Any]]:
    """An Anthropic-type provider and the Secret holding its upstream key."""
    ref = {"name": f"{name}-upstream", "key": "apiKey"}
    return [
        secret(f"{name}-upstream", apiKey=key),
        provider(name, "Anthropic", baseURL=base_url, apiKeySecretRef=ref, **spec),
    ]


def model(
    name: str,
    backends: list[dict[str, Any]],
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": KUBELLM,
        "kind": "LLMModel",
        "metadata": _meta(name, labels),
        "spec": {"backends": backends, **spec},
    }


def backend(provider: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, **extra}


def api_key(name: str, key: str, **spec: Any) -> list[dict[str, Any]]:
    """An APIKey and the Secret holding its key (file mode)."""
    return [
        secret(f"{name}-key", apiKey=key),
        {
            "apiVersion": KUBELLM,
            "kind": "APIKey",
            "metadata": _meta(name),
            "spec": {"secretName": f"{name}-key", **spec},
        },
    ]


def policy(name: str, subjects: list[tuple[str, str]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": KUBELLM,
        "kind": "AccessPolicy",
        "metadata": _meta(name),
        "spec": {"subjects": [{"kind": k, "name": n} for k, n in subjects], **spec},
    }
