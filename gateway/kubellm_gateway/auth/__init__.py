"""Who is calling: an API key or an OIDC access token, told apart by their shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..asgi import Scope
from ..routing import Principal, Snapshot
from . import apikeys

if TYPE_CHECKING:  # a gateway without OIDC never imports jwt and cryptography (8 MiB)
    from .oidc import OIDCVerifier

API_KEY_PREFIX: Final = "sk-kl-"


def is_jwt(credential: str) -> bool:
    """Shaped like a JWT (three dot-separated parts) and not one of our API keys."""
    return not credential.startswith(API_KEY_PREFIX) and credential.count(".") == 2


async def authenticate(
    scope: Scope, snapshot: Snapshot, verifier: OIDCVerifier | None
) -> Principal:
    """The caller's principal, or a 401 APIError.

    Without OIDC configured every credential is an API key. With it, a JWT-shaped
    bearer value goes to the verifier; API keys (`sk-kl-...`, or any other shape,
    e.g. a key written into a Secret by hand) keep taking the API-key path.
    """
    credential = apikeys.presented_key(scope)
    if verifier is None or credential is None or not is_jwt(credential):
        return apikeys.authenticate(scope, snapshot)
    return await verifier.principal(credential)
