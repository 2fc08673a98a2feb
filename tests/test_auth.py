"""Viewer tokens: the verifier that remembers the tokens it accepted (reconnect storms bring the
same ones back) still refuses every token it should."""

from __future__ import annotations

import time

import jwt
import pytest

from relay.auth import Verifier, mint_token
from relay.errors import AuthError

SECRET = "s" * 32


def test_remembered_tokens_are_still_checked_for_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = Verifier(SECRET, size=2)
    token = mint_token(SECRET, ["a"], 2)
    calls: list[str] = []
    import relay.auth

    real = relay.auth.verify_token
    monkeypatch.setattr(relay.auth, "verify_token", lambda s, t: calls.append(t) or real(s, t))
    assert verifier.verify(token).instances == {"a"}
    assert verifier.verify(token).instances == {"a"} and len(calls) == 1  # remembered
    time.sleep(2.1)
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(token)
    with pytest.raises(AuthError, match="expired"):  # and forgotten: checked in full again
        verifier.verify(token)
    assert len(calls) == 2


def test_refused_tokens_are_never_remembered() -> None:
    verifier = Verifier(SECRET, size=2)
    forged = jwt.encode({"instances": ["*"], "exp": int(time.time()) + 60}, "other" * 8, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(AuthError):
            verifier.verify(forged)
    with pytest.raises(AuthError):
        verifier.verify(None)
    tokens = [mint_token(SECRET, [f"i{n}"], 60) for n in range(3)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._known) == 2  # bounded
