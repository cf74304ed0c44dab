"""The chart's CRDs, its peering object and deploy/examples/, applied with kubectl to the
Kubernetes API emulator (tests/support/kube.py), as the README tells a user to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm_gateway.resources import parse_resource
from tests.chart.conftest import CHART, NAMESPACE, Helm, Objects, of_kind
from tests.support.examples import EXAMPLES, example_documents
from tests.support.kube import KubeEmulator


@pytest.fixture
def empty_kube() -> Iterator[KubeEmulator]:
    """An emulator that knows no kubellm kinds until the CRDs are applied."""
    with KubeEmulator(crds=None) as emulator:
        yield emulator


def kubellm_documents() -> list[dict[str, Any]]:
    return [d for d in example_documents() if str(d["apiVersion"]).startswith("kubellm.io/")]


def test_the_examples_validate() -> None:
    documents = example_documents()
    assert {d["kind"] for d in kubellm_documents()} == {
        "LLMProvider",
        "LLMModel",
        "AccessPolicy",
        "APIKey",
    }
    for document in documents:
        assert parse_resource(document) is not None, document
    # In a cluster the operator mints keys: no example may carry one.
    minted = {d["spec"]["secretName"] for d in kubellm_documents() if d["kind"] == "APIKey"}
    assert not minted & {d["metadata"]["name"] for d in documents if d["kind"] == "Secret"}


def test_apply_crds_peering_and_examples(
    helm: Helm, default_objects: Objects, empty_kube: KubeEmulator, tmp_path: Path
) -> None:
    crds = tmp_path / "crds.yaml"
    crds.write_text(helm("show", "crds", CHART).stdout)
    applied = empty_kube.kubectl("apply", "-f", str(crds)).stdout
    for name in (
        "llmproviders.kubellm.io",
        "llmmodels.kubellm.io",
        "accesspolicies.kubellm.io",
        "apikeys.kubellm.io",
        "kopfpeerings.kopf.dev",
    ):
        assert f"customresourcedefinition.apiextensions.k8s.io/{name} created" in applied

    peering = tmp_path / "peering.yaml"
    peering.write_text(yaml.safe_dump_all(of_kind(default_objects, "KopfPeering")))
    assert (
        "kopfpeering.kopf.dev/kubellm created"
        in empty_kube.kubectl("apply", "-f", str(peering)).stdout
    )

    created = empty_kube.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLES)).stdout
    assert created.count(" created") == len(example_documents())

    listed = empty_kube.kubectl("get", "-n", NAMESPACE, "kubellm", "-o", "name").stdout.split()
    expected = {
        f"{d['kind'].lower()}.kubellm.io/{d['metadata']['name']}" for d in kubellm_documents()
    }
    assert set(listed) == expected
    again = empty_kube.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLES)).stdout
    # Secrets written with stringData always count as "configured" on a second apply.
    assert again.count(" unchanged") == len(kubellm_documents())
