"""Real OpenID providers on 127.0.0.1 for the OIDC tests.

- `ProviderMock`: the oidc-provider-mock server (PyPI) as a subprocess. It issues
  real RS256 ID tokens through its authorization-code flow; its signing key is made
  at start, so a restart on the same port is a key rotation.
- `KeycloakRealm`: a Keycloak-shaped issuer (`/realms/<name>`, discovery document,
  JWKS at `protocol/openid-connect/certs`) whose documents are files served by a
  real HTTP server process (`python -m http.server`). The keys are made here, so
  tests sign Keycloak-shaped tokens, forge attacks, rotate keys and count JWKS
  fetches in the server's request log.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support.gateway import free_port

CLIENT_ID = "kubellm"


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url}: not up after {timeout}s:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ProviderMock:
    """oidc-provider-mock on a free port; `restart()` rotates its signing key."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "oidc-provider-mock.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "oidc_provider_mock"),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
        _wait_for(f"{self.url}/.well-known/openid-configuration", self.process, self.log)

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def token(self, sub: str, claims: dict[str, Any], client_id: str = CLIENT_ID) -> str:
        """An ID token for `sub` with `claims`, through the authorization-code flow."""
        redirect = "http://127.0.0.1/callback"
        with httpx2.Client(base_url=self.url, timeout=10) as http:
            http.put(f"/users/{sub}", json=claims).raise_for_status()
            authorized = http.post(
                "/oauth2/authorize",
                params={
                    "client_id": client_id,
                    "redirect_uri": redirect,
                    "response_type": "code",
                    "scope": "openid profile email",
                },
                data={"sub": sub},
            )
            assert authorized.status_code == 302, authorized.text
            code = parse_qs(urlsplit(authorized.headers["location"]).query)["code"][0]
            issued = http.post(
                "/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect,
                    "client_id": client_id,
                    "client_secret": "unused",  # the mock accepts any client
                },
            )
            issued.raise_for_status()
            token: str = issued.json()["id_token"]
            return token


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or uuid.uuid4().hex, "RS256", key)

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or uuid.uuid4().hex, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self, *, declare_alg: bool = True, use: str = "sig") -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        data.update(kid=self.kid, use=use)
        if declare_alg:
            data["alg"] = self.alg
        return data

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **headers}
        )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: dict[str, Any], claims: dict[str, Any], signature: bytes = b""
) -> tuple[str, bytes]:
    """A token put together by hand: (token, the signing input a forger would sign)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(signature)}", signing_input.encode()


class KeycloakRealm:
    """A Keycloak-shaped issuer whose discovery document and JWKS are served from files."""

    def __init__(self, workdir: Path, realm: str = "acme") -> None:
        self.root = workdir / "www"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/realms/{realm}"
        self.certs_path = f"/realms/{realm}/protocol/openid-connect/certs"
        self.realm_dir = self.root / "realms" / realm
        (self.realm_dir / ".well-known").mkdir(parents=True)
        (self.realm_dir / "protocol" / "openid-connect").mkdir(parents=True)
        self._write(
            self.realm_dir / ".well-known" / "openid-configuration",
            {
                "issuer": self.url,
                "jwks_uri": f"http://127.0.0.1:{self.port}{self.certs_path}",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            },
        )
        self.key = SigningKey.rsa()
        # Keycloak also publishes an encryption key; a verifier must never sign-check with it.
        self.encryption_key = SigningKey.rsa()
        self.publish(self.key.jwk(), self.encryption_key.jwk(use="enc"))
        self.log = workdir / "http.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @staticmethod
    def _write(path: Path, document: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(document))
        tmp.replace(path)

    def publish(self, *jwks: dict[str, Any]) -> None:
        """Replace the JWKS the realm serves."""
        self._write(self.realm_dir / "protocol" / "openid-connect" / "certs", {"keys": list(jwks)})

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "http.server", str(self.port)),
                    *("--bind", "127.0.0.1", "--directory", str(self.root)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for(f"{self.url}/.well-known/openid-configuration", self.process, self.log)

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def jwks_fetches(self) -> int:
        return self.log.read_text(errors="replace").count(f"GET {self.certs_path} ")

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """An access token's claims as Keycloak issues them, with an audience mapper.

        An override of None leaves the claim out.
        """
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.url,
            "aud": [CLIENT_ID, "account"],
            "sub": str(uuid.uuid4()),
            "typ": "Bearer",
            "azp": "cli",
            "scope": "openid profile email",
            "preferred_username": "alice",
            "realm_access": {"roles": ["offline_access", "data-science"]},
            "resource_access": {
                CLIENT_ID: {"roles": ["gpt-users"]},
                "account": {"roles": ["view-profile"]},
            },
            "groups": ["/acme/research", "/acme/research/nlp"],
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, key: SigningKey | None = None, **overrides: Any) -> str:
        return (key or self.key).sign(self.claims(**overrides))
