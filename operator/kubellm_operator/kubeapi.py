"""The operator's writes to the Kubernetes API (kopf does the watching), and the few reads
kopf's indices cannot answer.

The official client is synchronous; each call runs in a worker thread so that kopf's event
loop never blocks. Only merge patches are sent: they touch only the fields given.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any, Final

import kubernetes

from kubellm_gateway.resources import API_GROUP, PLURALS, VERSION

MERGE_PATCH: Final = "application/merge-patch+json"


def _version(obj: Any) -> str:
    return str(obj.metadata.resource_version)


class Conflict(Exception):
    """The object exists already."""


async def _unless_gone(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Run `call` in a worker thread; False if its object is gone (404)."""
    try:
        await asyncio.to_thread(call, *args, **kwargs)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


class Cluster:
    def __init__(self, config: kubernetes.client.Configuration) -> None:
        self._client = kubernetes.client.ApiClient(config)
        self._custom = kubernetes.client.CustomObjectsApi(self._client)
        self._core = kubernetes.client.CoreV1Api(self._client)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    async def patch_status(self, kind: str, namespace: str, name: str, status: Any) -> bool:
        """Merge `status` into the object's status; False if the object is gone."""
        return await _unless_gone(
            self._custom.patch_namespaced_custom_object_status,
            API_GROUP,
            VERSION,
            namespace,
            PLURALS[kind],
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    async def list_objects(
        self, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        listed: Any = await asyncio.to_thread(
            self._custom.list_namespaced_custom_object,
            API_GROUP,
            VERSION,
            namespace,
            PLURALS[kind],
            label_selector=label_selector,
        )
        items: list[dict[str, Any]] = listed["items"]
        return items

    async def create_object(self, body: dict[str, Any]) -> None:
        """Create a kubellm object; Conflict if one of that name exists."""
        meta = body["metadata"]
        try:
            await asyncio.to_thread(
                self._custom.create_namespaced_custom_object,
                API_GROUP,
                VERSION,
                meta["namespace"],
                PLURALS[body["kind"]],
                body,
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                raise Conflict(meta["name"]) from None
            raise

    async def patch_object(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> bool:
        """Merge `patch` in; False if the object is gone."""
        return await _unless_gone(
            self._custom.patch_namespaced_custom_object,
            API_GROUP,
            VERSION,
            namespace,
            PLURALS[kind],
            name,
            patch,
            _content_type=MERGE_PATCH,
        )

    async def delete_object(self, kind: str, namespace: str, name: str) -> bool:
        """Delete it; False if it was gone already."""
        return await _unless_gone(
            self._custom.delete_namespaced_custom_object,
            API_GROUP,
            VERSION,
            namespace,
            PLURALS[kind],
            name,
        )

    async def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One entry of a Secret, decoded; None if the Secret or the entry is missing.
        (The operator's Secret index deliberately holds no values.)"""
        try:
            secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        encoded = (secret.data or {}).get(key)
        return None if encoded is None else base64.b64decode(encoded).decode(errors="replace")

    async def create_secret(self, body: Any) -> str:
        """Create it; its resourceVersion."""
        try:
            created = await asyncio.to_thread(
                self._core.create_namespaced_secret, body["metadata"]["namespace"], body
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                raise Conflict(body["metadata"]["name"]) from None
            raise
        return _version(created)

    async def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> str:
        """Merge `patch` in; the resourceVersion it made."""
        patched = await asyncio.to_thread(
            self._core.patch_namespaced_secret, name, namespace, patch, _content_type=MERGE_PATCH
        )
        return _version(patched)

    async def ensure_peering(self, name: str, namespaces: tuple[str, ...]) -> None:
        """kopf peers through an object it never creates itself: make it if missing."""
        kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
        for namespace in namespaces or ("",):
            try:
                if namespace:
                    await asyncio.to_thread(
                        self._custom.create_namespaced_custom_object,
                        "kopf.dev",
                        "v1",
                        namespace,
                        "kopfpeerings",
                        body,
                    )
                else:
                    await asyncio.to_thread(
                        self._custom.create_cluster_custom_object,
                        "kopf.dev",
                        "v1",
                        "clusterkopfpeerings",
                        body,
                    )
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    raise
