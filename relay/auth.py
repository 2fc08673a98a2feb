"""Viewer tokens (HS256 JWT), webhook secrets and the admin key. Secrets compare in constant time."""

from __future__ import annotations

import hmac
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from .errors import AuthError

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Viewer:
    """Who a viewer token lets in: a set of instance names, or every instance (``["*"]``)."""

    instances: frozenset[str]
    expires_at: int

    def may_see(self, instance: str) -> bool:
        return "*" in self.instances or instance in self.instances


def mint_token(secret: str, instances: list[str], ttl: int) -> str:
    """A viewer token as host apps mint it with any JWT library."""
    now = int(time.time())
    return jwt.encode({"instances": instances, "iat": now, "exp": now + ttl}, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None) -> Viewer:
    """Check a viewer token; raises :class:`AuthError` (never says which part was wrong)."""
    if not token:
        raise AuthError("missing token")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.PyJWTError:
        raise AuthError("invalid token") from None
    instances = claims.get("instances")
    if not isinstance(instances, list) or not all(isinstance(i, str) for i in instances):
        raise AuthError("invalid token: 'instances' must be a list of names")
    return Viewer(instances=frozenset(instances), expires_at=int(claims["exp"]))


class Verifier:
    """:func:`verify_token` with a memory of the tokens it accepted lately: a reconnect storm
    brings back the same tokens, and a signature check costs tens of microseconds each. A
    remembered token is still refused once expired (a valid token can only get older)."""

    def __init__(self, secret: str, size: int = 10_000):
        self.secret = secret
        self.size = size
        self._known: OrderedDict[str, Viewer] = OrderedDict()

    def verify(self, token: str | None) -> Viewer:
        viewer = self._known.get(token) if token else None
        if viewer is None:
            viewer = verify_token(self.secret, token)
            self._known[token] = viewer  # type: ignore[index]  # (token is a str here)
            if len(self._known) > self.size:
                self._known.popitem(last=False)
        elif viewer.expires_at <= time.time():
            del self._known[token]  # type: ignore[arg-type]
            raise AuthError("token expired")
        return viewer


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer …`` header (scheme is case-insensitive)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def same_secret(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def webhook_allowed(secret: str | None, authorization: str | None, path_secret: str | None) -> bool:
    """Is this webhook request authentic? (DESIGN.md "Webhooks in").

    Accepted: no secret configured; ``Authorization: Bearer <secret>``; a Bearer HS256 JWT signed
    with the secret (Evolution's ``jwt_key``, minted per event, ``exp`` required); or the secret as
    the path segment after the upstream name (global webhooks and WPPConnect can't send headers).
    """
    if secret is None:
        return True
    if same_secret(path_secret, secret):
        return True
    credential = bearer(authorization)
    if credential is None:
        return False
    if same_secret(credential, secret):
        return True
    if credential.count(".") == 2:
        try:
            with warnings.catch_warnings():
                # The user picks the webhook secret (Evolution's jwt_key may be short); PyJWT
                # would warn on every request.
                warnings.simplefilter("ignore")
                claims = jwt.decode(credential, secret, algorithms=[ALGORITHM],
                                    options={"verify_aud": False, "require": ["exp"]})
        except jwt.PyJWTError:
            return False
        # Evolution mints {iat, exp, app, action}; a viewer token is never a webhook credential.
        return "instances" not in claims
    return False


def admin_allowed(admin_key: str | None, authorization: str | None) -> bool:
    """Admin routes need ``Authorization: Bearer <RELAY_ADMIN_KEY>``; with no key set they are off."""
    return admin_key is not None and same_secret(bearer(authorization), admin_key)
