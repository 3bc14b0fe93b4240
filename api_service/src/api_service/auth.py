"""Bearer-key authentication."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="An API key from API_KEYS.")


class KeyRing:
    """The accepted keys. A caller is known by a fingerprint of its key, never the key."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    def fingerprint_of(self, presented: str) -> str | None:
        candidate = presented.encode()
        match = False
        # Compare against every key, each in constant time, so timing tells nothing.
        for key in self._keys:
            match |= hmac.compare_digest(candidate, key)
        return fingerprint(presented) if match else None


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=message,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def caller(
    # async: a sync dependency costs every request a thread-pool round trip.
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The fingerprint of the calling key; 401 for a missing or unknown key."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("Authorization: Bearer <api key> is required")
    keyring: KeyRing = request.app.state.keyring
    owner = keyring.fingerprint_of(credentials.credentials)
    if owner is None:
        raise _unauthorized("invalid API key")
    return owner


Caller = Annotated[str, Depends(caller)]
