"""A Kubernetes API on 127.0.0.1 for tests: kmock's emulator made realistic enough for kopf
and kubectl, plus helpers to run kopf against it.

There is no cluster here (see KUBERNETES-TESTING.md in the shared notes): kmock 0.8's
``KubernetesEmulator`` serves the API, after the fixes in ``Emulator`` below. kopf, kubectl,
the ``kubernetes`` client and kubellm's own code talk to it over real HTTP.

In a test (fixtures in tests/conftest.py)::

    def test_something(kube: KubeEmulator, kube_api: KubeAPI) -> None:
        kube.kubectl("apply", "-f", "deploy/examples/")       # kubectl, --validate=false added
        kube_api.create(secret_manifest)                      # or plain HTTP
        kube_api.wait("LLMModel", "gpt-4o", lambda o: ready(o))
        kube.kubeconfig(tmp_path / "kubeconfig")              # for a subprocess (the gateway)

    with run_kopf(kube.url, registry):                        # kopf in its own thread and loop
        ...

``kube.suspend()`` / ``kube.resume()`` take the API server away and bring it back on the
same port with its objects kept, to test reconnects; meanwhile ``kube.api_while_suspended()``
changes objects behind the clients' backs. ``kube.compact()`` is etcd's compaction: a watch
from any resourceVersion handed out before gets 410 Gone (one ERROR event, then the stream
ends), as a long outage leaves it, and its client has to list again. As a process, for
benchmarks or manual use: ``python -m tests.support.kube PORT`` (prints the URL, exits
promptly on SIGTERM).

Every request but kubectl's must carry ``Authorization: Bearer emulator`` (TOKEN; the
kubeconfigs and clients made here send it), else 401. The CRDs in helm/kubellm/crds/ are
registered at start (no schema checks: validate with the pydantic models or CEL tests
instead). Not emulated: RBAC, OpenAPI, admission, garbage collection of owned objects,
bookmarks; every patch is a JSON merge patch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Self

import aiohttp.web
import attrs
import httpx2
import jsonpatch
import jsonpointer
import kmock
import kopf
import yaml
from kmock._internal import dicts, dsl, enums, k8s, rendering  # kmock is pinned to 0.8

CRD_DIR = Path(__file__).resolve().parents[2] / "helm" / "kubellm" / "crds"
CRD_RESOURCE = "apiextensions.k8s.io/v1/customresourcedefinitions"
ALL_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}

# kind -> the API path of its collection (namespaced kinds: ``{ns}`` is filled in).
PATHS: Mapping[str, str] = {
    "LLMProvider": "/apis/kubellm.io/v1alpha1/namespaces/{ns}/llmproviders",
    "LLMModel": "/apis/kubellm.io/v1alpha1/namespaces/{ns}/llmmodels",
    "AccessPolicy": "/apis/kubellm.io/v1alpha1/namespaces/{ns}/accesspolicies",
    "APIKey": "/apis/kubellm.io/v1alpha1/namespaces/{ns}/apikeys",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "Event": "/api/v1/namespaces/{ns}/events",
    "Namespace": "/api/v1/namespaces",
    "CustomResourceDefinition": f"/apis/{CRD_RESOURCE}",
}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The bearer token every client must send (the kubeconfigs written here carry it): the
# emulator checks it as an API server checks credentials, so a login that sends none fails.
TOKEN = "emulator"


def _authorized(headers: Mapping[str, str]) -> bool:
    """Whether the request carries `Authorization: Bearer <TOKEN>` (the scheme in any case).
    kubectl is let through: client-go sends no bearer token over plain http, which is all
    the emulator serves (a real API server serves only https)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("user-agent", "").startswith("kubectl/"):
        return True
    scheme, _, token = lower.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token == TOKEN


