"""The committed CRDs are the generated ones, structural and bounded, and kubectl sees
their names, categories and printer columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from kubellm_operator import crds
from tests.operator.conftest import resource
from tests.support.kube import CRD_DIR, KubeAPI, KubeEmulator


def test_committed_crds_are_what_make_crds_generates(tmp_path: Path) -> None:
    assert crds.main([str(tmp_path)]) == 0
    generated = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text() for p in CRD_DIR.iterdir()}
    assert committed == generated, "stale CRDs: run `make crds` and commit helm/kubellm/crds/"


def _walk(node: dict[str, Any], where: str) -> list[str]:
    """Everything in a schema node that a structural, fully bounded schema may not have."""
    problems = []
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{where}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties")
    kind = node.get("type")
    if kind == "string" and not ({"maxLength", "enum"} & node.keys() or "format" in node):
        problems.append(f"{where}: unbounded string")
    if kind == "array" and "maxItems" not in node:
        problems.append(f"{where}: unbounded list")
    if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
        problems.append(f"{where}: unbounded map")
    for name, child in (node.get("properties") or {}).items():
        problems += _walk(child, f"{where}.{name}")
    for part in ("items", "additionalProperties"):
        if isinstance(node.get(part), dict):
            problems += _walk(node[part], f"{where}[]")
    return problems


@pytest.mark.parametrize("kind", crds.KINDS, ids=lambda k: k.kind)
def test_schemas_are_structural_and_every_string_and_list_is_bounded(kind: crds.Kind) -> None:
    version = crds.crd(kind)["spec"]["versions"][0]
    # apiVersion and kind at the root are the API server's own to check.
    assert _walk(version["schema"]["openAPIV3Schema"], kind.kind) == [
        f"{kind.kind}.apiVersion: unbounded string",
        f"{kind.kind}.kind: unbounded string",
    ]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][-3:] == [
        "Ready",
        "Reason",
        "Age",
    ]


def test_a_model_field_without_bounds_cannot_become_a_crd() -> None:
    class Unbounded(BaseModel):
        names: list[str]

    with pytest.raises(ValueError, match=r"spec\.names\[\]: unbounded"):
        crds.model_schema(Unbounded, "spec")


def test_kubectl_apply_of_the_crds_makes_the_kinds_usable() -> None:
    with KubeEmulator(crds=None) as kube:
        assert kube.kubectl("get", "llmp", check=False).returncode != 0
        kube.kubectl("apply", "-f", str(CRD_DIR))
        listed = kube.kubectl("api-resources", "--api-group=kubellm.io", "--no-headers").stdout
        rows = {line.split()[0]: line.split() for line in listed.splitlines()}
        assert set(rows) == {"accesspolicies", "apikeys", "llmmodels", "llmproviders"}
        assert rows["llmproviders"][1] == "llmp" and rows["llmmodels"][1] == "llmm"
        assert rows["accesspolicies"][1] == "ap" and rows["apikeys"][1] == "ak"

        api = KubeAPI(kube.url)
        api.create(resource("LLMProvider", "mock", {"type": "Mock"}))
        api.close()
        assert kube.kubectl("get", "kubellm", "-o", "name").stdout.split() == [
            "llmprovider.kubellm.io/mock"
        ]
        header, row = kube.kubectl("get", "llmp").stdout.splitlines()
        assert header.split() == ["NAME", "TYPE", "READY", "REASON", "AGE"]
        assert row.split()[:2] == ["mock", "Mock"]


def test_every_crd_file_parses_as_one_or_more_crds() -> None:
    for path in CRD_DIR.iterdir():
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(d["kind"] == "CustomResourceDefinition" for d in docs), path
