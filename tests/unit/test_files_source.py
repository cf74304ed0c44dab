"""FileSource.scan: a folder of manifests, re-read on change, never broken by a bad edit."""

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubellm_gateway.resources import LLMModel, LLMProvider, Resource
from kubellm_gateway.sources.files import FileSource, manifest_files
from tests.support.manifests import backend, dump, model, provider

MOCK = provider("mock", "Mock")
CHAT = model("chat", [backend("mock", "m")])
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}


async def _apply(resources: list[Resource], invalid: dict[str, int]) -> None:
    raise AssertionError("scan() never applies")


def source(directory: Path) -> FileSource:
    return FileSource(directory, _apply)


def write(path: Path, text: str) -> None:
    """Write `text`, making sure the change shows even where file times are coarse."""
    before = path.stat().st_mtime_ns if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if before is not None:
        later = max(path.stat().st_mtime_ns, before + 1_000_000)
        os.utime(path, ns=(later, later))


def names(result: tuple[list[Resource], dict[str, int]] | None) -> list[str]:
    assert result is not None
    return sorted(f"{r.kind}/{r.metadata.namespace}/{r.metadata.name}" for r in result[0])


def scanned(src: FileSource) -> tuple[list[Resource], dict[str, int]]:
    result = src.scan()
    assert result is not None
    return result


def the(result: tuple[list[Resource], dict[str, int]], kind: type[Any], name: str) -> Any:
    (found,) = [r for r in result[0] if isinstance(r, kind) and r.metadata.name == name]
    return found


def test_empty_folder_scans_once(tmp_path: Path) -> None:
    src = source(tmp_path)
    assert src.scan() == ([], {})
    assert src.scan() is None