def write_kubeconfig(url: str, path: Path, namespace: str = "default") -> Path:
    """A kubeconfig for the emulator at `url`, with its token, written to `path`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": TOKEN}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _conflict(message: str) -> k8s.KubernetesError:
    return k8s.KubernetesError(status=409, reason="Conflict", message=message)


_STALE = "the object has been modified; please apply your changes to the latest version"


def _selected(params: Mapping[str, str], obj: Mapping[str, Any]) -> bool:
    """Equality label selectors (k=v, k==v, k!=v, k, !k) and field selectors (by path)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    for term in filter(None, params.get("labelSelector", "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            ok = labels.get(key.strip()) == value.strip()
        elif term.startswith("!"):
            ok = term[1:].strip() not in labels
        else:
            ok = term.strip() in labels
        if not ok:
            return False
    for term in filter(None, params.get("fieldSelector", "").split(",")):
        negated = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        field: Any = obj
        for part in key.strip().split("."):  # metadata.name, involvedObject.kind, ...
            field = field.get(part) if isinstance(field, Mapping) else None
        if (field == value.strip()) == negated:
            return False
    return True


def _encode_string_data(secret: dict[str, Any]) -> None:
    """What the API server does with a Secret's stringData: merge it into data, base64."""
    plain = secret.pop("stringData", None) or {}
    if plain:
        data = secret.setdefault("data", {}) or {}
        data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in plain.items()})
        secret["data"] = data


def _resource_key(request: rendering.Request) -> str:
    r = request.resource
    assert r is not None
    return f"{r.group}/{r.version}/{r.plural}".lstrip("/")


