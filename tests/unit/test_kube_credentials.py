"""The credentials kopf logs in with are the ones the kubernetes client read: the operator's
watches and writes, and the gateway's exec-plugin login, go through connection_info."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from kubellm_gateway.kube_credentials import connection_info, load_config
from tests.support.tls import make_pki


def kubeconfig(path: Path, user: dict[str, Any], namespace: str = "team-a") -> Path:
    path.write_text(
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [
                {"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}
            ],
        })
    )  # fmt: skip
    return path


def test_a_token_is_sent_with_its_scheme(tmp_path: Path) -> None:
    info = connection_info(load_config(kubeconfig(tmp_path / "config", {"token": "t0k"})), "ns")
    assert (info.server, info.scheme, info.token) == ("https://127.0.0.1:6443", "Bearer", "t0k")
    assert info.default_namespace == "ns"
    assert not info.insecure


def test_a_client_certificate_is_passed_on(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    user = {"client-certificate": str(pki.client_cert), "client-key": str(pki.client_key)}
    info = connection_info(load_config(kubeconfig(tmp_path / "config", user)))
    assert (info.certificate_path, info.private_key_path) == (
        str(pki.client_cert),
        str(pki.client_key),
    )
    assert info.token is None and info.scheme is None


def test_a_user_and_password_become_basic_auth(tmp_path: Path) -> None:
    user = {"username": "admin", "password": "s3cret"}
    info = connection_info(load_config(kubeconfig(tmp_path / "config", user)))
    assert (info.scheme, info.token) == ("Basic", base64.b64encode(b"admin:s3cret").decode())
