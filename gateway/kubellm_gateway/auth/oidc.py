"""OIDC access tokens (Keycloak first, any OpenID provider second).

A token is verified once against the signing keys its issuer publishes (discovery
document, then JWKS); the principal it yields is cached under the token's SHA-256
until the token expires, so the steady state is one hash and one dict lookup.

Keys are fetched on first use and refetched when a token names a key we do not
hold, at most once per `REFETCH_INTERVAL` per issuer: a stream of forged `kid`s
cannot turn the gateway into a load generator against the identity provider.
A failed fetch keeps the keys already held, so the provider going down breaks
nothing that worked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import jwt
import orjson

from ..errors import APIError, unauthorized
from ..routing import Principal

log = logging.getLogger(__name__)

# Only public-key signatures: an HMAC "signature" made with the issuer's public key
# (the classic key-confusion attack) or an unsigned token must never verify.
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
REFETCH_INTERVAL: Final = 30.0  # seconds between key fetches per issuer, at most one
MAX_TOKEN_BYTES: Final = 16 * 1024
MAX_DOCUMENT_BYTES: Final = 1024 * 1024  # discovery document or JWKS

_JWT = jwt.PyJWT()


@dataclass(frozen=True, slots=True)
class OIDCSettings:
    """Which tokens to accept and how to read a principal out of them."""

    issuers: tuple[str, ...]  # issuer URLs, e.g. https://sso.example.com/realms/acme
    audience: str  # the token's `aud` must contain it (Keycloak: an audience mapper)
    username_claim: str = "preferred_username"  # `sub` when the claim is absent
    # Dotted paths into the claims, unioned: "groups", "realm_access.roles",
    # "resource_access.<client>.roles".
    groups_claims: tuple[str, ...] = ("groups",)
    leeway: float = 30.0  # seconds of clock skew tolerated on exp, nbf and iat
    cache_size: int = 10_000  # verified tokens remembered
    fetch_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.issuers:
            raise ValueError("OIDC needs at least one issuer URL")
        if not self.audience:
            raise ValueError("OIDC needs an audience: the client id tokens are issued for")
        for url in self.issuers:
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"OIDC issuer {url!r} is not an http(s) URL")


# JOSE `typ` headers an access token may carry: plain JWT, or RFC 9068's at+jwt.
ACCESS_TOKEN_HEADER_TYPES: Final = frozenset({"jwt", "at+jwt", "application/at+jwt"})


def _is_access_token(header: Mapping[str, Any], claims: Mapping[str, Any]) -> bool:
    """Whether the token says it is an access token, or says nothing else. Keycloak marks
    its tokens in a `typ` claim (Bearer; ID and Refresh tokens can carry the same audience
    and must not be taken as bearer credentials); RFC 9068 in the JOSE `typ` header."""
    kind = header.get("typ")
    if kind is not None and (
        not isinstance(kind, str) or kind.lower() not in ACCESS_TOKEN_HEADER_TYPES
    ):
        return False
    marked = claims.get("typ")
    return marked is None or (isinstance(marked, str) and marked.lower() == "bearer")


def invalid_token(reason: str) -> APIError:
    return unauthorized(f"Invalid access token: {reason}.")


@dataclass(slots=True)
class _Issuer:
    url: str  # as configured, without a trailing slash
    issuer: str | None = None  # the discovery document's `issuer`: what `iss` must equal
    jwks_uri: str | None = None
    keys: dict[str | None, jwt.PyJWK] = field(default_factory=dict)  # by kid
    attempted: float = -math.inf  # clock() at the last fetch attempt
    fetching: asyncio.Task[None] | None = None

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self.keys) == 1:
            # Some providers leave `kid` out when they publish one key.
            return next(iter(self.keys.values()))
        return self.keys.get(kid)


def signing_keys(jwks: Any) -> dict[str | None, jwt.PyJWK]:
    """The usable signing keys of a JWKS, by kid; encryption and symmetric keys are skipped."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("the JWKS has no `keys` list")
    keys: dict[str | None, jwt.PyJWK] = {}
    for data in jwks["keys"]:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        if data.get("kty") == "oct":
            continue
        try:
            key = jwt.PyJWK(data)  # the declared `alg`, or the one kty/crv imply
        except jwt.PyJWTError:
            continue
        if key.algorithm_name not in ASYMMETRIC_ALGORITHMS:
            continue
        kid = data.get("kid")
        keys[kid if isinstance(kid, str) else None] = key
    return keys


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path ("realm_access.roles"), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class OIDCVerifier:
    """Turns bearer tokens into principals; one per gateway process."""

    def __init__(
        self,
        settings: OIDCSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock  # paces key fetches; token lifetimes use the wall clock
        self._issuers = {url.rstrip("/"): _Issuer(url.rstrip("/")) for url in settings.issuers}
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def principal(self, token: str) -> Principal:
        """The principal of a valid token; raises a 401 APIError otherwise."""
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = await self._verify(token)
        self._remember(digest, principal, expires)
        return principal

    async def prefetch(self) -> None:
        """Fetch every issuer's keys now, so the first requests do not wait for them."""
        await asyncio.gather(*(self._refresh(i) for i in self._issuers.values()))

    async def aclose(self) -> None:
        for issuer in self._issuers.values():
            if issuer.fetching is not None:
                issuer.fetching.cancel()
        if self._session is not None:
            await self._session.close()

    async def _verify(self, token: str) -> tuple[Principal, float]:
        if len(token) > MAX_TOKEN_BYTES:
            raise invalid_token("too large")
        try:
            unverified = _JWT.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise invalid_token("not a well-formed JWT") from None
        header, payload = unverified["header"], unverified["payload"]
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
            raise invalid_token("signing algorithm not accepted")
        iss = payload.get("iss")
        issuer = self._issuers.get(iss.rstrip("/")) if isinstance(iss, str) else None
        if issuer is None:
            raise invalid_token("issuer not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise invalid_token("not a well-formed JWT")
        key = issuer.key(kid)
        if key is None and await self._refresh_allowed(issuer):
            key = issuer.key(kid)
        if key is None:
            raise invalid_token("signed with an unknown key")
        claims = self._decode(token, key, issuer)
        if claims is None and kid is None and await self._refresh_allowed(issuer):
            # Without a kid, a rotated key replaces the old one under the same (absent) name.
            fresh = issuer.key(None)
            if fresh is not None and fresh is not key:
                claims = self._decode(token, fresh, issuer)
        if claims is None:
            raise invalid_token("bad signature")
        if not _is_access_token(header, claims):
            raise invalid_token("not an access token")
        return self._principal(claims), float(claims["exp"])

    def _decode(self, token: str, key: jwt.PyJWK, issuer: _Issuer) -> dict[str, Any] | None:
        """The verified claims; None if the signature does not match `key`."""
        assert issuer.issuer is not None  # set by discovery, before any key
        try:
            return _JWT.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self.settings.audience,
                issuer=issuer.issuer,
                leeway=self.settings.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError:
            return None
        except jwt.ExpiredSignatureError:
            raise invalid_token("expired") from None
        except jwt.ImmatureSignatureError:
            raise invalid_token("not valid yet") from None
        except jwt.InvalidAudienceError:
            raise invalid_token("audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise invalid_token("issuer not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise invalid_token("signing algorithm not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise invalid_token(f"the `{exc.claim}` claim is missing") from None
        except jwt.PyJWTError:
            raise invalid_token("not a well-formed JWT") from None

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        user = claims.get(self.settings.username_claim)
        if not isinstance(user, str) or not user:
            user = claims.get("sub")
        if not isinstance(user, str) or not user:
            raise invalid_token(f"neither `{self.settings.username_claim}` nor `sub` names a user")
        groups: set[str] = set()
        for path in self.settings.groups_claims:
            value = claim_at(claims, path)
            if isinstance(value, str):
                groups.add(value)
            elif isinstance(value, list):
                groups.update(g for g in value if isinstance(g, str))
        return Principal(user, frozenset(groups), auth="oidc")

    def _remember(self, digest: bytes, principal: Principal, expires: float) -> None:
        cache, size = self._cache, self.settings.cache_size
        if len(cache) >= size:
            now = time.time()
            for stale in [d for d, (_, until) in cache.items() if until <= now]:
                del cache[stale]
            if len(cache) >= size:
                # Full of live tokens: forget the oldest tenth; they verify again when used.
                for oldest in list(cache)[: max(1, size // 10)]:
                    del cache[oldest]
        cache[digest] = (principal, expires)

    async def _refresh_allowed(self, issuer: _Issuer) -> bool:
        """Refetch the issuer's keys unless that was tried too recently; True if it ran."""
        if issuer.fetching is None and self._clock() - issuer.attempted < REFETCH_INTERVAL:
            return False
        await self._refresh(issuer)
        return True

    async def _refresh(self, issuer: _Issuer) -> None:
        # One fetch per issuer at a time: concurrent requests wait for the same one.
        if issuer.fetching is None:
            issuer.attempted = self._clock()
            issuer.fetching = asyncio.create_task(self._fetch(issuer))
            issuer.fetching.add_done_callback(lambda _: setattr(issuer, "fetching", None))
        await asyncio.shield(issuer.fetching)

    async def _fetch(self, issuer: _Issuer) -> None:
        try:
            if issuer.jwks_uri is None:
                await self._discover(issuer)
            assert issuer.jwks_uri is not None
            keys = signing_keys(await self._get_json(issuer.jwks_uri))
            if not keys:
                raise ValueError("the JWKS holds no usable signing key")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            issuer.jwks_uri = None  # rediscover next time: the document may have moved
            log.warning(
                "OIDC issuer %s: keys not refreshed (%s); keeping the %d held",
                issuer.url,
                exc or type(exc).__name__,
                len(issuer.keys),
            )
            return
        if set(issuer.keys) - set(keys):
            # A key was withdrawn: tokens it signed must not live on in the cache.
            self._cache.clear()
        issuer.keys = keys
        log.info("OIDC issuer %s: %d signing keys", issuer.url, len(keys))

    async def _discover(self, issuer: _Issuer) -> None:
        document = await self._get_json(f"{issuer.url}/.well-known/openid-configuration")
        if not isinstance(document, dict):
            raise ValueError("the discovery document is not a JSON object")
        claimed, jwks_uri = document.get("issuer"), document.get("jwks_uri")
        # OpenID Connect Discovery 1.0, section 4.3: the issuer must be the URL asked.
        if not isinstance(claimed, str) or claimed.rstrip("/") != issuer.url:
            raise ValueError(f"the discovery document names issuer {claimed!r}")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("the discovery document has no http(s) jwks_uri")
        issuer.issuer, issuer.jwks_uri = claimed, jwks_uri

    async def _get_json(self, url: str) -> Any:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.fetch_timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        async with self._session.get(url, headers={"accept": "application/json"}) as response:
            if response.status != 200:
                raise ValueError(f"GET {url}: HTTP {response.status}")
            body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError(f"GET {url}: not JSON") from None