def _wants_table(request: rendering.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


_PATH_STEP = re.compile(r'\.([^.\[]+)|\[(\d+)\]|\[\?\(@\.(\w+)=="([^"]*)"\)\]')


def _json_path(obj: Any, path: str) -> Any:
    """The JSONPath subset printer columns use: .a.b, [0], [?(@.field=="value")]."""
    values = [obj]
    for name, index, field, wanted in _PATH_STEP.findall(path):
        step: list[Any] = []
        for value in values:
            if name and isinstance(value, dict) and name in value:
                step.append(value[name])
            elif index and isinstance(value, list) and int(index) < len(value):
                step.append(value[int(index)])
            elif field and isinstance(value, list):
                step += [v for v in value if isinstance(v, dict) and v.get(field) == wanted]
        values = step
    return ",".join(str(v) for v in values) if values else None


def _age(timestamp: str) -> str:
    created = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int((datetime.datetime.now(datetime.UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _speed_up_request_matching() -> None:
    """kmock 0.8 answers `request in view` by re-filtering every recorded request: O(n) per
    request, so O(n^2) over a test (50 creates: 7.6 s). For plain filter chains membership is
    just the criteria match, which is what this checks; other views keep the exact path."""
    if getattr(dsl.View, "_kubellm_fast", False):
        return
    exact = dsl.View.__contains__

    def contains(self: dsl.View, item: Any) -> bool:
        if isinstance(item, rendering.Request):
            view: Any = self
            while True:
                if isinstance(view, dsl.Root):
                    return any(r is item for r in reversed(view._requests))
                if type(view) is dsl.Filter:
                    if not view.criteria(item):
                        return False
                    view = view._source
                elif type(view) in (dsl.Priority, dsl.Chained):
                    view = view._source
                else:
                    break
        return exact(self, item)

    dsl.View.__contains__ = contains  # type: ignore[method-assign]
    dsl.View._kubellm_fast = True  # type: ignore[attr-defined]


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with the fixes kopf and kubectl need (numbers as in the notes):
    stamped metadata (1), watches that lose nothing and honour resourceVersion/timeoutSeconds
    (2) with JSON content (4), List envelopes (3), 201 on create (5), the status subresource
    split and generation (6), PUT (7), clean discovery (8), selectors (9), bounded request
    history (10), namespaces discoverable (11), CRDs registering kinds (13), watches that end
    on close (14); also generateName, Secrets' stringData stored as data, and the Table
    form of lists (the CRDs' printer columns) that `kubectl get` asks for."""

    # kmock keeps every request for assertions; a window keeps matching cheap and memory flat.
    max_requests: int = 300
    _rv: int = attrs.field(default=0, init=False)
    _compacted: int = attrs.field(default=0, init=False)  # watches from before it get 410
    _closing: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _columns: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Ahead of kmock's own watch fallback: client-go (kubectl -w) decodes only JSON.
        json_type: Any = kmock.headers({"Content-Type": "application/json"})
        (self.fallback**1)[enums.action.WATCH] << json_type << self._serve_watch
        _speed_up_request_matching()
        self._register_builtins()

    # --- registration ---------------------------------------------------------------------

    def _register_builtins(self) -> None:
        # kopf's namespace observer waits (silently, for ever) until v1/namespaces is known.
        self.resources["v1/namespaces"] = kmock.ResourceInfo(
            kind="Namespace",
            singular="namespace",
            namespaced=False,
            shortnames={"ns"},
            verbs=ALL_VERBS,
        )
        self.resources["v1/secrets"] = kmock.ResourceInfo(
            kind="Secret", singular="secret", namespaced=True, verbs=ALL_VERBS
        )
        self.resources["v1/events"] = kmock.ResourceInfo(
            kind="Event", singular="event", namespaced=True, shortnames={"ev"}, verbs=ALL_VERBS
        )
        self._columns["v1/events"] = [
            {"name": "Type", "type": "string", "jsonPath": ".type"},
            {"name": "Reason", "type": "string", "jsonPath": ".reason"},
            {"name": "Object", "type": "string", "jsonPath": ".involvedObject.name"},
            {"name": "Message", "type": "string", "jsonPath": ".message"},
        ]
        self.resources[CRD_RESOURCE] = kmock.ResourceInfo(
            kind="CustomResourceDefinition",
            singular="customresourcedefinition",
            namespaced=False,
            shortnames={"crd", "crds"},
            verbs=ALL_VERBS,
        )

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        """Make a CRD's kind servable and discoverable (schemas are not enforced)."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if version.get("served", True):
                key = f"{spec['group']}/{version['name']}/{names['plural']}"
                self._columns[key] = list(version.get("additionalPrinterColumns") or [])
                self.resources[key] = kmock.ResourceInfo(
                    kind=names.get("kind"),
                    singular=names.get("singular"),
                    shortnames=set(names.get("shortNames") or []),
                    categories=set(names.get("categories") or []),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    verbs=ALL_VERBS,
                    subresources=set(version.get("subresources") or {}),
                )

    def register_crd_files(self, folder: Path) -> None:
        for path in sorted(folder.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.register_crd(doc)

    # --- the store ------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def compact(self) -> None:
        """Drop the history up to now, as etcd's compaction does: every resourceVersion
        handed out so far becomes too old to watch from (see _serve_watch). The point is a
        fresh version, as deletes here advance none (a real API server's do)."""
        self._compacted = int(self._next_rv())

    def _stamp_new(self, meta: dict[str, Any]) -> None:
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            generation=1,
            creationTimestamp=_now(),
        )

    def _current(self, request: rendering.Request) -> dict[str, Any] | None:
        key: Any = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            raw: dict[str, Any] = self.objects[key].raw
            return raw
        return None

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if not _authorized(request.headers):
            # As a real API server: a client whose login sends no credentials fails here.
            return aiohttp.web.json_response(
                {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
                },
                status=401,
            )  # fmt: skip
        if len(self._requests) > self.max_requests:
            del self._requests[: -self.max_requests]
        if request.resource is not None and request.resource in set(self._get_resources()):
            if request.resource == "v1/secrets" and isinstance(request.data, dict):
                _encode_string_data(request.data)
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                self._stamp_new(meta)
                if request.resource == CRD_RESOURCE:
                    self.register_crd(request.data)
            elif request.action == enums.action.UPDATE and request.name:
                current = self._current(request)
                if current is not None:
                    self._stamp_patch(request, current)
            elif request.method == "PUT" and request.name and isinstance(request.data, dict):
                return await self._replace(request)
        response = await super()._handle(request)
        if request.action == enums.action.CREATE and response.status == 200:
            # The kubernetes client (v35+) deserializes a POST's body only on 201.
            response.set_status(201)
        return response

    def _has_status(self, request: rendering.Request) -> bool:
        info = self._info(request)
        return bool(info and "status" in info.subresources)

    def _info(self, request: rendering.Request) -> Any:
        resource: Any = request.resource
        return self.resources.get(resource)

    def _stamp_patch(self, request: rendering.Request, current: dict[str, Any]) -> None:
        rv = self._next_rv()
        if isinstance(request.data, list):  # a JSON patch: its 'test' ops may check the version
            request.data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": rv})
            return
        if not isinstance(request.data, dict):
            return
        body = request.data
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"].get("resourceVersion"):
            raise _conflict(_STALE)
        if self._has_status(request):
            if request.subresource == "status":
                for key in [k for k in body if k != "status"]:
                    del body[key]
            else:
                body.pop("status", None)
        if "spec" in body:
            merged = dicts.patch_dict({"spec": current.get("spec") or {}}, {"spec": body["spec"]})
            if merged.get("spec") != current.get("spec"):
                generation = current["metadata"].get("generation", 1) + 1
                body.setdefault("metadata", {})["generation"] = generation
        body.setdefault("metadata", {})["resourceVersion"] = rv

    async def _replace(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        current = self._current(request)
        if current is None:
            raise k8s.KubernetesObjectNotFoundError()
        new: dict[str, Any] = request.data
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"].get("resourceVersion"):
            raise _conflict(_STALE)
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "namespace", "name", "generation"):
            if field in current["metadata"]:
                meta[field] = current["metadata"][field]
        if self._has_status(request):
            if request.subresource == "status":
                new = {**copy.deepcopy(current), "status": new.get("status"), "metadata": meta}
            elif "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        meta["resourceVersion"] = self._next_rv()
        if new.get("spec") != current.get("spec"):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        resource: Any = request.resource
        key: Any = (resource, request.namespace, request.name)
        async with self._lock:
            self.objects[key].create(new)
            await self._buses[resource].put({"type": "MODIFIED", "object": new})
        return aiohttp.web.json_response(new)

    # --- reads ----------------------------------------------------------------------------

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        # Subscribe before the snapshot (kmock snapshots first and loses what happens between),
        # skip what the client's list already had, honour timeoutSeconds and selectors, and end
        # when the server closes (aiohttp's graceful shutdown waits for open handlers).
        yield b""
        assert request.resource is not None
        since = request.params.get("resourceVersion", "")
        since_n = int(since) if since.isdigit() else 0
        if 0 < since_n < self._compacted:  # "0" is "any version": never too old
            # What a real API server sends when the changes since then are compacted away.
            yield {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "reason": "Expired",
                    "code": 410,
                    "message": f"too old resource version: {since} ({self._compacted})",
                },
            }
            return
        bus = self._buses[request.resource]
        marker = await bus.mark()
        try:
            async with self._lock:
                objects = self._KubernetesEmulator__get_objs(request, strict=False)  # type: ignore[attr-defined]
                initial = [
                    {"type": "ADDED", "object": o.raw}
                    for o in objects
                    if not o.deleted
                    and int(o.raw.get("metadata", {}).get("resourceVersion") or 0) > since_n
                ]
            table = _wants_table(request)
            for event in initial:
                if _selected(request.params, event["object"]):
                    yield self._table_event(request, event) if table else event
            timeout = float(request.params.get("timeoutSeconds") or 0) or None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    async for event in self._until_closing(bus.stream(since=marker)):
                        meta = event.get("object", {}).get("metadata", {})
                        if self._KubernetesEmulator__check(  # type: ignore[attr-defined]
                            request,
                            request.resource,
                            meta.get("namespace"),
                            meta.get("name"),
                            strict=False,
                        ) and _selected(request.params, event["object"]):
                            yield self._table_event(request, event) if table else event
        finally:
            await bus.unmark(marker)

    def _table_event(self, request: rendering.Request, event: dict[str, Any]) -> dict[str, Any]:
        return {"type": event["type"], "object": self._table(request, [event["object"]])}

    async def _until_closing(self, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        closing = asyncio.ensure_future(self._closing.wait())
        step: asyncio.Future[Any] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(events))
                done, _ = await asyncio.wait({step, closing}, return_when=asyncio.FIRST_COMPLETED)
                if step not in done:
                    return
                try:
                    yield step.result()
                except StopAsyncIteration:
                    return
        finally:
            closing.cancel()
            if step is not None:
                step.cancel()

    async def _serve_version(self, request: rendering.Request) -> Any:
        result: Any = await super()._serve_version(request)
        result["groupVersion"] = result["groupVersion"].lstrip("/")  # the core group is "v1"
        for entry in result["resources"]:
            if "/" in entry["name"]:  # subresources inherit short names: kubectl sees ambiguity
                entry.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return result

    async def _serve_list(self, request: rendering.Request) -> Any:
        result: Any = await super()._serve_list(request)
        assert request.resource is not None
        info = self._info(request)
        group_version = f"{request.resource.group}/{request.resource.version}".lstrip("/")
        kind = (info.kind if info and info.kind else str(request.resource.plural)) + "List"
        items = [item for item in result["items"] if _selected(request.params, item)]
        if _wants_table(request):
            return self._table(request, items)
        return {
            "apiVersion": group_version,
            "kind": kind,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    async def _serve_fetch(self, request: rendering.Request) -> Any:
        obj: Any = await super()._serve_fetch(request)
        return self._table(request, [obj]) if _wants_table(request) else obj

    def _table(self, request: rendering.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        """What `kubectl get` asks for: the CRD's printer columns, evaluated per object."""
        columns: list[dict[str, Any]] = [{"name": "Name", "type": "string", "format": "name"}]
        columns += self._columns.get(_resource_key(request)) or [
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]
        rows = []
        for item in items:
            cells: list[Any] = [item.get("metadata", {}).get("name", "")]
            for column in columns[1:]:
                value = _json_path(item, column["jsonPath"])
                cells.append(_age(value) if column["type"] == "date" and value else value or "")
            metadata = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1"}
            rows.append({"cells": cells, "object": {**metadata, "metadata": item["metadata"]}})
        for column in columns:
            column.setdefault("description", "")
            column.setdefault("priority", 0)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "columnDefinitions": [{k: v for k, v in c.items() if k != "jsonPath"} for c in columns],
            "rows": rows,
        }

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # A failed JSON-patch 'test' is 422 on a real API server; kopf relies on it.
        if isinstance(exc, jsonpatch.JsonPatchException | jsonpointer.JsonPointerException):
            exc = k8s.KubernetesError(status=422, reason="Invalid", message=str(exc))
        return await super()._render_error(exc)


class KubeEmulator:
    """The emulator served on 127.0.0.1 from its own thread and event loop.

    Use as a context manager; ``url`` is ready inside. Objects survive suspend()/resume().
    """

    def __init__(self, port: int = 0, *, crds: Path | None = CRD_DIR) -> None:
        self.port = port
        self._crds = crds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._emulator: Emulator | None = None
        self._server: kmock.Server | None = None
        self._kubeconfig: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def emulator(self) -> Emulator:
        """The in-memory store, for assertions (read it through the API where you can)."""
        assert self._emulator is not None, "not started"
        return self._emulator

    def _call(self, coro: Any, timeout: float = 15) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._emulator = Emulator()
        await self._emulator.__aenter__()
        if self._crds is not None:
            self._emulator.register_crd_files(self._crds)
        await self._open()

    async def _open(self) -> None:
        assert self._emulator is not None
        self._emulator._closing.clear()
        self._server = kmock.Server(self._emulator, host="127.0.0.1", port=self.port or None)
        await self._server.__aenter__()
        self.port = self._server.port

    async def _close(self) -> None:
        assert self._emulator is not None and self._server is not None
        self._emulator._closing.set()  # ends open watches, so the shutdown below is quick
        await asyncio.wait_for(self._server.__aexit__(None, None, None), 10)
        self._server = None

    def suspend(self) -> None:
        """Stop serving (clients get connection refused); the objects stay."""
        self._call(self._close())

    def resume(self) -> None:
        """Serve again on the same port."""
        self._call(self._open())

    def compact(self) -> None:
        """From now on, a watch from any resourceVersion handed out so far gets 410 Gone."""
        self.emulator.compact()  # one int, read by the emulator's thread: no lock needed

    @contextlib.contextmanager
    def api_while_suspended(self) -> Iterator[KubeAPI]:
        """While suspended, the API on a port of its own: what changes through it, the
        clients of `url` learn only when they are back (their watches catch up or, after
        compact(), have to list again)."""
        assert self._server is None, "the clients of url would see the changes live"
        side: kmock.Server = self._call(self._open_side())
        api = KubeAPI(f"http://127.0.0.1:{side.port}")
        try:
            yield api
        finally:
            api.close()
            self._call(side.__aexit__(None, None, None))

    async def _open_side(self) -> kmock.Server:
        side = kmock.Server(self.emulator, host="127.0.0.1")
        await side.__aenter__()
        return side

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._server is not None:
            self._call(self._close())
        if self._emulator is not None:
            self._call(self._emulator.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this emulator (kubectl, kopf, the kubernetes client)."""
        return write_kubeconfig(self.url, path, namespace)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the emulator (``--validate=false`` added to apply/create)."""
        if self._kubeconfig is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kubellm-kube-")
            self._kubeconfig = self.kubeconfig(Path(self._tmp.name) / "kubeconfig")
        extra = ["--validate=false"] if args and args[0] in ("apply", "create", "replace") else []
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self._kubeconfig), *args, *extra],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result


class KubeAPI:
    """A small synchronous client of the emulator's HTTP API, by kind and name."""

    def __init__(self, url: str, namespace: str = "default") -> None:
        self.namespace = namespace
        self.http = httpx2.Client(
            base_url=url, timeout=10, headers={"authorization": f"Bearer {TOKEN}"}
        )

    def close(self) -> None:
        self.http.close()

    def _path(self, kind: str, namespace: str | None, name: str = "") -> str:
        path = PATHS[kind].format(ns=namespace or self.namespace)
        return f"{path}/{name}" if name else path

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        namespace = (obj.get("metadata") or {}).get("namespace")
        response = self.http.post(self._path(obj["kind"], namespace), json=dict(obj))
        response.raise_for_status()
        created: dict[str, Any] = response.json()
        return created

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        response = self.http.get(self._path(kind, namespace, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        obj: dict[str, Any] = response.json()
        return obj

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else {}
        response = self.http.get(self._path(kind, namespace), params=params)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def patch(
        self,
        kind: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        subresource: str = "",
    ) -> dict[str, Any]:
        path = self._path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        headers = {"Content-Type": "application/merge-patch+json"}
        response = self.http.patch(path, json=dict(patch), headers=headers)
        response.raise_for_status()
        patched: dict[str, Any] = response.json()
        return patched

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete; False if it was not there."""
        response = self.http.delete(self._path(kind, namespace, name))
        if response.status_code == 404:
            return False
        response.raise_for_status()
        return True

    def wait(
        self,
        kind: str,
        name: str,
        predicate: Callable[[dict[str, Any] | None], bool],
        namespace: str | None = None,
        timeout: float = 10,
    ) -> dict[str, Any] | None:
        """Poll until predicate(object or None) holds; the object it held for."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(kind, name, namespace)
            if predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} {name}: condition not met in {timeout}s; last: {obj}")
            time.sleep(0.02)


class KopfThread:
    """kopf running in its own thread and event loop (kopf cancels every task in its loop)."""

    def __init__(self) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None


@contextlib.contextmanager
def run_kopf(
    url: str,
    registry: kopf.OperatorRegistry,
    *,
    namespaces: tuple[str, ...] = (),
    standalone: bool = True,
    peering_name: str | None = None,
    settings: kopf.OperatorSettings | None = None,
    memo: object | None = None,
    timeout: float = 15,
) -> Iterator[KopfThread]:
    """Run kopf on `registry` against the emulator at `url` until the block ends.

    A login handler pointing at `url` is added to the registry. Cluster-wide unless
    `namespaces` is given (then namespace scanning is off: kmock cannot list namespaces).
    """

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, scheme="Bearer", token=TOKEN, insecure=True)

    settings = settings or kopf.OperatorSettings()
    if namespaces:
        settings.scanning.disabled = True
    state = KopfThread()

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=settings,
                    clusterwide=not namespaces,
                    namespaces=namespaces,
                    standalone=standalone,
                    peering_name=peering_name,
                    memo=memo,
                    stop_flag=state.stop_flag,
                    ready_flag=state.ready_flag,
                )
            )
        except BaseException as exc:  # reported by the context manager, not lost in a thread
            state.error = exc

    state.thread = threading.Thread(target=run, name="kopf", daemon=True)
    state.thread.start()
    try:
        if not state.ready_flag.wait(timeout):
            raise TimeoutError(f"kopf not ready in {timeout}s (error: {state.error!r})")
        yield state
    finally:
        state.stop_flag.set()  # stop kopf before the emulator goes away
        state.thread.join(timeout)
        assert not state.thread.is_alive(), "kopf did not stop"


def _serve_forever(port: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with KubeEmulator(port) as kube:
        print(f"kubernetes emulator at {kube.url}", flush=True)
        stop.wait()
    # Threads of clients still connected must not hold the process up.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    _serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
