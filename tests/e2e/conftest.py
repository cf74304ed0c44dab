"""The kind suite: a real cluster, the real image, the chart, the examples.

Runs with `make e2e` where docker (with a running engine), kind and helm exist; anywhere
else, and in `make test`, every test here is reported as skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.chart import tools


def _missing() -> list[str]:
    """What the suite needs and this machine lacks."""
    missing = [tool for tool in ("docker", "kind") if shutil.which(tool) is None]
    if "docker" not in missing:
        try:
            subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            missing.append("a running docker engine")
    try:
        tools.ensure()
    except tools.Unsupported as exc:
        missing.append(f"helm ({exc})")
    return missing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if item.get_closest_marker("e2e") is not None]
    if not ours:
        return
    if "e2e" not in (config.option.markexpr or ""):
        reason = "the kind suite runs with `make e2e` (needs docker, kind and helm)"
    else:
        missing = _missing()
        if not missing:
            return
        reason = f"the kind suite needs {', '.join(missing)}: not on this machine"
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=reason))
