"""skaffold.yaml and deploy/kind/, checked without skaffold or kind: their structure, and
that everything they name exists and fits the chart as helm renders it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.chart.conftest import CHART, Helm, one
from tests.chart.tools import ROOT

CONFIGS: list[dict[str, Any]] = list(yaml.safe_load_all((ROOT / "skaffold.yaml").read_text()))
CHART_CONFIG, EXAMPLES_CONFIG = CONFIGS
KIND = yaml.safe_load((ROOT / "deploy" / "kind" / "cluster.yaml").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
(RELEASE,) = CHART_CONFIG["deploy"]["helm"]["releases"]


def has_value(path: str) -> bool:
    node: Any = VALUES
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [p for p in config["profiles"] if p["name"] == name]
    return found  # type: ignore[no-any-return]


def test_two_named_configs_chart_first() -> None:
    for config in CONFIGS:
        assert config["apiVersion"] == "skaffold/v4beta13"
        assert config["kind"] == "Config"
    # Configs deploy in file order: the chart (with the CRDs) before the examples.
    assert [c["metadata"]["name"] for c in CONFIGS] == ["kubellm", "kubellm-examples"]
    assert set(CHART_CONFIG) == {
        "apiVersion",
        "kind",
        "metadata",
        "build",
        "deploy",
        "portForward",
        "profiles",
    }
    assert set(EXAMPLES_CONFIG) == {
        "apiVersion",
        "kind",
        "metadata",
        "manifests",
        "deploy",
        "profiles",
    }


def test_build_uses_the_dockerfile() -> None:
    (artifact,) = CHART_CONFIG["build"]["artifacts"]
    assert artifact["image"] == VALUES["image"]["repository"]
    assert (ROOT / artifact["docker"]["dockerfile"]).is_file()
    assert "context" not in artifact, "the build context is the repository root"


def test_the_release_installs_this_chart_with_the_built_image() -> None:
    assert (ROOT / RELEASE["chartPath"]).resolve() == CHART
    (artifact,) = CHART_CONFIG["build"]["artifacts"]
    suffix = re.sub(r"[^A-Za-z0-9]", "_", artifact["image"])
    assert RELEASE["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{suffix}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{suffix}}}}}",
    }
    for key in [*RELEASE["setValueTemplates"], *RELEASE["setValues"]]:
        assert has_value(key), f"skaffold sets {key}, which values.yaml does not have"
    assert RELEASE["createNamespace"] is True


def test_port_forward_reaches_the_gateway_service(helm: Helm) -> None:
    settings = [f"{key}={value}" for key, value in RELEASE["setValues"].items()]
    args = [arg for setting in settings for arg in ("--set", setting)]
    out = helm("template", RELEASE["name"], CHART, "--namespace", RELEASE["namespace"], *args)
    objects = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    (forward,) = CHART_CONFIG["portForward"]
    assert forward["resourceType"] == "service"
    assert forward["namespace"] == RELEASE["namespace"]
    service = one(objects, "Service", forward["resourceName"])
    assert forward["port"] in [p["port"] for p in service["spec"]["ports"]]
    assert (forward["address"], forward["localPort"]) == ("127.0.0.1", 8080)


def test_examples_follow_the_chart_into_its_namespace() -> None:
    (pattern,) = EXAMPLES_CONFIG["manifests"]["rawYaml"]
    assert sorted(ROOT.glob(pattern)) == sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
    assert EXAMPLES_CONFIG["deploy"]["kubectl"]["defaultNamespace"] == RELEASE["namespace"]


def test_kind_profile_matches_the_kind_cluster() -> None:
    context = f"kind-{KIND['name']}"
    chart_profile = profile(CHART_CONFIG, "kind")
    assert chart_profile["activation"] == [{"kubeContext": context}]
    assert chart_profile["deploy"]["kubeContext"] == context
    # Not pushed: skaffold loads local images into a kind cluster itself.
    assert chart_profile["build"]["local"]["push"] is False
    examples_profile = profile(EXAMPLES_CONFIG, "kind")
    assert examples_profile["deploy"]["kubeContext"] == context


def test_kind_cluster_spreads_gateway_replicas() -> None:
    assert (KIND["apiVersion"], KIND["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    roles = [node["role"] for node in KIND["nodes"]]
    assert roles.count("control-plane") == 1
    assert roles.count("worker") >= VALUES["gateway"]["replicas"]


def test_every_path_named_exists() -> None:
    text = (ROOT / "skaffold.yaml").read_text()
    for path in re.findall(r"(?:dockerfile|chartPath): (\S+)", text):
        assert Path(ROOT / path).exists(), path
