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
