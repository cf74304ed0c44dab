"""The README's "Install on Kubernetes" and "Develop with skaffold" commands name things
that exist: the chart renders with them, and every file, resource and Service they use
is there. (Running them needs a cluster: that is `make e2e`.)"""

from __future__ import annotations

import re
import shlex

import yaml

from tests.chart.conftest import CHART, Helm, one
from tests.chart.tools import ROOT

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


INSTALL = section("Install on Kubernetes")
SKAFFOLD = section("Develop with skaffold")


def commands(text: str) -> list[list[str]]:
    """The shell commands of the ```sh blocks, continuation lines joined."""
    found: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            code = line.split(" #", 1)[0].strip()
            if code and not code.startswith("#"):
                found.append(shlex.split(code.removesuffix("&").strip()))
    return found


def command(text: str, *prefix: str) -> list[str]:
    (found,) = [c for c in commands(text) if c[: len(prefix)] == list(prefix)]
    return found


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_helm_install_renders_and_the_port_forward_finds_its_service(helm: Helm) -> None:
    install = command(INSTALL, "helm", "install")
    release, chart = install[2], ROOT / install[3]
    assert chart.resolve() == CHART
    namespace = option(install, "--namespace")
    out = helm("template", release, chart, "--namespace", namespace).stdout
    objects = [doc for doc in yaml.safe_load_all(out) if doc]
    forward = command(INSTALL, "kubectl", "port-forward")
    assert option(forward, "-n") == namespace
    service = one(objects, "Service", forward[4].removeprefix("svc/"))
    assert int(forward[5].split(":")[1]) == service["spec"]["ports"][0]["port"]
    assert f"http://{service['metadata']['name']}.{namespace}.svc/v1" in INSTALL


def test_the_resources_waited_for_are_in_the_examples() -> None:
    apply = command(INSTALL, "kubectl", "apply")
    folder = ROOT / option(apply, "-f")
    names = {
        f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        for path in folder.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    }
    wait = command(INSTALL, "kubectl", "wait")
    waited = [arg for arg in wait if "/" in arg]
    assert waited and set(waited) <= names
    # The key fetched in step 4 belongs to an APIKey of the examples.
    assert "apikey/demo" in names and "apikey demo" in INSTALL


def test_files_named_exist() -> None:
    build = command(INSTALL, "docker", "build")
    assert (ROOT / option(build, "-f")).is_file()
    for text in (INSTALL, SKAFFOLD):
        (path,) = re.findall(r"kind create cluster --config (\S+?)`?\s", text)
        config = yaml.safe_load((ROOT / path).read_text())
        assert (
            f"context `kind-{config['name']}`" in text or f"context kind-{config['name']}" in text
        )
    assert command(SKAFFOLD, "skaffold", "dev") == ["skaffold", "dev", "-p", "kind"]
    assert (ROOT / "tests" / "e2e" / "README.md").is_file()


def test_the_image_tag_matches_the_chart_default() -> None:
    build = command(INSTALL, "docker", "build")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    expected = f"{values['image']['repository']}:{chart['appVersion']}"
    assert option(build, "-t") == expected
    assert command(INSTALL, "kind", "load")[3] == expected