def test_unchanged_folder_is_not_reread(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", dump(MOCK, CHAT))
    src = source(tmp_path)
    assert names(src.scan()) == ["LLMModel/default/chat", "LLMProvider/default/mock"]
    assert src.scan() is None
    assert src.scan() is None


def test_which_files_are_manifests(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", dump(MOCK))
    write(tmp_path / "sub" / "deeper" / "b.yml", dump(CHAT))
    write(tmp_path / ".hidden.yaml", dump(provider("hidden", "Mock")))
    write(tmp_path / "..data" / "c.yaml", dump(provider("plumbing", "Mock")))
    write(tmp_path / "sub" / ".git" / "d.yaml", dump(provider("vcs", "Mock")))
    write(tmp_path / "notes.txt", dump(provider("text", "Mock")))
    write(tmp_path / "e.yaml.bak", dump(provider("backup", "Mock")))
    (tmp_path / "dir.yaml").mkdir()
    assert list(manifest_files(tmp_path)) == [tmp_path / "a.yaml", tmp_path / "sub/deeper/b.yml"]
    assert names(source(tmp_path).scan()) == ["LLMModel/default/chat", "LLMProvider/default/mock"]


def test_symlinked_file_is_read(tmp_path: Path) -> None:
    # ConfigMap volumes: "x.yaml -> ..data/x.yaml", the target dir itself hidden.
    write(tmp_path / "..data" / "x.yaml", dump(MOCK))
    (tmp_path / "x.yaml").symlink_to(Path("..data") / "x.yaml")
    assert names(source(tmp_path).scan()) == ["LLMProvider/default/mock"]


def test_multi_document_file(tmp_path: Path) -> None:
    text = dump(MOCK, CONFIGMAP, CHAT) + "---\n---\n# only a comment\n"
    write(tmp_path / "all.yaml", text)
    assert names(source(tmp_path).scan()) == ["LLMModel/default/chat", "LLMProvider/default/mock"]


def test_edited_file_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    write(path, dump(MOCK))
    src = source(tmp_path)
    scanned(src)
    write(path, dump(MOCK, CHAT))
    assert names(src.scan()) == ["LLMModel/default/chat", "LLMProvider/default/mock"]


def test_atomic_replace_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    write(path, dump(MOCK))
    src = source(tmp_path)
    scanned(src)
    tmp = tmp_path / ".a.yaml.tmp"
    write(tmp, dump(MOCK, CHAT))
    tmp.replace(path)  # rename(2): atomic
    assert names(src.scan()) == ["LLMModel/default/chat", "LLMProvider/default/mock"]


def test_atomic_replace_with_same_size_and_mtime_is_reread(tmp_path: Path) -> None:
    # Same length, and an mtime that did not move: a write within one tick of a
    # coarse file clock, or a tool that preserves times (cp -p, tar). Only the inode differs.
    path = tmp_path / "a.yaml"
    write(path, dump(provider("aaaa", "Mock")))
    src = source(tmp_path)
    assert names(src.scan()) == ["LLMProvider/default/aaaa"]
    stat = path.stat()
    tmp = tmp_path / ".a.yaml.tmp"
    tmp.write_text(dump(provider("bbbb", "Mock")))
    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    tmp.replace(path)  # rename(2): atomic
    assert path.stat().st_size == stat.st_size
    assert path.stat().st_ino != stat.st_ino
    assert names(src.scan()) == ["LLMProvider/default/bbbb"]


def test_deleted_file_drops_its_resources(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", dump(MOCK))
    write(tmp_path / "b.yaml", dump(CHAT))
    src = source(tmp_path)
    scanned(src)
    (tmp_path / "b.yaml").unlink()
    assert names(src.scan()) == ["LLMProvider/default/mock"]


def test_invalid_yaml_keeps_the_files_last_good_documents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a.yaml"
    write(path, dump(MOCK, CHAT))
    src = source(tmp_path)
    scanned(src)
    write(path, "kind: [unclosed\n")
    with caplog.at_level(logging.ERROR, "kubellm_gateway.sources.files"):
        assert names(src.scan()) == ["LLMModel/default/chat", "LLMProvider/default/mock"]
    (message,) = caplog.messages
    assert f"manifest {path} cannot be read (keeping its last good version)" in message
    assert "\n" not in message


def test_new_invalid_yaml_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "a.yaml", dump(MOCK))
    write(tmp_path / "b.yaml", "a: b: c\n")
    with caplog.at_level(logging.ERROR, "kubellm_gateway.sources.files"):
        assert names(source(tmp_path).scan()) == ["LLMProvider/default/mock"]
    assert f"manifest {tmp_path / 'b.yaml'} cannot be read (skipped)" in caplog.text


def test_invalid_resource_keeps_its_last_valid_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a.yaml"
    write(path, dump(MOCK, CHAT))
    src = source(tmp_path)
    scanned(src)
    broken = model("chat", [backend("mock", "m2", weight=0)])
    write(path, dump(MOCK, broken, provider("new", "Mock")))
    with caplog.at_level(logging.ERROR, "kubellm_gateway.sources.files"):
        result = scanned(src)
    assert result[1] == {"LLMModel": 1}
    assert the(result, LLMModel, "chat").spec.backends[0].model == "m"  # the last valid one
    assert the(result, LLMProvider, "new").spec.type == "Mock"  # the rest still moves on
    (message,) = caplog.messages
    assert message.startswith(f"{path} document 2: LLMModel default/chat: ")
    assert "spec.backends[0].weight" in message
    assert message.endswith("(keeping its last valid version)")
    # Still invalid on the next change: still the last valid version.
    write(path, dump(MOCK, broken))
    result = scanned(src)
    assert the(result, LLMModel, "chat").spec.backends[0].model == "m"


def test_invalid_resource_never_valid_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a.yaml"
    write(path, dump(MOCK, provider("bad", "Nope"), model("x", [])))
    with caplog.at_level(logging.ERROR, "kubellm_gateway.sources.files"):
        result = scanned(source(tmp_path))
    assert names(result) == ["LLMProvider/default/mock"]
    assert result[1] == {"LLMProvider": 1, "LLMModel": 1}
    assert [m.split(": ")[0] for m in caplog.messages] == [
        f"{path} document 2",
        f"{path} document 3",
    ]
    assert "LLMProvider default/bad: spec.type" in caplog.messages[0]
    assert caplog.messages[0].endswith("(skipped)")
    assert "LLMModel default/x: spec.backends" in caplog.messages[1]


def test_same_resource_twice_first_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "a.yaml", dump(provider("p", "Mock", mock={"text": "from a"})))
    write(tmp_path / "b.yaml", dump(provider("p", "Mock", mock={"text": "from b"})))
    with caplog.at_level(logging.ERROR, "kubellm_gateway.sources.files"):
        result = scanned(source(tmp_path))
    p = the(result, LLMProvider, "p")
    assert p.spec.mock.text == "from a"
    assert caplog.messages == [
        f"{tmp_path / 'b.yaml'} document 1: LLMProvider default/p is defined twice; the first wins"
    ]


def test_resources_without_a_creation_time_get_their_files_first_mtime(tmp_path: Path) -> None:
    stamped = model("stamped", [backend("mock", "m")])
    stamped["metadata"]["creationTimestamp"] = "2025-01-02T03:04:05Z"
    path = tmp_path / "a.yaml"
    write(path, dump(MOCK, CHAT, stamped))
    os.utime(path, ns=(1_700_000_000_500_000_000,) * 2)
    src = source(tmp_path)
    first = scanned(src)
    chat = the(first, LLMModel, "chat")
    assert chat.metadata.creationTimestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert the(first, LLMModel, "stamped").metadata.creationTimestamp == datetime(
        2025, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    # An edit is not a new resource: it keeps the time it was first read with.
    write(path, dump(MOCK, model("chat", [backend("mock", "other")]), stamped))
    edited = the(scanned(src), LLMModel, "chat")
    assert edited.spec.backends[0].model == "other"
    assert edited.metadata.creationTimestamp == chat.metadata.creationTimestamp
    # Gone and back is new, as a deleted and re-created object is in a cluster.
    write(path, dump(MOCK, stamped))
    scanned(src)
    later = 1_800_000_000_000_000_000
    write(path, dump(MOCK, CHAT, stamped))
    os.utime(path, ns=(later, later))
    back = the(scanned(src), LLMModel, "chat")
    assert back.metadata.creationTimestamp == datetime.fromtimestamp(later // 10**9, UTC)
