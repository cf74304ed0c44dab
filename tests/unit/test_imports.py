"""The default gateway imports no optional heavyweight: the 1,000-open-streams memory
target (under 100 MB) has only a few MiB of room (bench/README.md)."""

from __future__ import annotations

import subprocess
import sys

# Each is imported only when its feature is configured.
OPTIONAL = {
    "kopf": "--source kubernetes",
    "redis": "--redis-url",
    "jwt": "--oidc-issuer",
    "opentelemetry.exporter": "--otel / OTEL_* variables",
}


def test_default_gateway_imports_no_optional_feature() -> None:
    probe = "import sys, kubellm_gateway.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    for module, feature in OPTIONAL.items():
        assert module not in loaded, f"{module} is imported without {feature}"
