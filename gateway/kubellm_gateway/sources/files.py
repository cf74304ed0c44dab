"""The files source: a folder of the same manifests a cluster would hold.

The folder is polled (cheap `stat` calls, no inotify) so it works the same on
bind mounts and on ConfigMap volumes, whose updates are symlink swaps. Files
are re-read only when their size or mtime changed. A broken edit never takes
down what worked: a file that no longer parses keeps its last good documents,
and a resource that no longer validates keeps its last good version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml

from ..resources import Resource, ResourceError, parse_resource, resource_key

log = logging.getLogger(__name__)

# An atomic replace changes the inode even when size and mtime stay (cp -p, coarse clocks).
Signature = tuple[int, int, int]  # (inode, mtime_ns, size)
Key = tuple[str, str, str]  # (kind, namespace, name)
Apply = Callable[[list[Resource], dict[str, int]], Awaitable[None]]


def manifest_files(directory: Path) -> dict[Path, Signature]:
    files: dict[Path, Signature] = {}
    for path in sorted(directory.rglob("*")):
        # Hidden entries include ConfigMap's ..data plumbing; the real files show up as links.
        if path.suffix not in (".yaml", ".yml") or any(
            p.startswith(".") for p in path.relative_to(directory).parts
        ):
            continue
        try:
            st = path.stat()
        except OSError:  # removed between listing and stat
            continue
        if path.is_file():
            files[path] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return files


class FileSource:
    def __init__(self, directory: Path, apply: Apply, interval: float = 0.25) -> None:
        self.directory = directory
        self.apply = apply
        self.interval = interval
        self._seen: dict[Path, Signature] | None = None  # None: nothing applied yet
        self._documents: dict[Path, list[object]] = {}  # last good parse of each file
        self._good: dict[Key, Resource] = {}  # last valid version of each resource
        # A manifest rarely carries creationTimestamp, which the API server sets in a
        # cluster: each resource gets its file's mtime when first read instead, kept
        # through later edits (what /v1/models reports as `created`, and orders by).
        self._created: dict[Key, datetime] = {}

    def scan(self) -> tuple[list[Resource], dict[str, int]] | None:
        """Resources and invalid counts per kind if anything changed, else None."""
        files = manifest_files(self.directory)
        if files == self._seen:
            return None
        for path, signature in files.items():
            if self._seen is None or self._seen.get(path) != signature:
                self._read(path)
        for path in set(self._documents) - set(files):
            del self._documents[path]
        self._seen = files
        return self._resources()

    def _read(self, path: Path) -> None:
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            kept = "keeping its last good version" if path in self._documents else "skipped"
            log.error("manifest %s cannot be read (%s): %s", path, kept, _one_line(exc))
            return
        self._documents[path] = documents

    def _resources(self) -> tuple[list[Resource], dict[str, int]]:
        found: dict[Key, Resource] = {}
        invalid: dict[str, int] = {}
        for path, documents in self._documents.items():
            for index, doc in enumerate(documents):
                try:
                    resource = parse_resource(doc)  # type: ignore[arg-type]
                except ResourceError as exc:
                    invalid[exc.kind] = invalid.get(exc.kind, 0) + 1
                    key = (exc.kind, exc.namespace, exc.name)
                    previous = self._good.get(key)
                    kept = "keeping its last valid version" if previous else "skipped"
                    log.error("%s document %d: %s (%s)", path, index + 1, exc, kept)
                    if previous is not None:
                        found[key] = previous
                    continue
                if resource is None:
                    continue
                key = resource_key(resource)
                if key in found:
                    log.error(
                        "%s document %d: %s %s/%s is defined twice; the first wins",
                        path,
                        index + 1,
                        *key,
                    )
                    continue
                found[key] = self._with_creation_time(key, resource, path)
        self._good = found
        for key in set(self._created) - set(found):
            del self._created[key]  # deleted: created anew if it comes back
        return list(found.values()), invalid

    def _with_creation_time(self, key: Key, resource: Resource, path: Path) -> Resource:
        metadata = resource.metadata
        if metadata.creationTimestamp is not None:
            return resource
        created = self._created.get(key)
        if created is None:
            assert self._seen is not None  # scan() records the files before reading them
            mtime_ns = self._seen[path][1]
            created = datetime.fromtimestamp(mtime_ns // 1_000_000_000, UTC)
            self._created[key] = created
        update = {"creationTimestamp": created}
        return resource.model_copy(update={"metadata": metadata.model_copy(update=update)})

    async def run(self, ready: asyncio.Event) -> None:
        """Apply the folder now, then every change to it, until cancelled."""
        while True:
            try:
                changed = await asyncio.to_thread(self.scan)
            except OSError as exc:
                log.error("manifest folder %s cannot be listed: %s", self.directory, exc)
                changed = None
            if changed is not None:
                try:
                    await self.apply(*changed)
                except Exception:
                    # A bug in building must not stop reloading: the last snapshot keeps serving.
                    log.exception(
                        "applying %s failed; the previous configuration stays", self.directory
                    )
            ready.set()
            await asyncio.sleep(self.interval)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
