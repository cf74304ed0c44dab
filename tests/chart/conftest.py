"""The chart rendered by a real helm binary (tests/chart/tools.py), as plain objects."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart import tools

CHART = tools.ROOT / "helm" / "kubellm"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE, NAMESPACE = "demo", "llm"

Helm = Callable[..., subprocess.CompletedProcess[str]]
Objects = list[dict[str, Any]]


@pytest.fixture(scope="session")
def helm() -> Helm:
    try:
        tools.ensure()
    except tools.Unsupported as exc:
        pytest.skip(f"no helm for this machine: {exc}")

    def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tools.HELM, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(map(str, args))} failed:\n{result.stderr}")
        return result

    return run


def render(helm: Helm, *args: str | Path) -> Objects:
    out = helm("template", RELEASE, CHART, "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def default_objects(helm: Helm) -> Objects:
    return render(helm)


@pytest.fixture(scope="session")
def full_objects(helm: Helm) -> Objects:
    return render(helm, "--values", FULL_VALUES)


def one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def of_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o["kind"] == kind]
