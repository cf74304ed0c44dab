"""The pure parts of OIDC: settings, JWKS parsing, claim paths, telling tokens from keys."""

from __future__ import annotations

from typing import Any

import pytest

from kubellm_gateway.auth import is_jwt
from kubellm_gateway.auth.oidc import OIDCSettings, claim_at, signing_keys
from tests.support.oidc import SigningKey


def test_settings_need_issuers_audience_and_http_urls() -> None:
    with pytest.raises(ValueError, match="at least one issuer"):
        OIDCSettings(issuers=(), audience="kubellm")
    with pytest.raises(ValueError, match="needs an audience"):
        OIDCSettings(issuers=("https://sso.example.com/realms/a",), audience="")
    with pytest.raises(ValueError, match="not an http"):
        OIDCSettings(issuers=("sso.example.com/realms/a",), audience="kubellm")
    settings = OIDCSettings(issuers=("https://sso.example.com/realms/a",), audience="kubellm")
    assert (settings.username_claim, settings.groups_claims, settings.leeway) == (
        "preferred_username",
        ("groups",),
        30.0,
    )


def test_signing_keys_keep_only_asymmetric_signature_keys() -> None:
    rsa, ec, enc = SigningKey.rsa("rsa"), SigningKey.ec("ec"), SigningKey.rsa("enc")
    keys = signing_keys(
        {
            "keys": [
                rsa.jwk(),
                ec.jwk(declare_alg=False),  # ES256 from the curve
                enc.jwk(use="enc"),
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
                {**SigningKey.rsa("hs").jwk(), "alg": "HS256"},  # an RSA key claiming HMAC
                {**SigningKey.rsa("ps").jwk(), "alg": "PS256"},
                {"kty": "RSA", "kid": "broken", "n": "??", "e": "AQAB"},
                "not a key",
            ]
        }
    )
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {
        "rsa": "RS256",
        "ec": "ES256",
        "ps": "PS256",
    }


@pytest.mark.parametrize("jwks", [None, [], {}, {"keys": "x"}])
def test_signing_keys_of_a_document_that_is_not_a_jwks(jwks: Any) -> None:
    with pytest.raises(ValueError, match="no `keys` list"):
        signing_keys(jwks)


def test_key_without_kid() -> None:
    data = SigningKey.rsa().jwk()
    del data["kid"]
    assert list(signing_keys({"keys": [data]})) == [None]


CLAIMS = {
    "groups": ["/a/b"],
    "realm_access": {"roles": ["r1"]},
    "resource_access": {"kubellm": {"roles": ["c1"]}, "account": {"roles": ["x"]}},
    "flat": "v",
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("groups", ["/a/b"]),
        ("realm_access.roles", ["r1"]),
        ("resource_access.kubellm.roles", ["c1"]),
        ("resource_access.missing.roles", None),
        ("flat.deeper", None),
        ("absent", None),
    ],
)
def test_claim_at_dotted_paths(path: str, value: Any) -> None:
    assert claim_at(CLAIMS, path) == value


@pytest.mark.parametrize(
    ("credential", "jwt"),
    [
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", True),
        ("sk-kl-abc.def.ghi", False),  # our prefix wins over the shape
        ("sk-kl-AbC1xyz", False),
        ("hand-written-key", False),
        ("a.b", False),
        ("a.b.c.d", False),
    ],
)
def test_is_jwt(credential: str, jwt: bool) -> None:
    assert is_jwt(credential) is jwt
