"""Gateway settings: one dataclass, filled from flags and `KUBELLM_*` variables by cli.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    manifests: Path
    host: str = "127.0.0.1"
    port: int = 8080
    metrics_port: int = 9464
    max_body_bytes: int = 10 * 1024 * 1024
    reload_interval: float = 0.25
    log_level: str = "info"
    # Where resources come from: "files" (the manifests folder) or "kubernetes" (the
    # cluster, in `namespaces` or cluster-wide when empty; kubeconfig, else in-cluster).
    source: str = "files"
    namespaces: tuple[str, ...] = ()
    kubeconfig: Path | None = None
    # After SIGTERM: seconds still serving with /readyz at 503, then seconds for requests
    # in flight to finish before they are cut (cli.DrainingServer).
    shutdown_delay: int = 0
    shutdown_grace: int = 30
    # OIDC access tokens (auth/oidc.py): off without issuers.
    oidc_issuers: tuple[str, ...] = ()
    oidc_audience: str = ""
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claims: tuple[str, ...] = ("groups",)
    oidc_leeway: float = 30.0
    # Limits (limits/): in-process without a Redis URL.
    redis_url: str = ""
    limits_on_redis_error: str = "allow"
    # Telemetry.
    otel: bool = False
    metrics_per_user: bool = False
    log_format: str = "text"
    access_log: bool = True
